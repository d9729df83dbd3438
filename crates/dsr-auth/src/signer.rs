//! Minting tokens: development portal tokens and service-to-service tokens.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::{Audience, Claims, Error, now_secs};

/// Signs tokens with one Ed25519 key.
#[derive(Clone)]
pub struct TokenSigner {
    key: EncodingKey,
    kid: String,
    issuer: String,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish()
    }
}

/// What to put in a token.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// Subject.
    pub subject: String,
    /// Audiences.
    pub audiences: Vec<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Lifetime.
    pub ttl: Duration,
}

impl TokenSigner {
    /// A signer from a PKCS#8 PEM Ed25519 private key.
    pub fn from_ed25519_pem(pem: &str, kid: &str, issuer: &str) -> Result<Self, Error> {
        let key =
            EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| Error::Signing(e.to_string()))?;
        Ok(Self {
            key,
            kid: kid.to_owned(),
            issuer: issuer.to_owned(),
        })
    }

    /// A signer from the Ed25519 key file at `path` (created when missing),
    /// with key id `kid` or, when `None`, one derived from the public key;
    /// also returns the JWKS document that verifies its tokens.
    pub fn from_key_file(
        path: &std::path::Path,
        kid: Option<&str>,
        issuer: &str,
    ) -> Result<(Self, String), Error> {
        use base64::Engine as _;
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        let key = crate::keys::load_or_create_ed25519(path)?;
        let public = key.verifying_key().to_bytes();
        let kid = match kid {
            Some(k) => k.to_owned(),
            None => derived_kid(&public),
        };
        let pem = key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| Error::Signing(e.to_string()))?;
        let signer = Self::from_ed25519_pem(&pem, &kid, issuer)?;
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(public);
        let jwks = serde_json::json!({
            "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig" }]
        })
        .to_string();
        Ok((signer, jwks))
    }

    /// The issuer written into tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The key id written into tokens' headers.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs `claims` as they are (a test kit's expired or misaddressed
    /// tokens); services mint with [`Self::mint`].
    pub fn sign(&self, claims: &Claims) -> Result<String, Error> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| Error::Signing(e.to_string()))
    }

    /// Mints a token.
    pub fn mint(&self, req: &TokenRequest) -> Result<String, Error> {
        let now = now_secs();
        let claims = Claims {
            sub: req.subject.clone(),
            iss: self.issuer.clone(),
            aud: match req.audiences.as_slice() {
                [one] => Audience::One(one.clone()),
                many => Audience::Many(many.to_vec()),
            },
            exp: now + req.ttl.as_secs(),
            nbf: Some(now),
            iat: Some(now),
            scope: req.scopes.join(" "),
            scp: None,
            roles: None,
            jti: Some(uuid::Uuid::new_v4().to_string()),
        };
        self.sign(&claims)
    }
}

/// A client interceptor that attaches a service token, minted for the
/// calling service and re-minted shortly before it expires.
#[derive(Clone)]
pub struct ServiceTokenInterceptor {
    signer: Arc<TokenSigner>,
    request: TokenRequest,
    cached: Arc<Mutex<Option<(String, u64)>>>,
}

impl fmt::Debug for ServiceTokenInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceTokenInterceptor")
            .field("subject", &self.request.subject)
            .finish()
    }
}

impl ServiceTokenInterceptor {
    /// Tokens for `request.subject` (the calling service) with `request`'s
    /// audiences and scopes.
    pub fn new(signer: Arc<TokenSigner>, request: TokenRequest) -> Self {
        Self {
            signer,
            request,
            cached: Arc::new(Mutex::new(None)),
        }
    }

    fn token(&self) -> Result<String, Error> {
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let margin = (self.request.ttl.as_secs() / 5).max(5);
        if let Some((token, exp)) = cached.as_ref()
            && now_secs() + margin < *exp
        {
            return Ok(token.clone());
        }
        let token = self.signer.mint(&self.request)?;
        *cached = Some((token.clone(), now_secs() + self.request.ttl.as_secs()));
        Ok(token)
    }
}

impl tonic::service::Interceptor for ServiceTokenInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let token = self
            .token()
            .map_err(|_| tonic::Status::internal("cannot mint service token"))?;
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| tonic::Status::internal("cannot mint service token"))?;
        req.metadata_mut().insert("authorization", value);
        Ok(req)
    }
}

/// A key id from the public key: "svc-" and its first 8 bytes in hex.
fn derived_kid(public: &[u8; 32]) -> String {
    let hex: String = public[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("svc-{hex}")
}
