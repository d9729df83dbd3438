//! Erasure assembled from its settings and what its host gives it: the
//! eraser over its store, the data systems and the transfer registry as
//! clients, the daily retention sweep, and the gRPC service. `dsr serve
//! erasure` and `dsr up` call [`build`]; nothing else wires these parts.

use std::sync::Arc;
use std::time::Duration;

use dsr_auth::{TokenSigner, Validator};
use dsr_domain::clock::Clock;
use dsr_domain::retention::RetentionPolicy;
use dsr_mesh_client::SystemEndpoint;
use dsr_server::ServiceSet;

use crate::eraser::{Eraser, IdentityHasher};
use crate::grpc::{GrpcRegistry, GrpcSystems};
use crate::model::UnlawfulTransfers;
use crate::store::Store;

/// Erasure's settings (`erasure.*` and `discovery.systems` in the
/// configuration, checked by the host before).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The data systems it erases at.
    pub systems: Vec<SystemEndpoint>,
    /// The transfer registry's address.
    pub registry_endpoint: String,
    /// The registry's audience in erasure's tokens.
    pub registry_audience: String,
    /// How often the retention sweep runs; `None`: never by itself.
    pub sweep_every: Option<Duration>,
    /// Records per batch of a sweep.
    pub sweep_batch_size: u32,
    /// Recipients told of nothing (their transfer unlawful), as configured.
    pub unlawful_transfers: UnlawfulTransfers,
}

/// What the host process gives erasure.
pub struct Deps {
    /// Its database (migrated).
    pub db: sea_orm::DatabaseConnection,
    /// Checks its callers' tokens.
    pub validator: Arc<Validator>,
    /// Signs its calls to the systems and the registry.
    pub signer: Arc<TokenSigner>,
    /// The retention policy (what the law keeps, and how long).
    pub policy: RetentionPolicy,
    /// The key of the tombstones' keyed hashes.
    pub tombstone_key: [u8; 32],
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

/// Why erasure could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A system's or the registry's address is not valid.
    #[error("invalid configuration: erasure: {0}")]
    Endpoints(String),
}

/// The eraser, its schedule started (on the current Tokio runtime), and
/// its gRPC service.
pub fn build(s: Settings, d: Deps) -> Result<ServiceSet, BuildError> {
    crate::metrics::start_at_zero(&s.systems.iter().map(|x| x.id.clone()).collect::<Vec<_>>());
    let systems = GrpcSystems::new(&s.systems, d.signer.clone())
        .map_err(|e| BuildError::Endpoints(e.to_string()))?;
    let registry = GrpcRegistry::new(&s.registry_endpoint, &s.registry_audience, d.signer)
        .map_err(|e| BuildError::Endpoints(e.to_string()))?;
    let eraser = Eraser::new(
        Arc::new(systems),
        Arc::new(registry),
        Store::new(d.db),
        Arc::new(d.policy),
        IdentityHasher::new(d.tombstone_key),
    )
    .with_clock(d.clock)
    .with_unlawful_transfers(s.unlawful_transfers);
    if let Some(every) = s.sweep_every {
        eraser.spawn_schedule(every, s.sweep_batch_size);
    }
    let mut set = ServiceSet::new();
    set.add(crate::grpc::service(eraser, d.validator));
    Ok(set)
}
