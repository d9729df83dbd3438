//! Receipt signing (Ed25519 over a domain-separated prefix and the exact
//! payload bytes) and verification against published keys.

use std::path::Path;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};

/// What is signed: this prefix, then the payload.
pub const DOMAIN: &[u8] = b"dsr.system.v1.Receipt\n";

/// Why a key could not be loaded or a signature did not verify.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The key file could not be read or written.
    #[error("cannot use signing key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// No published key has that id.
    #[error("no published key with id {0}")]
    UnknownKey(String),
    /// Malformed key or signature bytes.
    #[error("malformed key or signature")]
    Malformed,
    /// The signature does not match.
    #[error("signature does not verify")]
    Invalid,
}

/// Signs receipts with one Ed25519 key.
#[derive(Clone)]
pub struct ReceiptSigner {
    key: SigningKey,
    key_id: String,
}

impl std::fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiptSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A detached signature over a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// The payload, exactly as signed.
    pub payload: Vec<u8>,
    /// The key's id.
    pub key_id: String,
    /// 64 bytes.
    pub signature: Vec<u8>,
}

impl ReceiptSigner {
    /// A new random key.
    pub fn generate(key_id: &str) -> Self {
        Self {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
            key_id: key_id.to_owned(),
        }
    }

    /// Loads the PKCS#8 PEM key at `path`, creating it (mode 0600) when it
    /// does not exist. The key id is derived from the public key.
    pub fn load_or_create(path: &Path) -> Result<Self, SigningError> {
        let key = dsr_auth::load_or_create_ed25519(path).map_err(|e| SigningError::KeyFile {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let key_id = key_id_of(&key.verifying_key());
        Ok(Self { key, key_id })
    }

    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key to publish.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Signs `payload`.
    pub fn sign(&self, payload: Vec<u8>) -> Signed {
        let mut msg = DOMAIN.to_vec();
        msg.extend_from_slice(&payload);
        let signature = self.key.sign(&msg).to_bytes().to_vec();
        Signed {
            payload,
            key_id: self.key_id.clone(),
            signature,
        }
    }
}

/// "ed25519-" and the first 16 hex digits of SHA-256 of the public key.
pub fn key_id_of(key: &VerifyingKey) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.as_bytes());
    format!("ed25519-{}", &hex::encode(digest)[..16])
}

/// Verifies `signed` against the published keys `(key_id, public key)` and
/// returns the payload to decode.
pub fn verify<'a>(
    signed: &'a Signed,
    keys: &[(String, Vec<u8>)],
) -> Result<&'a [u8], SigningError> {
    let (_, public) = keys
        .iter()
        .find(|(id, _)| *id == signed.key_id)
        .ok_or_else(|| SigningError::UnknownKey(signed.key_id.clone()))?;
    let public: [u8; 32] = public
        .as_slice()
        .try_into()
        .map_err(|_| SigningError::Malformed)?;
    let key = VerifyingKey::from_bytes(&public).map_err(|_| SigningError::Malformed)?;
    let sig = Signature::from_slice(&signed.signature).map_err(|_| SigningError::Malformed)?;
    let mut msg = DOMAIN.to_vec();
    msg.extend_from_slice(&signed.payload);
    key.verify(&msg, &sig).map_err(|_| SigningError::Invalid)?;
    Ok(&signed.payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/receipt.pem");
        let signer = ReceiptSigner::load_or_create(&path).unwrap();
        let again = ReceiptSigner::load_or_create(&path).unwrap();
        assert_eq!(signer.key_id(), again.key_id(), "the key persists");
        let keys = vec![(signer.key_id().to_owned(), signer.public_key().to_vec())];
        let signed = signer.sign(b"receipt bytes".to_vec());
        assert_eq!(verify(&signed, &keys).unwrap(), b"receipt bytes");

        let mut tampered = signed.clone();
        tampered.payload[0] ^= 1;
        assert!(matches!(
            verify(&tampered, &keys),
            Err(SigningError::Invalid)
        ));
        let other = ReceiptSigner::generate("other");
        let forged = Signed {
            key_id: signer.key_id().to_owned(),
            ..other.sign(b"receipt bytes".to_vec())
        };
        assert!(matches!(verify(&forged, &keys), Err(SigningError::Invalid)));
        let unknown = other.sign(b"x".to_vec());
        assert!(matches!(
            verify(&unknown, &keys),
            Err(SigningError::UnknownKey(_))
        ));
    }
}
