//! Verification keys (JWKS) and development key pairs.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::Error;

/// Verification keys by key id. Holds only RS256, ES256 and EdDSA keys.
/// A key may be bound to an issuer ([`KeySet::bound_to`]): then it verifies
/// only tokens whose `iss` is that issuer, so one party's key cannot speak
/// for another.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, (DecodingKey, Algorithm, Option<String>)>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    /// Reads a JWKS document (`{"keys": [...]}`). Every key needs a `kid`;
    /// symmetric (`oct`) keys and algorithms other than RS256, ES256 and
    /// EdDSA are refused, naming the key.
    pub fn from_jwks_json(text: &str) -> Result<Self, Error> {
        let set: JwkSet = serde_json::from_str(text)
            .map_err(|e| Error::KeySet(format!("not a JWKS document: {e}")))?;
        let mut keys = HashMap::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let kid = jwk
                .common
                .key_id
                .clone()
                .ok_or_else(|| Error::KeySet(format!("key {i} has no kid")))?;
            let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
                    if p.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                (AlgorithmParameters::OctetKeyPair(p), None | Some(KeyAlgorithm::EdDSA))
                    if p.curve == EllipticCurve::Ed25519 =>
                {
                    Algorithm::EdDSA
                }
                (AlgorithmParameters::OctetKey(_), _) => {
                    return Err(Error::KeySet(format!(
                        "key {kid}: symmetric keys are not accepted"
                    )));
                }
                _ => {
                    return Err(Error::KeySet(format!(
                        "key {kid}: only RS256, ES256 (P-256) and EdDSA (Ed25519) keys are accepted"
                    )));
                }
            };
            let key =
                DecodingKey::from_jwk(jwk).map_err(|e| Error::KeySet(format!("key {kid}: {e}")))?;
            if keys.insert(kid.clone(), (key, alg, None)).is_some() {
                return Err(Error::KeySet(format!("key id {kid} appears twice")));
            }
        }
        Ok(Self { keys })
    }

    /// Adds every key of `other`; a key id present in both is an error.
    pub fn merge(&mut self, other: KeySet) -> Result<(), Error> {
        for (kid, v) in other.keys {
            if self.keys.contains_key(&kid) {
                return Err(Error::KeySet(format!("key id {kid} appears twice")));
            }
            self.keys.insert(kid, v);
        }
        Ok(())
    }

    /// The same keys, each bound to `issuer`.
    #[must_use]
    pub fn bound_to(mut self, issuer: &str) -> Self {
        for v in self.keys.values_mut() {
            v.2 = Some(issuer.to_owned());
        }
        self
    }

    /// The key, algorithm and bound issuer for `kid`.
    pub(crate) fn get(&self, kid: &str) -> Option<(&DecodingKey, Algorithm, Option<&str>)> {
        self.keys.get(kid).map(|(k, a, i)| (k, *a, i.as_deref()))
    }

    /// The issuer `kid` is bound to, when it is.
    pub fn issuer_of(&self, kid: &str) -> Option<&str> {
        self.keys.get(kid).and_then(|(_, _, i)| i.as_deref())
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A freshly generated Ed25519 key pair for development and tests.
#[derive(Clone)]
pub struct DevKeyPair {
    /// Key id.
    pub kid: String,
    /// Private key, PKCS#8 PEM.
    pub private_pem: String,
    /// A JWKS document holding the public key.
    pub jwks_json: String,
}

impl fmt::Debug for DevKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevKeyPair")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Generates an Ed25519 key pair with key id `kid`.
pub fn generate_ed25519(kid: &str) -> Result<DevKeyPair, Error> {
    let signing = SigningKey::generate(&mut rand::rngs::OsRng);
    let private_pem = signing
        .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .map_err(|e| Error::Signing(e.to_string()))?
        .to_string();
    let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().as_bytes());
    let jwks_json = serde_json::json!({
        "keys": [{ "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig" }]
    })
    .to_string();
    Ok(DevKeyPair {
        kid: kid.to_owned(),
        private_pem,
        jwks_json,
    })
}

/// Writes `bytes` to a new file at `path` that only its owner can read
/// (mode 0600 on Unix); fails if the file exists.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(bytes)
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, bytes)
    }
}

/// Loads the Ed25519 private key (PKCS#8 PEM) at `path`, creating the file
/// (and its directory) with a new random key when it does not exist.
pub fn load_or_create_ed25519(path: &Path) -> Result<SigningKey, Error> {
    let err = |reason: String| Error::KeySet(format!("{}: {reason}", path.display()));
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let pem = key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(|e| err(e.to_string()))?;
        write_private(path, pem.as_bytes()).map_err(|e| err(e.to_string()))?;
    }
    let pem = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| err(e.to_string()))
}
