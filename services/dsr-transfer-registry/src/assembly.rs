//! The transfer registry assembled from its settings and what its host
//! gives it: the registry over its database (seeded with the company's
//! recipients when asked), the gauge of reviews falling due, and the gRPC
//! service. `dsr serve transfer-registry` and `dsr up` call [`build`];
//! nothing else wires these parts.

use std::sync::Arc;
use std::time::Duration;

use dsr_auth::Validator;
use dsr_domain::clock::Clock;
use dsr_domain::transfer::CountryTables;
use dsr_server::ServiceSet;

use crate::registry::{Error, Registry};
use crate::seed::Seed;

/// The registry's settings (`transfer_registry.*` in the configuration,
/// read and checked by the host before).
#[derive(Debug)]
pub struct Settings {
    /// The adequacy decisions and country tables.
    pub tables: CountryTables,
    /// The transfer policy and the recipients to seed.
    pub seed: Seed,
    /// Whether the recipients are written at start (those missing only).
    pub seed_on_start: bool,
    /// Days ahead that a review counts as due (the gauge).
    pub review_window_days: u32,
}

/// What the host process gives the registry.
pub struct Deps {
    /// Its database (migrated).
    pub db: dsr_store::Db,
    /// Checks its callers' tokens.
    pub validator: Arc<Validator>,
    /// The time.
    pub clock: Clock,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// The registry, seeded when asked, its gauge started (on the current Tokio
/// runtime), and its gRPC service.
pub async fn build(s: Settings, d: Deps) -> Result<ServiceSet, Error> {
    let registry =
        Registry::new(d.db, Arc::new(s.tables), Arc::new(s.seed.policy)).with_clock(d.clock);
    if s.seed_on_start {
        let created = registry.seed(s.seed.recipients).await?;
        if created > 0 {
            tracing::info!(created, "registry seeded");
        }
    }
    crate::metrics::spawn_reviews_gauge(
        registry.clone(),
        s.review_window_days,
        Duration::from_secs(300),
    );
    let mut set = ServiceSet::new();
    set.add(crate::grpc::service(registry, d.validator));
    Ok(set)
}
