//! `dsr bench access`, second part: one person with `--records` letters at
//! the print-and-mail vendor asks for access through the whole embedded
//! mesh (verify, locate, export into the sealed package); the process's
//! peak resident memory over the request, then the package downloaded and
//! verified against its manifest.

use std::time::Instant;

use anyhow::{Context as _, bail};
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

/// Runs the whole-request part; prints the figures.
#[allow(clippy::print_stdout)]
pub(super) async fn whole_request(
    base: &Config,
    records: usize,
    database_url: Option<&str>,
) -> anyhow::Result<()> {
    let embedded = Embedded::start(base, 1000, database_url, 1).await?;
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
    let (took, request) = super::requests::follow(
        &mut client,
        pb::Kind::Access,
        &embedded.token,
        &vt,
        format!("bench-access-{}", uuid::Uuid::new_v4().simple()),
    )
    .await?;
    let peak = super::peak_rss_kib().unwrap_or(0);
    let files = fetch_and_verify(
        embedded.url(6),
        &embedded.token,
        &request.package_id,
        "access.json",
    )
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
    let Embedded { mesh, .. } = embedded;
    mesh.stop().await?;
    Ok(())
}
