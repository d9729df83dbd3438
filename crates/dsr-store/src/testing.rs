//! Databases for tests: SQLite by default, PostgreSQL when
//! `DSR_TEST_POSTGRES_URL` is set, and for a data system's tables MySQL or
//! MariaDB when `DSR_TEST_MYSQL_URL` is set. Each [`TestDb`] gets a
//! database of its own (a temporary SQLite file, or a fresh database
//! dropped afterwards), so test runs never see each other's data.

use std::sync::atomic::{AtomicU64, Ordering};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};

use crate::{Error, StoreConfig, connect, sqlite_url};

/// The environment variable naming a PostgreSQL server for tests, e.g.
/// `postgres://postgres@127.0.0.1:5432/test`.
pub const POSTGRES_ENV: &str = "DSR_TEST_POSTGRES_URL";

/// The environment variable naming a MySQL or MariaDB server for the
/// tests of data systems' databases, e.g. `mysql://root@127.0.0.1:3306/test`.
pub const MYSQL_ENV: &str = "DSR_TEST_MYSQL_URL";

/// A database owned by one test.
#[derive(Debug)]
pub struct TestDb {
    /// The URL to open it.
    pub url: String,
    /// An open connection.
    pub db: DatabaseConnection,
    cleanup: Cleanup,
}

#[derive(Debug)]
enum Cleanup {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres {
        admin_url: String,
        name: String,
    },
    MySql {
        admin_url: String,
        name: String,
    },
    /// Finished: nothing left to drop.
    Done,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestDb {
    /// Creates a database for one test: PostgreSQL when
    /// [`POSTGRES_ENV`] is set, else a SQLite file in a temporary directory.
    pub async fn new() -> Result<Self, Error> {
        match std::env::var(POSTGRES_ENV) {
            Ok(admin_url) if !admin_url.is_empty() => Self::postgres(&admin_url).await,
            _ => Self::sqlite().await,
        }
    }

    /// A data system's database: MySQL or MariaDB when [`MYSQL_ENV`] is
    /// set, else as [`TestDb::new`].
    pub async fn system() -> Result<Self, Error> {
        match std::env::var(MYSQL_ENV) {
            Ok(admin_url) if !admin_url.is_empty() => Self::mysql(&admin_url).await,
            _ => Self::new().await,
        }
    }

    /// A fresh database on the MySQL or MariaDB server at `admin_url`.
    pub async fn mysql(admin_url: &str) -> Result<Self, Error> {
        let name = unique_name();
        let admin = Database::connect(admin_url).await.map_err(Error::Connect)?;
        admin
            .execute_raw(Statement::from_string(
                DbBackend::MySql,
                format!("CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"),
            ))
            .await
            .map_err(Error::Connect)?;
        admin.close().await.map_err(Error::Connect)?;
        let url = replace_db_name(admin_url, &name);
        let db = connect(
            &url,
            &StoreConfig {
                max_connections: 4,
                ..StoreConfig::default()
            },
        )
        .await?;
        Ok(Self {
            url,
            db,
            cleanup: Cleanup::MySql {
                admin_url: admin_url.to_owned(),
                name,
            },
        })
    }

    /// A SQLite file in a fresh temporary directory.
    pub async fn sqlite() -> Result<Self, Error> {
        let dir = tempfile::tempdir().map_err(|source| Error::CreateDir {
            path: std::env::temp_dir().display().to_string(),
            source,
        })?;
        let url = sqlite_url(&dir.path().join("test.db"));
        let db = connect(&url, &StoreConfig::default()).await?;
        Ok(Self {
            url,
            db,
            cleanup: Cleanup::Sqlite(dir),
        })
    }

    /// A fresh database on the PostgreSQL server at `admin_url`.
    pub async fn postgres(admin_url: &str) -> Result<Self, Error> {
        let name = unique_name();
        let admin = Database::connect(admin_url).await.map_err(Error::Connect)?;
        admin
            .execute_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("CREATE DATABASE \"{name}\""),
            ))
            .await
            .map_err(Error::Connect)?;
        admin.close().await.map_err(Error::Connect)?;
        let url = replace_db_name(admin_url, &name);
        let db = connect(
            &url,
            &StoreConfig {
                max_connections: 4,
                ..StoreConfig::default()
            },
        )
        .await?;
        Ok(Self {
            url,
            db,
            cleanup: Cleanup::Postgres {
                admin_url: admin_url.to_owned(),
                name,
            },
        })
    }

    /// Whether the database's files on disk (after a checkpoint, the WAL
    /// included) hold `needle` anywhere, deleted pages too: `None` on
    /// PostgreSQL, whose files are not the test's to read.
    pub async fn file_contains(&self, needle: &str) -> Option<bool> {
        let file = self.url.strip_prefix("sqlite://")?;
        let file = file.split('?').next().unwrap_or(file).to_owned();
        let _ = self
            .db
            .execute_raw(Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA wal_checkpoint(TRUNCATE)",
            ))
            .await;
        Some([file.clone(), format!("{file}-wal")].iter().any(|f| {
            std::fs::read(f).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        }))
    }

    /// Which backend this test runs on.
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Closes the connection and drops the database (PostgreSQL) or removes
    /// the file (SQLite). A test that ends without it, or panics, has the
    /// database dropped when the `TestDb` is (see its `Drop`).
    pub async fn finish(mut self) {
        let _ = self.db.clone().close().await;
        if let Some((admin_url, drop)) = self.cleanup.take() {
            drop_database(&admin_url, drop).await;
        }
    }
}

impl Cleanup {
    /// The server and the statement that drop the database, if any is
    /// left to drop; the cleanup is done after.
    fn take(&mut self) -> Option<(String, Statement)> {
        match std::mem::replace(self, Cleanup::Done) {
            Cleanup::Sqlite(_) | Cleanup::Done => None,
            Cleanup::Postgres { admin_url, name } => Some((
                admin_url,
                Statement::from_string(
                    DbBackend::Postgres,
                    format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
                ),
            )),
            Cleanup::MySql { admin_url, name } => Some((
                admin_url,
                Statement::from_string(
                    DbBackend::MySql,
                    format!("DROP DATABASE IF EXISTS `{name}`"),
                ),
            )),
        }
    }
}

async fn drop_database(admin_url: &str, drop: Statement) {
    if let Ok(admin) = Database::connect(admin_url).await {
        if drop.db_backend == DbBackend::MySql {
            // A transaction a failed test left open holds its tables'
            // metadata locks (its runtime waits on this drop): give up
            // after a while rather than wait for it.
            let _ = admin
                .execute_raw(Statement::from_string(
                    DbBackend::MySql,
                    "SET SESSION lock_wait_timeout = 10",
                ))
                .await;
        }
        let _ = admin.execute_raw(drop).await;
        let _ = admin.close().await;
    }
}

/// A test that did not finish its database (it returned early, or failed)
/// still drops it: on a thread of its own with its own runtime, since a
/// drop cannot wait on the test's.
impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin_url, drop)) = self.cleanup.take() else {
            return;
        };
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(drop_database(&admin_url, drop));
            }
        })
        .join();
    }
}

fn unique_name() -> String {
    format!(
        "dsr_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        chrono_free_nanos()
    )
}

fn chrono_free_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() % 1_000_000)
}

/// `admin_url` with its database name replaced by `name`.
fn replace_db_name(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (admin_url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    let mut url = format!("{}/{name}", &base[..host_part_end]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            replace_db_name("postgres://postgres@127.0.0.1:5432/test", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_db_name("postgres://h:1/test?sslmode=disable", "x"),
            "postgres://h:1/x?sslmode=disable"
        );
        assert_eq!(replace_db_name("postgres://h", "x"), "postgres://h/x");
    }

    /// Whether the test database at `url` still exists: on its server
    /// (PostgreSQL, MySQL) or as a file (SQLite).
    async fn exists(url: &str, admin_url: Option<&str>) -> bool {
        let Some(admin_url) = admin_url else {
            let file = url.strip_prefix("sqlite://").unwrap();
            return std::path::Path::new(file.split('?').next().unwrap()).exists();
        };
        let name = url.rsplit('/').next().unwrap().split('?').next().unwrap();
        let admin = Database::connect(admin_url).await.unwrap();
        let backend = admin.get_database_backend();
        let sql = if backend == DbBackend::Postgres {
            format!("SELECT 1 FROM pg_database WHERE datname = '{name}'")
        } else {
            format!("SELECT 1 FROM information_schema.schemata WHERE schema_name = '{name}'")
        };
        let found = !admin
            .query_all_raw(Statement::from_string(backend, sql))
            .await
            .unwrap()
            .is_empty();
        admin.close().await.unwrap();
        found
    }

    /// A test that returns early or panics without `finish` leaves no
    /// database behind; one that finishes does not either.
    #[tokio::test]
    async fn a_test_database_is_dropped_finished_or_not() {
        for (env, admin) in [
            (POSTGRES_ENV, std::env::var(POSTGRES_ENV).ok()),
            (MYSQL_ENV, std::env::var(MYSQL_ENV).ok()),
            ("", None),
        ] {
            let admin = admin.filter(|u| !u.is_empty());
            if !env.is_empty() && admin.is_none() {
                continue;
            }
            let make = || async {
                match (env, admin.as_deref()) {
                    (POSTGRES_ENV, Some(u)) => TestDb::postgres(u).await.unwrap(),
                    (MYSQL_ENV, Some(u)) => TestDb::mysql(u).await.unwrap(),
                    _ => TestDb::sqlite().await.unwrap(),
                }
            };
            let finished = make().await;
            let url = finished.url.clone();
            assert!(exists(&url, admin.as_deref()).await, "{env}: created");
            finished.finish().await;
            assert!(!exists(&url, admin.as_deref()).await, "{env}: finished");

            let dropped = make().await;
            let url = dropped.url.clone();
            dropped
                .db
                .execute_unprepared("CREATE TABLE t (x INTEGER)")
                .await
                .unwrap();
            drop(dropped);
            assert!(!exists(&url, admin.as_deref()).await, "{env}: dropped");

            let failed = make().await;
            let url = failed.url.clone();
            let panicked = tokio::spawn(async move {
                let _db = failed;
                panic!("a failing test");
            })
            .await;
            assert!(panicked.is_err());
            assert!(!exists(&url, admin.as_deref()).await, "{env}: panicked");
        }
    }
}
