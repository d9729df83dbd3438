//! Export assembled from its settings and what its host gives it: the
//! sources (the data systems and the transfer registry), the sealed package
//! store with its purge, the exporter and the gRPC service. `dsr serve
//! export` and `dsr up` call [`build`]; nothing else wires these parts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dsr_auth::{TokenSigner, Validator};
use dsr_domain::clock::Clock;
use dsr_domain::group::Group;
use dsr_mesh_client::SystemEndpoint;
use dsr_server::ServiceSet;

use crate::crypt::MasterKey;
use crate::exporter::Exporter;
use crate::grpc::GrpcSources;
use crate::store::Packages;

/// Export's settings (`export.*` and `discovery.systems` in the
/// configuration, checked by the host before).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The data systems it reads.
    pub systems: Vec<SystemEndpoint>,
    /// The transfer registry's address.
    pub registry_endpoint: String,
    /// The registry's audience in export's tokens.
    pub registry_audience: String,
    /// Where the sealed packages are written (created when missing).
    pub package_dir: PathBuf,
    /// How long a package can be fetched.
    pub package_ttl: chrono::Duration,
}

/// What the host process gives export.
pub struct Deps {
    /// Its database (migrated): the package index.
    pub db: dsr_store::Db,
    /// Checks its callers' tokens.
    pub validator: Arc<Validator>,
    /// Signs its calls to the systems and the registry.
    pub signer: Arc<TokenSigner>,
    /// The key the packages' keys are sealed with.
    pub master_key: [u8; 32],
    /// The controller group.
    pub group: Arc<Group>,
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

/// Why export could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A system's or the registry's address is not valid.
    #[error("invalid configuration: export: {0}")]
    Endpoints(String),
    /// The package directory cannot be created.
    #[error("cannot create the package directory {0}: {1}")]
    PackageDir(String, std::io::Error),
}

/// The exporter, the package purge started (on the current Tokio runtime),
/// and its gRPC service.
pub fn build(s: Settings, d: Deps) -> Result<ServiceSet, BuildError> {
    let sources = GrpcSources::new(
        &s.systems,
        &s.registry_endpoint,
        &s.registry_audience,
        d.signer,
    )
    .map_err(|e| BuildError::Endpoints(e.to_string()))?;
    std::fs::create_dir_all(&s.package_dir)
        .map_err(|e| BuildError::PackageDir(s.package_dir.display().to_string(), e))?;
    let packages =
        Packages::new(d.db, s.package_dir, MasterKey::new(&d.master_key)).with_clock(d.clock);
    packages.spawn_purge(Duration::from_secs(300));
    let exporter = Exporter::new(Arc::new(sources), packages, d.group, s.package_ttl);
    let mut set = ServiceSet::new();
    set.add(crate::grpc::service(exporter, d.validator));
    Ok(set)
}
