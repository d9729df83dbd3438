//! Where packages live: the index in the database, the sealed files on
//! disk, one after another in one file per package (`<dir>/<package
//! id>.sealed`: no names, no personal data in paths; each file's place in
//! it is in the index), and their deletion at expiry. A package written
//! before one file per package (`<dir>/<package id>/<file index>.sealed`)
//! is read and purged as it was written.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, SqlErr,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio::sync::mpsc;

use crate::crypt::{CHUNK, CryptError, MasterKey, PackageKey, SealWriter, TAG};
use crate::entity::package;
use crate::model::Kind;

/// One file of a package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Its name.
    pub name: String,
    /// Its media type.
    pub media_type: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
    /// Where its sealed bytes start in the package's file, and how many
    /// there are; `None` in a package written a file per file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_at: Option<(u64, u64)>,
}

/// A package as indexed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageInfo {
    /// Id.
    pub id: String,
    /// The request.
    pub request_id: String,
    /// Kind.
    pub kind: Kind,
    /// Files.
    pub files: Vec<FileInfo>,
    /// Built.
    pub created_at: DateTime<Utc>,
    /// Deleted at.
    pub expires_at: DateTime<Utc>,
    /// Records.
    pub record_count: u64,
    /// Systems.
    pub system_ids: Vec<String>,
    /// Who may fetch it besides case handlers (the submitting portal's
    /// issuer and subject); `None`: case handlers only.
    pub submitted_by: Option<String>,
}

/// A file to store.
#[derive(Clone, Debug)]
pub struct NewFile {
    /// Name.
    pub name: String,
    /// Media type.
    pub media_type: String,
    /// Content.
    pub bytes: Vec<u8>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such package, or it expired.
    #[error("package not found")]
    NotFound,
    /// No such file in the package.
    #[error("file not found in the package")]
    NoSuchFile,
    /// The sealed data does not open.
    #[error(transparent)]
    Crypt(#[from] CryptError),
    /// The disk failed.
    #[error("package storage failed: {0}")]
    Io(#[from] std::io::Error),
    /// The database failed.
    #[error("storage error: {0}")]
    Db(#[from] DbErr),
}

/// The package store.
#[derive(Clone, Debug)]
pub struct Packages {
    db: DatabaseConnection,
    dir: Arc<PathBuf>,
    master: MasterKey,
    clock: dsr_domain::clock::Clock,
}

/// How long a build's scratch (its package file, its spools) may stand
/// before the purge takes it for a build a crash interrupted.
const SCRATCH_STALE: chrono::Duration = chrono::Duration::hours(1);

fn aad(package_id: &str, index: usize) -> Vec<u8> {
    format!("{package_id}/{index}").into_bytes()
}

impl Packages {
    /// A store over `db` (migrated) and the directory `dir`.
    pub fn new(db: DatabaseConnection, dir: PathBuf, master: MasterKey) -> Self {
        Self {
            db,
            dir: Arc::new(dir),
            master,
            clock: dsr_domain::clock::Clock::system(),
        }
    }

    /// Reads the time from `clock`: packages are built, expire and are
    /// purged by it.
    #[must_use]
    pub fn with_clock(mut self, clock: dsr_domain::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The clock packages are dated by.
    pub fn clock(&self) -> &dsr_domain::clock::Clock {
        &self.clock
    }

    fn info(m: package::Model) -> Result<PackageInfo, StoreError> {
        let corrupt = |what: &str| {
            StoreError::Db(DbErr::Custom(format!(
                "stored package has an invalid {what}"
            )))
        };
        Ok(PackageInfo {
            kind: Kind::parse(&m.kind).ok_or_else(|| corrupt("kind"))?,
            files: serde_json::from_str(&m.files).map_err(|_| corrupt("file list"))?,
            system_ids: serde_json::from_str(&m.system_ids).map_err(|_| corrupt("system list"))?,
            record_count: u64::try_from(m.record_count).unwrap_or(0),
            id: m.id,
            request_id: m.request_id,
            created_at: m.created_at,
            expires_at: m.expires_at,
            submitted_by: m.submitted_by,
        })
    }

    /// Where a build of package `id` keeps its scratch data (see
    /// [`crate::spool`]).
    pub fn scratch_dir(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.spool"))
    }

    /// The file holding package `id`'s sealed files.
    fn package_file(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.sealed"))
    }

    /// Starts writing package `id`: its files go, sealed as they are
    /// written, one after another into a scratch file that
    /// [`Packages::commit`] moves into place at once (a crash leaves no
    /// half-written package under its id). Blocking: call it, and write,
    /// off the async threads.
    pub fn begin(&self, id: &str) -> Result<PackageWriter, StoreError> {
        let (key, wrapped) = self.master.new_package_key(id)?;
        let scratch = self.dir.join(format!("{id}.partial"));
        let file = std::io::BufWriter::with_capacity(CHUNK + TAG, std::fs::File::create(&scratch)?);
        Ok(PackageWriter {
            id: id.to_owned(),
            key: Arc::new(key),
            wrapped,
            scratch,
            file: Some(file),
            written: 0,
            files: Vec::new(),
            committed: false,
        })
    }

    /// Indexes a written package. When another package for the same
    /// request won the race, this one's files are removed and the existing
    /// package returned.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit(
        &self,
        mut written: PackageWriter,
        request_id: &str,
        kind: Kind,
        record_count: u64,
        system_ids: &[String],
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        submitted_by: Option<&str>,
    ) -> Result<PackageInfo, StoreError> {
        let id = written.id.clone();
        let pfile = self.package_file(&id);
        if let Some(mut f) = written.file.take() {
            f.flush()?;
        }
        tokio::fs::rename(&written.scratch, &pfile).await?;
        written.committed = true;
        let inserted = package::ActiveModel {
            id: Set(id.clone()),
            request_id: Set(request_id.to_owned()),
            kind: Set(kind.as_str().to_owned()),
            created_at: Set(created_at),
            expires_at: Set(expires_at),
            wrapped_key: Set(hex::encode(&written.wrapped)),
            files: Set(serde_json::to_string(&written.files).expect("serialisable")),
            record_count: Set(i64::try_from(record_count).unwrap_or(i64::MAX)),
            system_ids: Set(serde_json::to_string(system_ids).expect("serialisable")),
            submitted_by: Set(submitted_by.map(str::to_owned)),
        }
        .insert(&self.db)
        .await;
        match inserted {
            Ok(m) => Self::info(m),
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                let _ = tokio::fs::remove_file(&pfile).await;
                self.by_request(request_id)
                    .await?
                    .ok_or(StoreError::NotFound)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&pfile).await;
                Err(e.into())
            }
        }
    }

    /// Seals and stores whole files (the digests are of the plain bytes)
    /// and indexes the package; see [`Packages::begin`] to write a package
    /// too large to hold.
    #[allow(clippy::too_many_arguments)]
    pub async fn save(
        &self,
        id: &str,
        request_id: &str,
        kind: Kind,
        files: Vec<NewFile>,
        record_count: u64,
        system_ids: &[String],
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        submitted_by: Option<&str>,
    ) -> Result<PackageInfo, StoreError> {
        let me = self.clone();
        let pid = id.to_owned();
        let written = tokio::task::spawn_blocking(move || -> Result<PackageWriter, StoreError> {
            let mut w = me.begin(&pid)?;
            for f in files {
                w.write_file(&f.name, &f.media_type, |out| out.write_all(&f.bytes))?;
            }
            Ok(w)
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
        self.commit(
            written,
            request_id,
            kind,
            record_count,
            system_ids,
            created_at,
            expires_at,
            submitted_by,
        )
        .await
    }

    /// The live package of a request, if any.
    pub async fn by_request(&self, request_id: &str) -> Result<Option<PackageInfo>, StoreError> {
        let m = package::Entity::find()
            .filter(package::Column::RequestId.eq(request_id))
            .filter(package::Column::ExpiresAt.gt(self.clock.now()))
            .one(&self.db)
            .await?;
        m.map(Self::info).transpose()
    }

    /// A live package.
    pub async fn get(&self, id: &str) -> Result<PackageInfo, StoreError> {
        let m = package::Entity::find_by_id(id.to_owned())
            .filter(package::Column::ExpiresAt.gt(self.clock.now()))
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)?;
        Self::info(m)
    }

    /// Streams one file, decrypted, chunk by chunk. A chunk that does not
    /// authenticate ends the stream with an error.
    pub async fn open(
        &self,
        id: &str,
        name: &str,
    ) -> Result<mpsc::Receiver<Result<Vec<u8>, StoreError>>, StoreError> {
        let m = package::Entity::find_by_id(id.to_owned())
            .filter(package::Column::ExpiresAt.gt(self.clock.now()))
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)?;
        let wrapped = hex::decode(&m.wrapped_key).map_err(|_| CryptError::Corrupt)?;
        let key = self.master.unwrap_key(id, &wrapped)?;
        let info = Self::info(m)?;
        let index = info
            .files
            .iter()
            .position(|f| f.name == name)
            .ok_or(StoreError::NoSuchFile)?;
        let missing = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::NotFound
            } else {
                StoreError::Io(e)
            }
        };
        // This file's sealed bytes: its stretch of the package's file, or
        // a file of its own in a package written before.
        let mut file: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>> =
            match info.files[index].sealed_at {
                Some((at, len)) => {
                    let mut f = tokio::fs::File::open(self.package_file(id))
                        .await
                        .map_err(missing)?;
                    f.seek(std::io::SeekFrom::Start(at)).await?;
                    Box::pin(f.take(len))
                }
                None => Box::pin(
                    tokio::fs::File::open(self.dir.join(id).join(format!("{index}.sealed")))
                        .await
                        .map_err(missing)?,
                ),
            };
        let aad = aad(id, index);
        let file_index = u32::try_from(index).unwrap_or(u32::MAX);
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut current = match read_sealed_chunk(&mut file).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            };
            let mut n: u64 = 0;
            loop {
                let next = match read_sealed_chunk(&mut file).await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
                let last = next.is_empty();
                let opened = key
                    .open_chunk(file_index, &aad, n, last, &current)
                    .map_err(StoreError::from);
                let failed = opened.is_err();
                if tx.send(opened).await.is_err() || failed || last {
                    return;
                }
                current = next;
                n += 1;
            }
        });
        Ok(rx)
    }

    /// Deletes every package whose expiry has passed (files, then index
    /// entry, so the key goes last); returns how many.
    pub async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let expired = package::Entity::find()
            .filter(package::Column::ExpiresAt.lte(now))
            .all(&self.db)
            .await?;
        let mut n = 0;
        for m in expired {
            remove(&self.package_file(&m.id)).await?;
            // A package written a file per file.
            remove(&self.dir.join(&m.id)).await?;
            package::Entity::delete_by_id(m.id).exec(&self.db).await?;
            n += 1;
        }
        if n > 0 {
            tracing::info!(deleted = n, "expired packages deleted");
        }
        let scratch = self.remove_stale_scratch(now).await?;
        if scratch > 0 {
            tracing::info!(removed = scratch, "scratch of interrupted builds removed");
        }
        Ok(n)
    }

    /// Removes the scratch of builds a crash interrupted (half-written
    /// package files and spools, unreadable without the keys that died with
    /// the process): those last changed over an hour before
    /// `now`, so that a build in progress keeps its own.
    async fn remove_stale_scratch(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut entries = match tokio::fs::read_dir(&*self.dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut n = 0;
        while let Some(entry) = entries.next_entry().await? {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.ends_with(".partial") || name.ends_with(".spool")) {
                continue;
            }
            let changed: DateTime<Utc> = entry.metadata().await?.modified()?.into();
            if changed + SCRATCH_STALE < now && remove(&entry.path()).await? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Purges expired packages every `every`, for the life of the process.
    pub fn spawn_purge(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = me.purge_expired(me.clock.now()).await {
                    tracing::warn!(error = %e, "package purge failed");
                }
            }
        })
    }
}

/// A package being written; see [`Packages::begin`].
pub struct PackageWriter {
    id: String,
    key: Arc<PackageKey>,
    wrapped: Vec<u8>,
    scratch: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    /// Sealed bytes written so far: where the next file starts.
    written: u64,
    files: Vec<FileInfo>,
    committed: bool,
}

impl std::fmt::Debug for PackageWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackageWriter")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl PackageWriter {
    /// Writes the next file through `write`, sealed as it goes; its size
    /// and SHA-256 (of the plain bytes) are recorded.
    pub fn write_file(
        &mut self,
        name: &str,
        media_type: &str,
        write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
    ) -> Result<&FileInfo, StoreError> {
        let index = self.files.len();
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| StoreError::Io(std::io::Error::other("the package is committed")))?;
        let mut sealer = SealWriter::new(
            Counting { inner: file, n: 0 },
            self.key.clone(),
            u32::try_from(index).unwrap_or(u32::MAX),
            aad(&self.id, index),
        )
        .digested();
        write(&mut sealer)?;
        let (counted, written) = sealer.finish()?;
        let at = self.written;
        self.written += counted.n;
        self.files.push(FileInfo {
            name: name.to_owned(),
            media_type: media_type.to_owned(),
            size: written.size,
            sha256: written.sha256,
            sealed_at: Some((at, counted.n)),
        });
        Ok(self.files.last().expect("just pushed"))
    }

    /// The files written so far.
    pub fn files(&self) -> &[FileInfo] {
        &self.files
    }
}

impl Drop for PackageWriter {
    fn drop(&mut self) {
        if !self.committed {
            drop(self.file.take());
            let _ = std::fs::remove_file(&self.scratch);
        }
    }
}

/// A writer that counts the bytes through it.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Removes `path`, a file or a directory with what it holds; whether there
/// was one.
async fn remove(path: &std::path::Path) -> Result<bool, StoreError> {
    let removed = match tokio::fs::symlink_metadata(path).await {
        Ok(m) if m.is_dir() => tokio::fs::remove_dir_all(path).await,
        Ok(_) => tokio::fs::remove_file(path).await,
        Err(e) => Err(e),
    };
    match removed {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Reads up to one sealed chunk (fewer bytes only at the end of the file).
async fn read_sealed_chunk(
    f: &mut (impl tokio::io::AsyncRead + Unpin + ?Sized),
) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; CHUNK + TAG];
    let mut filled = 0;
    while filled < buf.len() {
        let n = f.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    buf.truncate(filled);
    Ok(buf)
}
