//! Identity values shown as a keyed short hash.

use std::fmt;
use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use sha2::Sha256;

static KEY: OnceLock<[u8; 32]> = OnceLock::new();

/// Sets the process-wide redaction key. Processes that share a key print the
/// same hash for the same value, so one person's events can be correlated
/// across services without the value ever being written. Returns false if a
/// key was already set (or already drawn at random by a first use).
pub fn set_redaction_key(key: [u8; 32]) -> bool {
    KEY.set(key).is_ok()
}

fn key() -> &'static [u8; 32] {
    KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
        k
    })
}

/// A value that identifies a person.
pub trait Sensitive {
    /// The bytes the hash is computed over.
    fn sensitive_bytes(&self) -> Vec<u8>;
}

impl Sensitive for str {
    fn sensitive_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

impl Sensitive for String {
    fn sensitive_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

impl Sensitive for dsr_domain::identity::Identity {
    fn sensitive_bytes(&self) -> Vec<u8> {
        let mut b = self.kind().as_str().as_bytes().to_vec();
        b.push(0);
        b.extend_from_slice(self.value().as_bytes());
        b
    }
}

impl<T: Sensitive + ?Sized> Sensitive for &T {
    fn sensitive_bytes(&self) -> Vec<u8> {
        (**self).sensitive_bytes()
    }
}

/// Wraps a value that identifies a person. `Debug` and `Display` print
/// `redacted:` and the first 8 hex digits of HMAC-SHA-256 under the process
/// key, never the value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Redacted<T>(pub T);

impl<T: Sensitive> Redacted<T> {
    /// The short hash shown for the value.
    pub fn short_hash(&self) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key()).expect("HMAC takes any key length");
        mac.update(&self.0.sensitive_bytes());
        hex::encode(&mac.finalize().into_bytes()[..4])
    }
}

impl<T: Sensitive> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redacted:{}", self.short_hash())
    }
}

impl<T: Sensitive> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsr_domain::identity::{Identity, IdentityType};

    #[test]
    fn never_shows_the_value_and_is_stable() {
        let email = Identity::parse(IdentityType::Email, "anna.svensson@example.se").unwrap();
        let shown = format!("{} {:?}", Redacted(&email), Redacted(&email));
        assert!(!shown.contains("anna"), "{shown}");
        assert!(shown.starts_with("redacted:"));
        assert_eq!(Redacted(&email).to_string(), Redacted(&email).to_string());
        let other = Identity::parse(IdentityType::Email, "bo@example.se").unwrap();
        assert_ne!(Redacted(&email).to_string(), Redacted(&other).to_string());
        // the same text as another identity type hashes differently
        let s = "anna.svensson@example.se".to_owned();
        assert_ne!(Redacted(&email).short_hash(), Redacted(&s).short_hash());
    }
}
