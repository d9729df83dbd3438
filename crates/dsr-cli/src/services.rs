//! The catalogue of services the binary can serve, and how each is put
//! together from the configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use dsr_auth::{Grants, KeySet, Validator, ValidatorConfig};
use dsr_connector::signing::ReceiptSigner;
use dsr_domain::transfer::CountryTables;
use dsr_server::ServiceSet;
use dsr_system_sql::manifest::Manifest;
use dsr_system_sql::reference::Reference;
use dsr_transfer_registry as transfer;

use crate::config::Config;

/// A service of the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ServiceKind {
    /// The transfer registry (dsr.transfer.v1.TransferRegistry).
    TransferRegistry,
    /// The generic SQL connector (dsr.system.v1.DataSystem) over a manifest.
    SystemSql,
    /// The generic HTTP connector (dsr.system.v1.DataSystem) over a REST
    /// API an HTTP manifest describes.
    SystemHttp,
    /// A vendor without an API (dsr.system.v1.DataSystem and
    /// dsr.manual.v1.ManualTasks): every call becomes a task for a person
    /// at the vendor, answered through the task API.
    SystemManual,
    /// Identity verification (dsr.identity.v1.IdentityVerification).
    Identity,
    /// Discovery (dsr.discovery.v1.Discovery): the registry of data systems.
    Discovery,
    /// Export (dsr.export.v1.Export): access and portability packages.
    Export,
    /// Erasure (dsr.erasure.v1.Erasure): plans, receipts, deferred
    /// erasures, legal holds, replay after a restore.
    Erasure,
    /// The orchestrator (dsr.orchestrator.v1.Requests): the portals' API and
    /// the work queue.
    Orchestrator,
    /// The privacy centre: the person's web pages (HTTP, not gRPC), over the
    /// orchestrator, identity and export.
    Portal,
}

impl ServiceKind {
    /// The name used on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::TransferRegistry => "transfer-registry",
            Self::SystemSql => "system-sql",
            Self::SystemHttp => "system-http",
            Self::SystemManual => "system-manual",
            Self::Identity => "identity",
            Self::Discovery => "discovery",
            Self::Export => "export",
            Self::Erasure => "erasure",
            Self::Orchestrator => "orchestrator",
            Self::Portal => "portal",
        }
    }

    /// The service named `name` on the command line.
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        [
            Self::TransferRegistry,
            Self::SystemSql,
            Self::SystemHttp,
            Self::SystemManual,
            Self::Identity,
            Self::Discovery,
            Self::Export,
            Self::Erasure,
            Self::Orchestrator,
            Self::Portal,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }

    /// Applies the service's pending migrations; returns how many there were.
    pub(crate) async fn migrate(self, db: &dsr_store::Db) -> anyhow::Result<usize> {
        let pending = self.pending(db).await?;
        match self {
            Self::TransferRegistry => {
                dsr_store::migrate::<transfer::migration::Migrator>(db).await?
            }
            Self::SystemSql | Self::SystemHttp => {
                dsr_store::migrate::<dsr_connector::migration::Migrator>(db).await?
            }
            Self::SystemManual => {
                dsr_store::migrate::<dsr_connector::migration::Migrator>(db).await?;
                dsr_store::migrate::<dsr_system_sql::manual::Migrator>(db).await?
            }
            Self::Identity => dsr_store::migrate::<dsr_identity::migration::Migrator>(db).await?,
            Self::Export => dsr_store::migrate::<dsr_export::migration::Migrator>(db).await?,
            Self::Erasure => dsr_store::migrate::<dsr_erasure::migration::Migrator>(db).await?,
            Self::Orchestrator => {
                dsr_store::migrate::<dsr_orchestrator::migration::Migrator>(db).await?
            }
            // Discovery and the privacy centre keep no state of their own.
            Self::Discovery | Self::Portal => {}
        }
        Ok(pending)
    }

    /// The service's migrations not yet applied.
    pub(crate) async fn pending(self, db: &dsr_store::Db) -> anyhow::Result<usize> {
        Ok(match self {
            Self::TransferRegistry => {
                dsr_store::pending::<transfer::migration::Migrator>(db).await?
            }
            Self::SystemSql | Self::SystemHttp => {
                dsr_store::pending::<dsr_connector::migration::Migrator>(db).await?
            }
            Self::SystemManual => {
                dsr_store::pending::<dsr_connector::migration::Migrator>(db).await?
                    + dsr_store::pending::<dsr_system_sql::manual::Migrator>(db).await?
            }
            Self::Identity => dsr_store::pending::<dsr_identity::migration::Migrator>(db).await?,
            Self::Export => dsr_store::pending::<dsr_export::migration::Migrator>(db).await?,
            Self::Erasure => dsr_store::pending::<dsr_erasure::migration::Migrator>(db).await?,
            Self::Orchestrator => {
                dsr_store::pending::<dsr_orchestrator::migration::Migrator>(db).await?
            }
            Self::Discovery | Self::Portal => 0,
        })
    }
}

/// Every scope a development token may carry.
pub(crate) const ALL_SCOPES: &[&str] = &[
    transfer::grpc::SCOPE_READ,
    transfer::grpc::SCOPE_WRITE,
    dsr_system_sql::grpc::SCOPE_DESCRIBE,
    dsr_system_sql::grpc::SCOPE_READ,
    dsr_system_sql::grpc::SCOPE_WRITE,
    dsr_identity::grpc::SCOPE_VERIFY,
    dsr_identity::grpc::SCOPE_ATTEST,
    dsr_identity::grpc::SCOPE_NOTIFY,
    dsr_discovery::grpc::SCOPE_LOCATE,
    dsr_discovery::grpc::SCOPE_READ,
    dsr_export::grpc::SCOPE_BUILD,
    dsr_export::grpc::SCOPE_READ,
    dsr_erasure::grpc::SCOPE_EXECUTE,
    dsr_erasure::grpc::SCOPE_READ,
    dsr_erasure::grpc::SCOPE_HOLDS,
    dsr_erasure::grpc::SCOPE_REPLAY,
    dsr_erasure::grpc::SCOPE_SWEEP,
    dsr_orchestrator::grpc::SCOPE_SUBMIT,
    dsr_orchestrator::grpc::SCOPE_READ,
    dsr_orchestrator::grpc::SCOPE_MANAGE,
    dsr_orchestrator::grpc::incidents::SCOPE_REPORT,
    dsr_orchestrator::grpc::incidents::SCOPE_MANAGE,
    dsr_system_sql::manual::api::SCOPE_READ,
    dsr_system_sql::manual::api::SCOPE_ANSWER,
];

/// Every audience a development token may name: the registry and the
/// reference systems.
pub(crate) fn all_audiences() -> Vec<String> {
    let mut v = vec![
        transfer::SERVICE_NAME.to_owned(),
        dsr_identity::SERVICE_NAME.to_owned(),
        dsr_discovery::SERVICE_NAME.to_owned(),
        dsr_export::SERVICE_NAME.to_owned(),
        dsr_erasure::SERVICE_NAME.to_owned(),
        dsr_orchestrator::SERVICE_NAME.to_owned(),
    ];
    v.extend(Reference::ALL.iter().map(|r| r.id().to_owned()));
    v
}

/// What a data system instance serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SystemSource {
    /// A reference system (schema created and seeded when empty).
    Reference(Reference),
    /// A manifest over an existing database.
    Manifest(PathBuf),
    /// An HTTP manifest over a REST API.
    Http(PathBuf),
    /// A manual manifest: a vendor without an API.
    Manual(PathBuf),
}

/// One running service: its kind, its name (database file, schema, banner)
/// and, for a data system, what it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Instance {
    pub(crate) kind: ServiceKind,
    pub(crate) name: String,
    pub(crate) system: Option<SystemSource>,
}

impl Instance {
    /// The transfer registry.
    pub(crate) fn registry() -> Self {
        Self {
            kind: ServiceKind::TransferRegistry,
            name: "transfer-registry".into(),
            system: None,
        }
    }

    /// Identity verification.
    pub(crate) fn identity() -> Self {
        Self {
            kind: ServiceKind::Identity,
            name: "identity".into(),
            system: None,
        }
    }

    /// Discovery.
    pub(crate) fn discovery() -> Self {
        Self {
            kind: ServiceKind::Discovery,
            name: "discovery".into(),
            system: None,
        }
    }

    /// Export.
    pub(crate) fn export() -> Self {
        Self {
            kind: ServiceKind::Export,
            name: "export".into(),
            system: None,
        }
    }

    /// Erasure.
    pub(crate) fn erasure() -> Self {
        Self {
            kind: ServiceKind::Erasure,
            name: "erasure".into(),
            system: None,
        }
    }

    /// The orchestrator.
    pub(crate) fn orchestrator() -> Self {
        Self {
            kind: ServiceKind::Orchestrator,
            name: "orchestrator".into(),
            system: None,
        }
    }

    /// A reference data system.
    pub(crate) fn reference(r: Reference) -> Self {
        Self {
            kind: ServiceKind::SystemSql,
            name: format!("system-{}", r.id()),
            system: Some(SystemSource::Reference(r)),
        }
    }

    /// The instance `dsr serve <kind>` runs with this configuration.
    pub(crate) fn from_config(kind: ServiceKind, cfg: &Config) -> anyhow::Result<Self> {
        match kind {
            ServiceKind::TransferRegistry => Ok(Self::registry()),
            ServiceKind::Identity => Ok(Self::identity()),
            ServiceKind::Discovery => Ok(Self::discovery()),
            ServiceKind::Export => Ok(Self::export()),
            ServiceKind::Erasure => Ok(Self::erasure()),
            ServiceKind::Orchestrator => Ok(Self::orchestrator()),
            ServiceKind::Portal => Ok(Self {
                kind,
                name: "portal".into(),
                system: None,
            }),
            ServiceKind::SystemSql => {
                if let Some(r) = Reference::parse(&cfg.system_sql.reference) {
                    Ok(Self::reference(r))
                } else if !cfg.system_sql.manifest.is_empty() {
                    let path = PathBuf::from(&cfg.system_sql.manifest);
                    let m = Manifest::load(&path)?;
                    Ok(Self {
                        kind,
                        name: format!("system-{}", m.system.id),
                        system: Some(SystemSource::Manifest(path)),
                    })
                } else {
                    bail!(
                        "invalid configuration: system-sql needs system_sql.manifest (--manifest) or system_sql.reference (--reference)"
                    )
                }
            }
            ServiceKind::SystemHttp => {
                if cfg.system_sql.manifest.is_empty() {
                    bail!(
                        "invalid configuration: system-http needs its HTTP manifest: system_sql.manifest (--manifest)"
                    );
                }
                let path = PathBuf::from(&cfg.system_sql.manifest);
                let m = dsr_system_sql::http::manifest::HttpManifest::load(&path)?;
                Ok(Self {
                    kind,
                    name: format!("system-{}", m.system.id),
                    system: Some(SystemSource::Http(path)),
                })
            }
            ServiceKind::SystemManual => {
                if cfg.system_sql.manifest.is_empty() {
                    bail!(
                        "invalid configuration: system-manual needs the vendor's manual manifest: system_sql.manifest (--manifest)"
                    );
                }
                let path = PathBuf::from(&cfg.system_sql.manifest);
                let m = dsr_system_sql::manual::manifest::ManualManifest::load(&path)?;
                Ok(Self {
                    kind,
                    name: format!("system-{}", m.system.id),
                    system: Some(SystemSource::Manual(path)),
                })
            }
        }
    }

    /// The gRPC service names it serves.
    pub(crate) fn grpc_names(&self) -> &'static [&'static str] {
        match self.kind {
            ServiceKind::TransferRegistry => &["dsr.transfer.v1.TransferRegistry"],
            ServiceKind::SystemSql | ServiceKind::SystemHttp => &["dsr.system.v1.DataSystem"],
            ServiceKind::SystemManual => &["dsr.system.v1.DataSystem", "dsr.manual.v1.ManualTasks"],
            ServiceKind::Identity => &["dsr.identity.v1.IdentityVerification"],
            ServiceKind::Discovery => &["dsr.discovery.v1.Discovery"],
            ServiceKind::Export => &["dsr.export.v1.Export"],
            ServiceKind::Erasure => &["dsr.erasure.v1.Erasure"],
            ServiceKind::Orchestrator => &["dsr.orchestrator.v1.Requests"],
            ServiceKind::Portal => &[],
        }
    }

    /// Its database URL and, on PostgreSQL, its schema.
    pub(crate) fn database(&self, cfg: &Config) -> (String, Option<String>) {
        if cfg.database.url.is_empty() {
            (
                dsr_store::sqlite_url(&cfg.data_dir.join(format!("{}.db", self.name))),
                None,
            )
        } else {
            (
                cfg.database.url.clone(),
                Some(format!("dsr_{}", self.name.replace('-', "_"))),
            )
        }
    }

    /// Opens its database.
    pub(crate) async fn connect(&self, cfg: &Config) -> anyhow::Result<dsr_store::Db> {
        self.connect_pool(cfg, cfg.database.max_connections).await
    }

    /// Opens its database with a pool of `max_connections`.
    pub(crate) async fn connect_pool(
        &self,
        cfg: &Config,
        max_connections: u32,
    ) -> anyhow::Result<dsr_store::Db> {
        let (url, schema) = self.database(cfg);
        mesh_backend(&self.kind, &url).with_context(|| format!("{}: database.url", self.name))?;
        let db = dsr_store::connect(
            &url,
            &dsr_store::StoreConfig {
                max_connections,
                min_connections: cfg.database.min_connections,
                schema,
                ..dsr_store::StoreConfig::default()
            },
        )
        .await
        .with_context(|| format!("{}: cannot open its database", self.name))?;
        Ok(db)
    }
}

/// MySQL and MariaDB hold data systems' tables, which the SQL connector
/// reads; the mesh's own services keep their state on SQLite or PostgreSQL
/// only (their migrations and queries are tested on those).
fn mesh_backend(kind: &ServiceKind, url: &str) -> anyhow::Result<()> {
    if dsr_store::backend_of(url)? == sea_orm::DbBackend::MySql && *kind != ServiceKind::SystemSql {
        bail!(
            "MySQL/MariaDB is for a data system's own database (dsr serve system-sql); \
             the mesh's services run on sqlite:// or postgres://"
        );
    }
    Ok(())
}

/// Verification keys and issuers for incoming tokens, and the
/// authorisation policy.
#[derive(Clone, Debug)]
pub(crate) struct Trust {
    /// Every key, the fetched ones included: what validators use.
    pub(crate) keys: dsr_auth::SharedKeys,
    pub(crate) issuers: Vec<String>,
    pub(crate) leeway_secs: u64,
    pub(crate) grants: Arc<Grants>,
    /// The keys from files and inline documents.
    fixed: Arc<KeySet>,
    /// Issuers whose keys are fetched: (where, its `jwks_uri`, issuer).
    remote: Vec<(String, String, String)>,
    refresh: Duration,
}

/// What the mesh's own services' tokens may carry: each only the scopes it
/// needs for the calls it makes. Nothing else may hold `system:write`.
pub(crate) fn mesh_grants() -> Grants {
    use dsr_system_sql::grpc as sys;
    Grants::default()
        .grant(
            "dsr-orchestrator",
            [
                dsr_identity::grpc::SCOPE_VERIFY,
                dsr_identity::grpc::SCOPE_NOTIFY,
                dsr_discovery::grpc::SCOPE_LOCATE,
                dsr_export::grpc::SCOPE_BUILD,
                dsr_erasure::grpc::SCOPE_EXECUTE,
            ],
        )
        .grant("dsr-discovery", [sys::SCOPE_DESCRIBE, sys::SCOPE_READ])
        // The privacy centre acts for one person per session: a portal's
        // scopes, never a case handler's.
        .grant(
            dsr_portal::ISSUER,
            [
                dsr_orchestrator::grpc::SCOPE_SUBMIT,
                dsr_orchestrator::grpc::SCOPE_READ,
                dsr_orchestrator::grpc::incidents::SCOPE_REPORT,
                dsr_identity::grpc::SCOPE_VERIFY,
                dsr_export::grpc::SCOPE_READ,
            ],
        )
        // The console acts for the signed-in case handler: a case handler's
        // scopes (each token carries only those the handler's roles give),
        // never a data system's.
        .grant(
            "dsr-console",
            dsr_portal::console::CASE_HANDLER_SCOPES.iter().copied(),
        )
        .grant(
            "dsr-export",
            [
                sys::SCOPE_DESCRIBE,
                sys::SCOPE_READ,
                transfer::grpc::SCOPE_READ,
            ],
        )
        .grant(
            "dsr-erasure",
            [
                sys::SCOPE_DESCRIBE,
                sys::SCOPE_READ,
                sys::SCOPE_WRITE,
                transfer::grpc::SCOPE_READ,
            ],
        )
}

/// The scopes a person's or a case handler's token may carry (portals and
/// the CLI): everything but the data systems' own, which only the mesh's
/// services hold, and sending letters, which only the orchestrator does (the
/// identity service is no relay for anyone's mail).
pub(crate) fn people_scopes() -> Vec<&'static str> {
    ALL_SCOPES
        .iter()
        .copied()
        .filter(|s| !s.starts_with("system:") && *s != dsr_identity::grpc::SCOPE_NOTIFY)
        .collect()
}

impl Trust {
    /// The configured keys, each bound to its issuer (`auth.trusted`, or
    /// `auth.jwks_file`/`jwks` for a single `auth.issuers` entry), plus
    /// `extra` (JWKS file, issuer) pairs, under the mesh's grants, the
    /// configured ones and `extra_grants`.
    pub(crate) fn from_config(
        cfg: &Config,
        extra: &[(&Path, &str)],
        extra_grants: &Grants,
    ) -> anyhow::Result<Self> {
        let mut keys = KeySet::default();
        let mut issuers: Vec<String> = Vec::new();
        let mut docs: Vec<(String, String, String)> = Vec::new();
        let mut legacy: Vec<(String, String)> = Vec::new();
        if !cfg.auth.jwks_file.is_empty() {
            let text = std::fs::read_to_string(&cfg.auth.jwks_file)
                .with_context(|| format!("cannot read auth.jwks_file {}", cfg.auth.jwks_file))?;
            legacy.push((format!("auth.jwks_file {}", cfg.auth.jwks_file), text));
        }
        if !cfg.auth.jwks.is_empty() {
            legacy.push(("auth.jwks".into(), cfg.auth.jwks.clone()));
        }
        match (legacy.is_empty(), cfg.auth.issuers.as_slice()) {
            (true, _) => issuers.extend(cfg.auth.issuers.iter().cloned()),
            (false, [one]) => {
                docs.extend(legacy.into_iter().map(|(w, t)| (w, t, one.clone())));
                issuers.push(one.clone());
            }
            (false, []) => bail!("invalid configuration: auth.issuers is empty"),
            (false, _) => bail!(
                "invalid configuration: auth.jwks_file/auth.jwks hold the keys of several auth.issuers, so one issuer's key could sign for another: give each issuer its own keys in [[auth.trusted]] (issuer, jwks_file)"
            ),
        }
        let mut scope_claims = Vec::new();
        let mut remote = Vec::new();
        for (i, t) in cfg.auth.trusted.iter().enumerate() {
            if t.issuer.trim().is_empty() {
                bail!("invalid configuration: auth.trusted[{i}].issuer is empty");
            }
            match (
                t.jwks_file.is_empty(),
                t.jwks.is_empty(),
                t.jwks_uri.is_empty(),
            ) {
                (false, true, true) => {
                    let text = std::fs::read_to_string(&t.jwks_file).with_context(|| {
                        format!("cannot read auth.trusted[{i}].jwks_file {}", t.jwks_file)
                    })?;
                    docs.push((format!("auth.trusted[{i}]"), text, t.issuer.clone()));
                }
                (true, false, true) => {
                    docs.push((
                        format!("auth.trusted[{i}]"),
                        t.jwks.clone(),
                        t.issuer.clone(),
                    ));
                }
                (true, true, false) => {
                    let ok = reqwest::Url::parse(&t.jwks_uri)
                        .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.has_host());
                    if !ok {
                        bail!(
                            "invalid configuration: auth.trusted[{i}].jwks_uri must be an https:// URL, e.g. https://login.bolaget.se/.well-known/jwks.json"
                        );
                    }
                    remote.push((
                        format!("auth.trusted[{i}].jwks_uri"),
                        t.jwks_uri.clone(),
                        t.issuer.clone(),
                    ));
                }
                _ => bail!(
                    "invalid configuration: auth.trusted[{i}] needs exactly one of jwks_file, jwks or jwks_uri"
                ),
            }
            issuers.push(t.issuer.clone());
            let mut read = Vec::new();
            for (j, c) in t.scope_claims.iter().enumerate() {
                read.push(dsr_auth::ScopeClaim::parse(c).with_context(|| {
                    format!(
                        "invalid configuration: auth.trusted[{i}].scope_claims[{j}]: {c:?} is none of scope, scp, roles"
                    )
                })?);
            }
            if !read.is_empty() {
                scope_claims.push((t.issuer.clone(), read));
            }
        }
        for (path, issuer) in extra {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            docs.push((path.display().to_string(), text, (*issuer).to_owned()));
            issuers.push((*issuer).to_owned());
        }
        for (what, text, issuer) in docs {
            let set = KeySet::from_jwks_json(&text)
                .with_context(|| format!("invalid configuration: {what}"))?
                .bound_to(&issuer);
            keys.merge(set)
                .with_context(|| format!("invalid configuration: {what}"))?;
        }
        if keys.is_empty() && remote.is_empty() {
            bail!(
                "invalid configuration: no token verification keys (set auth.trusted, or auth.jwks_file with one auth.issuers entry)"
            );
        }
        if cfg.auth.jwks_refresh_secs == 0 {
            bail!("invalid configuration: auth.jwks_refresh_secs must be at least 1");
        }
        if issuers.is_empty() {
            bail!("invalid configuration: auth.issuers is empty");
        }
        issuers.sort();
        issuers.dedup();
        let mut configured = extra_grants.clone();
        for (issuer, scopes) in &cfg.auth.grants {
            if let Some(s) = scopes.iter().find(|s| !ALL_SCOPES.contains(&s.as_str())) {
                bail!("invalid configuration: auth.grants.\"{issuer}\": unknown scope {s}");
            }
            configured = configured.grant(issuer, scopes.iter().cloned());
        }
        // A configured grant replaces the built-in one.
        let builtin = mesh_grants();
        let mut grants = Grants::default();
        for issuer in builtin.issuers().chain(configured.issuers()) {
            let scopes = configured.of(issuer).or(builtin.of(issuer));
            grants = grants.grant(issuer, scopes.into_iter().flatten().cloned());
        }
        for (issuer, read) in scope_claims {
            grants = grants.scopes_in(&issuer, read);
        }
        if let Some(missing) = issuers.iter().find(|i| grants.of(i).is_none()) {
            bail!(
                "invalid configuration: auth.grants has no entry for issuer {missing}: list the scopes its tokens may carry"
            );
        }
        let fixed = Arc::new(keys);
        Ok(Self {
            keys: dsr_auth::SharedKeys::new(fixed.clone()),
            issuers,
            leeway_secs: cfg.auth.leeway_secs,
            grants: Arc::new(grants),
            fixed,
            remote,
            refresh: Duration::from_secs(cfg.auth.jwks_refresh_secs),
        })
    }

    /// Fetches the keys of the issuers trusted by `jwks_uri` now, then keeps
    /// them fresh in the background: again every `auth.jwks_refresh_secs`,
    /// sooner (at most every 30 s) after a token named a key id not yet
    /// known, every 30 s while a fetch fails; the last good keys of each
    /// issuer are kept meanwhile. Nothing to do without such issuers.
    pub(crate) async fn keep_keys_fresh(&self) {
        if self.remote.is_empty() {
            return;
        }
        let mut fetcher = KeyFetcher {
            keys: self.keys.clone(),
            fixed: self.fixed.clone(),
            remote: self.remote.clone(),
            fetched: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        };
        let refresh = self.refresh;
        let mut ok = fetcher.fetch().await;
        tokio::spawn(async move {
            const SOONEST: Duration = Duration::from_secs(30);
            let tick = refresh.min(Duration::from_secs(5));
            let mut last = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(tick).await;
                let since = last.elapsed();
                let due =
                    since >= refresh || (since >= SOONEST && (!ok || fetcher.keys.take_missed()));
                if due {
                    ok = fetcher.fetch().await;
                    last = tokio::time::Instant::now();
                }
            }
        });
    }

    pub(crate) fn validator(&self, audience: &str) -> Arc<Validator> {
        Arc::new(Validator::with_shared_keys(
            self.keys.clone(),
            ValidatorConfig {
                issuers: self.issuers.clone(),
                audience: audience.to_owned(),
                leeway_secs: self.leeway_secs,
                grants: Some(self.grants.clone()),
            },
        ))
    }
}

/// Fetches the keys of issuers trusted by `jwks_uri` and puts them, with
/// the fixed ones, into the keys validators share.
struct KeyFetcher {
    keys: dsr_auth::SharedKeys,
    fixed: Arc<KeySet>,
    /// (where, uri, issuer), as in [`Trust`].
    remote: Vec<(String, String, String)>,
    /// The last good keys of each remote issuer, in `remote`'s order.
    fetched: Vec<Option<KeySet>>,
    http: reqwest::Client,
}

impl KeyFetcher {
    /// One round: `true` when every issuer's keys were fetched.
    async fn fetch(&mut self) -> bool {
        self.fetched.resize_with(self.remote.len(), || None);
        let mut all = true;
        for (i, (what, uri, issuer)) in self.remote.iter().enumerate() {
            match fetch_jwks(&self.http, uri).await {
                Ok(set) => self.fetched[i] = Some(set.bound_to(issuer)),
                Err(e) => {
                    all = false;
                    tracing::warn!(at = %what, issuer = %issuer, error = %e, "cannot fetch an issuer's keys; keeping the last ones");
                }
            }
        }
        let mut keys = (*self.fixed).clone();
        for set in self.fetched.iter().flatten() {
            if let Err(e) = keys.merge(set.clone()) {
                tracing::warn!(error = %e, "fetched keys clash with configured ones; not used");
                return false;
            }
        }
        self.keys.replace(keys);
        all
    }
}

/// The JWKS document at `uri`.
async fn fetch_jwks(http: &reqwest::Client, uri: &str) -> anyhow::Result<KeySet> {
    let answer = http.get(uri).send().await?.error_for_status()?;
    let text = answer.text().await?;
    Ok(KeySet::from_jwks_json(&text)?)
}

/// How to treat the database schema at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Schema {
    /// Apply pending migrations.
    Migrate,
    /// Refuse to start while migrations are pending.
    Require,
}

/// Exports the connections of the pool `db` as `pool`'s.
fn watch_pool(pool: &str, db: &dsr_store::Db) {
    let watched = db.clone();
    dsr_telemetry::metrics::watch_pool(pool, move || {
        dsr_store::pool_stats(&watched).map_or_else(Default::default, |(open, idle, max)| {
            dsr_telemetry::metrics::PoolStats {
                open: open.into(),
                idle: u64::try_from(idle).unwrap_or(u64::MAX),
                max: max.into(),
            }
        })
    });
}

/// Opens an instance's database, applies (or requires) its migrations and
/// exports its pool's connections.
async fn open_database(
    inst: &Instance,
    cfg: &Config,
    schema: Schema,
) -> anyhow::Result<dsr_store::Db> {
    let db = inst.connect(cfg).await?;
    match schema {
        Schema::Migrate => {
            let applied = inst
                .kind
                .migrate(&db)
                .await
                .with_context(|| format!("{}: migration failed", inst.name))?;
            if applied > 0 {
                tracing::info!(service = %inst.name, applied, "migrations applied");
            }
        }
        Schema::Require => {
            let pending = inst.kind.pending(&db).await?;
            if pending > 0 {
                bail!(
                    "{}: the database has {pending} pending migrations: run `dsr migrate {}` (or set database.migrate_on_start)",
                    inst.name,
                    inst.kind.name()
                );
            }
        }
    }
    watch_pool(&inst.name, &db);
    Ok(db)
}

/// Builds the service set of `inst`: database, migrations, seed, handlers.
pub(crate) async fn prepare(
    inst: &Instance,
    cfg: &Config,
    trust: &Trust,
    schema: Schema,
) -> anyhow::Result<ServiceSet> {
    let mut set = ServiceSet::new();
    match (&inst.kind, &inst.system) {
        (ServiceKind::Portal, _) => bail!("the privacy centre is a web service, not a gRPC one"),
        // Discovery keeps no database.
        (ServiceKind::Discovery, _) => return prepare_discovery(cfg, trust),
        (ServiceKind::Export, _) => {
            let db = open_database(inst, cfg, schema).await?;
            return prepare_export(db, cfg, trust);
        }
        (ServiceKind::Orchestrator, _) => {
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
            return prepare_orchestrator(db, leases, cfg, trust);
        }
        (ServiceKind::Erasure, _) => {
            let db = open_database(inst, cfg, schema).await?;
            return prepare_erasure(db, cfg, trust);
        }
        (ServiceKind::TransferRegistry, _) => {
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
            let seed = transfer::seed::parse(&seed_text, &tables, clock(cfg).today())
                .with_context(|| {
                    format!(
                        "invalid seed {}",
                        if section.seed_file.is_empty() {
                            "(shipped)"
                        } else {
                            section.seed_file.as_str()
                        }
                    )
                })?;
            let registry = transfer::Registry::new(db, Arc::new(tables), Arc::new(seed.policy))
                .with_clock(clock(cfg));
            if section.seed {
                let created = registry.seed(seed.recipients).await?;
                if created > 0 {
                    tracing::info!(service = %inst.name, created, "registry seeded");
                }
            }
            transfer::metrics::spawn_reviews_gauge(
                registry.clone(),
                section.review_window_days,
                Duration::from_secs(300),
            );
            set.add(transfer::grpc::service(
                registry,
                trust.validator(transfer::SERVICE_NAME),
            ))
            .describe(dsr_proto::FILE_DESCRIPTOR_SET);
        }
        (ServiceKind::Identity, _) => {
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
            let hmac =
                crate::dev::secret_key(&id.hmac_key_file, &data.join("keys/identity-hmac.key"))?;
            let verifier = dsr_identity::verifier::Verifier::new(
                db,
                dsr_identity::verifier::Settings {
                    code_ttl: chrono::Duration::seconds(
                        i64::try_from(id.code_ttl_secs).unwrap_or(600),
                    ),
                    max_attempts: id.max_attempts,
                    per_hour: id.codes_per_hour,
                },
                notifier,
                issuer,
                hmac,
                idp,
            )
            .with_clock(clock(cfg));
            let verifier = if id.code_message_file.is_empty() {
                verifier
            } else {
                let text = std::fs::read_to_string(&id.code_message_file).with_context(|| {
                    format!(
                        "cannot read identity.code_message_file {}",
                        id.code_message_file
                    )
                })?;
                let message = dsr_identity::texts::CodeMessage::from_toml(&text).map_err(|e| {
                    anyhow::anyhow!(
                        "invalid configuration: identity.code_message_file {}: {e}",
                        id.code_message_file
                    )
                })?;
                verifier.with_code_message(message)
            };
            verifier.spawn_purge(Duration::from_secs(60));
            set.add(dsr_identity::grpc::service(
                verifier,
                trust.validator(dsr_identity::SERVICE_NAME),
            ))
            .describe(dsr_proto::FILE_DESCRIPTOR_SET);
        }
        (ServiceKind::SystemSql, source) => {
            let db = open_database(inst, cfg, schema).await?;
            let (manifest, file) = match source {
                Some(SystemSource::Reference(r)) => {
                    let rows = r
                        .ensure(
                            &db,
                            cfg.system_sql.seed_subjects,
                            cfg.system_sql.seed,
                            clock(cfg).today(),
                        )
                        .await
                        .with_context(|| {
                            format!("{}: cannot create or seed the reference system", r.id())
                        })?;
                    if rows > 0 {
                        tracing::info!(service = %inst.name, rows, "reference system seeded");
                    }
                    (
                        Manifest::parse(r.manifest(), r.manifest_name())?,
                        r.manifest_name().to_owned(),
                    )
                }
                Some(SystemSource::Manifest(path)) => {
                    (Manifest::load(path)?, path.display().to_string())
                }
                Some(SystemSource::Http(_) | SystemSource::Manual(_)) | None => {
                    bail!("{}: no SQL manifest", inst.name)
                }
            };
            dsr_system_sql::schema::check(&db, &manifest, &file).await?;
            let signer = receipt_signer(cfg, &manifest.system.id)?;
            let audience = manifest.system.id.clone();
            let system = dsr_system_sql::system::SqlSystem::new(
                db.clone(),
                Arc::new(manifest),
                signer,
                Arc::new(dsr_system_sql::grpc::ProtoReceipts),
            )
            .with_clock(clock(cfg));
            let reference = match source {
                Some(SystemSource::Reference(r)) => Some(*r),
                Some(
                    SystemSource::Manifest(_) | SystemSource::Http(_) | SystemSource::Manual(_),
                )
                | None => None,
            };
            spawn_system_jobs(
                system.clone(),
                db,
                reference,
                cfg.system_sql.jobs_interval_secs,
            );
            set.add(dsr_system_sql::grpc::service(
                system,
                trust.validator(&audience),
            ))
            .describe(dsr_proto::FILE_DESCRIPTOR_SET);
        }
        (ServiceKind::SystemHttp, source) => {
            let Some(SystemSource::Http(path)) = source else {
                bail!("{}: no HTTP manifest", inst.name);
            };
            let manifest = dsr_system_sql::http::manifest::HttpManifest::load(path)?;
            // The ledger (operations, idempotency keys) is the connector's
            // own database; the data stays behind the API.
            let db = open_database(inst, cfg, schema).await?;
            let signer = receipt_signer(cfg, &manifest.system.id)?;
            let audience = manifest.system.id.clone();
            let system = dsr_system_sql::http::HttpSystem::new(db, Arc::new(manifest), signer)
                .with_context(|| format!("{}: {}", inst.name, path.display()))?
                .with_clock(clock(cfg));
            set.add(dsr_system_sql::grpc::service(
                system,
                trust.validator(&audience),
            ))
            .describe(dsr_proto::FILE_DESCRIPTOR_SET);
        }
        (ServiceKind::SystemManual, source) => {
            let Some(SystemSource::Manual(path)) = source else {
                bail!("{}: no manual manifest", inst.name);
            };
            let manifest = dsr_system_sql::manual::manifest::ManualManifest::load(path)?;
            let texts = match &manifest.vendor.texts {
                None => dsr_system_sql::manual::texts::Texts::builtin(),
                Some(file) => {
                    let text = std::fs::read_to_string(file)
                        .with_context(|| format!("cannot read vendor.texts {file}"))?;
                    dsr_system_sql::manual::texts::Texts::parse(&text).map_err(|e| {
                        anyhow::anyhow!("invalid configuration: vendor.texts {file}: {e}")
                    })?
                }
            };
            // The tasks and the ledger are the connector's own database.
            let db = open_database(inst, cfg, schema).await?;
            let signer = receipt_signer(cfg, &manifest.system.id)?;
            let audience = manifest.system.id.clone();
            let system = dsr_system_sql::manual::ManualSystem::new(
                db,
                Arc::new(manifest),
                signer,
                notifier(cfg)?,
                texts,
            )
            .with_clock(clock(cfg));
            spawn_manual_jobs(system.clone(), cfg.system_sql.jobs_interval_secs);
            set.add(dsr_system_sql::grpc::service(
                system.clone(),
                trust.validator(&audience),
            ))
            .add(dsr_system_sql::manual::api::service(
                system,
                trust.validator(&audience),
            ))
            .describe(dsr_proto::FILE_DESCRIPTOR_SET);
        }
    }
    Ok(set)
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

/// The manual connector's reminders, escalations and clean-up, every
/// `every_secs` (0: none).
fn spawn_manual_jobs(system: dsr_system_sql::manual::ManualSystem, every_secs: u64) {
    if every_secs == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(every_secs));
        loop {
            tick.tick().await;
            match system.tick().await {
                Ok(r) => {
                    if r.reminded + r.escalated > 0 || r.purged > 0 {
                        tracing::info!(
                            reminded = r.reminded,
                            escalated = r.escalated,
                            purged = r.purged,
                            overdue = r.overdue,
                            "manual tasks"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = e.log_kind(), "manual tasks job failed"),
            }
        }
    });
}

/// The data system's background jobs, every `every_secs` (0: none): the
/// suppression list applied to records that arrived after an objection,
/// then, for the reference CRM, the lead scoring of new prospects (which
/// leaves out those who objected).
fn spawn_system_jobs(
    system: dsr_system_sql::system::SqlSystem,
    db: dsr_store::Db,
    reference: Option<Reference>,
    every_secs: u64,
) {
    if every_secs == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(every_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = system.enforce_objections().await {
                tracing::warn!(error = e.log_kind(), "cannot apply the suppression list");
                continue;
            }
            if let Some(r) = reference {
                let today = system.clock().today();
                match r.score_prospects(&db, today).await {
                    Ok((0, 0)) => {}
                    Ok((scored, cleared)) => {
                        tracing::info!(system = r.id(), scored, cleared, "lead scores updated");
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot score prospects"),
                }
            }
        }
    });
}

/// Discovery keeps no database: the systems come from the configuration.
fn prepare_discovery(cfg: &Config, trust: &Trust) -> anyhow::Result<ServiceSet> {
    let d = &cfg.discovery;
    let signer = service_signer(
        cfg,
        &d.service_key_file,
        "discovery",
        &d.service_token_issuer,
    )?;
    let endpoints = d
        .systems
        .iter()
        .map(|s| dsr_discovery::grpc::SystemEndpoint {
            id: s.id.clone(),
            endpoint: s.endpoint.clone(),
            operator_recipient_id: s.operator_recipient_id.clone(),
        })
        .collect();
    let systems = Arc::new(
        dsr_discovery::grpc::GrpcSystems::new(endpoints, signer)
            .map_err(|e| anyhow::anyhow!("invalid configuration: discovery.systems: {e}"))?,
    );
    let locator =
        dsr_discovery::locator::Locator::new(systems.clone(), Duration::from_millis(d.timeout_ms));
    locator.spawn_refresh(Duration::from_secs(d.refresh_secs));
    let mut set = ServiceSet::new();
    set.add(dsr_discovery::grpc::service(
        locator,
        systems,
        trust.validator(dsr_discovery::SERVICE_NAME),
    ))
    .describe(dsr_proto::FILE_DESCRIPTOR_SET);
    Ok(set)
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
    let signer = service_signer(cfg, &e.service_key_file, "export", &e.service_token_issuer)?;
    let systems: Vec<dsr_export::grpc::SystemEndpoint> = cfg
        .discovery
        .systems
        .iter()
        .map(|s| dsr_export::grpc::SystemEndpoint {
            id: s.id.clone(),
            endpoint: s.endpoint.clone(),
            operator_recipient_id: s.operator_recipient_id.clone(),
        })
        .collect();
    let sources = dsr_export::grpc::GrpcSources::new(
        &systems,
        &e.registry_endpoint,
        &e.registry_audience,
        signer,
    )
    .map_err(|err| anyhow::anyhow!("invalid configuration: export: {err}"))?;
    let master = crate::dev::secret_key(
        &e.master_key_file,
        &cfg.data_dir.join("keys/export-master.key"),
    )?;
    let dir = if e.package_dir.is_empty() {
        cfg.data_dir.join("packages")
    } else {
        PathBuf::from(&e.package_dir)
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the package directory {}", dir.display()))?;
    let packages =
        dsr_export::store::Packages::new(db, dir, dsr_export::crypt::MasterKey::new(&master))
            .with_clock(clock(cfg));
    packages.spawn_purge(Duration::from_secs(300));
    let exporter = dsr_export::exporter::Exporter::new(
        Arc::new(sources),
        packages,
        group(cfg)?,
        chrono::Duration::days(i64::from(e.package_ttl_days)),
    );
    let mut set = ServiceSet::new();
    set.add(dsr_export::grpc::service(
        exporter,
        trust.validator(dsr_export::SERVICE_NAME),
    ))
    .describe(dsr_proto::FILE_DESCRIPTOR_SET);
    Ok(set)
}

/// Erasure: plans, receipts, holds and tombstones in its database; the data
/// systems of `discovery.systems`, called with erasure's own service token.
fn prepare_erasure(db: dsr_store::Db, cfg: &Config, trust: &Trust) -> anyhow::Result<ServiceSet> {
    let e = &cfg.erasure;
    let signer = service_signer(cfg, &e.service_key_file, "erasure", &e.service_token_issuer)?;
    let systems: Vec<dsr_erasure::grpc::SystemEndpoint> = cfg
        .discovery
        .systems
        .iter()
        .map(|s| dsr_erasure::grpc::SystemEndpoint {
            id: s.id.clone(),
            endpoint: s.endpoint.clone(),
            operator_recipient_id: s.operator_recipient_id.clone(),
        })
        .collect();
    if e.registry_endpoint.is_empty() {
        bail!("invalid configuration: erasure.registry_endpoint is required");
    }
    dsr_erasure::metrics::start_at_zero(&systems.iter().map(|s| s.id.clone()).collect::<Vec<_>>());
    let grpc_systems = dsr_erasure::grpc::GrpcSystems::new(&systems, signer.clone())
        .map_err(|err| anyhow::anyhow!("invalid configuration: erasure: {err}"))?;
    let registry =
        dsr_erasure::grpc::GrpcRegistry::new(&e.registry_endpoint, &e.registry_audience, signer)
            .map_err(|err| anyhow::anyhow!("invalid configuration: erasure: {err}"))?;
    let key = crate::dev::secret_key(
        &e.tombstone_key_file,
        &cfg.data_dir.join("keys/erasure-tombstone.key"),
    )?;
    let eraser = dsr_erasure::eraser::Eraser::new(
        Arc::new(grpc_systems),
        Arc::new(registry),
        dsr_erasure::store::Store::new(db),
        Arc::new(cfg.retention_policy()?),
        dsr_erasure::eraser::IdentityHasher::new(key),
    )
    .with_clock(clock(cfg))
    .with_unlawful_transfers(
        dsr_erasure::model::UnlawfulTransfers::parse(&e.unlawful_transfers).unwrap_or_default(),
    );
    if e.sweep_every_hours > 0 {
        eraser.spawn_schedule(
            Duration::from_secs(e.sweep_every_hours.saturating_mul(3600)),
            e.sweep_batch_size,
        );
    }
    let mut set = ServiceSet::new();
    set.add(dsr_erasure::grpc::service(
        eraser,
        trust.validator(dsr_erasure::SERVICE_NAME),
    ))
    .describe(dsr_proto::FILE_DESCRIPTOR_SET);
    Ok(set)
}

/// The orchestrator: the ledger in its database, the API, and (unless
/// `orchestrator.workers` is 0) a worker that stops taking work at SIGTERM.
fn prepare_orchestrator(
    db: dsr_store::Db,
    leases: Option<dsr_store::Db>,
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
    let letters_for_drafts = letters.clone();
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
    let mesh = Arc::new(
        orch::grpc::clients::GrpcMesh::new(
            &orch::grpc::clients::Endpoints {
                identity: o.identity_endpoint.clone(),
                discovery: o.discovery_endpoint.clone(),
                export: o.export_endpoint.clone(),
                erasure: o.erasure_endpoint.clone(),
            },
            signer,
        )
        .map_err(|e| anyhow::anyhow!("invalid configuration: orchestrator: {e}"))?,
    );
    let mut ledger =
        orch::ledger::Ledger::new(db, dsr_domain::deadline::HolidayCalendar::swedish())
            .with_clock(clock(cfg));
    if let Some(leases) = leases {
        ledger = ledger.with_lease_pool(leases);
    }
    let wake = Arc::new(tokio::sync::Notify::new());
    let (changes, _) = tokio::sync::broadcast::channel(1024);
    let metrics = orch::metrics::Metrics::new();
    orch::metrics::spawn_request_gauges(ledger.clone(), Duration::from_secs(30));
    if o.workers > 0 {
        let worker_id = if o.worker_id.is_empty() {
            format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "orchestrator".into()),
                std::process::id()
            )
        } else {
            o.worker_id.clone()
        };
        let worker = orch::worker::Worker::new(
            ledger.clone(),
            orch::worker::Mesh {
                verification: mesh.clone(),
                discovery: mesh.clone(),
                export: mesh.clone(),
                erasure: mesh.clone(),
            },
            orch::worker::WorkerConfig {
                worker_id: worker_id.clone(),
                lease: Duration::from_secs(o.lease_secs),
                poll: Duration::from_millis(o.poll_ms),
                concurrency: o.workers,
                backoff_base: Duration::from_millis(o.backoff_base_ms),
                backoff_max: Duration::from_secs(o.backoff_max_secs),
                max_attempts: o.max_attempts,
                call_timeout: Duration::from_secs(o.call_timeout_secs),
                approval_controllers: o
                    .approval_controllers
                    .iter()
                    .filter_map(|c| dsr_domain::identity::Organisationsnummer::parse(c).ok())
                    .collect(),
                assurance: orch::intake::AssurancePolicy::parse(&o.min_assurance)
                    .unwrap_or_default(),
            },
            wake.clone(),
            changes.clone(),
            metrics,
        );
        let sender = orch::letters::Sender::new(
            ledger.clone(),
            mesh.clone(),
            letters,
            group(cfg)?,
            orch::letters::SenderConfig {
                worker_id: format!("{worker_id}/letters"),
                lease: Duration::from_secs(o.lease_secs),
                poll: Duration::from_millis(o.poll_ms),
                backoff_base: Duration::from_millis(o.backoff_base_ms),
                backoff_max: Duration::from_secs(o.backoff_max_secs),
                max_attempts: o.max_attempts,
                call_timeout: Duration::from_secs(o.call_timeout_secs),
                privacy_centre_url: o.privacy_centre_url.clone(),
            },
            changes.clone(),
        );
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            dsr_server::shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        tokio::spawn(sender.run(stop_rx.clone()));
        tokio::spawn(worker.run(stop_rx));
        // The person's identities leave the ledger once a request has been
        // answered for good and its retention passed; a request whose
        // person never proved who they are ends after its time.
        let purging = ledger.clone();
        let keep = chrono::Duration::days(i64::from(o.identity_retention_days));
        let unverified = chrono::Days::new(u64::from(o.verification_expiry_days));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            loop {
                every.tick().await;
                let today = purging.clock().now().date_naive();
                match purging.expire_unverified(today - unverified).await {
                    Ok(ended) if !ended.is_empty() => tracing::info!(
                        ended = ended.len(),
                        "requests never verified ended (refused for identity)"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "ending unverified requests failed"),
                }
                let before = purging.clock().now() - keep;
                match purging.purge_identities(before).await {
                    Ok(n) if n > 0 => {
                        tracing::info!(purged = n, "identities purged from answered requests")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "identity purge failed"),
                }
            }
        });
    }
    // One reader of changes made by other replicas, for every Watch stream.
    tokio::spawn(orch::feed::run(
        ledger.clone(),
        changes.clone(),
        Duration::from_secs(1),
    ));
    let incident_deps = orch::grpc::incidents::IncidentDeps {
        ledger: ledger.clone(),
        discovery: mesh.clone(),
        letters: Arc::new(letters_for_drafts),
        group: group(cfg)?,
        complaint_response: chrono::TimeDelta::days(i64::from(o.complaint_response_days)),
        call_timeout: Duration::from_secs(o.call_timeout_secs.max(60)),
    };
    tokio::spawn(orch::metrics::incident_gauges(
        ledger.clone(),
        Duration::from_secs(30),
    ));
    let deps = orch::grpc::Deps {
        intake: orch::intake::Intake::new(ledger.clone(), verification_tokens, mesh)
            .with_assurance(
                orch::intake::AssurancePolicy::parse(&o.min_assurance).unwrap_or_default(),
            ),
        ledger,
        group: group(cfg)?,
        wake,
        changes,
        watch_slots: orch::grpc::WatchSlots::new(
            cfg.watch_streams(),
            o.max_watch_streams_per_caller,
        ),
    };
    let mut set = ServiceSet::new();
    set.add(orch::grpc::service(
        deps,
        trust.validator(orch::SERVICE_NAME),
    ))
    .describe(dsr_proto::FILE_DESCRIPTOR_SET);
    let (incidents, complaints) =
        orch::grpc::incidents::services(incident_deps, trust.validator(orch::SERVICE_NAME));
    set.add(incidents).add(complaints);
    Ok(set)
}

#[cfg(test)]
mod tests {
    use dsr_auth::ScopeRule;
    use prost::Message as _;

    use super::{ALL_SCOPES, ServiceKind, Trust, mesh_backend, mesh_grants, people_scopes};
    use crate::config::{Config, TrustedIssuer};

    /// An identity provider configured to be read from `scp` and `roles`
    /// (Entra ID) gives its case handlers' scopes from them, within its
    /// grant; an unknown claim name is refused at start.
    #[test]
    fn a_providers_scopes_are_read_from_its_configured_claims() {
        let entra = "https://login.microsoftonline.com/tenant/v2.0";
        let pair = dsr_auth::generate_ed25519("entra-1").unwrap();
        let mut cfg = Config::default();
        cfg.auth.trusted.push(TrustedIssuer {
            issuer: entra.to_owned(),
            jwks_file: String::new(),
            jwks: pair.jwks_json.clone(),
            jwks_uri: String::new(),
            scope_claims: vec!["scp".into(), "roles".into()],
        });
        cfg.auth.grants.insert(
            entra.to_owned(),
            vec!["requests:read".into(), "requests:manage".into()],
        );
        let trust = Trust::from_config(&cfg, &[], &dsr_auth::Grants::default()).unwrap();
        let signer =
            dsr_auth::TokenSigner::from_ed25519_pem(&pair.private_pem, &pair.kid, entra).unwrap();
        let now = dsr_auth::now_secs();
        let token = signer
            .sign(&dsr_auth::Claims {
                sub: "handler@bolaget.se".into(),
                iss: entra.into(),
                aud: dsr_auth::Audience::One("dsr-orchestrator".into()),
                exp: now + 300,
                nbf: Some(now),
                iat: Some(now),
                scope: String::new(),
                scp: Some(dsr_auth::ScopeList::Spaced("requests:read".into())),
                roles: Some(vec!["requests:manage".into()]),
                jti: None,
            })
            .unwrap();
        let p = trust
            .validator("dsr-orchestrator")
            .validate(&token)
            .unwrap();
        assert!(
            p.has_scope("requests:read") && p.has_scope("requests:manage"),
            "{p:?}"
        );
        cfg.auth.trusted[0].scope_claims = vec!["groups".into()];
        let err = Trust::from_config(&cfg, &[], &dsr_auth::Grants::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.trusted[0].scope_claims[0]"), "{err}");
    }

    /// An identity provider trusted by its `jwks_uri`: its keys are fetched
    /// over HTTP at start, and fetched again, so that once it rotates to a
    /// new key (and drops the old) tokens signed with the new key verify
    /// and the old key's no longer do, without a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_from_a_jwks_uri_are_fetched_and_refreshed() {
        use std::sync::{Arc, Mutex};
        let idp = "https://login.bolaget.se";
        let old = dsr_auth::generate_ed25519("idp-2026-11").unwrap();
        let new = dsr_auth::generate_ed25519("idp-2026-12").unwrap();
        // The identity provider: serves whatever JWKS it holds now, and
        // counts how often it was asked.
        let published = Arc::new(Mutex::new((old.jwks_json.clone(), 0u32)));
        let served = published.clone();
        let app = axum::Router::new().route(
            "/.well-known/jwks.json",
            axum::routing::get(move || {
                let served = served.clone();
                async move {
                    let mut s = served.lock().unwrap();
                    s.1 += 1;
                    s.0.clone()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let mut cfg = Config::default();
        cfg.auth.trusted.push(TrustedIssuer {
            issuer: idp.to_owned(),
            jwks_file: String::new(),
            jwks: String::new(),
            jwks_uri: format!("http://{addr}/.well-known/jwks.json"),
            scope_claims: vec![],
        });
        cfg.auth
            .grants
            .insert(idp.to_owned(), vec!["requests:read".into()]);
        cfg.auth.jwks_refresh_secs = 1;
        let trust = Trust::from_config(&cfg, &[], &dsr_auth::Grants::default()).unwrap();
        trust.keep_keys_fresh().await;
        let validator = trust.validator("dsr-orchestrator");
        let token = |pair: &dsr_auth::DevKeyPair| {
            dsr_auth::TokenSigner::from_ed25519_pem(&pair.private_pem, &pair.kid, idp)
                .unwrap()
                .mint(&dsr_auth::TokenRequest {
                    subject: "portal".into(),
                    audiences: vec!["dsr-orchestrator".into()],
                    scopes: vec!["requests:read".into()],
                    ttl: std::time::Duration::from_secs(60),
                })
                .unwrap()
        };
        // Fetched at start.
        validator.validate(&token(&old)).unwrap();
        assert!(validator.validate(&token(&new)).is_err());
        assert_eq!(published.lock().unwrap().1, 1);

        // The provider rotates; within a few refreshes the new key verifies
        // and the old one no longer does.
        published.lock().unwrap().0 = new.jwks_json.clone();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while validator.validate(&token(&new)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the new key was never fetched"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(validator.validate(&token(&old)).is_err());
        assert!(published.lock().unwrap().1 >= 2);

        // A provider that stops answering: the last good keys stay.
        published.lock().unwrap().0 = "not a JWKS document".into();
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        validator.validate(&token(&new)).unwrap();

        // A jwks_uri that is not a URL is refused at start.
        cfg.auth.trusted[0].jwks_uri = "login.bolaget.se/jwks".into();
        let err = Trust::from_config(&cfg, &[], &dsr_auth::Grants::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.trusted[0].jwks_uri"), "{err}");
    }

    /// MySQL/MariaDB is opened for a data system only.
    #[test]
    fn only_the_sql_connector_opens_mysql() {
        let url = "mysql://root@127.0.0.1:3306/crm";
        assert!(mesh_backend(&ServiceKind::SystemSql, url).is_ok());
        for kind in [
            ServiceKind::Orchestrator,
            ServiceKind::Erasure,
            ServiceKind::Export,
            ServiceKind::Identity,
            ServiceKind::Discovery,
            ServiceKind::TransferRegistry,
        ] {
            let err = mesh_backend(&kind, url).unwrap_err().to_string();
            assert!(err.contains("system-sql"), "{kind:?}: {err}");
            assert!(mesh_backend(&kind, "postgres://u@h/db").is_ok());
        }
    }

    /// Every row of the authorisation policy, both ways: each of the mesh's
    /// services and a portal's identity provider, each with its own key,
    /// asking for each scope in turn at a data system (audience "crm"); a
    /// token is accepted exactly when its issuer is granted the scope, and
    /// a key never speaks for another issuer.
    #[test]
    fn each_issuer_holds_only_its_granted_scopes_and_its_key_only_its_name() {
        let idp = "https://login.bolaget.se";
        let issuers = [
            "dsr-orchestrator",
            "dsr-discovery",
            "dsr-export",
            "dsr-erasure",
            idp,
        ];
        let mut cfg = Config::default();
        let mut signers = Vec::new();
        for (i, issuer) in issuers.iter().enumerate() {
            let pair = dsr_auth::generate_ed25519(&format!("k{i}")).unwrap();
            cfg.auth.trusted.push(TrustedIssuer {
                issuer: (*issuer).to_owned(),
                jwks_file: String::new(),
                jwks: pair.jwks_json.clone(),
                jwks_uri: String::new(),
                scope_claims: vec![],
            });
            signers.push(pair);
        }
        cfg.auth.grants.insert(
            idp.to_owned(),
            people_scopes().iter().map(|s| (*s).to_owned()).collect(),
        );
        let trust = Trust::from_config(&cfg, &[], &dsr_auth::Grants::default()).unwrap();
        let validator = trust.validator("crm");
        let granted = |issuer: &str, scope: &str| {
            if issuer == idp {
                people_scopes().contains(&scope)
            } else {
                mesh_grants().of(issuer).is_some_and(|g| g.contains(scope))
            }
        };
        let mint = |key: usize, iss: &str, scope: &str| {
            dsr_auth::TokenSigner::from_ed25519_pem(
                &signers[key].private_pem,
                &signers[key].kid,
                iss,
            )
            .unwrap()
            .mint(&dsr_auth::TokenRequest {
                subject: "s".into(),
                audiences: vec!["crm".into()],
                scopes: vec![scope.to_owned()],
                ttl: std::time::Duration::from_secs(60),
            })
            .unwrap()
        };
        let mut rows = 0;
        for (k, issuer) in issuers.iter().enumerate() {
            for scope in ALL_SCOPES {
                let got = validator.validate(&mint(k, issuer, scope));
                assert_eq!(
                    got.is_ok(),
                    granted(issuer, scope),
                    "{issuer} with {scope}: {got:?}"
                );
                rows += 1;
            }
            // Its key claiming any other issuer is refused.
            for other in issuers.iter().filter(|o| *o != issuer) {
                let got = validator.validate(&mint(k, other, "system:read"));
                assert_eq!(
                    got.unwrap_err(),
                    dsr_auth::Error::Issuer,
                    "{issuer} as {other}"
                );
            }
        }
        assert_eq!(rows, issuers.len() * ALL_SCOPES.len());
        // Only the erasure service may write to a data system.
        for issuer in issuers {
            assert_eq!(granted(issuer, "system:write"), issuer == "dsr-erasure");
        }
    }

    #[test]
    fn keys_of_several_issuers_in_one_file_or_an_issuer_without_a_grant_stop_the_start() {
        let pair = dsr_auth::generate_ed25519("k").unwrap();
        let mut cfg = Config::default();
        cfg.auth.jwks = pair.jwks_json.clone();
        cfg.auth.issuers = vec!["a".into(), "b".into()];
        let err = Trust::from_config(&cfg, &[], &dsr_auth::Grants::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("[[auth.trusted]]"), "{err}");
        cfg.auth.issuers = vec!["a".into()];
        let err = Trust::from_config(&cfg, &[], &dsr_auth::Grants::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.grants has no entry for issuer a"),
            "{err}"
        );
        cfg.auth
            .grants
            .insert("a".into(), vec!["requests:read".into(), "nonsense".into()]);
        let err = Trust::from_config(&cfg, &[], &dsr_auth::Grants::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown scope nonsense"), "{err}");
    }

    /// Every RPC of every service has a scope rule, and every rule names an
    /// RPC (a method without a rule would be refused to everyone).
    #[test]
    fn every_rpc_of_every_service_has_a_scope_rule() {
        let fds = prost_types::FileDescriptorSet::decode(dsr_proto::FILE_DESCRIPTOR_SET).unwrap();
        let tables: [(&str, &str, &[ScopeRule]); 9] = [
            (
                "dsr.transfer.v1",
                "TransferRegistry",
                dsr_transfer_registry::grpc::SCOPES,
            ),
            ("dsr.system.v1", "DataSystem", dsr_system_sql::grpc::SCOPES),
            (
                "dsr.identity.v1",
                "IdentityVerification",
                dsr_identity::grpc::SCOPES,
            ),
            ("dsr.discovery.v1", "Discovery", dsr_discovery::grpc::SCOPES),
            ("dsr.export.v1", "Export", dsr_export::grpc::SCOPES),
            ("dsr.erasure.v1", "Erasure", dsr_erasure::grpc::SCOPES),
            (
                "dsr.orchestrator.v1",
                "Requests",
                dsr_orchestrator::grpc::SCOPES,
            ),
            (
                "dsr.incident.v1",
                "Incidents",
                dsr_orchestrator::grpc::incidents::INCIDENT_SCOPES,
            ),
            (
                "dsr.incident.v1",
                "Complaints",
                dsr_orchestrator::grpc::incidents::COMPLAINT_SCOPES,
            ),
        ];
        for (package, name, rules) in tables {
            let service = fds
                .file
                .iter()
                .flat_map(|f| f.service.iter().map(move |s| (f.package(), s)))
                .find(|(p, s)| *p == package && s.name() == name)
                .unwrap_or_else(|| panic!("{package}.{name} not in the descriptors"))
                .1;
            let mut methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
            let mut ruled: Vec<&str> = rules.iter().map(|r| r.method).collect();
            methods.sort_unstable();
            ruled.sort_unstable();
            assert_eq!(methods, ruled, "{package}.{name}");
        }
    }
}
