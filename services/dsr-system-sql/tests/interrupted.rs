//! Writes that always finish: an Erase whose caller stops waiting at any
//! moment, or whose process is killed after claiming its key, completes
//! when it is asked again with the same key, with one receipt and the
//! records erased once (SQLite, PostgreSQL with DSR_TEST_POSTGRES_URL, or
//! MariaDB/MySQL with DSR_TEST_MYSQL_URL).
//! And concurrent writes on SQLite wait for each other rather than fail.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use dsr_connector::instruction::Instruction;
use dsr_connector::operations::{Claim, OpState};
use dsr_connector::signing::ReceiptSigner;
use dsr_domain::identity::Organisationsnummer;
use dsr_store::testing::TestDb;
use dsr_system_sql::grpc::ProtoReceipts;
use dsr_system_sql::manifest::Manifest;
use dsr_system_sql::reference::{self, Reference};
use dsr_system_sql::system::{Method, RecordRef, SqlSystem, Write};
use sea_orm::{ConnectionTrait, Statement};

async fn crm(lease: TimeDelta) -> (TestDb, SqlSystem) {
    let db = TestDb::system().await.unwrap();
    dsr_store::migrate::<dsr_connector::migration::Migrator>(&db.db)
        .await
        .unwrap();
    let r = Reference::Crm;
    r.create_schema(&db.db).await.unwrap();
    r.seed(&db.db, 200, 42, 0, reference::base_date())
        .await
        .unwrap();
    let m = Arc::new(Manifest::parse(r.manifest(), r.manifest_name()).unwrap());
    let system = SqlSystem::new(
        db.db.clone(),
        m,
        ReceiptSigner::generate("test"),
        Arc::new(ProtoReceipts),
    )
    .with_lease(lease);
    (db, system)
}

fn instruction(key: &str) -> Instruction {
    let now = Utc::now();
    Instruction {
        request_id: "7f0c2a4e-0000-4000-8000-000000000001".into(),
        controller: Organisationsnummer::parse("556134-1248").unwrap(),
        system_id: "crm".into(),
        due_date: now.date_naive() + TimeDelta::days(30),
        issued_at: now,
        expires_at: now + TimeDelta::minutes(5),
        idempotency_key: key.into(),
    }
}

/// What a value is cast to, to read it as text.
fn text_type(db: &TestDb) -> &'static str {
    if db.backend() == sea_orm::DbBackend::MySql {
        "CHAR"
    } else {
        "TEXT"
    }
}

/// An Erase of the prospects of the first controller's first `n` people.
async fn erase_of(db: &TestDb, n: usize) -> Write {
    let rows = db
        .db
        .query_all_raw(Statement::from_string(
            db.db.get_database_backend(),
            format!(
                "SELECT CAST(id AS {}) AS id FROM prospects WHERE controller_orgnr = '556134-1248' ORDER BY id LIMIT {n}",
                text_type(db)
            ),
        ))
        .await
        .unwrap();
    Write::Erase {
        records: rows
            .iter()
            .map(|r| RecordRef {
                store: "prospects".into(),
                key: r.try_get::<String>("", "id").unwrap(),
            })
            .collect(),
        acceptable: BTreeSet::from([Method::Delete, Method::Anonymise, Method::Nullify]),
        retain: vec![],
    }
}

async fn prospects(db: &TestDb) -> i64 {
    let row = db
        .db
        .query_one_raw(Statement::from_string(
            db.db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM prospects",
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap()
}

async fn done(
    system: &SqlSystem,
    key: &str,
    write: &Write,
) -> dsr_connector::operations::Operation {
    for _ in 0..200 {
        let op = system
            .write(instruction(key), b"digest".to_vec(), write.clone())
            .await
            .unwrap();
        if op.state.is_final() {
            return op;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the write never finished");
}

#[tokio::test]
async fn a_write_whose_caller_stops_waiting_at_any_moment_completes_once() {
    let (db, system) = crm(TimeDelta::seconds(30)).await;
    let before = prospects(&db).await;
    let mut erased = 0;
    // Cut the caller after 0, 1, 2, ... ms: before the claim, during the
    // work, after it.
    for (i, cut_ms) in [0u64, 1, 2, 5, 10, 50].into_iter().enumerate() {
        let write = erase_of(&db, 1).await;
        let key = format!("erase.cut-{i}.crm");
        let _ = tokio::time::timeout(
            Duration::from_millis(cut_ms),
            system.write(instruction(&key), b"digest".to_vec(), write.clone()),
        )
        .await;
        let first = done(&system, &key, &write).await;
        assert_eq!(first.state, OpState::Succeeded, "{cut_ms} ms: {first:?}");
        let again = done(&system, &key, &write).await;
        assert_eq!(again.receipt, first.receipt, "one receipt, byte for byte");
        erased += 1;
        assert_eq!(prospects(&db).await, before - erased, "erased once");
    }
    db.finish().await;
}

#[tokio::test]
async fn a_write_whose_process_stopped_after_its_claim_is_taken_over() {
    let (db, system) = crm(TimeDelta::milliseconds(200)).await;
    let before = prospects(&db).await;
    let write = erase_of(&db, 2).await;
    // A process claimed the key and was killed: the operation is pending
    // with nothing done (its transaction never committed).
    let claim = system
        .operations()
        .claim("erase.killed.crm", "6469676573740a", "erase")
        .await
        .unwrap();
    let Claim::New(id) = claim else {
        panic!("{claim:?}")
    };
    let stale = system.operations().get(&id).await.unwrap();
    assert_eq!(stale.state, OpState::Pending);
    // The same instruction's digest, as the dead process claimed it.
    let digest = hex_decode("6469676573740a");
    // Within the lease the dead run still holds it: the caller is told it
    // is under way, nothing is done twice.
    let held = system
        .write(
            instruction("erase.killed.crm"),
            digest.clone(),
            write.clone(),
        )
        .await
        .unwrap();
    assert_eq!(held.id, id);
    assert!(!held.state.is_final());
    assert_eq!(prospects(&db).await, before);
    // Once the lease lapses, the next call takes it over and finishes it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let op = system
        .write(instruction("erase.killed.crm"), digest, write)
        .await
        .unwrap();
    assert_eq!(op.id, id);
    assert_eq!(op.state, OpState::Succeeded, "{op:?}");
    assert!(op.receipt.is_some());
    assert_eq!(prospects(&db).await, before - 2);
    db.finish().await;
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test]
async fn concurrent_writes_wait_for_each_other_instead_of_failing() {
    let (db, system) = crm(TimeDelta::seconds(30)).await;
    let before = prospects(&db).await;
    let write = erase_of(&db, 200).await;
    let Write::Erase { records, .. } = write else {
        unreachable!()
    };
    let n = records.len() as i64;
    assert!(n > 5, "{n}");
    let mut tasks = Vec::new();
    for (i, r) in records.into_iter().enumerate() {
        let system = system.clone();
        tasks.push(tokio::spawn(async move {
            let w = Write::Erase {
                records: vec![r],
                acceptable: BTreeSet::from([Method::Delete]),
                retain: vec![],
            };
            system
                .write(instruction(&format!("erase.c{i}.crm")), b"d".to_vec(), w)
                .await
        }));
    }
    for t in tasks {
        let op = t.await.unwrap().expect("no write fails for another's lock");
        assert_eq!(op.state, OpState::Succeeded);
    }
    assert_eq!(prospects(&db).await, before - n);
    db.finish().await;
}
