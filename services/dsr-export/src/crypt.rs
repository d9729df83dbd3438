//! Packages at rest: every package has a key of its own (ChaCha20-Poly1305),
//! stored only wrapped under the service's master key. Files are sealed in
//! chunks of 64 KiB so that a download decrypts as it streams; each chunk's
//! nonce holds the file's index, the chunk's index and a last-chunk flag,
//! so chunks cannot be reordered, dropped or cut off unnoticed.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Plaintext bytes per sealed chunk.
pub const CHUNK: usize = 64 * 1024;
/// Bytes a sealed chunk adds (the tag).
pub const TAG: usize = 16;

/// Why sealing or opening failed. Carries no data.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// The bytes were changed, truncated, or sealed under another key.
    #[error("package data does not authenticate")]
    Corrupt,
    /// The system's random source failed.
    #[error("no randomness available")]
    Random,
}

fn key(bytes: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, bytes).expect("32-byte key"))
}

/// The service's master key: it only wraps package keys.
#[derive(Clone)]
pub struct MasterKey(LessSafeKey);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// From 32 secret bytes.
    pub fn new(bytes: &[u8; 32]) -> Self {
        Self(key(bytes))
    }

    /// A fresh package key, and its wrapped form (nonce || sealed key) bound
    /// to `package_id`.
    pub fn new_package_key(&self, package_id: &str) -> Result<(PackageKey, Vec<u8>), CryptError> {
        let rng = SystemRandom::new();
        let mut raw = [0u8; 32];
        rng.fill(&mut raw).map_err(|_| CryptError::Random)?;
        let mut nonce = [0u8; 12];
        rng.fill(&mut nonce).map_err(|_| CryptError::Random)?;
        let mut sealed = raw.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(package_id.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| CryptError::Corrupt)?;
        let mut wrapped = nonce.to_vec();
        wrapped.extend_from_slice(&sealed);
        Ok((PackageKey(key(&raw)), wrapped))
    }

    /// Unwraps a package key.
    pub fn unwrap_key(&self, package_id: &str, wrapped: &[u8]) -> Result<PackageKey, CryptError> {
        if wrapped.len() != 12 + 32 + TAG {
            return Err(CryptError::Corrupt);
        }
        let (nonce, sealed) = wrapped.split_at(12);
        let mut buf = sealed.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptError::Corrupt)?;
        let raw = self
            .0
            .open_in_place(nonce, Aad::from(package_id.as_bytes()), &mut buf)
            .map_err(|_| CryptError::Corrupt)?;
        let raw: [u8; 32] = raw.try_into().map_err(|_| CryptError::Corrupt)?;
        Ok(PackageKey(key(&raw)))
    }
}

/// One package's key.
pub struct PackageKey(LessSafeKey);

impl std::fmt::Debug for PackageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PackageKey(..)")
    }
}

fn chunk_nonce(file_index: u32, chunk: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&file_index.to_be_bytes());
    // 7 bytes of chunk index: 2^56 chunks of 64 KiB is more than any file.
    n[4..11].copy_from_slice(&chunk.to_be_bytes()[1..]);
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

impl PackageKey {
    /// Seals a whole file: the sealed chunks, concatenated. An empty file is
    /// one empty last chunk.
    pub fn seal_file(&self, file_index: u32, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let chunks = plain.len().div_ceil(CHUNK).max(1);
        let mut out = Vec::with_capacity(plain.len() + chunks * TAG);
        for i in 0..chunks {
            let part = &plain[(i * CHUNK).min(plain.len())..((i + 1) * CHUNK).min(plain.len())];
            let mut buf = part.to_vec();
            self.0
                .seal_in_place_append_tag(
                    chunk_nonce(file_index, i as u64, i + 1 == chunks),
                    Aad::from(aad),
                    &mut buf,
                )
                .expect("sealing fits in memory");
            out.extend_from_slice(&buf);
        }
        out
    }

    /// Opens chunk `index` of a file; `last` says whether the caller found
    /// no bytes after it.
    pub fn open_chunk(
        &self,
        file_index: u32,
        aad: &[u8],
        index: u64,
        last: bool,
        sealed: &[u8],
    ) -> Result<Vec<u8>, CryptError> {
        let mut buf = sealed.to_vec();
        let plain = self
            .0
            .open_in_place(
                chunk_nonce(file_index, index, last),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| CryptError::Corrupt)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_all(
        k: &PackageKey,
        idx: u32,
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, CryptError> {
        let parts: Vec<&[u8]> = sealed.chunks(CHUNK + TAG).collect();
        let mut out = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            out.extend(k.open_chunk(idx, aad, i as u64, i + 1 == parts.len(), p)?);
        }
        Ok(out)
    }

    #[test]
    fn files_round_trip_and_tampering_is_caught() {
        let master = MasterKey::new(&[7; 32]);
        let (k, wrapped) = master.new_package_key("p1").unwrap();
        let plain: Vec<u8> = (0..(CHUNK * 2 + 10)).map(|i| (i % 251) as u8).collect();
        let sealed = k.seal_file(0, b"p1/a.json", &plain);
        assert_ne!(&sealed[..32], &plain[..32]);
        let k2 = master.unwrap_key("p1", &wrapped).unwrap();
        assert_eq!(open_all(&k2, 0, b"p1/a.json", &sealed).unwrap(), plain);
        // Another package id, another file, truncation, a flipped bit: refused.
        assert!(master.unwrap_key("p2", &wrapped).is_err());
        assert!(open_all(&k2, 1, b"p1/a.json", &sealed).is_err());
        assert!(open_all(&k2, 0, b"p1/a.json", &sealed[..2 * (CHUNK + TAG)]).is_err());
        let mut flipped = sealed.clone();
        flipped[5] ^= 1;
        assert!(open_all(&k2, 0, b"p1/a.json", &flipped).is_err());
        // Another master key cannot unwrap.
        assert!(MasterKey::new(&[8; 32]).unwrap_key("p1", &wrapped).is_err());
    }

    #[test]
    fn an_empty_file_is_one_sealed_chunk() {
        let (k, _) = MasterKey::new(&[1; 32]).new_package_key("p").unwrap();
        let sealed = k.seal_file(3, b"x", b"");
        assert_eq!(sealed.len(), TAG);
        assert_eq!(k.open_chunk(3, b"x", 0, true, &sealed).unwrap(), b"");
    }
}
