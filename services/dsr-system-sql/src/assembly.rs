//! The data systems assembled from their settings and what their host
//! gives them: a SQL database described by a manifest (a reference system
//! created and seeded first when asked), an HTTP API, or a vendor without
//! one (tasks); each with its background jobs and its gRPC services.
//! `dsr serve system-*` and `dsr up` call these; nothing else wires them.

use std::sync::Arc;
use std::time::Duration;

use dsr_auth::Validator;
use dsr_connector::signing::ReceiptSigner;
use dsr_domain::clock::Clock;
use dsr_server::ServiceSet;
use dsr_server::notifier::Notifier;

use crate::grpc::ProtoReceipts;
use crate::http::HttpSystem;
use crate::http::manifest::HttpManifest;
use crate::manifest::{Manifest, ManifestError};
use crate::manual::ManualSystem;
use crate::manual::manifest::ManualManifest;
use crate::manual::texts::Texts;
use crate::reference::Reference;
use crate::system::SqlSystem;

/// Where a SQL system's description comes from.
#[derive(Clone, Debug)]
pub enum SqlSource {
    /// A reference system of the repository: its tables created and, when
    /// empty, seeded with made-up people.
    Reference {
        /// Which.
        reference: Reference,
        /// People to seed.
        subjects: usize,
        /// The seed of the made-up data.
        seed: u64,
    },
    /// A company's database, described by its manifest.
    Manifest {
        /// The manifest.
        manifest: Manifest,
        /// Its file, named in errors.
        file: String,
    },
}

/// What the host process gives a data system.
pub struct Deps {
    /// The database: the system's own (SQL), or the connector's ledger and
    /// tasks (HTTP, manual); migrated.
    pub db: sea_orm::DatabaseConnection,
    /// Checks its callers' tokens (its audience is the system's id).
    pub validator: Arc<Validator>,
    /// Signs its receipts.
    pub signer: ReceiptSigner,
    /// The time.
    pub clock: Clock,
    /// How often its background jobs run; `None`: never.
    pub jobs_every: Option<Duration>,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps")
            .field("clock", &self.clock)
            .field("jobs_every", &self.jobs_every)
            .finish_non_exhaustive()
    }
}

/// Why a data system could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The reference system's tables could not be created or seeded.
    #[error("{0}: cannot create or seed the reference system: {1}")]
    Seed(&'static str, sea_orm::DbErr),
    /// The manifest does not match the database (or does not parse).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The HTTP API's description is not usable.
    #[error("{0}")]
    Api(String),
}

/// The manifest of a SQL system's source, its reference system created and
/// seeded first when it is one.
async fn sql_manifest(
    source: SqlSource,
    db: &sea_orm::DatabaseConnection,
    clock: &Clock,
) -> Result<(Manifest, String, Option<Reference>), BuildError> {
    match source {
        SqlSource::Reference {
            reference,
            subjects,
            seed,
        } => {
            let rows = reference
                .ensure(db, subjects, seed, clock.today())
                .await
                .map_err(|e| BuildError::Seed(reference.id(), e))?;
            if rows > 0 {
                tracing::info!(system = reference.id(), rows, "reference system seeded");
            }
            let manifest = Manifest::parse(reference.manifest(), reference.manifest_name())?;
            Ok((
                manifest,
                reference.manifest_name().to_owned(),
                Some(reference),
            ))
        }
        SqlSource::Manifest { manifest, file } => Ok((manifest, file, None)),
    }
}

/// A SQL system: its manifest checked against the live schema, its jobs
/// started (the suppression list applied to records that arrived after an
/// objection; for the reference CRM, the lead scoring of new prospects,
/// which leaves out those who objected), and its DataSystem service.
pub async fn build_sql(source: SqlSource, d: Deps) -> Result<ServiceSet, BuildError> {
    let (manifest, file, reference) = sql_manifest(source, &d.db, &d.clock).await?;
    crate::schema::check(&d.db, &manifest, &file).await?;
    let system = SqlSystem::new(
        d.db.clone(),
        Arc::new(manifest),
        d.signer,
        Arc::new(ProtoReceipts),
    )
    .with_clock(d.clock);
    if let Some(every) = d.jobs_every {
        spawn_sql_jobs(system.clone(), d.db, reference, every);
    }
    let mut set = ServiceSet::new();
    set.add(crate::grpc::service(system, d.validator));
    Ok(set)
}

fn spawn_sql_jobs(
    system: SqlSystem,
    db: sea_orm::DatabaseConnection,
    reference: Option<Reference>,
    every: Duration,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
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

/// A system behind an HTTP API: the connector keeps its ledger (operations,
/// idempotency keys) in `db`; the data stays behind the API.
pub fn build_http(manifest: HttpManifest, d: Deps) -> Result<ServiceSet, BuildError> {
    let system = HttpSystem::new(d.db, Arc::new(manifest), d.signer)
        .map_err(|e| BuildError::Api(e.to_string()))?
        .with_clock(d.clock);
    let mut set = ServiceSet::new();
    set.add(crate::grpc::service(system, d.validator));
    Ok(set)
}

/// A vendor without an API: each call becomes a task for a person at the
/// vendor (told through `notifier`), kept with the ledger in `db`; its job
/// reminds, escalates and purges; its services are DataSystem and the
/// vendor's ManualTasks.
pub fn build_manual(
    manifest: ManualManifest,
    texts: Texts,
    notifier: Arc<dyn Notifier>,
    d: Deps,
) -> ServiceSet {
    let system =
        ManualSystem::new(d.db, Arc::new(manifest), d.signer, notifier, texts).with_clock(d.clock);
    if let Some(every) = d.jobs_every {
        spawn_manual_jobs(system.clone(), every);
    }
    let mut set = ServiceSet::new();
    set.add(crate::grpc::service(system.clone(), d.validator.clone()))
        .add(crate::manual::api::service(system, d.validator));
    set
}

fn spawn_manual_jobs(system: ManualSystem, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
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
