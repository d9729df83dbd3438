//! Who is calling: JWT validation on the server side, service tokens on the
//! client side.
//!
//! - [`KeySet`]: verification keys from a JWKS document (a file, or inline
//!   in the configuration). Only asymmetric keys are accepted (RS256, ES256,
//!   EdDSA), so `alg: none` and HMAC tokens can never verify.
//! - [`Validator`]: signature, key id, algorithm, issuer, audience, `exp` and
//!   `nbf` (with a small leeway); yields a typed [`Principal`].
//! - [`AuthLayer`]: a tower layer around one gRPC service with that service's
//!   table of required scopes per RPC ([`ScopeRule`]); the principal reaches
//!   the handler in the request extensions.
//! - [`TokenSigner`] and [`ServiceTokenInterceptor`]: tokens minted for calls
//!   between services.
#![forbid(unsafe_code)]

mod keys;
mod layer;
mod signer;
pub mod verification;

pub use keys::{DevKeyPair, KeySet, generate_ed25519, load_or_create_ed25519, write_private};
pub use layer::{AuthLayer, AuthService, ScopeRule};
pub use signer::{ServiceTokenInterceptor, TokenRequest, TokenSigner};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};

/// Why a token or key was refused. Messages never contain token contents.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No `authorization: Bearer` metadata.
    #[error("no bearer token")]
    Missing,
    /// Not a JWT, or a header that does not parse (including `alg: none`).
    #[error("token is malformed")]
    Malformed,
    /// The header has no `kid`, or names a key not in the key set.
    #[error("token signed by an unknown key")]
    UnknownKey,
    /// The header's algorithm is not the key's.
    #[error("token algorithm does not match its key")]
    AlgorithmMismatch,
    /// The signature does not verify.
    #[error("token signature is invalid")]
    BadSignature,
    /// Expired (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// Not valid yet (beyond the leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// Issued by an issuer not configured.
    #[error("token issuer is not accepted")]
    Issuer,
    /// Meant for another audience.
    #[error("token audience is not this service")]
    Audience,
    /// A required claim is missing or has the wrong type.
    #[error("token claims are invalid")]
    Claims,
    /// The principal lacks a scope the RPC requires.
    #[error("missing scope {0}")]
    MissingScope(&'static str),
    /// The RPC has no scope rule (a deployment error: refused to fail closed).
    #[error("no scope rule for this method")]
    NoRule,
    /// The token carries a scope its issuer is not granted by the
    /// authorisation policy (or the issuer has no grant at all).
    #[error("a scope is not granted to the token's issuer")]
    NotGranted,
    /// A key in the key set is unusable.
    #[error("key set is invalid: {0}")]
    KeySet(String),
    /// Signing failed.
    #[error("cannot sign token: {0}")]
    Signing(String),
}

impl Error {
    /// Stable machine-readable reason for `google.rpc.ErrorInfo`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "TOKEN_MISSING",
            Self::Malformed => "TOKEN_MALFORMED",
            Self::UnknownKey => "TOKEN_KEY_UNKNOWN",
            Self::AlgorithmMismatch => "TOKEN_ALGORITHM",
            Self::BadSignature => "TOKEN_SIGNATURE",
            Self::Expired => "TOKEN_EXPIRED",
            Self::NotYetValid => "TOKEN_NOT_YET_VALID",
            Self::Issuer => "TOKEN_ISSUER",
            Self::Audience => "TOKEN_AUDIENCE",
            Self::Claims => "TOKEN_CLAIMS",
            Self::MissingScope(_) => "SCOPE_MISSING",
            Self::NoRule => "NO_SCOPE_RULE",
            Self::NotGranted => "SCOPE_NOT_GRANTED",
            Self::KeySet(_) => "KEY_SET_INVALID",
            Self::Signing(_) => "SIGNING_FAILED",
        }
    }
}

/// The claims DSR Mesh reads from a token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Who: a portal user, a case handler, or a service name.
    pub sub: String,
    /// Issuer.
    pub iss: String,
    /// Audience: one service name or several.
    pub aud: Audience,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Not before (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Space-separated scopes (OAuth 2.0 `scope`).
    #[serde(default)]
    pub scope: String,
    /// Scopes as Entra ID (a space-separated string) and Okta (a list)
    /// write them; read only for an issuer configured so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scp: Option<ScopeList>,
    /// Application roles (Entra ID's `roles`, a list); read only for an
    /// issuer configured so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// Token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

/// Scopes in a `scp` claim: one space-separated string or a list.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ScopeList {
    /// "a b c".
    Spaced(String),
    /// ["a", "b", "c"].
    List(Vec<String>),
}

/// The claims a token's scopes are read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScopeClaim {
    /// OAuth 2.0 `scope`, space-separated (the mesh's own tokens).
    Scope,
    /// `scp`, a string (Entra ID) or a list (Okta).
    Scp,
    /// `roles`, a list (Entra ID application roles).
    Roles,
}

impl ScopeClaim {
    /// The claim named `name`: scope, scp or roles.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "scope" => Some(Self::Scope),
            "scp" => Some(Self::Scp),
            "roles" => Some(Self::Roles),
            _ => None,
        }
    }
}

impl Claims {
    /// The scopes the token carries in `claims`.
    pub fn scopes_from(&self, claims: &BTreeSet<ScopeClaim>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for c in claims {
            match c {
                ScopeClaim::Scope => out.extend(self.scope.split_whitespace().map(str::to_owned)),
                ScopeClaim::Scp => match &self.scp {
                    Some(ScopeList::Spaced(s)) => {
                        out.extend(s.split_whitespace().map(str::to_owned));
                    }
                    Some(ScopeList::List(v)) => out.extend(v.iter().cloned()),
                    None => {}
                },
                ScopeClaim::Roles => out.extend(self.roles.iter().flatten().cloned()),
            }
        }
        out
    }
}

/// A token's audience: one value or a list.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// The verified caller, available to handlers as a request extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's subject.
    pub subject: String,
    /// The token's issuer.
    pub issuer: String,
    /// Granted scopes.
    pub scopes: BTreeSet<String>,
    /// Expiry, seconds since the epoch.
    pub expires_at: u64,
}

impl Principal {
    /// The subject of the caller the auth layer verified for `req`, for
    /// audit trails ("unknown" when the request passed no auth layer).
    pub fn subject_of<T>(req: &tonic::Request<T>) -> String {
        req.extensions()
            .get::<Self>()
            .map(|p| p.subject.clone())
            .unwrap_or_else(|| "unknown".into())
    }

    /// Whether the principal holds `scope`.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }
}

/// What a validator accepts.
#[derive(Clone, Debug)]
pub struct ValidatorConfig {
    /// Accepted issuers (`iss`). At least one.
    pub issuers: Vec<String>,
    /// This service's audience (`aud` must contain it).
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// The authorisation policy: which scopes each issuer may grant. `None`
    /// checks no policy (tests of the token checks alone).
    pub grants: Option<Arc<Grants>>,
}

/// The authorisation policy: per issuer, the scopes its tokens may carry.
/// A token with a scope outside its issuer's grant, or from an issuer with
/// no grant, is refused whatever the RPC asks: a service's key mints only
/// that service's powers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    by_issuer: BTreeMap<String, BTreeSet<String>>,
    claims: BTreeMap<String, BTreeSet<ScopeClaim>>,
}

impl Grants {
    /// Grants `scopes` to `issuer` (added to what it has).
    #[must_use]
    pub fn grant<I, S>(mut self, issuer: &str, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.by_issuer
            .entry(issuer.to_owned())
            .or_default()
            .extend(scopes.into_iter().map(Into::into));
        self
    }

    /// Reads `issuer`'s scopes from `claims` (by default `scope` only): an
    /// identity provider such as Entra ID writes them in `scp` and `roles`.
    #[must_use]
    pub fn scopes_in(mut self, issuer: &str, claims: impl IntoIterator<Item = ScopeClaim>) -> Self {
        self.claims
            .insert(issuer.to_owned(), claims.into_iter().collect());
        self
    }

    /// The claims `issuer`'s scopes are read from.
    pub fn scope_claims(&self, issuer: &str) -> BTreeSet<ScopeClaim> {
        self.claims
            .get(issuer)
            .filter(|c| !c.is_empty())
            .cloned()
            .unwrap_or_else(|| BTreeSet::from([ScopeClaim::Scope]))
    }

    /// The scopes `issuer` may grant, when it has a grant.
    pub fn of(&self, issuer: &str) -> Option<&BTreeSet<String>> {
        self.by_issuer.get(issuer)
    }

    /// Every issuer with a grant.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.by_issuer.keys().map(String::as_str)
    }

    /// Whether a token of `issuer` may carry every one of `scopes`.
    pub fn permits<'a>(&self, issuer: &str, mut scopes: impl Iterator<Item = &'a str>) -> bool {
        self.of(issuer)
            .is_some_and(|granted| scopes.all(|s| granted.contains(s)))
    }
}

/// A key set that can be replaced while validators use it: the keys an
/// identity provider publishes at its `jwks_uri`, fetched again from time to
/// time. Validators see the new keys at once; a token signed with a key id
/// the set lacks is remembered ([`SharedKeys::take_missed`]) so that the one
/// refreshing the set can fetch it sooner (an IdP that rotated its keys).
#[derive(Clone, Debug, Default)]
pub struct SharedKeys {
    current: Arc<std::sync::RwLock<Arc<KeySet>>>,
    missed: Arc<std::sync::atomic::AtomicBool>,
}

impl SharedKeys {
    /// Starts with `keys`.
    pub fn new(keys: Arc<KeySet>) -> Self {
        Self {
            current: Arc::new(std::sync::RwLock::new(keys)),
            missed: Arc::default(),
        }
    }

    /// The keys now.
    pub fn current(&self) -> Arc<KeySet> {
        self.current
            .read()
            .map_or_else(|p| p.into_inner().clone(), |k| k.clone())
    }

    /// Replaces the keys for every validator sharing them.
    pub fn replace(&self, keys: KeySet) {
        let keys = Arc::new(keys);
        match self.current.write() {
            Ok(mut k) => *k = keys,
            Err(p) => *p.into_inner() = keys,
        }
    }

    /// Whether a token named a key id the set lacks since the last call.
    pub fn take_missed(&self) -> bool {
        self.missed
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }
}

/// Validates bearer tokens for one service.
#[derive(Clone, Debug)]
pub struct Validator {
    keys: SharedKeys,
    cfg: ValidatorConfig,
    verified: Arc<std::sync::Mutex<Verified>>,
}

/// Access tokens this validator has verified, by their text, with the key
/// set they verified against: a caller (a portal, another service) sends
/// the same token with every call until it expires, and checking its
/// signature again each time was about 5% of the CPU of an access request.
/// An entry is used only while its token has not expired (with the same
/// leeway as a full check) and while the key set is the one it verified
/// against: a key rotated out refuses its tokens at once.
#[derive(Debug, Default)]
struct Verified {
    by_token: std::collections::HashMap<String, (Principal, Arc<KeySet>)>,
}

/// The most verified tokens a validator remembers; past it the expired go,
/// then all.
const VERIFIED_CAPACITY: usize = 4096;

impl Verified {
    fn get(&self, token: &str, keys: &Arc<KeySet>, now: u64, leeway: u64) -> Option<Principal> {
        let (p, with) = self.by_token.get(token)?;
        (Arc::ptr_eq(with, keys) && p.expires_at.saturating_add(leeway) >= now).then(|| p.clone())
    }

    fn put(&mut self, token: &str, p: &Principal, keys: Arc<KeySet>, now: u64, leeway: u64) {
        if self.by_token.len() >= VERIFIED_CAPACITY {
            self.by_token
                .retain(|_, (p, _)| p.expires_at.saturating_add(leeway) >= now);
            if self.by_token.len() >= VERIFIED_CAPACITY {
                self.by_token.clear();
            }
        }
        self.by_token.insert(token.to_owned(), (p.clone(), keys));
    }
}

impl Validator {
    /// A validator with `keys` and `cfg`.
    pub fn new(keys: Arc<KeySet>, cfg: ValidatorConfig) -> Self {
        Self::with_shared_keys(SharedKeys::new(keys), cfg)
    }

    /// A validator whose keys are replaced as `keys` is.
    pub fn with_shared_keys(keys: SharedKeys, cfg: ValidatorConfig) -> Self {
        Self {
            keys,
            cfg,
            verified: Arc::default(),
        }
    }

    /// The audience this validator checks.
    pub fn audience(&self) -> &str {
        &self.cfg.audience
    }

    /// Verifies `token` and returns the principal. A token verified before
    /// against the same keys and not expired is not verified again.
    pub fn validate(&self, token: &str) -> Result<Principal, Error> {
        let keys = self.keys.current();
        let now = now_secs();
        let leeway = self.cfg.leeway_secs;
        // A panic elsewhere while the lock was held leaves a usable map.
        let verified = || {
            self.verified
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(p) = verified().get(token, &keys, now, leeway) {
            return Ok(p);
        }
        let p = self.verify(token)?;
        verified().put(token, &p, keys, now, leeway);
        Ok(p)
    }

    fn verify(&self, token: &str) -> Result<Principal, Error> {
        let c: Claims = self.decode(token, &["exp", "iss", "aud", "sub"])?;
        let scopes = match &self.cfg.grants {
            Some(grants) => c.scopes_from(&grants.scope_claims(&c.iss)),
            None => c.scopes_from(&BTreeSet::from([ScopeClaim::Scope])),
        };
        if let Some(grants) = &self.cfg.grants
            && !grants.permits(&c.iss, scopes.iter().map(String::as_str))
        {
            return Err(Error::NotGranted);
        }
        Ok(Principal {
            subject: c.sub,
            issuer: c.iss,
            scopes,
            expires_at: c.exp,
        })
    }

    /// Verifies `token` (key id, algorithm, signature, issuer, audience,
    /// `exp` and `nbf` with the leeway, and the `required` claims) and
    /// decodes its claims as `T`: for tokens other than access tokens, such
    /// as an identity provider's assertion or a verification token.
    pub fn decode<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        required: &[&str],
    ) -> Result<T, Error> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Error::Malformed)?;
        let kid = header.kid.as_deref().ok_or(Error::UnknownKey)?;
        let keys = self.keys.current();
        let Some((key, alg, bound)) = keys.get(kid) else {
            self.keys
                .missed
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(Error::UnknownKey);
        };
        if header.alg != alg {
            return Err(Error::AlgorithmMismatch);
        }
        // A key bound to an issuer speaks only for it.
        let issuers: Vec<&str> = match bound {
            Some(b) if self.cfg.issuers.iter().any(|i| i == b) => vec![b],
            Some(_) => return Err(Error::Issuer),
            None => self.cfg.issuers.iter().map(String::as_str).collect(),
        };
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = self.cfg.leeway_secs;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&issuers);
        v.set_audience(&[&self.cfg.audience]);
        v.set_required_spec_claims(required);
        let data = jsonwebtoken::decode::<T>(token, key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            // ErrorKind is non-exhaustive: every other kind is a malformed token.
            #[allow(clippy::wildcard_enum_match_arm)]
            match e.kind() {
                K::InvalidSignature => Error::BadSignature,
                K::ExpiredSignature => Error::Expired,
                K::ImmatureSignature => Error::NotYetValid,
                K::InvalidIssuer => Error::Issuer,
                K::InvalidAudience => Error::Audience,
                K::InvalidAlgorithm => Error::AlgorithmMismatch,
                K::MissingRequiredClaim(_) | K::Json(_) | K::InvalidClaimFormat(_) => Error::Claims,
                _ => Error::Malformed,
            }
        })?;
        Ok(data.claims)
    }
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}
