//! Packages at rest: every package has a key of its own (ChaCha20-Poly1305),
//! stored only wrapped under the service's master key. Files are sealed in
//! chunks of 64 KiB so that a download decrypts as it streams; each chunk's
//! nonce holds the file's index, the chunk's index and a last-chunk flag,
//! so chunks cannot be reordered, dropped or cut off unnoticed.
//!
//! [`SealWriter`] seals as it is written and [`SealReader`] opens as it
//! reads: a package is built and read in constant memory, whatever its size.

use std::io::{self, Read, Write};
use std::sync::Arc;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use sha2::Digest as _;

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
    /// A key that is never stored or wrapped: for scratch data that must
    /// be unreadable once this process is gone.
    pub fn ephemeral() -> Result<Self, CryptError> {
        let mut raw = [0u8; 32];
        SystemRandom::new()
            .fill(&mut raw)
            .map_err(|_| CryptError::Random)?;
        Ok(Self(key(&raw)))
    }

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

/// What a [`SealWriter`] wrote: the plain size and, when asked for, the
/// SHA-256 of the plain bytes (hex).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// Plain bytes.
    pub size: u64,
    /// SHA-256 of the plain bytes, hex; empty when not asked for.
    pub sha256: String,
}

/// Seals a file as it is written, chunk by chunk, into `W`: the same bytes
/// as [`PackageKey::seal_file`] over the whole, holding one chunk.
pub struct SealWriter<W: Write> {
    inner: W,
    key: Arc<PackageKey>,
    file_index: u32,
    aad: Vec<u8>,
    buf: Vec<u8>,
    chunk: u64,
    size: u64,
    sha: Option<sha2::Sha256>,
}

impl<W: Write> std::fmt::Debug for SealWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealWriter")
            .field("file_index", &self.file_index)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl<W: Write> SealWriter<W> {
    /// A writer of file `file_index` under `key`, bound to `aad`.
    pub fn new(inner: W, key: Arc<PackageKey>, file_index: u32, aad: Vec<u8>) -> Self {
        Self {
            inner,
            key,
            file_index,
            aad,
            buf: Vec::with_capacity(CHUNK + TAG),
            chunk: 0,
            size: 0,
            sha: None,
        }
    }

    /// Also digests the plain bytes (SHA-256).
    #[must_use]
    pub fn digested(mut self) -> Self {
        self.sha = Some(sha2::Sha256::new());
        self
    }

    /// Where the sealed chunks go.
    pub fn inner_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    fn seal_buffered(&mut self, last: bool) -> io::Result<()> {
        if let Some(sha) = self.sha.as_mut() {
            sha.update(&self.buf);
        }
        self.size += self.buf.len() as u64;
        self.key
            .0
            .seal_in_place_append_tag(
                chunk_nonce(self.file_index, self.chunk, last),
                Aad::from(&self.aad),
                &mut self.buf,
            )
            .map_err(|_| io::Error::other("sealing failed"))?;
        self.inner.write_all(&self.buf)?;
        self.buf.clear();
        self.chunk += 1;
        Ok(())
    }

    /// Seals the last chunk; returns the sink and what was written.
    pub fn finish(mut self) -> io::Result<(W, Written)> {
        self.seal_buffered(true)?;
        self.inner.flush()?;
        let sha256 = self
            .sha
            .take()
            .map(|s| hex::encode(s.finalize()))
            .unwrap_or_default();
        Ok((
            self.inner,
            Written {
                size: self.size,
                sha256,
            },
        ))
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            // A full chunk is sealed only once more bytes follow it: the
            // last chunk, full or not, carries the last-chunk flag.
            if self.buf.len() == CHUNK {
                self.seal_buffered(false)?;
            }
            let take = (CHUNK - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Opens a sealed file as it is read, chunk by chunk. A chunk that does
/// not authenticate, or a file cut off, is an [`io::ErrorKind::InvalidData`]
/// error.
pub struct SealReader<R: Read> {
    inner: R,
    key: Arc<PackageKey>,
    file_index: u32,
    aad: Vec<u8>,
    chunk: u64,
    next: Option<Vec<u8>>,
    plain: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: Read> std::fmt::Debug for SealReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealReader")
            .field("file_index", &self.file_index)
            .field("chunk", &self.chunk)
            .finish_non_exhaustive()
    }
}

fn corrupt() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, CryptError::Corrupt)
}

/// Reads up to one sealed chunk (fewer bytes only at the end).
fn read_sealed(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; CHUNK + TAG];
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

impl<R: Read> SealReader<R> {
    /// A reader of file `file_index` under `key`, bound to `aad`.
    pub fn new(inner: R, key: Arc<PackageKey>, file_index: u32, aad: Vec<u8>) -> Self {
        Self {
            inner,
            key,
            file_index,
            aad,
            chunk: 0,
            next: None,
            plain: Vec::new(),
            pos: 0,
            done: false,
        }
    }

    /// Opens the next chunk; false at the end.
    fn fill(&mut self) -> io::Result<bool> {
        while !self.done {
            let current = match self.next.take() {
                Some(c) => c,
                None => read_sealed(&mut self.inner)?,
            };
            if current.len() < TAG {
                // Every file ends with a sealed last chunk.
                return Err(corrupt());
            }
            let next = read_sealed(&mut self.inner)?;
            let last = next.is_empty();
            self.plain = self
                .key
                .open_chunk(self.file_index, &self.aad, self.chunk, last, &current)
                .map_err(|_| corrupt())?;
            self.pos = 0;
            self.chunk += 1;
            self.done = last;
            self.next = Some(next);
            if !self.plain.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl<R: Read> Read for SealReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.plain.len() && !self.fill()? {
            return Ok(0);
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
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
    fn the_writer_seals_as_a_whole_file_and_the_reader_opens_it() {
        let (k, _) = MasterKey::new(&[2; 32]).new_package_key("p").unwrap();
        let k = Arc::new(k);
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
            let mut w = SealWriter::new(Vec::new(), k.clone(), 4, b"p/4".to_vec()).digested();
            // Written in uneven pieces, as a serialiser writes.
            for piece in plain.chunks(1000) {
                w.write_all(piece).unwrap();
            }
            let (sealed, written) = w.finish().unwrap();
            assert_eq!(sealed, k.seal_file(4, b"p/4", &plain), "length {len}");
            assert_eq!(written.size, len as u64);
            assert_eq!(
                written.sha256,
                hex::encode(sha2::Sha256::digest(&plain)),
                "length {len}"
            );
            let mut opened = Vec::new();
            SealReader::new(sealed.as_slice(), k.clone(), 4, b"p/4".to_vec())
                .read_to_end(&mut opened)
                .unwrap();
            assert_eq!(opened, plain, "length {len}");
            // Cut off after a whole chunk, or changed: refused.
            if sealed.len() > CHUNK + TAG {
                let mut cut = Vec::new();
                let err = SealReader::new(&sealed[..CHUNK + TAG], k.clone(), 4, b"p/4".to_vec())
                    .read_to_end(&mut cut)
                    .unwrap_err();
                assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            }
            let mut flipped = sealed.clone();
            let at = flipped.len() / 2;
            flipped[at] ^= 1;
            assert!(
                SealReader::new(flipped.as_slice(), k.clone(), 4, b"p/4".to_vec())
                    .read_to_end(&mut Vec::new())
                    .is_err()
            );
            // Nothing at all is not an empty file.
            assert!(
                SealReader::new(&[][..], k.clone(), 4, b"p/4".to_vec())
                    .read_to_end(&mut Vec::new())
                    .is_err()
            );
        }
    }

    #[test]
    fn an_empty_file_is_one_sealed_chunk() {
        let (k, _) = MasterKey::new(&[1; 32]).new_package_key("p").unwrap();
        let sealed = k.seal_file(3, b"x", b"");
        assert_eq!(sealed.len(), TAG);
        assert_eq!(k.open_chunk(3, b"x", 0, true, &sealed).unwrap(), b"");
    }
}
