//! `dsr bench access`, second part: one person with `--records` letters at
//! the print-and-mail vendor asks for access through the whole embedded
//! mesh (verify, locate, export into the sealed package); the process's
//! peak resident memory over the request, then the package downloaded and
//! verified against its manifest. Last, the export service alone, as on
//! Kubernetes: `dsr serve export` in a process of its own builds that
//! person's package from the subject map discovery made, and its own peak
//! resident memory is read from `/proc`.

use std::time::Instant;

use anyhow::{Context as _, bail};
use dsr_proto::common::v1 as common;
use dsr_proto::discovery::v1 as disc;
use dsr_proto::discovery::v1::discovery_client::DiscoveryClient;
use dsr_proto::export::v1 as exp;
use dsr_proto::export::v1::export_client::ExportClient;
use dsr_proto::identity::v1::identity_verification_client::IdentityVerificationClient;
use dsr_proto::orchestrator::v1 as pb;
use dsr_proto::orchestrator::v1::requests_client::RequestsClient;
use sha2::Digest as _;
use tonic::transport::Channel;

use super::bearer;
use super::requests::Embedded;
use crate::config::Config;

/// The controller the bench's requests are made to (see `requests`).
const CONTROLLER: &str = "556134-1248";

/// A downloaded file's size and whether its digest matched.
struct Fetched {
    name: String,
    size: u64,
    bytes: Option<Vec<u8>>,
}

/// Downloads every file of `package_id`, checking each against the digest
/// the package lists and the manifest's own; keeps the bytes of `keep`.
async fn fetch_and_verify(
    url: String,
    token: &str,
    package_id: &str,
    keep: &str,
) -> anyhow::Result<Vec<Fetched>> {
    let mut client = ExportClient::new(Channel::from_shared(url)?.connect().await?)
        .max_decoding_message_size(16 * 1024 * 1024);
    let pkg = client
        .get_package(bearer(
            token,
            exp::GetPackageRequest {
                package_id: package_id.to_owned(),
            },
        )?)
        .await
        .map_err(|s| crate::request::explain(&s))?
        .into_inner()
        .package
        .context("empty answer")?;
    let mut out = Vec::new();
    let mut manifest: Option<serde_json::Value> = None;
    let mut digests = Vec::new();
    for f in &pkg.files {
        let mut stream = client
            .download(bearer(
                token,
                exp::DownloadRequest {
                    package_id: pkg.id.clone(),
                    file_name: f.name.clone(),
                },
            )?)
            .await
            .map_err(|s| crate::request::explain(&s))?
            .into_inner();
        let mut sha = sha2::Sha256::new();
        let mut size = 0u64;
        let mut kept = (f.name == keep || f.name == "manifest.json").then(Vec::new);
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| crate::request::explain(&s))?
        {
            if chunk.offset != size {
                bail!("{}: chunk out of order", f.name);
            }
            size += chunk.chunk.len() as u64;
            sha.update(&chunk.chunk);
            if let Some(k) = kept.as_mut() {
                k.extend_from_slice(&chunk.chunk);
            }
        }
        let digest = hex::encode(sha.finalize());
        if digest != f.sha256 || size != f.size {
            bail!(
                "{}: size or SHA-256 differs from the package's index",
                f.name
            );
        }
        digests.push((f.name.clone(), digest));
        if f.name == "manifest.json" {
            manifest = Some(serde_json::from_slice(
                kept.as_deref().context("manifest kept")?,
            )?);
        }
        out.push(Fetched {
            name: f.name.clone(),
            size,
            bytes: kept.filter(|_| f.name == keep),
        });
    }
    let manifest = manifest.context("the package has no manifest.json")?;
    let listed = manifest["files"].as_array().context("manifest: files")?;
    for (name, digest) in digests.iter().filter(|(n, _)| n != "manifest.json") {
        let entry = listed
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .with_context(|| format!("the manifest does not list {name}"))?;
        if entry["sha256"].as_str() != Some(digest) {
            bail!("{name}: SHA-256 differs from the manifest's");
        }
    }
    if listed.len() + 1 != digests.len() {
        bail!("the manifest lists files the package does not hold");
    }
    Ok(out)
}

/// A process's resident set now and at its peak (KiB), from `/proc`.
fn rss_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// A token as the orchestrator mints it for `audience`.
fn orchestrator_token(cfg: &Config, audience: &str, scope: &str) -> anyhow::Result<String> {
    let (signer, _) = dsr_auth::TokenSigner::from_key_file(
        std::path::Path::new(&cfg.orchestrator.service_key_file),
        None,
        &cfg.orchestrator.service_token_issuer,
    )?;
    Ok(signer.mint(&dsr_auth::TokenRequest {
        subject: cfg.orchestrator.service_token_issuer.clone(),
        audiences: vec![audience.to_owned()],
        scopes: vec![scope.to_owned()],
        ttl: std::time::Duration::from_secs(600),
    })?)
}

/// The export service in a process of its own (`dsr serve export`, its own
/// data directory and SQLite index), reading the embedded mesh's systems
/// and registry and trusting the orchestrator's key; killed on drop.
struct ExportProcess {
    child: std::process::Child,
    pid: u32,
    url: String,
}

impl ExportProcess {
    async fn start(embedded: &Embedded) -> anyhow::Result<Self> {
        let mut cfg = embedded.mesh.cfg.clone();
        let dir = embedded.dir.path().join("export-alone");
        std::fs::create_dir_all(&dir)?;
        cfg.data_dir = dir.clone();
        cfg.database.url = String::new();
        cfg.database.migrate_on_start = true;
        cfg.auth = crate::config::AuthSection {
            issuers: Vec::new(),
            jwks_file: String::new(),
            jwks: String::new(),
            grants: std::collections::BTreeMap::new(),
            trusted: vec![crate::config::TrustedIssuer {
                issuer: cfg.orchestrator.service_token_issuer.clone(),
                jwks_file: embedded
                    .mesh
                    .cfg
                    .data_dir
                    .join("orchestrator-jwks.json")
                    .display()
                    .to_string(),
                jwks: String::new(),
                jwks_uri: String::new(),
                scope_claims: Vec::new(),
            }],
            ..cfg.auth
        };
        let file = dir.join("dsr.toml");
        std::fs::write(&file, toml::to_string(&cfg)?)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = std::process::Command::new(std::env::current_exe()?)
            .arg("--config")
            .arg(&file)
            .args(["--log", "warn", "serve", "export", "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("cannot start `dsr serve export`")?;
        let pid = child.id();
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while Channel::from_shared(url.clone())?.connect().await.is_err() {
            if started.elapsed() > std::time::Duration::from_secs(30) {
                bail!("`dsr serve export` did not listen within 30 s");
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(Self { child, pid, url })
    }
}

impl Drop for ExportProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The export alone: the person's subject map from discovery, then one
/// BuildPackage to the export process, as the orchestrator calls it; the
/// records packaged and the process's resident set before and at its peak
/// (KiB).
async fn export_alone(
    embedded: &Embedded,
    email: &str,
) -> anyhow::Result<(u64, u64, u64, std::time::Duration)> {
    let cfg = &embedded.mesh.cfg;
    let request_id = uuid::Uuid::new_v4().to_string();
    let due = chrono::Utc::now().date_naive() + chrono::Duration::days(30);
    let controller = common::ControllerRef {
        organisation_number: CONTROLLER.into(),
    };
    let map = DiscoveryClient::new(Channel::from_shared(embedded.url(5))?.connect().await?)
        .max_decoding_message_size(64 * 1024 * 1024)
        .locate(bearer(
            &orchestrator_token(cfg, "dsr-discovery", "discovery:locate")?,
            disc::LocateRequest {
                request_id: request_id.clone(),
                controller: Some(controller.clone()),
                due_date: Some(dsr_connector::grpc::date_to_pb(due)),
                identities: vec![common::Identity {
                    r#type: common::IdentityType::Email as i32,
                    format: 0,
                    value: email.to_owned(),
                    hmac_key_id: String::new(),
                }],
                max_rounds: 0,
            },
        )?)
        .await
        .map_err(|s| crate::request::explain(&s))?
        .into_inner()
        .subject_map
        .context("no subject map")?;
    let export = ExportProcess::start(embedded).await?;
    let mut client = ExportClient::new(Channel::from_shared(export.url.clone())?.connect().await?)
        .max_encoding_message_size(64 * 1024 * 1024);
    let token = orchestrator_token(cfg, "dsr-export", "export:build")?;
    let (before, _) = rss_of(export.pid).context("no /proc for the export process")?;
    // Reset the child's peak (Linux: "5" clears VmHWM).
    std::fs::write(format!("/proc/{}/clear_refs", export.pid), "5")
        .context("cannot reset the export process's peak")?;
    let started = Instant::now();
    let package = client
        .build_package(bearer(
            &token,
            exp::BuildPackageRequest {
                request_id,
                kind: exp::PackageKind::Access as i32,
                controller: Some(controller),
                due_date: Some(dsr_connector::grpc::date_to_pb(due)),
                language: "sv".into(),
                subject_map: Some(map),
                submitted_by: String::new(),
            },
        )?)
        .await
        .map_err(|s| crate::request::explain(&s))?
        .into_inner()
        .package
        .context("no package")?;
    let took = started.elapsed();
    let (_, peak) = rss_of(export.pid).context("no /proc for the export process")?;
    drop(export);
    Ok((package.record_count, before, peak, took))
}

/// Runs the whole-request part; prints the figures.
#[allow(clippy::print_stdout)]
pub(super) async fn whole_request(
    base: &Config,
    records: usize,
    database_url: Option<&str>,
) -> anyhow::Result<()> {
    let embedded = Box::pin(Embedded::start(base, 1000, database_url, 1)).await?;
    let people = dsr_system_sql::reference::people(1000, embedded.mesh.cfg.system_sql.seed);
    // A recipient of the print-and-mail vendor (index not a multiple of 3).
    let person = people
        .iter()
        .find(|p| p.idx % 3 != 0 && p.controller == CONTROLLER)
        .context("no print-and-mail recipient of the controller")?;
    let print_mail = super::floor::reference_db(
        &embedded.mesh.cfg,
        dsr_system_sql::reference::Reference::PrintMail,
    )
    .await?;
    let t = Instant::now();
    let added = dsr_system_sql::reference::add_letters(
        &print_mail,
        person,
        records,
        dsr_system_sql::reference::base_date(),
        embedded.mesh.cfg.system_sql.seed,
    )
    .await?;
    println!(
        "{added} letters added for one person in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    drop(print_mail);
    let mut identity =
        IdentityVerificationClient::new(Channel::from_shared(embedded.url(4))?.connect().await?);
    let vt = embedded
        .verification_token(&mut identity, &person.email)
        .await?;
    let mut client = RequestsClient::new(Channel::from_shared(embedded.url(7))?.connect().await?);
    let before = super::current_rss_kib().unwrap_or(0);
    // Reset the peak (Linux: "5" clears VmHWM).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (took, request) = Box::pin(super::requests::follow(
        &mut client,
        pb::Kind::Access,
        &embedded.token,
        &vt,
        format!("bench-access-{}", uuid::Uuid::new_v4().simple()),
    ))
    .await?;
    let peak = super::peak_rss_kib().unwrap_or(0);
    let files = Box::pin(fetch_and_verify(
        embedded.url(6),
        &embedded.token,
        &request.package_id,
        "access.json",
    ))
    .await?;
    let doc: serde_json::Value = serde_json::from_slice(
        files
            .iter()
            .find(|f| f.name == "access.json")
            .and_then(|f| f.bytes.as_deref())
            .context("no access.json")?,
    )?;
    let in_doc: usize = doc["systems"]
        .as_array()
        .context("access.json: systems")?
        .iter()
        .map(|s| s["records"].as_array().map_or(0, Vec::len))
        .sum();
    if Some(in_doc as u64) != doc["record_count"].as_u64() || in_doc < added {
        bail!(
            "access.json holds {in_doc} records, says {}, and the person has at least {added}",
            doc["record_count"]
        );
    }
    println!(
        "whole access request (verify, locate over 3 systems, export into the sealed package): {in_doc} records in {:.2} s",
        took.as_secs_f64()
    );
    for f in &files {
        println!("  {:<16} {:>12} bytes", f.name, f.size);
    }
    println!(
        "  package verified: every file's SHA-256 matches the package's index and its manifest"
    );
    println!(
        "  resident memory before: {:.1} MiB; peak during the request (every service and the client in this process): {:.1} MiB; growth {:.1} MiB",
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / 1024.0
    );
    let (records, before, peak, took) = Box::pin(export_alone(&embedded, &person.email)).await?;
    println!(
        "export alone, as on Kubernetes (`dsr serve export` in its own process; one BuildPackage with the subject map discovery made, as the orchestrator calls it): {records} records in {:.2} s",
        took.as_secs_f64()
    );
    println!(
        "  the export process's resident memory before: {:.1} MiB; peak while building: {:.1} MiB; growth {:.1} MiB",
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / 1024.0
    );
    let Embedded { mesh, .. } = embedded;
    mesh.stop().await?;
    Ok(())
}
