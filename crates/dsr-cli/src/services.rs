//! The catalogue of services the binary can serve, and how each is put
//! together from the configuration.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use dsr_auth::{KeySet, Validator, ValidatorConfig};
use dsr_domain::transfer::CountryTables;
use dsr_server::ServiceSet;
use dsr_transfer_registry as transfer;

use crate::config::Config;

/// A service of the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ServiceKind {
    /// The transfer registry (dsr.transfer.v1.TransferRegistry).
    TransferRegistry,
}

impl ServiceKind {
    /// Every service, in port order for `dsr up`.
    pub(crate) const ALL: &'static [ServiceKind] = &[ServiceKind::TransferRegistry];

    /// The name used on the command line and for SQLite files.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::TransferRegistry => "transfer-registry",
        }
    }

    /// The JWT audience of the service.
    pub(crate) fn audience(self) -> &'static str {
        match self {
            Self::TransferRegistry => transfer::SERVICE_NAME,
        }
    }

    /// The fully qualified gRPC service names it serves.
    pub(crate) fn grpc_names(self) -> &'static [&'static str] {
        match self {
            Self::TransferRegistry => &["dsr.transfer.v1.TransferRegistry"],
        }
    }

    /// Every scope the service knows (for development tokens).
    pub(crate) fn scopes(self) -> &'static [&'static str] {
        match self {
            Self::TransferRegistry => &[transfer::grpc::SCOPE_READ, transfer::grpc::SCOPE_WRITE],
        }
    }

    /// The service's database URL.
    pub(crate) fn database_url(self, cfg: &Config) -> String {
        if cfg.database.url.is_empty() {
            dsr_store::sqlite_url(&cfg.data_dir.join(format!("{}.db", self.name())))
        } else {
            cfg.database.url.clone()
        }
    }

    /// Applies the service's pending migrations; returns how many there were.
    pub(crate) async fn migrate(self, db: &dsr_store::Db) -> anyhow::Result<usize> {
        let pending = match self {
            Self::TransferRegistry => {
                dsr_store::pending::<transfer::migration::Migrator>(db).await?
            }
        };
        match self {
            Self::TransferRegistry => {
                dsr_store::migrate::<transfer::migration::Migrator>(db).await?
            }
        }
        Ok(pending)
    }

    async fn pending(self, db: &dsr_store::Db) -> anyhow::Result<usize> {
        Ok(match self {
            Self::TransferRegistry => {
                dsr_store::pending::<transfer::migration::Migrator>(db).await?
            }
        })
    }
}

/// Verification keys and issuers for incoming tokens.
#[derive(Clone, Debug)]
pub(crate) struct Trust {
    pub(crate) keys: Arc<KeySet>,
    pub(crate) issuers: Vec<String>,
    pub(crate) leeway_secs: u64,
}

impl Trust {
    /// The configured keys (file and inline), plus `extra_jwks` files.
    pub(crate) fn from_config(
        cfg: &Config,
        extra_jwks: &[&Path],
        extra_issuers: &[&str],
    ) -> anyhow::Result<Self> {
        let mut keys = KeySet::default();
        let mut docs: Vec<(String, String)> = Vec::new();
        if !cfg.auth.jwks_file.is_empty() {
            let text = std::fs::read_to_string(&cfg.auth.jwks_file)
                .with_context(|| format!("cannot read auth.jwks_file {}", cfg.auth.jwks_file))?;
            docs.push((format!("auth.jwks_file {}", cfg.auth.jwks_file), text));
        }
        if !cfg.auth.jwks.is_empty() {
            docs.push(("auth.jwks".into(), cfg.auth.jwks.clone()));
        }
        for path in extra_jwks {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            docs.push((path.display().to_string(), text));
        }
        for (what, text) in docs {
            let set = KeySet::from_jwks_json(&text)
                .with_context(|| format!("invalid configuration: {what}"))?;
            keys.merge(set)
                .with_context(|| format!("invalid configuration: {what}"))?;
        }
        if keys.is_empty() {
            bail!(
                "invalid configuration: no token verification keys (set auth.jwks_file or auth.jwks)"
            );
        }
        let mut issuers = cfg.auth.issuers.clone();
        issuers.extend(extra_issuers.iter().map(|s| (*s).to_owned()));
        if issuers.is_empty() {
            bail!("invalid configuration: auth.issuers is empty");
        }
        Ok(Self {
            keys: Arc::new(keys),
            issuers,
            leeway_secs: cfg.auth.leeway_secs,
        })
    }

    fn validator(&self, audience: &str) -> Arc<Validator> {
        Arc::new(Validator::new(
            self.keys.clone(),
            ValidatorConfig {
                issuers: self.issuers.clone(),
                audience: audience.to_owned(),
                leeway_secs: self.leeway_secs,
            },
        ))
    }
}

/// How to treat the database schema at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Schema {
    /// Apply pending migrations.
    Migrate,
    /// Refuse to start while migrations are pending.
    Require,
}

/// Builds the service set of `kind`: database, migrations, seed, handlers.
pub(crate) async fn prepare(
    kind: ServiceKind,
    cfg: &Config,
    trust: &Trust,
    schema: Schema,
) -> anyhow::Result<ServiceSet> {
    let url = kind.database_url(cfg);
    let db = dsr_store::connect(
        &url,
        &dsr_store::StoreConfig {
            max_connections: cfg.database.max_connections,
            ..dsr_store::StoreConfig::default()
        },
    )
    .await
    .with_context(|| format!("{}: cannot open its database", kind.name()))?;
    match schema {
        Schema::Migrate => {
            let applied = kind
                .migrate(&db)
                .await
                .with_context(|| format!("{}: migration failed", kind.name()))?;
            if applied > 0 {
                tracing::info!(service = kind.name(), applied, "migrations applied");
            }
        }
        Schema::Require => {
            let pending = kind.pending(&db).await?;
            if pending > 0 {
                bail!(
                    "{}: the database has {pending} pending migrations: run `dsr migrate {}` (or set database.migrate_on_start)",
                    kind.name(),
                    kind.name()
                );
            }
        }
    }
    let mut set = ServiceSet::new();
    match kind {
        ServiceKind::TransferRegistry => {
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
            let seed = transfer::seed::parse(&seed_text, &tables, chrono::Utc::now().date_naive())
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
            let registry = transfer::Registry::new(db, Arc::new(tables), Arc::new(seed.policy));
            if section.seed {
                let created = registry.seed(seed.recipients).await?;
                if created > 0 {
                    tracing::info!(service = kind.name(), created, "registry seeded");
                }
            }
            transfer::metrics::spawn_reviews_gauge(
                registry.clone(),
                section.review_window_days,
                Duration::from_secs(300),
            );
            set.add(transfer::grpc::service(
                registry,
                trust.validator(kind.audience()),
            ))
            .describe(dsr_proto::FILE_DESCRIPTOR_SET);
        }
    }
    Ok(set)
}
