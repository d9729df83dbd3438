//! The idempotency ledger and operations on a real database (SQLite, or
//! PostgreSQL with DSR_TEST_POSTGRES_URL).

use dsr_connector::migration::Migrator;
use dsr_connector::operations::{Claim, Error, OpState, Operations};
use dsr_connector::signing::ReceiptSigner;
use dsr_store::testing::TestDb;

#[tokio::test]
async fn same_key_same_instruction_same_receipt() {
    let db = TestDb::system().await.unwrap();
    dsr_store::migrate::<Migrator>(&db.db).await.unwrap();
    let ops = Operations::new(db.db.clone());
    let signer = ReceiptSigner::generate("k1");

    let Claim::New(id) = ops
        .claim("req-1:crm:erase", "digest-a", "erase")
        .await
        .unwrap()
    else {
        panic!("not new")
    };
    let mut watch = ops.watch(&id).await.unwrap();
    assert_eq!(watch.borrow().state, OpState::Pending);
    ops.start(&id, 3).await.unwrap();
    watch.changed().await.unwrap();
    assert_eq!(watch.borrow().state, OpState::Running);
    let done = ops
        .succeed(&id, 3, signer.sign(b"receipt-1".to_vec()))
        .await
        .unwrap();
    assert_eq!(done.state, OpState::Succeeded);

    // a retry with the same instruction gets the same operation and receipt bytes
    let Claim::Existing(again) = ops
        .claim("req-1:crm:erase", "digest-a", "erase")
        .await
        .unwrap()
    else {
        panic!("not existing")
    };
    assert_eq!(again.id, id);
    assert_eq!(again.receipt, done.receipt);
    assert_eq!(again.receipt.unwrap().payload, b"receipt-1");

    // the same key with another instruction is refused
    assert!(matches!(
        ops.claim("req-1:crm:erase", "digest-b", "erase").await,
        Err(Error::KeyReused)
    ));

    // a failed operation may run again under its key
    let Claim::New(f) = ops
        .claim("req-2:crm:erase", "digest-c", "erase")
        .await
        .unwrap()
    else {
        panic!()
    };
    ops.fail(&f, "database unavailable").await.unwrap();
    assert_eq!(
        ops.claim("req-2:crm:erase", "digest-c", "erase")
            .await
            .unwrap(),
        Claim::Retry(f.clone())
    );
    assert!(matches!(ops.get("nope").await, Err(Error::NotFound)));
    db.finish().await;
}
