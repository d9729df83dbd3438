//! Sign-in through the company's OpenID Connect provider: the authorization
//! code flow with PKCE (RFC 7636), a fresh state and nonce per attempt, and
//! the ID token verified against the keys the provider publishes (its
//! discovery document's `jwks_uri`, fetched again when a token names a key
//! not seen yet). The console signs case handlers in this way, and the
//! privacy centre identifies a person with BankID when the company's
//! provider offers it.
//!
//! Nothing the provider sends is logged: errors name the step, never a
//! claim.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dsr_auth::{KeySet, Validator, ValidatorConfig};
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::RwLock;

/// What the identity provider sends the browser back with.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Callback {
    #[serde(default)]
    state: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    error: String,
}

impl Callback {
    /// The state echoed back.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// The authorization code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The error the provider sent instead of a code (the person
    /// cancelled, or was refused).
    pub fn error(&self) -> Option<&str> {
        (!self.error.is_empty()).then_some(self.error.as_str())
    }
}

/// One provider's client settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The issuer, e.g. `https://login.example.com/realms/staff`: its
    /// discovery document is at `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// This client's id at the provider.
    pub client_id: String,
    /// This client's secret (sent with HTTP Basic to the token endpoint).
    pub client_secret: String,
    /// Where the provider sends the browser back (registered there).
    pub redirect_url: String,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// `acr_values` asked for (e.g. a BankID level); empty: none.
    pub acr_values: String,
}

/// Why a sign-in did not go through (no personal data).
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached or answered out of protocol.
    #[error("identity provider unavailable: {0}")]
    Unavailable(String),
    /// The answer was refused: a state or nonce that does not match, a
    /// token that does not verify, an error the provider sent back.
    #[error("sign-in refused: {0}")]
    Refused(&'static str),
}

/// The provider's discovery document (the fields used).
#[derive(Clone, Debug, serde::Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// One sign-in underway: kept server-side in the browser's session until
/// the provider sends the browser back.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Attempt {
    /// Echoed back by the provider: ties the answer to this browser.
    pub state: String,
    /// Carried in the ID token: ties the token to this attempt.
    pub nonce: String,
    /// The PKCE verifier, sent with the code.
    pub verifier: String,
}

/// How long the provider's keys are trusted before they are fetched again
/// on a key id not seen yet.
const KEYS_MIN_AGE: Duration = Duration::from_secs(60);

/// A provider's client.
pub struct Provider {
    s: Settings,
    http: reqwest::Client,
    meta: RwLock<Option<Metadata>>,
    keys: RwLock<Option<(Arc<Validator>, Instant)>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.s.issuer)
            .field("client_id", &self.s.client_id)
            .finish_non_exhaustive()
    }
}

fn random() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> OidcError {
    OidcError::Unavailable(format!("{what}: {e}"))
}

impl Provider {
    /// A client of the provider `s` describes; checks its URLs (the
    /// provider is asked nothing until the first sign-in).
    pub fn new(s: Settings) -> Result<Self, String> {
        for (name, v) in [("issuer", &s.issuer), ("redirect_url", &s.redirect_url)] {
            let u = reqwest::Url::parse(v).map_err(|e| format!("{name}: {e}"))?;
            if !matches!(u.scheme(), "https" | "http") {
                return Err(format!("{name}: an http(s) URL"));
            }
        }
        if s.client_id.is_empty() {
            return Err("client_id: required".into());
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Self {
            s,
            http,
            meta: RwLock::new(None),
            keys: RwLock::new(None),
        })
    }

    /// The issuer's origin (scheme, host, port): where the browser is sent
    /// to sign in.
    pub fn origin(&self) -> String {
        reqwest::Url::parse(&self.s.issuer)
            .map(|u| u.origin().ascii_serialization())
            .unwrap_or_default()
    }

    async fn metadata(&self) -> Result<Metadata, OidcError> {
        if let Some(m) = self.meta.read().await.clone() {
            return Ok(m);
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.s.issuer.trim_end_matches('/')
        );
        let m: Metadata = self
            .http
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| unavailable("discovery", e))?
            .json()
            .await
            .map_err(|e| unavailable("discovery document", e))?;
        if m.issuer.trim_end_matches('/') != self.s.issuer.trim_end_matches('/') {
            return Err(OidcError::Unavailable(
                "discovery document names another issuer".into(),
            ));
        }
        *self.meta.write().await = Some(m.clone());
        Ok(m)
    }

    /// The provider's keys as a validator of this client's ID tokens;
    /// fetched again when `refresh` and the last fetch is old enough.
    async fn validator(&self, m: &Metadata, refresh: bool) -> Result<Arc<Validator>, OidcError> {
        if let Some((v, at)) = self.keys.read().await.as_ref()
            && (!refresh || at.elapsed() < KEYS_MIN_AGE)
        {
            return Ok(v.clone());
        }
        let text = self
            .http
            .get(&m.jwks_uri)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| unavailable("keys", e))?
            .text()
            .await
            .map_err(|e| unavailable("keys", e))?;
        let keys = KeySet::from_jwks_json(&text).map_err(|e| unavailable("keys", e))?;
        let v = Arc::new(Validator::new(
            Arc::new(keys),
            ValidatorConfig {
                issuers: vec![m.issuer.clone()],
                audience: self.s.client_id.clone(),
                leeway_secs: 60,
                grants: None,
            },
        ));
        *self.keys.write().await = Some((v.clone(), Instant::now()));
        Ok(v)
    }

    /// Starts a sign-in: the URL to send the browser to, and the attempt to
    /// keep until it comes back.
    pub async fn begin(&self) -> Result<(String, Attempt), OidcError> {
        let m = self.metadata().await?;
        let a = Attempt {
            state: random(),
            nonce: random(),
            verifier: random(),
        };
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(a.verifier.as_bytes()));
        let scope = std::iter::once("openid")
            .chain(self.s.scopes.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        let mut params = vec![
            ("response_type", "code"),
            ("client_id", self.s.client_id.as_str()),
            ("redirect_uri", self.s.redirect_url.as_str()),
            ("scope", scope.as_str()),
            ("state", a.state.as_str()),
            ("nonce", a.nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        if !self.s.acr_values.is_empty() {
            params.push(("acr_values", self.s.acr_values.as_str()));
        }
        let url = reqwest::Url::parse_with_params(&m.authorization_endpoint, &params)
            .map_err(|e| unavailable("authorization endpoint", e))?;
        Ok((url.into(), a))
    }

    /// Ends a sign-in the provider sent back with `state` and `code`: the
    /// code exchanged (with the PKCE verifier) for an ID token, verified
    /// (signature, issuer, audience, expiry, nonce). The raw token and its
    /// claims.
    pub async fn finish(
        &self,
        a: &Attempt,
        state: &str,
        code: &str,
    ) -> Result<(String, serde_json::Value), OidcError> {
        if a.state.is_empty() || state != a.state {
            return Err(OidcError::Refused("STATE_MISMATCH"));
        }
        if code.is_empty() {
            return Err(OidcError::Refused("NO_CODE"));
        }
        let m = self.metadata().await?;
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            id_token: String,
        }
        let res = self
            .http
            .post(&m.token_endpoint)
            .basic_auth(&self.s.client_id, Some(&self.s.client_secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", self.s.redirect_url.as_str()),
                ("client_id", self.s.client_id.as_str()),
                ("code_verifier", a.verifier.as_str()),
            ])
            .send()
            .await
            .map_err(|e| unavailable("token endpoint", e))?;
        if res.status().is_client_error() {
            return Err(OidcError::Refused("CODE_REFUSED"));
        }
        let t: TokenResponse = res
            .error_for_status()
            .map_err(|e| unavailable("token endpoint", e))?
            .json()
            .await
            .map_err(|e| unavailable("token response", e))?;
        let required = ["exp", "iss", "aud", "sub"];
        let claims: serde_json::Value = match self
            .validator(&m, false)
            .await?
            .decode(&t.id_token, &required)
        {
            Ok(c) => c,
            Err(dsr_auth::Error::UnknownKey) => self
                .validator(&m, true)
                .await?
                .decode(&t.id_token, &required)
                .map_err(|_| OidcError::Refused("ID_TOKEN_INVALID"))?,
            Err(_) => return Err(OidcError::Refused("ID_TOKEN_INVALID")),
        };
        if claims.get("nonce").and_then(serde_json::Value::as_str) != Some(a.nonce.as_str()) {
            return Err(OidcError::Refused("NONCE_MISMATCH"));
        }
        Ok((t.id_token, claims))
    }
}

/// The strings of claim `name`: a string, or an array of strings (as
/// providers send roles and groups); a dotted name reads into objects
/// (`realm_access.roles`).
pub fn claim_strings(claims: &serde_json::Value, name: &str) -> Vec<String> {
    let mut v = claims;
    for part in name.split('.') {
        match v.get(part) {
            Some(x) => v = x,
            None => return Vec::new(),
        }
    }
    match v {
        serde_json::Value::String(s) => s.split(' ').map(str::to_owned).collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        serde_json::Value::Null
        | serde_json::Value::Bool(_)
        | serde_json::Value::Number(_)
        | serde_json::Value::Object(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::claim_strings;

    #[test]
    fn roles_are_read_from_strings_arrays_and_nested_claims() {
        let c = serde_json::json!({
            "roles": ["dsr-case-handler", 3],
            "scp": "a b",
            "realm_access": { "roles": ["x"] },
            "n": 1
        });
        assert_eq!(claim_strings(&c, "roles"), vec!["dsr-case-handler"]);
        assert_eq!(claim_strings(&c, "scp"), vec!["a", "b"]);
        assert_eq!(claim_strings(&c, "realm_access.roles"), vec!["x"]);
        assert!(claim_strings(&c, "n").is_empty());
        assert!(claim_strings(&c, "missing.x").is_empty());
    }
}
