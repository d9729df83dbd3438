//! The ledger on a real database (SQLite, or PostgreSQL with
//! DSR_TEST_POSTGRES_URL): idempotent submission, the state machine, the
//! Art. 12(3) extension rules, and an audit trail that detects tampering.

use chrono::NaiveDate;
use dsr_domain::deadline::HolidayCalendar;
use dsr_domain::identity::{Identity, IdentityType, Organisationsnummer};
use dsr_domain::request::{Kind, State};
use dsr_orchestrator::ledger::{AuditError, Error, Ledger, Rejection, Submission};
use dsr_orchestrator::migration::Migrator;
use dsr_store::testing::TestDb;
use sea_orm::{ConnectionTrait, Statement};

fn submission(key: &str, email: &str) -> Submission {
    Submission {
        kind: Kind::Access,
        controller: Organisationsnummer::parse("556134-1248").unwrap(),
        identities: vec![Identity::parse(IdentityType::Email, email).unwrap()],
        language: "sv".into(),
        idempotency_key: key.into(),
        verified: None,
        write: None,
        verification_jti: None,
        submitted_by: None,
    }
}

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

#[tokio::test]
async fn the_ledger_keeps_its_rules_and_its_trail() {
    let db = TestDb::new().await.unwrap();
    dsr_store::migrate::<Migrator>(&db.db).await.unwrap();
    let ledger = Ledger::new(db.db.clone(), HolidayCalendar::swedish());

    // idempotent submission
    let (r, created) = ledger
        .submit(
            submission("portal-key-0001", "anna@example.se"),
            d("2026-11-24"),
            "portal",
        )
        .await
        .unwrap();
    assert!(created);
    assert_eq!(r.state, State::Submitted);
    assert_eq!(
        r.deadline.due(),
        d("2026-12-28"),
        "Dec 24-27 are not working days"
    );
    let (again, created) = ledger
        .submit(
            submission("portal-key-0001", "Anna@Example.se"),
            d("2026-11-24"),
            "portal",
        )
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.id, r.id);
    assert!(matches!(
        ledger
            .submit(
                submission("portal-key-0001", "bo@example.se"),
                d("2026-11-24"),
                "portal"
            )
            .await,
        Err(Error::KeyReused)
    ));

    // the state machine
    assert!(matches!(
        ledger
            .advance(&r.id, State::Completed, "service:orchestrator")
            .await,
        Err(Error::IllegalMove(_))
    ));
    let r = ledger
        .advance(&r.id, State::Verifying, "service:orchestrator")
        .await
        .unwrap();
    assert_eq!(r.state, State::Verifying);

    // Art. 12(3): a reason, inside the first month, two months at most
    assert!(matches!(
        ledger
            .extend(&r.id, 1, " ", d("2026-11-30"), "case-handler")
            .await,
        Err(Error::Deadline(_))
    ));
    assert!(matches!(
        ledger
            .extend(&r.id, 1, "many systems", d("2026-12-29"), "case-handler")
            .await,
        Err(Error::Deadline(_))
    ));
    let r = ledger
        .extend(
            &r.id,
            2,
            "records at agents abroad",
            d("2026-12-01"),
            "case-handler",
        )
        .await
        .unwrap();
    assert_eq!(r.deadline.due(), d("2027-02-24"));
    assert_eq!(
        r.deadline.extension().unwrap().reason,
        "records at agents abroad"
    );
    assert!(matches!(
        ledger
            .extend(&r.id, 1, "more", d("2026-12-01"), "case-handler")
            .await,
        Err(Error::Deadline(_))
    ));

    // a rejection is typed and final
    let r = ledger
        .reject(
            &r.id,
            Rejection::IdentityInsufficient,
            "no reply to the code",
            "case-handler",
        )
        .await
        .unwrap();
    assert_eq!(r.state, State::Rejected);
    assert!(matches!(
        ledger
            .cancel(&r.id, "withdrawn by the person", "portal")
            .await,
        Err(Error::IllegalMove(_))
    ));

    // another request is cancelled before any work
    let (r2, _) = ledger
        .submit(
            submission("portal-key-0002", "bo@example.se"),
            d("2026-11-24"),
            "portal",
        )
        .await
        .unwrap();
    assert_eq!(
        ledger
            .cancel(&r2.id, "withdrawn by the person", "portal")
            .await
            .unwrap()
            .state,
        State::Cancelled
    );
    assert!(matches!(
        ledger.get("no-such-request").await,
        Err(Error::NotFound)
    ));

    // the audit trail verifies, and a changed event breaks it
    assert_eq!(ledger.verify_audit().await.unwrap(), 6);
    db.db
        .execute_raw(Statement::from_string(
            db.backend(),
            "UPDATE orchestrator_audit SET actor = 'someone-else' WHERE seq = 3",
        ))
        .await
        .unwrap();
    assert!(matches!(
        ledger.verify_audit().await,
        Err(AuditError::Broken(_))
    ));
    db.finish().await;
}

/// Two case handlers extend one request at the same moment, a month each:
/// each decides from the request as the other left it, so the second adds
/// to the first (two months in all, the trail says 1 then 2), and a third
/// at the same time is refused rather than overwriting them.
#[tokio::test]
async fn extensions_at_once_each_count_the_other() {
    let db = TestDb::new().await.unwrap();
    dsr_store::migrate::<Migrator>(&db.db).await.unwrap();
    let ledger = Ledger::new(db.db.clone(), HolidayCalendar::swedish());
    let (r, _) = ledger
        .submit(
            submission("portal-key-0077", "anna@example.se"),
            d("2026-11-24"),
            "portal",
        )
        .await
        .unwrap();
    let on = d("2026-12-01");
    let (a, b, c) = tokio::join!(
        ledger.extend(&r.id, 1, "many systems", on, "handler-a"),
        ledger.extend(&r.id, 1, "agents abroad", on, "handler-b"),
        ledger.extend(&r.id, 1, "a third look", on, "handler-c"),
    );
    let results = [a, b, c];
    let granted = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(granted, 2, "two months at most: {results:?}");
    assert!(
        results.iter().any(|r| matches!(r, Err(Error::Deadline(_)))),
        "the third is refused for the two months: {results:?}"
    );
    let now = ledger.get(&r.id).await.unwrap();
    assert_eq!(now.deadline.extension().unwrap().months, 2);
    assert_eq!(now.deadline.due(), d("2027-02-24"));
    let extended: Vec<String> = ledger
        .audit_of(&r.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .filter(|a| a.starts_with("extended:"))
        .collect();
    assert_eq!(extended, ["extended:1", "extended:2"]);
    db.finish().await;
}

#[tokio::test]
async fn a_verification_token_verifies_one_request_once() {
    let db = TestDb::new().await.unwrap();
    dsr_store::migrate::<Migrator>(&db.db).await.unwrap();
    let ledger = Ledger::new(db.db.clone(), HolidayCalendar::swedish());
    let verified = |key: &str| {
        let mut s = submission(key, "anna@example.se");
        s.verified = Some(s.identities.clone());
        s.verification_jti = Some("jti-1".into());
        s
    };
    let (first, created) = ledger
        .submit(verified("portal-key-0101"), d("2026-11-24"), "portal")
        .await
        .unwrap();
    assert!(created);
    assert_eq!(first.state, State::Locating);
    // The same submission again (a retry) is the same request.
    let (again, created) = ledger
        .submit(verified("portal-key-0101"), d("2026-11-24"), "portal")
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.id, first.id);
    // Another request with the same token is refused, and nothing recorded.
    let count = || async {
        db.db
            .query_one_raw(Statement::from_string(
                db.db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM orchestrator_request",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get::<i64>("", "n")
            .unwrap()
    };
    let before = count().await;
    let err = ledger
        .submit(verified("portal-key-0102"), d("2026-11-24"), "portal")
        .await
        .unwrap_err();
    assert!(
        matches!(err, dsr_orchestrator::ledger::Error::VerificationUsed),
        "{err:?}"
    );
    assert_eq!(count().await, before);
    // Nor can it verify a request waiting in VERIFYING.
    let (waiting, _) = ledger
        .submit(
            submission("portal-key-0103", "anna@example.se"),
            d("2026-11-24"),
            "portal",
        )
        .await
        .unwrap();
    assert!(matches!(
        ledger.use_verification("jti-1", &waiting.id).await,
        Err(dsr_orchestrator::ledger::Error::VerificationUsed)
    ));
    assert!(ledger.use_verification("jti-2", &waiting.id).await.is_ok());
    db.finish().await;
}

#[tokio::test]
async fn identities_leave_the_ledger_once_a_request_is_answered_and_its_retention_passed() {
    let db = TestDb::new().await.unwrap();
    dsr_store::migrate::<Migrator>(&db.db).await.unwrap();
    let ledger = Ledger::new(db.db.clone(), HolidayCalendar::swedish());
    let who = "purge.me.please@example.se";
    let (open, _) = ledger
        .submit(
            submission("portal-key-0201", who),
            d("2026-11-24"),
            "portal",
        )
        .await
        .unwrap();
    let (answered, _) = ledger
        .submit(
            submission("portal-key-0202", who),
            d("2026-11-24"),
            "portal",
        )
        .await
        .unwrap();
    ledger
        .cancel(&answered.id, "the person withdrew it", "portal")
        .await
        .unwrap();
    // The file holds the identity now (so the check below can fail).
    assert_ne!(
        db.file_contains(who).await,
        Some(false),
        "the identity is stored"
    );
    // Not yet: the retention has not passed.
    let now = chrono::Utc::now();
    assert_eq!(
        ledger
            .purge_identities(now - chrono::Duration::days(30))
            .await
            .unwrap(),
        0
    );
    // Past it: the answered request loses the identities, the open one
    // keeps them (it still needs them).
    assert_eq!(
        ledger
            .purge_identities(now + chrono::Duration::days(1))
            .await
            .unwrap(),
        1
    );
    assert!(
        ledger
            .get(&answered.id)
            .await
            .unwrap()
            .identities
            .is_empty()
    );
    assert!(!ledger.get(&open.id).await.unwrap().identities.is_empty());
    let trail: Vec<String> = ledger
        .audit_of(&answered.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(trail.contains(&"identities_purged".to_owned()), "{trail:?}");
    assert!(ledger.verify_audit().await.unwrap() > 0);
    // On SQLite, the file itself no longer holds the answered request's
    // identity: cancel the open one too, purge, and read the bytes.
    ledger.cancel(&open.id, "test", "portal").await.unwrap();
    ledger
        .purge_identities(chrono::Utc::now() + chrono::Duration::days(1))
        .await
        .unwrap();
    assert_ne!(
        db.file_contains(who).await,
        Some(true),
        "the database file still holds the identity"
    );
    db.finish().await;
}

/// Watch's feed: a change made through another replica's ledger (nothing
/// sent on this process's channel) reaches this process's listeners from
/// one reader, and only the changed request's id does.
#[tokio::test]
async fn a_change_at_another_replica_reaches_the_watch_feed() {
    let db = TestDb::new().await.unwrap();
    dsr_store::migrate::<Migrator>(&db.db).await.unwrap();
    let here = Ledger::new(db.db.clone(), HolidayCalendar::swedish());
    let there = Ledger::new(db.db.clone(), HolidayCalendar::swedish());
    let (watched, _) = here
        .submit(
            submission("feed-key-0001", "anna@example.se"),
            d("2026-11-24"),
            "portal",
        )
        .await
        .unwrap();
    let (other, _) = here
        .submit(
            submission("feed-key-0002", "bo@example.se"),
            d("2026-11-24"),
            "portal",
        )
        .await
        .unwrap();
    let (changes, mut rx) = tokio::sync::broadcast::channel(16);
    let feed = tokio::spawn(dsr_orchestrator::feed::run(
        here.clone(),
        changes.clone(),
        std::time::Duration::from_millis(50),
    ));
    // The feed's first look finds where the ledger stands.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    there
        .advance(&watched.id, State::Verifying, "service:orchestrator")
        .await
        .unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
        .await
        .expect("the change never reached the feed")
        .unwrap();
    let dsr_orchestrator::feed::Change::Changed { id, at: Some(at) } = got else {
        panic!("the feed sends the request and when it changed: {got:?}");
    };
    assert_eq!(id, watched.id);
    assert_ne!(id, other.id);
    assert_eq!(
        at,
        here.get(&watched.id).await.unwrap().updated_at,
        "when it changed, as recorded"
    );
    // Told once: later looks see nothing new.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "the same change was sent again");
    feed.abort();
    db.finish().await;
}

/// A person who never proves who they are: the request is refused for
/// identity once it has waited the configured time in VERIFYING, which
/// queues the refusal letter and takes it out of the overdue count; a
/// newer one waits on.
#[tokio::test]
async fn a_request_never_verified_ends_after_its_time_and_is_not_overdue() {
    let db = TestDb::new().await.unwrap();
    dsr_store::migrate::<Migrator>(&db.db).await.unwrap();
    let ledger = Ledger::new(db.db.clone(), HolidayCalendar::swedish());
    let mut ids = Vec::new();
    for (key, received) in [
        ("portal-key-0301", "2026-11-02"),
        ("portal-key-0302", "2026-11-30"),
    ] {
        let (r, _) = ledger
            .submit(
                submission(key, "never.verified@example.se"),
                d(received),
                "portal",
            )
            .await
            .unwrap();
        ledger
            .advance(&r.id, State::Verifying, "service:orchestrator")
            .await
            .unwrap();
        ids.push(r.id);
    }
    let today = d("2026-12-10");
    // The older one is past its month: counted overdue while it waits.
    assert_eq!(ledger.counts(today).await.unwrap().overdue, 1);
    // 14 days after receipt, nobody proved who they are.
    let ended = ledger
        .expire_unverified(today - chrono::Days::new(14))
        .await
        .unwrap();
    assert_eq!(ended, vec![ids[0].clone()]);
    let old = ledger.get(&ids[0]).await.unwrap();
    assert_eq!(old.state, State::Rejected);
    assert_eq!(
        old.rejection.as_ref().map(|(r, _)| r.as_str()),
        Some("identity_insufficient")
    );
    assert_eq!(ledger.get(&ids[1]).await.unwrap().state, State::Verifying);
    assert_eq!(ledger.counts(today).await.unwrap().overdue, 0);
    let letters: Vec<String> = ledger
        .letters_of(&ids[0])
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.key)
        .collect();
    assert!(letters.iter().any(|k| k == "refused"), "{letters:?}");
    // Run again: nothing more to end.
    assert!(
        ledger
            .expire_unverified(today - chrono::Days::new(14))
            .await
            .unwrap()
            .is_empty()
    );
    db.finish().await;
}

/// An event as an orchestrator that knows no chain head inserts it (the
/// version before it, during a rolling upgrade).
async fn insert_event_as_before(db: &TestDb, e: &dsr_domain::request::AuditEvent) {
    use sea_orm::sea_query::{Alias, Query};
    let mut q = Query::insert();
    q.into_table(Alias::new("orchestrator_audit"))
        .columns(
            [
                "seq",
                "at",
                "actor",
                "request_id",
                "action",
                "prev_hash",
                "hash",
            ]
            .map(Alias::new),
        )
        .values_panic([
            i64::try_from(e.seq).unwrap().into(),
            e.at.into(),
            e.actor.clone().into(),
            e.request_id.clone().into(),
            e.action.clone().into(),
            e.prev_hash.clone().into(),
            e.hash.clone().into(),
        ]);
    db.db.execute_raw(db.backend().build(&q)).await.unwrap();
}

/// The audit chain's head (the row an appender locks and reads) starts
/// from the events recorded before it existed and follows every event
/// inserted, also by a replica of the previous version that appends after
/// the newest event without knowing the head: the trail stays one chain.
#[tokio::test]
async fn the_audit_chain_head_follows_every_event_whoever_inserts_it() {
    use dsr_domain::request::next_event;
    use sea_orm_migration::MigratorTrait as _;
    let db = TestDb::new().await.unwrap();
    // The ledger as it was before the head: two events already recorded.
    Migrator::up(&db.db, Some(12)).await.unwrap();
    let t0 = chrono::Utc::now();
    let first = next_event(None, t0, "portal", "req-old", "submitted");
    let second = next_event(
        Some(&first),
        t0,
        "service:orchestrator",
        "req-old",
        "state:cancelled",
    );
    insert_event_as_before(&db, &first).await;
    insert_event_as_before(&db, &second).await;
    dsr_store::migrate::<Migrator>(&db.db).await.unwrap();
    let ledger = Ledger::new(db.db.clone(), HolidayCalendar::swedish());
    let (r, _) = ledger
        .submit(
            submission("head-key-0001", "ann@example.se"),
            d("2026-11-24"),
            "portal",
        )
        .await
        .unwrap();
    let trail = ledger.audit_of(&r.id).await.unwrap();
    assert_eq!(trail.first().map(|e| e.seq), Some(3), "{trail:?}");
    // A replica of the previous version appends after the newest event.
    let old = next_event(trail.last(), chrono::Utc::now(), "portal", &r.id, "note");
    insert_event_as_before(&db, &old).await;
    ledger
        .cancel(&r.id, "withdrawn by the person", "portal")
        .await
        .unwrap();
    assert_eq!(ledger.verify_audit().await.unwrap(), 5);
    db.finish().await;
}

/// On SQLite, views and lists read over a pool of their own beside the
/// ledger's one writing connection: a `Get` answers while a writer's
/// transaction holds that connection (it waited for it before), and every
/// read sees each change the ledger committed before it. On PostgreSQL
/// there is no such pool (its pool reads in parallel already).
#[tokio::test]
async fn views_read_beside_the_writer_and_see_each_commit() {
    use sea_orm::TransactionTrait as _;
    let db = TestDb::new().await.unwrap();
    dsr_store::migrate::<Migrator>(&db.db).await.unwrap();
    let reads = dsr_store::connect_reader(&db.url, &dsr_store::StoreConfig::default(), 2)
        .await
        .unwrap();
    if db.db.get_database_backend() == sea_orm::DbBackend::Sqlite {
        assert!(reads.is_some(), "a SQLite file has readers");
    }
    let Some(reads) = reads else {
        db.finish().await;
        return;
    };
    let ledger = Ledger::new(db.db.clone(), HolidayCalendar::swedish()).with_read_pool(reads);
    let (r, _) = ledger
        .submit(
            submission("portal-key-reads", "anna@example.se"),
            d("2026-11-24"),
            "portal",
        )
        .await
        .unwrap();
    // Each change is seen by the read after it.
    for to in [State::Verifying, State::Locating] {
        let moved = ledger
            .advance(&r.id, to, "service:orchestrator")
            .await
            .unwrap();
        let seen = ledger.get(&r.id).await.unwrap();
        assert_eq!((seen.state, seen.updated_at), (to, moved.updated_at));
        let (_, steps) = ledger.letters_and_steps(&seen).await.unwrap();
        assert_eq!(steps, ledger.steps(&seen).await.unwrap());
    }
    // The writer's one connection held by an open write transaction: the
    // views answer at once, with the last commit.
    let txn = db.db.begin().await.unwrap();
    txn.execute_unprepared("UPDATE orchestrator_request SET language = 'en'")
        .await
        .unwrap();
    let (seen, page) = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        let seen = ledger.get(&r.id).await.unwrap();
        let page = ledger
            .list(&Default::default(), 10, None)
            .await
            .unwrap()
            .unwrap();
        (seen, page)
    })
    .await
    .expect("views do not queue for the writer");
    assert_eq!(
        (seen.state, seen.language.as_str()),
        (State::Locating, "sv")
    );
    assert_eq!(page.requests.len(), 1);
    txn.rollback().await.unwrap();
    db.finish().await;
}
