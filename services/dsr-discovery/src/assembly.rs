//! Discovery assembled from its settings and what its host gives it: the
//! data systems as clients, the locator with its Describe refresh, and the
//! gRPC service. It keeps no database. `dsr serve discovery` and `dsr up`
//! call [`build`]; nothing else wires these parts.

use std::sync::Arc;
use std::time::Duration;

use dsr_auth::{TokenSigner, Validator};
use dsr_mesh_client::SystemEndpoint;
use dsr_server::ServiceSet;

use crate::grpc::GrpcSystems;
use crate::locator::Locator;

/// Discovery's settings (`discovery.*` in the configuration, checked by the
/// host before).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The data systems it asks.
    pub systems: Vec<SystemEndpoint>,
    /// The deadline of one system's answer.
    pub timeout: Duration,
    /// How often the systems' descriptions are read again.
    pub refresh: Duration,
}

/// What the host process gives discovery.
pub struct Deps {
    /// Checks its callers' tokens.
    pub validator: Arc<Validator>,
    /// Signs its calls to the systems.
    pub signer: Arc<TokenSigner>,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps").finish_non_exhaustive()
    }
}

/// Why discovery could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A system's address is not valid.
    #[error("invalid configuration: discovery.systems: {0}")]
    Endpoints(String),
}

/// The locator, its refresh started (on the current Tokio runtime), and its
/// gRPC service.
pub fn build(s: Settings, d: Deps) -> Result<ServiceSet, BuildError> {
    let systems = Arc::new(
        GrpcSystems::new(s.systems, d.signer).map_err(|e| BuildError::Endpoints(e.to_string()))?,
    );
    let locator = Locator::new(systems.clone(), s.timeout);
    locator.spawn_refresh(s.refresh);
    let mut set = ServiceSet::new();
    set.add(crate::grpc::service(locator, systems, d.validator));
    Ok(set)
}
