//! The catalogue of services the binary can serve, and how each is put
//! together from the configuration.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use dsr_system_sql::manifest::Manifest;
use dsr_system_sql::reference::Reference;
use dsr_transfer_registry as transfer;

use crate::config::Config;

mod compose;
mod trust;

pub(crate) use compose::{clock, group, prepare, service_signer};
pub(crate) use trust::{Trust, people_scopes};

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

    /// On SQLite, a pool of `connections` that only read, beside the one
    /// writer [`Self::connect`] opened (call it after that); `None` on
    /// PostgreSQL, whose pool reads in parallel already.
    pub(crate) async fn connect_reader(
        &self,
        cfg: &Config,
        connections: u32,
    ) -> anyhow::Result<Option<dsr_store::Db>> {
        let (url, _) = self.database(cfg);
        dsr_store::connect_reader(&url, &dsr_store::StoreConfig::default(), connections)
            .await
            .with_context(|| format!("{}: cannot open its database to read", self.name))
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
                ping_if_idle_for: std::time::Duration::from_secs(cfg.database.ping_idle_secs),
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

#[cfg(test)]
mod tests {
    use dsr_auth::ScopeRule;
    use prost::Message as _;

    use super::trust::mesh_grants;
    use super::{ALL_SCOPES, ServiceKind, Trust, mesh_backend, people_scopes};
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
