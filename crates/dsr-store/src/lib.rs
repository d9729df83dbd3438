//! Opening a service's database and running its migrations.
//!
//! One URL decides the backend: `sqlite://path/to/file.db` (the embedded
//! default, one file per service under the data directory),
//! `postgres://user@host/db` (production), or `mysql://user@host/db`
//! (MySQL or MariaDB: a data system's own database that the SQL connector
//! reads; the mesh's services refuse it). SQLite files are created when
//! missing and run in WAL mode with a busy timeout and foreign keys on.
//!
//! Each service keeps its migrations in its own crate (one file per
//! migration) and its own migration table, so several services can share one
//! PostgreSQL database.
#![forbid(unsafe_code)]

#[cfg(feature = "testing")]
pub mod testing;

use std::path::Path;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr};
use sea_orm_migration::MigratorTrait;

pub use sea_orm::DatabaseConnection as Db;

/// Why a database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL names neither SQLite, PostgreSQL nor MySQL.
    #[error("database url must start with sqlite://, postgres:// or mysql:// (got scheme {0:?})")]
    UnsupportedScheme(String),
    /// The directory for a SQLite file could not be created.
    #[error("cannot create directory {path} for the SQLite database: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Connecting failed.
    #[error("cannot open database: {0}")]
    Connect(#[source] DbErr),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[source] DbErr),
}

/// Connection settings beyond the URL.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Most pooled connections (PostgreSQL, MySQL). SQLite uses one writer.
    pub max_connections: u32,
    /// Connections opened at start and kept open while idle (PostgreSQL,
    /// MySQL; at most `max_connections`). A pool grows beyond them only
    /// under load, and each connection it opens then costs the caller a
    /// connect (on PostgreSQL with TLS, tens of milliseconds).
    pub min_connections: u32,
    /// A pooled connection idle at least this long is checked (a ping)
    /// before it is handed out: one the server, a proxy or a firewall
    /// dropped meanwhile is replaced instead of failing the statement. One
    /// in use moments ago is handed out as it is (zero: check every time,
    /// a round trip more for every statement outside a transaction).
    pub ping_if_idle_for: Duration,
    /// How long a SQLite writer waits for a lock before giving up.
    pub busy_timeout: Duration,
    /// How long to wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// PostgreSQL only: the schema the service's tables live in (created if
    /// missing, and put first on the search path), so several services share
    /// one database without sharing tables. Ignored for SQLite, where each
    /// service has its own file.
    pub schema: Option<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_connections: 10,
            min_connections: 2,
            ping_if_idle_for: Duration::from_secs(30),
            busy_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(10),
            schema: None,
        }
    }
}

/// The backend a URL names.
pub fn backend_of(url: &str) -> Result<DbBackend, Error> {
    let scheme = url.split_once(':').map_or(url, |(s, _)| s);
    match scheme {
        "sqlite" => Ok(DbBackend::Sqlite),
        "postgres" | "postgresql" => Ok(DbBackend::Postgres),
        "mysql" => Ok(DbBackend::MySql),
        other => Err(Error::UnsupportedScheme(other.to_owned())),
    }
}

/// A `sqlite://` URL for a file, created on first open.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// Opens the database at `url`.
// `backend_of` only answers SQLite, PostgreSQL or MySQL; DbBackend is non-exhaustive.
#[allow(clippy::wildcard_enum_match_arm)]
pub async fn connect(url: &str, cfg: &StoreConfig) -> Result<DatabaseConnection, Error> {
    let backend = backend_of(url)?;
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.acquire_timeout(cfg.acquire_timeout)
        .sqlx_logging(false);
    if cfg.ping_if_idle_for.is_zero() {
        opts.test_before_acquire(true);
    } else {
        opts.test_before_acquire_if_idle_for(cfg.ping_if_idle_for);
    }
    match backend {
        DbBackend::Sqlite => {
            if let Some(dir) = sqlite_file(url).and_then(|p| p.parent().map(Path::to_path_buf))
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(&dir).map_err(|source| Error::CreateDir {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
            let busy = cfg.busy_timeout;
            let in_memory = url.contains(":memory:") || url.contains("mode=memory");
            // One connection: SQLite writes one at a time, and writers
            // that meet on its lock wait in its busy handler, which sleeps
            // 1, 2, 5, 10 ms and more between tries. Queued for the pool's
            // one connection instead, they wait without sleeping (measured,
            // docs/benchmarks.md: at 32 requests in flight 8% more of them
            // a second and the p99 a quarter lower, the CPU no longer idle
            // while work waits). It also keeps an in-memory database alive
            // and shared.
            opts.max_connections(1).min_connections(1);
            opts.map_sqlx_sqlite_opts(move |o| {
                // Deleted or overwritten content is zeroed on disk, not left
                // in free pages: purged personal data is gone from the file.
                let o = o
                    .busy_timeout(busy)
                    .foreign_keys(true)
                    .pragma("secure_delete", "ON");
                if in_memory {
                    o
                } else {
                    o.journal_mode(SqliteJournalMode::Wal)
                        .synchronous(SqliteSynchronous::Normal)
                }
            });
        }
        DbBackend::Postgres => {
            opts.max_connections(cfg.max_connections)
                .min_connections(cfg.min_connections.min(cfg.max_connections));
            if let Some(schema) = &cfg.schema {
                if !valid_schema_name(schema) {
                    return Err(Error::Connect(DbErr::Custom(format!(
                        "schema name {schema:?} must be lower-case letters, digits and _"
                    ))));
                }
                let admin = Database::connect(url).await.map_err(Error::Connect)?;
                admin
                    .execute_unprepared(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
                    .await
                    .map_err(Error::Connect)?;
                admin.close().await.map_err(Error::Connect)?;
                opts.set_schema_search_path(schema.clone());
            }
        }
        DbBackend::MySql => {
            // The database named in the URL is the system's own: no schema.
            opts.max_connections(cfg.max_connections)
                .min_connections(cfg.min_connections.min(cfg.max_connections));
        }
        _ => {
            return Err(Error::UnsupportedScheme(
                url.split(':').next().unwrap_or("").to_owned(),
            ));
        }
    }
    Database::connect(opts).await.map_err(Error::Connect)
}

/// A pool of `connections` connections that only read, beside the writer
/// [`connect`] opened, to the SQLite file at `url`: for reads outside a
/// transaction, which in WAL mode see every commit made before they begin
/// and need not queue for the one writing connection (at 32 requests in
/// flight the orchestrator's was in use at every look, docs/benchmarks.md).
/// `None` where the pool [`connect`] opened already reads in parallel
/// (PostgreSQL, MySQL) or a second pool would open another database (an
/// in-memory SQLite). Open it after the writer: the file is in WAL mode
/// by then.
pub async fn connect_reader(
    url: &str,
    cfg: &StoreConfig,
    connections: u32,
) -> Result<Option<DatabaseConnection>, Error> {
    if backend_of(url)? != DbBackend::Sqlite
        || url.contains(":memory:")
        || url.contains("mode=memory")
    {
        return Ok(None);
    }
    let n = connections.max(1);
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.acquire_timeout(cfg.acquire_timeout)
        .sqlx_logging(false)
        .max_connections(n)
        .min_connections(n);
    let busy = cfg.busy_timeout;
    // Refuses any write: a statement sent here by mistake fails instead of
    // taking the write lock beside the writer.
    opts.map_sqlx_sqlite_opts(move |o| o.busy_timeout(busy).pragma("query_only", "ON"));
    Database::connect(opts)
        .await
        .map(Some)
        .map_err(Error::Connect)
}

/// The pool's connections now: open, of which idle, and the most it opens.
// `connect` only opens SQLite, PostgreSQL or MySQL; DbBackend is non-exhaustive.
#[allow(clippy::wildcard_enum_match_arm)]
pub fn pool_stats(db: &DatabaseConnection) -> Option<(u32, usize, u32)> {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            let p = db.get_postgres_connection_pool();
            Some((p.size(), p.num_idle(), p.options().get_max_connections()))
        }
        DbBackend::Sqlite => {
            let p = db.get_sqlite_connection_pool();
            Some((p.size(), p.num_idle(), p.options().get_max_connections()))
        }
        DbBackend::MySql => {
            let p = db.get_mysql_connection_pool();
            Some((p.size(), p.num_idle(), p.options().get_max_connections()))
        }
        _ => None,
    }
}

fn valid_schema_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn sqlite_file(url: &str) -> Option<&Path> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| Path::new(path))
}

/// After personal data was deleted: on SQLite, copies the write-ahead log
/// into the database and empties the log file, so that no earlier version
/// of a purged row lingers in the log's old frames (the database's own
/// free pages are zeroed by `secure_delete`). A no-op on PostgreSQL, whose
/// dead tuples its autovacuum reclaims.
pub async fn scrub_log(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() == DbBackend::Sqlite {
        db.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
            .await?;
    }
    Ok(())
}

/// Whether `e` is SQLite's "database is locked" that waiting cannot cure:
/// a transaction that read before it wrote found its snapshot stale when it
/// came to write (another connection wrote in between: SQLITE_BUSY_SNAPSHOT,
/// 517), or the busy timeout ran out (SQLITE_BUSY, 5). The cure is to roll
/// back and run the transaction again from its start.
pub fn is_busy(e: &DbErr) -> bool {
    let (DbErr::Query(sea_orm::RuntimeErr::SqlxError(err))
    | DbErr::Exec(sea_orm::RuntimeErr::SqlxError(err))
    | DbErr::Conn(sea_orm::RuntimeErr::SqlxError(err))) = e
    else {
        return false;
    };
    err.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c == "5" || c == "517")
}

/// Applies every pending migration of `M`.
pub async fn migrate<M: MigratorTrait>(db: &DatabaseConnection) -> Result<(), Error> {
    M::up(db, None).await.map_err(Error::Migrate)
}

/// The migrations of `M` not yet applied.
pub async fn pending<M: MigratorTrait>(db: &DatabaseConnection) -> Result<usize, Error> {
    Ok(M::get_pending_migrations(db)
        .await
        .map_err(Error::Migrate)?
        .len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ConnectionTrait, Statement};

    #[test]
    fn schemes() {
        assert_eq!(backend_of("sqlite://x.db").unwrap(), DbBackend::Sqlite);
        assert_eq!(
            backend_of("postgres://u@h/db").unwrap(),
            DbBackend::Postgres
        );
        assert_eq!(backend_of("mysql://u@h/db").unwrap(), DbBackend::MySql);
        assert!(
            matches!(backend_of("oracle://h/db"), Err(Error::UnsupportedScheme(s)) if s == "oracle")
        );
    }

    #[tokio::test]
    async fn sqlite_file_is_created_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/store.db");
        let db = connect(&sqlite_url(&path), &StoreConfig::default())
            .await
            .unwrap();
        let row = db
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA journal_mode",
            ))
            .await
            .unwrap()
            .unwrap();
        let mode: String = row.try_get_by_index(0).unwrap();
        assert_eq!(mode, "wal");
        let row = db
            .query_one_raw(Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA busy_timeout",
            ))
            .await
            .unwrap()
            .unwrap();
        let busy: i64 = row.try_get_by_index(0).unwrap();
        assert_eq!(busy, 5000);
        assert!(path.exists());
    }

    /// A pool opens its least connections at start, so that a service does
    /// not pay a connect (with TLS to PostgreSQL about 90 ms) in a call
    /// that finds its pool short; never more than its most. SQLite keeps
    /// one connection, its one writer's.
    #[tokio::test]
    async fn a_pool_opens_its_least_connections_at_start() {
        let cfg = StoreConfig {
            max_connections: 5,
            min_connections: 3,
            ..StoreConfig::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let db = connect(&sqlite_url(&dir.path().join("pool.db")), &cfg)
            .await
            .unwrap();
        let (open, _, most) = pool_stats(&db).unwrap();
        assert_eq!((open, most), (1, 1));
        // PostgreSQL when the suite has one (`DSR_TEST_POSTGRES_URL`): the
        // pool is opened on that database and nothing is written.
        let Some(url) = std::env::var("DSR_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            return;
        };
        let db = connect(&url, &cfg).await.unwrap();
        let (open, _, most) = pool_stats(&db).unwrap();
        assert_eq!((open, most), (3, 5));
        let capped = StoreConfig {
            max_connections: 2,
            min_connections: 3,
            ..StoreConfig::default()
        };
        let db = connect(&url, &capped).await.unwrap();
        let (open, _, most) = pool_stats(&db).unwrap();
        assert_eq!((open, most), (2, 2));
    }

    /// The reader pool of a SQLite file sees what the writer committed, is
    /// not held up by a writer's open transaction, and refuses writes; there
    /// is none for an in-memory database or PostgreSQL.
    #[tokio::test]
    async fn a_sqlite_reader_sees_commits_reads_beside_a_writer_and_cannot_write() {
        use sea_orm::TransactionTrait as _;
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(&dir.path().join("read.db"));
        let cfg = StoreConfig::default();
        let db = connect(&url, &cfg).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .await
            .unwrap();
        let reader = connect_reader(&url, &cfg, 2).await.unwrap().unwrap();
        assert_eq!(pool_stats(&reader).map(|(o, _, m)| (o, m)), Some((2, 2)));
        let count = |c: DatabaseConnection| async move {
            let row = c
                .query_one_raw(Statement::from_string(
                    DbBackend::Sqlite,
                    "SELECT count(*) FROM t",
                ))
                .await
                .unwrap()
                .unwrap();
            row.try_get_by_index::<i64>(0).unwrap()
        };
        db.execute_unprepared("INSERT INTO t VALUES ('a')")
            .await
            .unwrap();
        assert_eq!(count(reader.clone()).await, 1);
        // The writer's connection held by an open transaction: the reader
        // answers with the last commit, without waiting for it.
        let txn = db.begin().await.unwrap();
        txn.execute_unprepared("INSERT INTO t VALUES ('b')")
            .await
            .unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(2), count(reader.clone()))
            .await
            .expect("the reader does not wait for the writer");
        assert_eq!(seen, 1);
        txn.commit().await.unwrap();
        assert_eq!(count(reader.clone()).await, 2);
        let refused = reader
            .execute_unprepared("INSERT INTO t VALUES ('c')")
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("readonly"), "{refused}");
        assert!(
            connect_reader("sqlite::memory:", &cfg, 2)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            connect_reader("postgres://u@h/db", &cfg, 2)
                .await
                .unwrap()
                .is_none()
        );
    }

    /// A transaction that read, then wrote after another connection had
    /// written, fails with a "database is locked" no waiting cures: named
    /// as such, so that the caller runs it again from its start.
    #[tokio::test]
    async fn a_stale_snapshot_is_told_apart() {
        use sea_orm::{ConnectionTrait as _, TransactionTrait as _};
        let dir = tempfile::tempdir().unwrap();
        let db = connect(
            &sqlite_url(&dir.path().join("busy.db")),
            &StoreConfig::default(),
        )
        .await
        .unwrap();
        db.execute_unprepared("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .await
            .unwrap();
        let txn = db.begin().await.unwrap();
        txn.query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT count(*) FROM t",
        ))
        .await
        .unwrap();
        // Another writer: a pool of its own (this one's one connection is
        // the transaction's), as another process or the lease pool.
        let other = connect(
            &sqlite_url(&dir.path().join("busy.db")),
            &StoreConfig::default(),
        )
        .await
        .unwrap();
        other
            .execute_unprepared("INSERT INTO t VALUES ('other')")
            .await
            .unwrap();
        let err = txn
            .execute_unprepared("INSERT INTO t VALUES ('mine')")
            .await
            .unwrap_err();
        assert!(is_busy(&err), "{err}");
        let _ = txn.rollback().await;
        // A fresh transaction writes.
        let txn = db.begin().await.unwrap();
        txn.execute_unprepared("INSERT INTO t VALUES ('mine')")
            .await
            .unwrap();
        txn.commit().await.unwrap();
        assert!(!is_busy(&DbErr::Custom("database is locked".into())));
    }
}
