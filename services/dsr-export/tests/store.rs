//! The package store on a real database and disk: files come back as they
//! went in, sealed on disk; a changed byte is refused; expired packages are
//! gone with their files; a second package for the same request is not
//! made.

use chrono::{Duration, Utc};
use dsr_export::model::Kind;
use dsr_export::store::{NewFile, Packages, StoreError};
use support::store;

mod support;

async fn read_all(p: &Packages, id: &str, name: &str) -> Result<Vec<u8>, StoreError> {
    let mut rx = p.open(id, name).await?;
    let mut out = Vec::new();
    while let Some(chunk) = rx.recv().await {
        out.extend(chunk?);
    }
    Ok(out)
}

#[tokio::test]
async fn packages_round_trip_sealed_and_expire() {
    let (db, dir, packages) = store(9).await;
    let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let now = Utc::now();
    let info = packages
        .save(
            "p-1",
            "req-1",
            Kind::Access,
            vec![
                NewFile {
                    name: "access.json".into(),
                    media_type: "application/json".into(),
                    bytes: b"{\"email\":\"anna@example.se\"}".to_vec(),
                },
                NewFile {
                    name: "big.bin".into(),
                    media_type: "application/octet-stream".into(),
                    bytes: big.clone(),
                },
            ],
            3,
            &["crm".to_owned()],
            now,
            now + Duration::days(30),
            None,
        )
        .await
        .unwrap();
    assert_eq!(info.files.len(), 2);
    assert_eq!(read_all(&packages, "p-1", "big.bin").await.unwrap(), big);
    assert_eq!(
        read_all(&packages, "p-1", "access.json").await.unwrap(),
        b"{\"email\":\"anna@example.se\"}"
    );
    // Sealed on disk: the person's data is not readable there.
    let on_disk = std::fs::read(dir.path().join("p-1.sealed")).unwrap();
    assert!(!String::from_utf8_lossy(&on_disk).contains("anna@example.se"));
    // One file a package, its files one after another.
    let (at, len) = info.files[1].sealed_at.unwrap();
    assert_eq!(info.files[0].sealed_at.map(|(a, l)| a + l), Some(at));
    assert_eq!(at + len, on_disk.len() as u64);
    assert!(matches!(
        read_all(&packages, "p-1", "nope.txt").await,
        Err(StoreError::NoSuchFile)
    ));
    // One package per request: a second save returns the first.
    let again = packages
        .save(
            "p-2",
            "req-1",
            Kind::Access,
            vec![],
            0,
            &[],
            now,
            now + Duration::days(30),
            None,
        )
        .await
        .unwrap();
    assert_eq!(again.id, "p-1");
    assert!(!dir.path().join("p-2.sealed").exists());
    // A changed byte is refused.
    let mut tampered = on_disk.clone();
    tampered[at as usize + 70_000] ^= 1;
    std::fs::write(dir.path().join("p-1.sealed"), tampered).unwrap();
    assert!(matches!(
        read_all(&packages, "p-1", "big.bin").await,
        Err(StoreError::Crypt(_))
    ));
    // At expiry the package and its files are gone.
    assert_eq!(
        packages
            .purge_expired(now + Duration::days(29))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        packages
            .purge_expired(now + Duration::days(31))
            .await
            .unwrap(),
        1
    );
    assert!(!dir.path().join("p-1.sealed").exists());
    assert!(matches!(
        packages.get("p-1").await,
        Err(StoreError::NotFound)
    ));
    db.finish().await;
}

/// Packages are dated by the configured clock: past their expiry on it, a
/// package is no longer served (before any purge), and the purge at that
/// time deletes its files.
#[tokio::test]
async fn a_package_expires_by_the_clock() {
    let clock = dsr_domain::clock::Clock::starting_at(Utc::now());
    let (db, dir, packages) = store(3).await;
    let packages = packages.with_clock(clock.clone());
    let now = packages.clock().now();
    packages
        .save(
            "p-clock",
            "req-clock",
            Kind::Access,
            vec![NewFile {
                name: "access.json".into(),
                media_type: "application/json".into(),
                bytes: b"{}".to_vec(),
            }],
            0,
            &[],
            now,
            now + Duration::days(30),
            None,
        )
        .await
        .unwrap();
    clock.advance(Duration::days(29));
    assert!(packages.get("p-clock").await.is_ok());
    assert!(dir.path().join("p-clock.sealed").exists());
    clock.advance(Duration::days(2));
    assert!(matches!(
        packages.get("p-clock").await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        read_all(&packages, "p-clock", "access.json").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(packages.purge_expired(clock.now()).await.unwrap(), 1);
    assert!(!dir.path().join("p-clock.sealed").exists());
    db.finish().await;
}

/// What a crash leaves of a build (a half-written package, a spool) is
/// removed by the purge once it has stood untouched for over an hour on the
/// store's clock; a build in progress keeps its scratch; a package's own
/// file is not scratch.
#[tokio::test]
async fn the_purge_removes_what_an_interrupted_build_left() {
    let clock = dsr_domain::clock::Clock::starting_at(Utc::now());
    let (db, dir, packages) = store(4).await;
    let packages = packages.with_clock(clock.clone());
    let now = packages.clock().now();
    packages
        .save(
            "p-kept",
            "req-kept",
            Kind::Access,
            vec![NewFile {
                name: "access.json".into(),
                media_type: "application/json".into(),
                bytes: b"{}".to_vec(),
            }],
            0,
            &[],
            now,
            now + Duration::days(30),
            None,
        )
        .await
        .unwrap();
    let partial = dir.path().join("p-crashed.partial");
    std::fs::write(&partial, b"sealed bytes").unwrap();
    // A build's scratch as it was before one file per package.
    let partial_dir = dir.path().join("p-older.partial");
    let spool = packages.scratch_dir("p-crashed");
    for d in [&partial_dir, &spool] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("0.sealed"), b"sealed bytes").unwrap();
    }
    let scratch = [&partial, &partial_dir, &spool];
    packages.purge_expired(clock.now()).await.unwrap();
    assert!(scratch.iter().all(|p| p.exists()), "a build in progress");
    clock.advance(Duration::minutes(61));
    packages.purge_expired(clock.now()).await.unwrap();
    assert!(scratch.iter().all(|p| !p.exists()));
    assert!(packages.get("p-kept").await.is_ok());
    assert!(dir.path().join("p-kept.sealed").exists());
    db.finish().await;
}

/// A package written before one file per package (a directory of sealed
/// files, no place in the index) still reads, refuses a changed byte, and
/// goes at expiry.
#[tokio::test]
async fn a_package_written_a_file_per_file_still_reads_and_expires() {
    use sea_orm::ConnectionTrait as _;
    let (db, dir, packages) = store(5).await;
    let big: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_be_bytes()).collect();
    let now = Utc::now();
    let files = vec![
        NewFile {
            name: "access.json".into(),
            media_type: "application/json".into(),
            bytes: b"{}".to_vec(),
        },
        NewFile {
            name: "big.bin".into(),
            media_type: "application/octet-stream".into(),
            bytes: big.clone(),
        },
    ];
    let info = packages
        .save(
            "p-old",
            "req-old",
            Kind::Access,
            files,
            1,
            &[],
            now,
            now + Duration::days(30),
            None,
        )
        .await
        .unwrap();
    // Rewritten as the store wrote it before: a file per file.
    let whole = std::fs::read(dir.path().join("p-old.sealed")).unwrap();
    let old = dir.path().join("p-old");
    std::fs::create_dir(&old).unwrap();
    let mut listed = Vec::new();
    for (i, f) in info.files.iter().enumerate() {
        let (at, len) = f.sealed_at.unwrap();
        std::fs::write(
            old.join(format!("{i}.sealed")),
            &whole[at as usize..(at + len) as usize],
        )
        .unwrap();
        let mut f = f.clone();
        f.sealed_at = None;
        listed.push(f);
    }
    std::fs::remove_file(dir.path().join("p-old.sealed")).unwrap();
    let json = serde_json::to_string(&listed).unwrap();
    assert!(!json.contains("sealed_at"), "{json}");
    db.db
        .execute_unprepared(&format!(
            "UPDATE export_package SET files = '{json}' WHERE id = 'p-old'"
        ))
        .await
        .unwrap();
    assert_eq!(read_all(&packages, "p-old", "big.bin").await.unwrap(), big);
    assert_eq!(
        read_all(&packages, "p-old", "access.json").await.unwrap(),
        b"{}"
    );
    let mut tampered = std::fs::read(old.join("1.sealed")).unwrap();
    tampered[10] ^= 1;
    std::fs::write(old.join("1.sealed"), tampered).unwrap();
    assert!(matches!(
        read_all(&packages, "p-old", "big.bin").await,
        Err(StoreError::Crypt(_))
    ));
    assert_eq!(
        packages
            .purge_expired(now + Duration::days(31))
            .await
            .unwrap(),
        1
    );
    assert!(!old.exists());
    db.finish().await;
}
