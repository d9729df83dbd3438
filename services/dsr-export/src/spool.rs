//! Scratch space for a package being built. The records read from each
//! system are written here once, then read back as often as the documents
//! need them (the JSON, then the report), so that a person with hundreds of
//! thousands of records costs disk, not memory.
//!
//! A spool is sealed under a key that lives only in this process's memory
//! ([`PackageKey::ephemeral`]): it stays in memory while small, and spills
//! to a file in the package's scratch directory once it passes
//! [`SPILL_AT`]. What a crash leaves behind cannot be read by anyone, and
//! the store removes it ([`crate::store::Packages::purge_expired`]).

use std::io::{self, BufRead, BufReader, Read};
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::AsyncWriteExt as _;

use crate::crypt::{CryptError, PackageKey, SealReader, SealWriter};

/// Sealed bytes a spool keeps in memory before it spills to disk.
pub const SPILL_AT: usize = 1024 * 1024;

/// The scratch directory of one build; removed when dropped.
pub struct SpoolDir {
    path: PathBuf,
    key: Arc<PackageKey>,
}

impl std::fmt::Debug for SpoolDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolDir").finish_non_exhaustive()
    }
}

impl SpoolDir {
    /// Spools under `path` (created on the first spill), with a fresh
    /// ephemeral key.
    pub fn new(path: PathBuf) -> Result<Self, CryptError> {
        Ok(Self {
            path,
            key: Arc::new(PackageKey::ephemeral()?),
        })
    }

    /// A new spool, the `index`th of this build.
    pub fn writer<T: Serialize>(&self, index: u32) -> SpoolWriter<T> {
        SpoolWriter {
            sealer: SealWriter::new(Vec::new(), self.key.clone(), index, aad(index)),
            key: self.key.clone(),
            file: None,
            dir: self.path.clone(),
            path: self.path.join(format!("{index}.spool")),
            index,
            count: 0,
            _t: PhantomData,
        }
    }
}

impl Drop for SpoolDir {
    fn drop(&mut self) {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, "a package's scratch directory was not removed"),
        }
    }
}

fn aad(index: u32) -> Vec<u8> {
    format!("spool/{index}").into_bytes()
}

/// Writes one spool, item by item (one JSON line each).
pub struct SpoolWriter<T> {
    sealer: SealWriter<Vec<u8>>,
    key: Arc<PackageKey>,
    file: Option<tokio::fs::File>,
    dir: PathBuf,
    path: PathBuf,
    index: u32,
    count: u64,
    _t: PhantomData<fn(&T)>,
}

impl<T> std::fmt::Debug for SpoolWriter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpoolWriter")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl<T: Serialize> SpoolWriter<T> {
    /// Appends an item.
    pub async fn push(&mut self, item: &T) -> io::Result<()> {
        use std::io::Write as _;
        serde_json::to_writer(&mut self.sealer, item).map_err(io::Error::other)?;
        self.sealer.write_all(b"\n")?;
        self.count += 1;
        let sealed = self.sealer.inner_mut();
        if self.file.is_some() || sealed.len() >= SPILL_AT {
            let bytes = std::mem::take(sealed);
            self.spill(&bytes).await?;
        }
        Ok(())
    }

    async fn spill(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            tokio::fs::create_dir_all(&self.dir).await?;
            self.file = Some(tokio::fs::File::create(&self.path).await?);
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(bytes).await?;
        }
        Ok(())
    }

    /// Seals the end; the spool, ready to be read.
    pub async fn finish(self) -> io::Result<Spooled<T>> {
        let Self {
            sealer,
            file,
            path,
            key,
            index,
            count,
            ..
        } = self;
        let (rest, _) = sealer.finish()?;
        let data = match file {
            None => Data::Memory(rest),
            Some(mut f) => {
                f.write_all(&rest).await?;
                f.flush().await?;
                Data::File(path)
            }
        };
        Ok(Spooled {
            stored: Arc::new(Stored { data, key, index }),
            count,
            _t: PhantomData,
        })
    }
}

enum Data {
    Memory(Vec<u8>),
    File(PathBuf),
}

struct Stored {
    data: Data,
    key: Arc<PackageKey>,
    index: u32,
}

/// A finished spool: its items, read back in order as often as needed.
/// Serialises as a JSON array of its items, read as it is written.
pub struct Spooled<T> {
    stored: Arc<Stored>,
    count: u64,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Spooled<T> {
    fn clone(&self) -> Self {
        Self {
            stored: self.stored.clone(),
            count: self.count,
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Spooled<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spooled")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> Spooled<T> {
    /// How many items.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// No items.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The items, in the order written.
    pub fn iter(&self) -> io::Result<Items<'_, T>> {
        let s = &*self.stored;
        let raw: Box<dyn Read + '_> = match &s.data {
            Data::Memory(b) => Box::new(b.as_slice()),
            Data::File(p) => Box::new(std::fs::File::open(p)?),
        };
        Ok(Items {
            lines: BufReader::with_capacity(
                64 * 1024,
                SealReader::new(raw, s.key.clone(), s.index, aad(s.index)),
            ),
            line: String::new(),
            _t: PhantomData,
        })
    }
}

/// The items of a [`Spooled`].
pub struct Items<'a, T> {
    lines: BufReader<SealReader<Box<dyn Read + 'a>>>,
    line: String,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Items<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Items").finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> Iterator for Items<'_, T> {
    type Item = io::Result<T>;

    fn next(&mut self) -> Option<io::Result<T>> {
        self.line.clear();
        match self.lines.read_line(&mut self.line) {
            Ok(0) => None,
            Ok(_) => Some(
                serde_json::from_str(self.line.trim_end_matches('\n'))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            ),
            Err(e) => Some(Err(e)),
        }
    }
}

impl<T: Serialize + DeserializeOwned> Serialize for Spooled<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeSeq as _};
        let mut seq = serializer.serialize_seq(usize::try_from(self.count).ok())?;
        for item in self.iter().map_err(S::Error::custom)? {
            seq.serialize_element(&item.map_err(S::Error::custom)?)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Item {
        n: u64,
        text: String,
    }

    fn item(n: u64) -> Item {
        Item {
            n,
            text: format!("line {n}\nwith a newline and ünïcode"),
        }
    }

    #[tokio::test]
    async fn a_small_spool_stays_in_memory_and_a_large_one_spills_sealed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SpoolDir::new(tmp.path().join("p.spool")).unwrap();
        let mut small = dir.writer::<Item>(0);
        for n in 0..10 {
            small.push(&item(n)).await.unwrap();
        }
        let small = small.finish().await.unwrap();
        assert!(!tmp.path().join("p.spool").exists(), "nothing spilled");
        let mut large = dir.writer::<Item>(1);
        let many = 40_000u64;
        for n in 0..many {
            large.push(&item(n)).await.unwrap();
        }
        let large = large.finish().await.unwrap();
        let file = tmp.path().join("p.spool").join("1.spool");
        let on_disk = std::fs::read(&file).unwrap();
        assert!(on_disk.len() > SPILL_AT);
        assert!(
            !on_disk.windows(7).any(|w| w == b"line 12"),
            "the spool is sealed on disk"
        );
        for (spool, n) in [(&small, 10), (&large, many)] {
            assert_eq!(spool.len(), n);
            // Read twice: the documents read a spool more than once.
            for _ in 0..2 {
                let back: Vec<Item> = spool.iter().unwrap().map(Result::unwrap).collect();
                assert_eq!(back.len() as u64, n);
                assert!(back.iter().enumerate().all(|(i, it)| *it == item(i as u64)));
            }
        }
        let json = serde_json::to_value(&small).unwrap();
        assert_eq!(json.as_array().unwrap().len(), 10);
        assert_eq!(json[3]["n"], 3);
        // A spool changed on disk does not read back.
        let mut changed = on_disk.clone();
        changed[100] ^= 1;
        std::fs::write(&file, &changed).unwrap();
        assert!(large.iter().unwrap().any(|r| r.is_err()));
        // The scratch directory goes with the build.
        drop(dir);
        assert!(!tmp.path().join("p.spool").exists());
    }
}
