//! Verification tokens: short-lived EdDSA JWTs listing the verified
//! identities and the assurance level, and the JWKS other services verify
//! them with.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use dsr_domain::identity::Identity;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

// The claims other services read live beside the validator that checks
// them (services do not link each other's crates).
pub use dsr_auth::verification::{
    AUDIENCE, Assurance, ISSUER, Method, TokenIdentity, VerificationClaims,
};

/// Why a key could not be loaded or a token signed.
#[derive(Debug, thiserror::Error)]
#[error("verification token key: {0}")]
pub struct KeyError(pub String);

/// Signs verification tokens.
#[derive(Clone)]
pub struct TokenIssuer {
    key: EncodingKey,
    public: [u8; 32],
    kid: String,
    ttl: chrono::Duration,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A signed token and what it says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The JWT.
    pub jwt: String,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Assurance.
    pub assurance: Assurance,
    /// Identities.
    pub identities: Vec<Identity>,
}

impl TokenIssuer {
    fn from_key(signing: &SigningKey, ttl: chrono::Duration) -> Result<Self, KeyError> {
        let pem = signing
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| KeyError(e.to_string()))?;
        let key = EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| KeyError(e.to_string()))?;
        let public = signing.verifying_key().to_bytes();
        use sha2::Digest as _;
        let kid = format!(
            "identity-{}",
            &hex::encode(sha2::Sha256::digest(public))[..16]
        );
        Ok(Self {
            key,
            public,
            kid,
            ttl,
        })
    }

    /// A fresh key (tests).
    pub fn generate(ttl: chrono::Duration) -> Result<Self, KeyError> {
        Self::from_key(&SigningKey::generate(&mut rand::rngs::OsRng), ttl)
    }

    /// Loads the PKCS#8 PEM key at `path`, creating it (mode 0600) when
    /// missing.
    pub fn load_or_create(path: &Path, ttl: chrono::Duration) -> Result<Self, KeyError> {
        let key = dsr_auth::load_or_create_ed25519(path).map_err(|e| KeyError(e.to_string()))?;
        Self::from_key(&key, ttl)
    }

    /// The JWKS document with the public key.
    pub fn jwks(&self) -> String {
        serde_json::json!({
            "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(self.public),
                       "kid": self.kid, "alg": "EdDSA", "use": "sig" }]
        })
        .to_string()
    }

    /// Signs a token for `identities` at `assurance`.
    pub fn issue(
        &self,
        verification_id: &str,
        method: Method,
        assurance: Assurance,
        identities: Vec<Identity>,
    ) -> Result<Issued, KeyError> {
        let now = Utc::now();
        let expires_at = now + self.ttl;
        let secs = |t: DateTime<Utc>| u64::try_from(t.timestamp()).unwrap_or(0);
        let claims = VerificationClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: verification_id.to_owned(),
            exp: secs(expires_at),
            iat: secs(now),
            nbf: secs(now),
            jti: uuid::Uuid::new_v4().to_string(),
            acr: assurance,
            method,
            identities: identities
                .iter()
                .map(TokenIdentity::from_identity)
                .collect(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let jwt = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| KeyError(e.to_string()))?;
        Ok(Issued {
            jwt,
            expires_at,
            assurance,
            identities,
        })
    }
}
