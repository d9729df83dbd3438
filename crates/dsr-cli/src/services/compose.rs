//! Each service put together from the configuration: the CLI reads the
//! files, checks the settings and opens the databases; the service's own
//! `assembly::build` wires its parts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use dsr_auth::{KeySet, Validator, ValidatorConfig};
use dsr_connector::signing::ReceiptSigner;
use dsr_domain::transfer::CountryTables;
use dsr_server::ServiceSet;
use dsr_system_sql::assembly::{self as systems, SqlSource};
use dsr_system_sql::manifest::Manifest;
use dsr_transfer_registry as transfer;

use super::*;
use crate::config::Config;

/// Builds the service set of `inst`: database, migrations, seed, handlers.
pub(crate) async fn prepare(
    inst: &Instance,
    cfg: &Config,
    trust: &Trust,
    schema: Schema,
) -> anyhow::Result<ServiceSet> {
    let source = inst.system.as_ref();
    let mut set = match inst.kind {
        ServiceKind::Portal => bail!("the privacy centre is a web service, not a gRPC one"),
        // Discovery keeps no database.
        ServiceKind::Discovery => prepare_discovery(cfg, trust),
        ServiceKind::Export => {
            let db = open_database(inst, cfg, schema).await?;
            prepare_export(db, cfg, trust)
        }
        ServiceKind::Orchestrator => {
            let db = open_database(inst, cfg, schema).await?;
            // On PostgreSQL, lease renewals get two connections of their
            // own (SQLite has one writer whatever the pools).
            let leases = if cfg.orchestrator.workers > 0
                && db.get_database_backend() == sea_orm::DbBackend::Postgres
            {
                let leases = inst.connect_pool(cfg, 2).await?;
                watch_pool(&format!("{}-leases", inst.name), &leases);
                Some(leases)
            } else {
                None
            };
            // On SQLite, views and lists read beside the one writer.
            let reads = inst.connect_reader(cfg, 2).await?;
            if let Some(r) = &reads {
                watch_pool(&format!("{}-reads", inst.name), r);
            }
            prepare_orchestrator(db, leases, reads, cfg, trust)
        }
        ServiceKind::Erasure => {
            let db = open_database(inst, cfg, schema).await?;
            prepare_erasure(db, cfg, trust)
        }
        ServiceKind::TransferRegistry => prepare_registry(inst, cfg, trust, schema).await,
        ServiceKind::Identity => prepare_identity(inst, cfg, trust, schema).await,
        ServiceKind::SystemSql => prepare_sql(inst, source, cfg, trust, schema).await,
        ServiceKind::SystemHttp => prepare_http(inst, source, cfg, trust, schema).await,
        ServiceKind::SystemManual => prepare_manual(inst, source, cfg, trust, schema).await,
    }?;
    // Reflection describes the whole contract.
    set.describe(dsr_proto::FILE_DESCRIPTOR_SET);
    Ok(set)
}

/// The transfer registry: the country tables and the seed (the shipped
/// ones, or the configured files), read and checked here.
async fn prepare_registry(
    inst: &Instance,
    cfg: &Config,
    trust: &Trust,
    schema: Schema,
) -> anyhow::Result<ServiceSet> {
    let db = open_database(inst, cfg, schema).await?;
    let section = &cfg.transfer_registry;
    let tables = if section.countries_file.is_empty() {
        CountryTables::shipped()
    } else {
        let text = std::fs::read_to_string(&section.countries_file)?;
        CountryTables::from_toml(&text).with_context(|| {
            format!(
                "invalid configuration: transfer_registry.countries_file {}",
                section.countries_file
            )
        })?
    };
    let seed_text = if section.seed_file.is_empty() {
        transfer::seed::SHIPPED.to_owned()
    } else {
        std::fs::read_to_string(&section.seed_file)?
    };
    let seed =
        transfer::seed::parse(&seed_text, &tables, clock(cfg).today()).with_context(|| {
            format!(
                "invalid seed {}",
                if section.seed_file.is_empty() {
                    "(shipped)"
                } else {
                    section.seed_file.as_str()
                }
            )
        })?;
    Ok(transfer::assembly::build(
        transfer::assembly::Settings {
            tables,
            seed,
            seed_on_start: section.seed,
            review_window_days: section.review_window_days,
        },
        transfer::assembly::Deps {
            db,
            validator: trust.validator(transfer::SERVICE_NAME),
            clock: clock(cfg),
        },
    )
    .await?)
}

/// Identity: its token key (created the first time) and JWKS written for
/// the orchestrator, the notifier, the IdP's keys, the hashing key, the
/// code's message.
async fn prepare_identity(
    inst: &Instance,
    cfg: &Config,
    trust: &Trust,
    schema: Schema,
) -> anyhow::Result<ServiceSet> {
    let db = open_database(inst, cfg, schema).await?;
    let id = &cfg.identity;
    let data = &cfg.data_dir;
    let key_file = if id.signing_key_file.is_empty() {
        data.join("keys/identity-signing.pem")
    } else {
        PathBuf::from(&id.signing_key_file)
    };
    let issuer = dsr_identity::tokens::TokenIssuer::load_or_create(
        &key_file,
        chrono::Duration::seconds(i64::try_from(id.token_ttl_secs).unwrap_or(900)),
    )?;
    let jwks_out = if id.jwks_out.is_empty() {
        data.join("identity-jwks.json")
    } else {
        PathBuf::from(&id.jwks_out)
    };
    if let Some(dir) = jwks_out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&jwks_out, issuer.jwks())
        .with_context(|| format!("cannot write {}", jwks_out.display()))?;
    let notifier = notifier(cfg)?;
    let idp = if id.idp_jwks_file.is_empty() {
        None
    } else {
        let text = std::fs::read_to_string(&id.idp_jwks_file)?;
        let keys = KeySet::from_jwks_json(&text)
            .context("invalid configuration: identity.idp_jwks_file")?;
        Some(Arc::new(Validator::new(
            Arc::new(keys),
            ValidatorConfig {
                issuers: vec![id.idp_issuer.clone()],
                audience: id.idp_audience.clone(),
                leeway_secs: cfg.auth.leeway_secs,
                grants: None,
            },
        )))
    };
    let hmac = crate::dev::secret_key(&id.hmac_key_file, &data.join("keys/identity-hmac.key"))?;
    let code_message = if id.code_message_file.is_empty() {
        None
    } else {
        let text = std::fs::read_to_string(&id.code_message_file).with_context(|| {
            format!(
                "cannot read identity.code_message_file {}",
                id.code_message_file
            )
        })?;
        Some(
            dsr_identity::texts::CodeMessage::from_toml(&text).map_err(|e| {
                anyhow::anyhow!(
                    "invalid configuration: identity.code_message_file {}: {e}",
                    id.code_message_file
                )
            })?,
        )
    };
    Ok(dsr_identity::assembly::build(
        dsr_identity::assembly::Settings {
            verifier: dsr_identity::verifier::Settings {
                code_ttl: chrono::Duration::seconds(i64::try_from(id.code_ttl_secs).unwrap_or(600)),
                max_attempts: id.max_attempts,
                per_hour: id.codes_per_hour,
            },
            code_message,
        },
        dsr_identity::assembly::Deps {
            db,
            validator: trust.validator(dsr_identity::SERVICE_NAME),
            issuer,
            notifier,
            hmac_key: hmac,
            idp,
            clock: clock(cfg),
        },
    ))
}

/// A SQL system: a reference system of the repository or a company's
/// database described by its manifest.
async fn prepare_sql(
    inst: &Instance,
    source: Option<&SystemSource>,
    cfg: &Config,
    trust: &Trust,
    schema: Schema,
) -> anyhow::Result<ServiceSet> {
    let db = open_database(inst, cfg, schema).await?;
    let (sql, id) = match source {
        Some(SystemSource::Reference(r)) => (
            SqlSource::Reference {
                reference: *r,
                subjects: cfg.system_sql.seed_subjects,
                seed: cfg.system_sql.seed,
            },
            Manifest::parse(r.manifest(), r.manifest_name())?.system.id,
        ),
        Some(SystemSource::Manifest(path)) => {
            let manifest = Manifest::load(path)?;
            let id = manifest.system.id.clone();
            let file = path.display().to_string();
            (SqlSource::Manifest { manifest, file }, id)
        }
        Some(SystemSource::Http(_) | SystemSource::Manual(_)) | None => {
            bail!("{}: no SQL manifest", inst.name)
        }
    };
    let deps = system_deps(db, cfg, trust, &id)?;
    Ok(systems::build_sql(sql, deps).await?)
}

/// A system behind an HTTP API, described by its manifest.
async fn prepare_http(
    inst: &Instance,
    source: Option<&SystemSource>,
    cfg: &Config,
    trust: &Trust,
    schema: Schema,
) -> anyhow::Result<ServiceSet> {
    let Some(SystemSource::Http(path)) = source else {
        bail!("{}: no HTTP manifest", inst.name);
    };
    let manifest = dsr_system_sql::http::manifest::HttpManifest::load(path)?;
    // The ledger (operations, idempotency keys) is the connector's
    // own database; the data stays behind the API.
    let db = open_database(inst, cfg, schema).await?;
    let deps = system_deps(db, cfg, trust, &manifest.system.id)?;
    systems::build_http(manifest, deps)
        .with_context(|| format!("{}: {}", inst.name, path.display()))
}

/// A vendor without an API, described by its manifest and texts.
async fn prepare_manual(
    inst: &Instance,
    source: Option<&SystemSource>,
    cfg: &Config,
    trust: &Trust,
    schema: Schema,
) -> anyhow::Result<ServiceSet> {
    let Some(SystemSource::Manual(path)) = source else {
        bail!("{}: no manual manifest", inst.name);
    };
    let manifest = dsr_system_sql::manual::manifest::ManualManifest::load(path)?;
    let texts = match &manifest.vendor.texts {
        None => dsr_system_sql::manual::texts::Texts::builtin(),
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read vendor.texts {file}"))?;
            dsr_system_sql::manual::texts::Texts::parse(&text)
                .map_err(|e| anyhow::anyhow!("invalid configuration: vendor.texts {file}: {e}"))?
        }
    };
    // The tasks and the ledger are the connector's own database.
    let db = open_database(inst, cfg, schema).await?;
    let deps = system_deps(db, cfg, trust, &manifest.system.id)?;
    Ok(systems::build_manual(manifest, texts, notifier(cfg)?, deps))
}

/// What a data system gets from the process: its database, the validator
/// of its audience (its id), its receipt key, the clock, its jobs' period.
fn system_deps(
    db: dsr_store::Db,
    cfg: &Config,
    trust: &Trust,
    system_id: &str,
) -> anyhow::Result<systems::Deps> {
    Ok(systems::Deps {
        db,
        validator: trust.validator(system_id),
        signer: receipt_signer(cfg, system_id)?,
        clock: clock(cfg),
        jobs_every: (cfg.system_sql.jobs_interval_secs > 0)
            .then(|| Duration::from_secs(cfg.system_sql.jobs_interval_secs)),
    })
}

/// A data system's receipt key: `system_sql.signing_key_file`, or one kept
/// per system in the data directory (created the first time).
fn receipt_signer(cfg: &Config, system_id: &str) -> anyhow::Result<ReceiptSigner> {
    let key_file = if cfg.system_sql.signing_key_file.is_empty() {
        cfg.data_dir
            .join("keys")
            .join(format!("{system_id}-receipt.pem"))
    } else {
        PathBuf::from(&cfg.system_sql.signing_key_file)
    };
    Ok(ReceiptSigner::load_or_create(&key_file)?)
}

/// Email and SMS as the identity service sends them (`identity.smtp_url`,
/// or the outbox directory under `dsr up`); the manual connector writes to
/// vendors through it too.
fn notifier(cfg: &Config) -> anyhow::Result<Arc<dyn dsr_server::notifier::Notifier>> {
    let id = &cfg.identity;
    Ok(if id.smtp_url.is_empty() {
        let dir = if id.outbox_dir.is_empty() {
            cfg.data_dir.join("outbox")
        } else {
            PathBuf::from(&id.outbox_dir)
        };
        Arc::new(dsr_server::notifier::Outbox::new(dir))
    } else {
        Arc::new(
            dsr_server::notifier::Smtp::new(
                &id.smtp_url,
                &id.smtp_from,
                (!id.sms_gateway_domain.is_empty()).then(|| id.sms_gateway_domain.clone()),
            )
            .context("invalid configuration: identity.smtp_url or identity.smtp_from")?,
        )
    })
}

/// The clock every service of this process runs its rules at (one for
/// the process, so that `dsr up`'s services agree to the millisecond).
pub(crate) fn clock(cfg: &Config) -> dsr_domain::clock::Clock {
    static CLOCK: std::sync::OnceLock<dsr_domain::clock::Clock> = std::sync::OnceLock::new();
    CLOCK
        .get_or_init(|| dsr_domain::clock::Clock::parse(&cfg.clock).unwrap_or_default())
        .clone()
}

/// Discovery keeps no database: the systems come from the configuration.
fn prepare_discovery(cfg: &Config, trust: &Trust) -> anyhow::Result<ServiceSet> {
    let d = &cfg.discovery;
    let settings = dsr_discovery::assembly::Settings {
        systems: system_endpoints(cfg),
        timeout: Duration::from_millis(d.timeout_ms),
        refresh: Duration::from_secs(d.refresh_secs),
    };
    let deps = dsr_discovery::assembly::Deps {
        validator: trust.validator(dsr_discovery::SERVICE_NAME),
        signer: service_signer(
            cfg,
            &d.service_key_file,
            "discovery",
            &d.service_token_issuer,
        )?,
    };
    Ok(dsr_discovery::assembly::build(settings, deps)?)
}

/// The signer of a service's outgoing tokens: its key file (created when
/// missing; `<data_dir>/keys/<name>-service.pem` by default), with its JWKS
/// written to `<data_dir>/<name>-jwks.json` for the callees to trust. Under
/// `dsr up` the key is the development key, under its own key id.
pub(crate) fn service_signer(
    cfg: &Config,
    key_file: &str,
    name: &str,
    issuer: &str,
) -> anyhow::Result<Arc<dsr_auth::TokenSigner>> {
    let key_file = if key_file.is_empty() {
        cfg.data_dir.join(format!("keys/{name}-service.pem"))
    } else {
        PathBuf::from(key_file)
    };
    let dev_kid = crate::dev::load_dev_key(&cfg.data_dir)
        .ok()
        .filter(|_| key_file == cfg.data_dir.join("dev-signing-key.pem"))
        .map(|k| k.kid);
    let (signer, jwks) =
        dsr_auth::TokenSigner::from_key_file(&key_file, dev_kid.as_deref(), issuer)?;
    std::fs::create_dir_all(&cfg.data_dir)?;
    std::fs::write(cfg.data_dir.join(format!("{name}-jwks.json")), jwks)?;
    Ok(Arc::new(signer))
}

/// The controller group: the configured file, else the shipped one.
pub(crate) fn group(cfg: &Config) -> anyhow::Result<Arc<dsr_domain::group::Group>> {
    if cfg.group_file.is_empty() {
        return Ok(Arc::new(dsr_domain::group::Group::shipped()));
    }
    let text = std::fs::read_to_string(&cfg.group_file)
        .with_context(|| format!("cannot read group_file {}", cfg.group_file))?;
    Ok(Arc::new(
        dsr_domain::group::Group::from_toml(&text)
            .with_context(|| format!("invalid configuration: group_file {}", cfg.group_file))?,
    ))
}

/// The letters to people: the shipped ones, or `file`'s, checked.
pub(crate) fn letters(file: &str) -> anyhow::Result<dsr_domain::letters::Letters> {
    if file.is_empty() {
        return Ok(dsr_domain::letters::Letters::shipped());
    }
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read orchestrator.letters_file {file}"))?;
    dsr_domain::letters::Letters::from_toml(&text)
        .with_context(|| format!("invalid configuration: orchestrator.letters_file {file}"))
}

/// Export: the package index in its database, sealed files on disk, the
/// data systems of `discovery.systems` and the registry as sources.
fn prepare_export(db: dsr_store::Db, cfg: &Config, trust: &Trust) -> anyhow::Result<ServiceSet> {
    let e = &cfg.export;
    if e.registry_endpoint.is_empty() {
        bail!("invalid configuration: export.registry_endpoint is required");
    }
    let settings = dsr_export::assembly::Settings {
        systems: system_endpoints(cfg),
        registry_endpoint: e.registry_endpoint.clone(),
        registry_audience: e.registry_audience.clone(),
        package_dir: if e.package_dir.is_empty() {
            cfg.data_dir.join("packages")
        } else {
            PathBuf::from(&e.package_dir)
        },
        package_ttl: chrono::Duration::days(i64::from(e.package_ttl_days)),
    };
    let deps = dsr_export::assembly::Deps {
        db,
        validator: trust.validator(dsr_export::SERVICE_NAME),
        signer: service_signer(cfg, &e.service_key_file, "export", &e.service_token_issuer)?,
        master_key: crate::dev::secret_key(
            &e.master_key_file,
            &cfg.data_dir.join("keys/export-master.key"),
        )?,
        group: group(cfg)?,
        clock: clock(cfg),
    };
    Ok(dsr_export::assembly::build(settings, deps)?)
}

/// Erasure: plans, receipts, holds and tombstones in its database; the data
/// systems of `discovery.systems`, called with erasure's own service token.
fn prepare_erasure(db: dsr_store::Db, cfg: &Config, trust: &Trust) -> anyhow::Result<ServiceSet> {
    let e = &cfg.erasure;
    if e.registry_endpoint.is_empty() {
        bail!("invalid configuration: erasure.registry_endpoint is required");
    }
    let settings = dsr_erasure::assembly::Settings {
        systems: system_endpoints(cfg),
        registry_endpoint: e.registry_endpoint.clone(),
        registry_audience: e.registry_audience.clone(),
        sweep_every: (e.sweep_every_hours > 0)
            .then(|| Duration::from_secs(e.sweep_every_hours.saturating_mul(3600))),
        sweep_batch_size: e.sweep_batch_size,
        unlawful_transfers: dsr_erasure::model::UnlawfulTransfers::parse(&e.unlawful_transfers)
            .unwrap_or_default(),
    };
    let deps = dsr_erasure::assembly::Deps {
        db,
        validator: trust.validator(dsr_erasure::SERVICE_NAME),
        signer: service_signer(cfg, &e.service_key_file, "erasure", &e.service_token_issuer)?,
        policy: cfg.retention_policy()?,
        tombstone_key: crate::dev::secret_key(
            &e.tombstone_key_file,
            &cfg.data_dir.join("keys/erasure-tombstone.key"),
        )?,
        clock: clock(cfg),
    };
    Ok(dsr_erasure::assembly::build(settings, deps)?)
}

/// The data systems of `discovery.systems`, which discovery, export and
/// erasure call.
fn system_endpoints(cfg: &Config) -> Vec<dsr_mesh_client::SystemEndpoint> {
    cfg.discovery
        .systems
        .iter()
        .map(|s| dsr_mesh_client::SystemEndpoint {
            id: s.id.clone(),
            endpoint: s.endpoint.clone(),
            operator_recipient_id: s.operator_recipient_id.clone(),
        })
        .collect()
}

/// The orchestrator: the ledger in its database, the API, and (unless
/// `orchestrator.workers` is 0) a worker that stops taking work at SIGTERM.
fn prepare_orchestrator(
    db: dsr_store::Db,
    leases: Option<dsr_store::Db>,
    reads: Option<dsr_store::Db>,
    cfg: &Config,
    trust: &Trust,
) -> anyhow::Result<ServiceSet> {
    use dsr_orchestrator as orch;
    let o = &cfg.orchestrator;
    for (name, url) in [
        ("orchestrator.identity_endpoint", &o.identity_endpoint),
        ("orchestrator.discovery_endpoint", &o.discovery_endpoint),
        ("orchestrator.export_endpoint", &o.export_endpoint),
        ("orchestrator.erasure_endpoint", &o.erasure_endpoint),
    ] {
        if url.is_empty() {
            bail!("invalid configuration: {name} is required");
        }
    }
    let letters = letters(&o.letters_file)?;
    if o.workers > 0 {
        let url = o.privacy_centre_url.as_str();
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains(' ') {
            bail!(
                "invalid configuration: orchestrator.privacy_centre_url must be the privacy centre's http(s) address (the letters send the person there), e.g. https://privacy.example.se; got {url:?}"
            );
        }
    }
    let jwks_file = if o.identity_jwks_file.is_empty() {
        cfg.data_dir.join("identity-jwks.json")
    } else {
        PathBuf::from(&o.identity_jwks_file)
    };
    let text = std::fs::read_to_string(&jwks_file).with_context(|| {
        format!(
            "cannot read the identity service's keys {} (orchestrator.identity_jwks_file)",
            jwks_file.display()
        )
    })?;
    let keys = KeySet::from_jwks_json(&text)
        .context("invalid configuration: orchestrator.identity_jwks_file")?;
    let verification_tokens = Arc::new(Validator::new(
        Arc::new(keys),
        ValidatorConfig {
            issuers: vec![dsr_identity::tokens::ISSUER.to_owned()],
            audience: dsr_identity::tokens::AUDIENCE.to_owned(),
            leeway_secs: cfg.auth.leeway_secs,
            grants: None,
        },
    ));
    let signer = service_signer(
        cfg,
        &o.service_key_file,
        "orchestrator",
        &o.service_token_issuer,
    )?;
    let worker_id = if o.worker_id.is_empty() {
        format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "orchestrator".into()),
            std::process::id()
        )
    } else {
        o.worker_id.clone()
    };
    let settings = orch::assembly::Settings {
        endpoints: orch::grpc::clients::Endpoints {
            identity: o.identity_endpoint.clone(),
            discovery: o.discovery_endpoint.clone(),
            export: o.export_endpoint.clone(),
            erasure: o.erasure_endpoint.clone(),
        },
        workers: o.workers,
        worker_id,
        lease: Duration::from_secs(o.lease_secs),
        poll: Duration::from_millis(o.poll_ms),
        letter_linger: Duration::from_millis(o.letter_linger_ms),
        backoff_base: Duration::from_millis(o.backoff_base_ms),
        backoff_max: Duration::from_secs(o.backoff_max_secs),
        max_attempts: o.max_attempts,
        call_timeout: Duration::from_secs(o.call_timeout_secs),
        approval_controllers: o
            .approval_controllers
            .iter()
            .filter_map(|c| dsr_domain::identity::Organisationsnummer::parse(c).ok())
            .collect(),
        assurance: orch::intake::AssurancePolicy::parse(&o.min_assurance).unwrap_or_default(),
        privacy_centre_url: o.privacy_centre_url.clone(),
        identity_retention: chrono::Duration::days(i64::from(o.identity_retention_days)),
        verification_expiry: chrono::Days::new(u64::from(o.verification_expiry_days)),
        complaint_response: chrono::TimeDelta::days(i64::from(o.complaint_response_days)),
        watch_streams: cfg.watch_streams(),
        watch_streams_per_caller: o.max_watch_streams_per_caller,
    };
    let deps = orch::assembly::Deps {
        db,
        leases,
        reads,
        validator: trust.validator(orch::SERVICE_NAME),
        verification_tokens,
        signer,
        letters,
        group: group(cfg)?,
        clock: clock(cfg),
        stop: stop_signal(),
    };
    Ok(orch::assembly::build(settings, deps)?)
}

/// A flag that turns true at SIGTERM or Ctrl-C: the workers stop taking
/// work and finish what they hold.
fn stop_signal() -> tokio::sync::watch::Receiver<bool> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        dsr_server::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    stop_rx
}
