//! What the export's tests share: a package store on a fresh database and
//! directory.

use dsr_export::crypt::MasterKey;
use dsr_export::store::Packages;
use dsr_store::testing::TestDb;

/// A migrated database, a directory and a store over them, sealing under a
/// master key of bytes `key`.
pub(crate) async fn store(key: u8) -> (TestDb, tempfile::TempDir, Packages) {
    let db = TestDb::new().await.unwrap();
    dsr_store::migrate::<dsr_export::migration::Migrator>(&db.db)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let packages = Packages::new(
        db.db.clone(),
        dir.path().to_path_buf(),
        MasterKey::new(&[key; 32]),
    );
    (db, dir, packages)
}
