//! The orchestrator assembled from its settings and what its host gives it:
//! the ledger, the clients of the other services, the workers (the step
//! queue and the letters), the background jobs (identity purge, expiry of
//! unverified requests, the change feed, gauges) and the gRPC services
//! (Requests, Incidents, Complaints). `dsr serve orchestrator` and `dsr up`
//! call [`build`]; nothing else wires these parts.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use dsr_auth::{TokenSigner, Validator};
use dsr_domain::clock::Clock;
use dsr_domain::group::Group;
use dsr_domain::identity::Organisationsnummer;
use dsr_domain::letters::Letters;
use dsr_server::ServiceSet;

use crate::grpc::clients::{Endpoints, GrpcMesh};
use crate::intake::{AssurancePolicy, Intake};
use crate::ledger::Ledger;
use crate::{feed, grpc, letters, metrics, worker};

/// The orchestrator's settings (`orchestrator.*` in the configuration,
/// checked by the host before).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The other services' addresses.
    pub endpoints: Endpoints,
    /// Requests worked on at once; 0: this replica serves the API only.
    pub workers: usize,
    /// This replica's name in leases and the step log.
    pub worker_id: String,
    /// How long a lease on a request lasts unless renewed.
    pub lease: Duration,
    /// How often an idle worker looks for work.
    pub poll: Duration,
    /// How long the letter sender waits for more letters once one is
    /// queued (zero: none).
    pub letter_linger: Duration,
    /// The first retry's delay, doubled up to `backoff_max`.
    pub backoff_base: Duration,
    /// The longest delay between retries.
    pub backoff_max: Duration,
    /// Attempts of a step before it fails for good.
    pub max_attempts: u32,
    /// The deadline of one call to another service.
    pub call_timeout: Duration,
    /// Controllers whose erasure plans wait for a case handler's approval.
    pub approval_controllers: BTreeSet<Organisationsnummer>,
    /// The verification each kind of request needs.
    pub assurance: AssurancePolicy,
    /// The privacy centre's address, in the letters.
    pub privacy_centre_url: String,
    /// How long an answered request keeps the person's identities.
    pub identity_retention: chrono::Duration,
    /// How long a request waits for the person to prove who they are.
    pub verification_expiry: chrono::Days,
    /// The time to answer a complaint.
    pub complaint_response: chrono::TimeDelta,
    /// Watch streams open at once, in all.
    pub watch_streams: usize,
    /// Watch streams open at once per caller.
    pub watch_streams_per_caller: usize,
}

/// What the host process gives the orchestrator.
pub struct Deps {
    /// Its database (migrated).
    pub db: dsr_store::Db,
    /// A pool of its own for lease renewals (PostgreSQL), if any.
    pub leases: Option<dsr_store::Db>,
    /// A pool that only reads, for views and lists beside the one writer
    /// (SQLite, [`dsr_store::connect_reader`]), if any.
    pub reads: Option<dsr_store::Db>,
    /// Checks its callers' tokens.
    pub validator: Arc<Validator>,
    /// Checks the identity service's verification tokens.
    pub verification_tokens: Arc<Validator>,
    /// Signs its calls to the other services.
    pub signer: Arc<TokenSigner>,
    /// The letters to people.
    pub letters: Letters,
    /// The controller group.
    pub group: Arc<Group>,
    /// The time.
    pub clock: Clock,
    /// Turns true when the process is asked to stop: the workers stop
    /// taking work.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps")
            .field("leases", &self.leases.is_some())
            .field("reads", &self.reads.is_some())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// Why the orchestrator could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An endpoint of another service is not a valid address.
    #[error("invalid configuration: orchestrator: {0}")]
    Endpoints(String),
}

/// The orchestrator, its workers and jobs started (on the current Tokio
/// runtime), and its gRPC services.
pub fn build(s: Settings, d: Deps) -> Result<ServiceSet, BuildError> {
    let mesh = Arc::new(
        GrpcMesh::new(&s.endpoints, d.signer).map_err(|e| BuildError::Endpoints(e.to_string()))?,
    );
    let mut ledger =
        Ledger::new(d.db, dsr_domain::deadline::HolidayCalendar::swedish()).with_clock(d.clock);
    if let Some(leases) = d.leases {
        ledger = ledger.with_lease_pool(leases);
    }
    if let Some(reads) = d.reads {
        ledger = ledger.with_read_pool(reads);
    }
    let wake = Arc::new(tokio::sync::Notify::new());
    let (changes, _) = tokio::sync::broadcast::channel(1024);
    metrics::spawn_request_gauges(ledger.clone(), Duration::from_secs(30));
    if s.workers > 0 {
        spawn_workers(
            &s, &d.letters, &d.group, &ledger, &mesh, &wake, &changes, d.stop,
        );
        spawn_purge(&s, &ledger);
    }
    // One reader of changes made by other replicas, for every Watch stream.
    tokio::spawn(feed::run(
        ledger.clone(),
        changes.clone(),
        Duration::from_secs(1),
    ));
    let incident_deps = grpc::incidents::IncidentDeps {
        ledger: ledger.clone(),
        discovery: mesh.clone(),
        letters: Arc::new(d.letters),
        group: d.group.clone(),
        complaint_response: s.complaint_response,
        call_timeout: s.call_timeout.max(Duration::from_secs(60)),
    };
    tokio::spawn(metrics::incident_gauges(
        ledger.clone(),
        Duration::from_secs(30),
    ));
    let deps = grpc::Deps {
        intake: Intake::new(ledger.clone(), d.verification_tokens, mesh)
            .with_assurance(s.assurance.clone()),
        ledger,
        group: d.group,
        wake,
        changes,
        watch_slots: grpc::WatchSlots::new(s.watch_streams, s.watch_streams_per_caller),
    };
    let mut set = ServiceSet::new();
    set.add(grpc::service(deps, d.validator.clone()));
    let (incidents, complaints) = grpc::incidents::services(incident_deps, d.validator);
    set.add(incidents).add(complaints);
    Ok(set)
}

/// The step worker and the letters' sender, until `stop`.
#[allow(clippy::too_many_arguments)]
fn spawn_workers(
    s: &Settings,
    letters: &Letters,
    group: &Arc<Group>,
    ledger: &Ledger,
    mesh: &Arc<GrpcMesh>,
    wake: &Arc<tokio::sync::Notify>,
    changes: &tokio::sync::broadcast::Sender<crate::feed::Change>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let worker = worker::Worker::new(
        ledger.clone(),
        worker::Mesh {
            verification: mesh.clone(),
            discovery: mesh.clone(),
            export: mesh.clone(),
            erasure: mesh.clone(),
        },
        worker::WorkerConfig {
            worker_id: s.worker_id.clone(),
            lease: s.lease,
            poll: s.poll,
            concurrency: s.workers,
            backoff_base: s.backoff_base,
            backoff_max: s.backoff_max,
            max_attempts: s.max_attempts,
            call_timeout: s.call_timeout,
            approval_controllers: s.approval_controllers.clone(),
            assurance: s.assurance.clone(),
        },
        wake.clone(),
        changes.clone(),
        metrics::Metrics::new(),
    );
    let sender = letters::Sender::new(
        ledger.clone(),
        mesh.clone(),
        letters.clone(),
        group.clone(),
        letters::SenderConfig {
            worker_id: format!("{}/letters", s.worker_id),
            lease: s.lease,
            poll: s.poll,
            linger: s.letter_linger,
            backoff_base: s.backoff_base,
            backoff_max: s.backoff_max,
            max_attempts: s.max_attempts,
            call_timeout: s.call_timeout,
            privacy_centre_url: s.privacy_centre_url.clone(),
        },
        changes.clone(),
    );
    tokio::spawn(sender.run(stop.clone()));
    tokio::spawn(worker.run(stop));
}

/// Every hour: the person's identities leave the ledger once a request has
/// been answered for good and its retention passed; a request whose person
/// never proved who they are ends after its time.
fn spawn_purge(s: &Settings, ledger: &Ledger) {
    let purging = ledger.clone();
    let keep = s.identity_retention;
    let unverified = s.verification_expiry;
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
