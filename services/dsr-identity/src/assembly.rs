//! Identity verification assembled from its settings and what its host
//! gives it: the verifier over its database, its purge of spent
//! challenges, and the gRPC service. `dsr serve identity` and `dsr up` call
//! [`build`]; nothing else wires these parts.

use std::sync::Arc;
use std::time::Duration;

use dsr_auth::Validator;
use dsr_domain::clock::Clock;
use dsr_server::ServiceSet;
use dsr_server::notifier::Notifier;

use crate::texts::CodeMessage;
use crate::tokens::TokenIssuer;
use crate::verifier::{Settings as VerifierSettings, Verifier};

/// Identity's settings (`identity.*` in the configuration, read and
/// checked by the host before).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Codes: how long they work, attempts, how many an hour.
    pub verifier: VerifierSettings,
    /// The code's message, when the company words it (else the shipped
    /// one).
    pub code_message: Option<CodeMessage>,
}

/// What the host process gives identity.
pub struct Deps {
    /// Its database (migrated).
    pub db: dsr_store::Db,
    /// Checks its callers' tokens.
    pub validator: Arc<Validator>,
    /// Issues the verification tokens (its key loaded).
    pub issuer: TokenIssuer,
    /// Sends the codes (email, SMS).
    pub notifier: Arc<dyn Notifier>,
    /// Keys the code and identity hashes.
    pub hmac_key: [u8; 32],
    /// Verifies identity-provider assertions (BankID through the company's
    /// IdP), when one is configured.
    pub idp: Option<Arc<Validator>>,
    /// The time.
    pub clock: Clock,
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deps")
            .field("idp", &self.idp.is_some())
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

/// The verifier, its purge started (on the current Tokio runtime), and its
/// gRPC service.
pub fn build(s: Settings, d: Deps) -> ServiceSet {
    let verifier = Verifier::new(d.db, s.verifier, d.notifier, d.issuer, d.hmac_key, d.idp)
        .with_clock(d.clock);
    let verifier = match s.code_message {
        Some(m) => verifier.with_code_message(m),
        None => verifier,
    };
    verifier.spawn_purge(Duration::from_secs(60));
    let mut set = ServiceSet::new();
    set.add(crate::grpc::service(verifier, d.validator));
    set
}
