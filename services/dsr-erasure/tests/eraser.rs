//! Erasure against an in-memory data system and transfer registry, on the
//! test database (SQLite, or PostgreSQL when `DSR_TEST_POSTGRES_URL` is
//! set): a plan from the retention policy, execution counted from the
//! receipts, a receipt that differs from the plan, the deferred erasure on
//! its date (the clock moved), an Art. 18 restriction that outlives it,
//! replay after a restore, a sweep, and Art. 19 notifications checked
//! against the registry (an unlawful recipient is not told, or waits for a
//! case handler).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{Months, NaiveDate, TimeDelta, Utc};
use dsr_domain::clock::Clock;
use dsr_domain::erasure::Action;
use dsr_domain::identity::{Identity, IdentityType, Organisationsnummer};
use dsr_domain::request::{Correction, WriteOrder};
use dsr_domain::retention::RetentionPolicy;
use dsr_erasure::eraser::{Eraser, IdentityHasher, NotificationError, SystemOutcome};
use dsr_erasure::migration::Migrator;
use dsr_erasure::model::{
    EraseOrder, Header, MapStore, MapSystem, Receipt, Recipient, RecordInfo, RecordOutcome,
    RecordRef, RecordResult, Registry, StoreResult, SubjectMap, SystemError, Systems,
    UnlawfulTransfers, Write,
};
use dsr_erasure::reconcile::Expected;
use dsr_erasure::store::{Store, SweepTrigger, TransferVerdict};
use dsr_store::testing::TestDb;

const CONTROLLER: &str = "556134-1248";

/// One record of the fake system.
#[derive(Clone, Debug)]
struct Row {
    category: String,
    anchor: Option<NaiveDate>,
    /// Why it is restricted, and until when: ("retention" | "request" |
    /// "hold", ground, until).
    restricted: Option<(String, String, Option<NaiveDate>)>,
    value: String,
}

/// A data system in memory that keeps what it is told to keep, erases the
/// rest, and reports every record in its receipts, like the contract asks.
#[derive(Default)]
struct FakeSystems {
    rows: Mutex<BTreeMap<(String, String), Row>>,
    /// Misbehaves: keeps every record (with its own legal ground) whatever
    /// the order says.
    keeps_everything: AtomicBool,
    /// Writes received, as (action, key).
    writes: Mutex<Vec<(String, String)>>,
    operators: BTreeMap<String, String>,
    /// The writes (actions) the system does not act on, per Describe.
    unsupported: Mutex<BTreeSet<String>>,
    clock: Clock,
}

impl FakeSystems {
    fn insert(&self, store: &str, key: &str, category: &str, anchor: Option<NaiveDate>) {
        self.rows.lock().unwrap().insert(
            (store.into(), key.into()),
            Row {
                category: category.into(),
                anchor,
                restricted: None,
                value: "old".into(),
            },
        );
    }

    fn row(&self, store: &str, key: &str) -> Option<Row> {
        self.rows
            .lock()
            .unwrap()
            .get(&(store.to_owned(), key.to_owned()))
            .cloned()
    }

    fn receipt(h: &Header, key: &str, records: Vec<RecordOutcome>) -> Receipt {
        let mut stores: BTreeMap<String, StoreResult> = BTreeMap::new();
        for r in &records {
            let s = stores
                .entry(r.record.store.clone())
                .or_insert_with(|| StoreResult {
                    store: r.record.store.clone(),
                    matched: 0,
                    affected: 0,
                    refused: 0,
                });
            if r.result != RecordResult::NotFound {
                s.matched += 1;
            }
            if matches!(
                r.result,
                RecordResult::Erased | RecordResult::Anonymised | RecordResult::Applied
            ) {
                s.affected += 1;
            }
        }
        Receipt {
            payload: key.as_bytes().to_vec(),
            key_id: "fake-key".into(),
            signature: vec![1],
            system_id: "crm".into(),
            request_id: h.request_id.clone(),
            idempotency_key: key.into(),
            stores: stores.into_values().collect(),
            retained: records
                .iter()
                .filter(|r| r.result == RecordResult::Retained)
                .count() as u64,
            records,
        }
    }

    fn kept(r: &RecordRef, why: &(String, String, Option<NaiveDate>)) -> RecordOutcome {
        RecordOutcome {
            record: r.clone(),
            result: RecordResult::Retained,
            reason: Some(why.0.clone()),
            ground: Some(why.1.clone()),
            until: why.2,
        }
    }
}

#[tonic::async_trait]
impl Systems for FakeSystems {
    async fn read(
        &self,
        _: &str,
        _: &Header,
        refs: &[RecordRef],
    ) -> Result<Vec<RecordInfo>, SystemError> {
        let rows = self.rows.lock().unwrap();
        Ok(refs
            .iter()
            .filter_map(|r| {
                rows.get(&(r.store.clone(), r.key.clone()))
                    .map(|row| RecordInfo {
                        record: r.clone(),
                        anchor: row.anchor,
                        fields: vec![("value".into(), row.category.clone())],
                    })
            })
            .collect())
    }

    async fn erase(
        &self,
        _: &str,
        h: &Header,
        key: &str,
        order: &EraseOrder,
    ) -> Result<Receipt, SystemError> {
        let mut rows = self.rows.lock().unwrap();
        let mut out = Vec::new();
        for r in &order.records {
            let id = (r.store.clone(), r.key.clone());
            let Some(row) = rows.get_mut(&id) else {
                out.push(RecordOutcome {
                    record: r.clone(),
                    result: RecordResult::NotFound,
                    reason: None,
                    ground: None,
                    until: None,
                });
                continue;
            };
            if self.keeps_everything.load(Ordering::SeqCst) {
                let why = (
                    "retention".to_owned(),
                    "GDPR Art. 17(3)(e): the system's own rule".to_owned(),
                    Some(self.clock.today() + TimeDelta::days(365)),
                );
                row.restricted = Some(why.clone());
                out.push(Self::kept(r, &why));
                continue;
            }
            // An Art. 18 restriction or a hold keeps it from any erasure.
            if let Some(why) = row
                .restricted
                .as_ref()
                .filter(|w| w.0 == "request" || w.0 == "hold")
            {
                out.push(Self::kept(r, why));
                continue;
            }
            if let Some(o) = order.retain.iter().find(|o| o.record == *r) {
                let why = (
                    if o.hold { "hold" } else { "retention" }.to_owned(),
                    o.ground.clone(),
                    o.until,
                );
                row.restricted = Some(why.clone());
                out.push(Self::kept(r, &why));
                continue;
            }
            rows.remove(&id);
            out.push(RecordOutcome {
                record: r.clone(),
                result: RecordResult::Erased,
                reason: None,
                ground: None,
                until: None,
            });
        }
        Ok(Self::receipt(h, key, out))
    }

    async fn write(
        &self,
        _: &str,
        h: &Header,
        key: &str,
        write: &Write,
    ) -> Result<Receipt, SystemError> {
        let mut rows = self.rows.lock().unwrap();
        let mut out = Vec::new();
        let mut applied = |r: &RecordRef| {
            out.push(RecordOutcome {
                record: r.clone(),
                result: RecordResult::Applied,
                reason: None,
                ground: None,
                until: None,
            });
        };
        match write {
            Write::Rectify(changes) => {
                for (r, _, value) in changes {
                    if let Some(row) = rows.get_mut(&(r.store.clone(), r.key.clone())) {
                        row.value = value.clone();
                        applied(r);
                    }
                }
            }
            Write::Restrict {
                records,
                lift,
                reason,
            } => {
                for r in records {
                    if let Some(row) = rows.get_mut(&(r.store.clone(), r.key.clone())) {
                        row.restricted =
                            (!lift).then(|| ("request".to_owned(), reason.clone(), None));
                        applied(r);
                    }
                }
            }
            Write::Object { records, .. } => records.iter().for_each(&mut applied),
        }
        self.writes
            .lock()
            .unwrap()
            .push((write.action().to_owned(), key.to_owned()));
        Ok(Self::receipt(h, key, out))
    }

    async fn acts_on(&self, _: &str, write: &Write) -> Result<bool, SystemError> {
        Ok(!self.unsupported.lock().unwrap().contains(write.action()))
    }

    fn operator(&self, system: &str) -> Option<String> {
        self.operators.get(system).cloned()
    }

    fn system_ids(&self) -> Vec<String> {
        vec!["crm".into()]
    }

    async fn controllers(&self, _: &str) -> Result<Vec<Organisationsnummer>, SystemError> {
        Ok(vec![Organisationsnummer::parse(CONTROLLER).unwrap()])
    }

    async fn sweep(
        &self,
        _: &str,
        h: &Header,
        key: &str,
        dry_run: bool,
        _: u32,
        progress: &AtomicU64,
    ) -> Result<Receipt, SystemError> {
        // Removes what was retained for a period that has ended; never a
        // record under an Art. 18 restriction or a hold.
        let today = self.clock.today();
        let mut rows = self.rows.lock().unwrap();
        let due: Vec<(String, String)> = rows
            .iter()
            .filter(|(_, row)| {
                row.restricted
                    .as_ref()
                    .is_some_and(|w| w.0 == "retention" && w.2.is_some_and(|u| u < today))
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for id in due {
            if !dry_run {
                rows.remove(&id);
            }
            progress.fetch_add(1, Ordering::SeqCst);
            out.push(RecordOutcome {
                record: RecordRef {
                    store: id.0,
                    key: id.1,
                },
                result: RecordResult::Erased,
                reason: None,
                ground: None,
                until: None,
            });
        }
        Ok(Self::receipt(h, key, out))
    }
}

/// The registry: recipients of the CRM's data, one of them without a
/// lawful transfer basis.
struct FakeRegistry {
    recipients: Vec<Recipient>,
}

#[tonic::async_trait]
impl Registry for FakeRegistry {
    async fn recipients(
        &self,
        _: &Header,
        _: &[String],
        _: &[String],
    ) -> Result<Vec<Recipient>, SystemError> {
        Ok(self.recipients.clone())
    }
}

fn recipient(id: &str, country: &str, lawful: bool) -> Recipient {
    Recipient {
        id: id.into(),
        name: format!("Recipient {id}"),
        country: country.into(),
        lawful,
        blocking_reasons: if lawful {
            vec![]
        } else {
            vec![format!("no_safeguard: nothing for {country}")]
        },
    }
}

struct World {
    db: TestDb,
    clock: Clock,
    systems: Arc<FakeSystems>,
    eraser: Eraser,
}

/// A person whose relationship ended three years ago: their contact data
/// is past its 24 months, their KYC document and PEP screening are kept
/// for 60 months by law.
async fn world(operators: &[(&str, &str)], recipients: Vec<Recipient>) -> World {
    let db = TestDb::new().await.unwrap();
    dsr_store::migrate::<Migrator>(&db.db).await.unwrap();
    let clock = Clock::starting_at(Utc::now());
    let ended = clock.today() - Months::new(36);
    let systems = Arc::new(FakeSystems {
        operators: operators
            .iter()
            .map(|(s, r)| ((*s).to_owned(), (*r).to_owned()))
            .collect(),
        clock: clock.clone(),
        ..FakeSystems::default()
    });
    systems.insert("contacts", "1", "contact.name", Some(ended));
    systems.insert("kyc_documents", "7", "aml.identity_document", Some(ended));
    systems.insert("pep_screenings", "8", "aml.pep_status", Some(ended));
    let eraser = Eraser::new(
        systems.clone(),
        Arc::new(FakeRegistry { recipients }),
        Store::new(db.db.clone()),
        Arc::new(RetentionPolicy::shipped()),
        IdentityHasher::new([7; 32]),
    )
    .with_clock(clock.clone());
    World {
        db,
        clock,
        systems,
        eraser,
    }
}

fn header(id: &str, clock: &Clock) -> Header {
    Header {
        request_id: id.into(),
        controller: Organisationsnummer::parse(CONTROLLER).unwrap(),
        due_date: clock.today() + TimeDelta::days(30),
    }
}

fn map() -> SubjectMap {
    let store = |s: &str, k: &str, c: &str| MapStore {
        store: s.into(),
        keys: vec![k.into()],
        categories: vec![c.into()],
    };
    SubjectMap {
        identities: vec![Identity::parse(IdentityType::Email, "anna@example.se").unwrap()],
        systems: vec![MapSystem {
            system_id: "crm".into(),
            stores: vec![
                store("contacts", "1", "contact.name"),
                store("kyc_documents", "7", "aml.identity_document"),
                store("pep_screenings", "8", "aml.pep_status"),
            ],
        }],
        partial: false,
    }
}

fn receipt_of(e: &dsr_erasure::eraser::Execution) -> &Receipt {
    match &e.systems[0].1 {
        SystemOutcome::Done(r) => &r.receipt,
        other @ (SystemOutcome::Failed(_) | SystemOutcome::ReceiptInvalid(_)) => {
            panic!("not done: {other:?}")
        }
    }
}

#[tokio::test]
async fn an_erasure_erases_what_has_no_ground_and_its_deferred_run_erases_the_rest_on_its_date() {
    let w = world(&[], vec![]).await;
    let h = header("req-erase-1", &w.clock);
    let plan = w.eraser.plan(&h, &map(), w.clock.today()).await.unwrap();
    let action = |key: &str| {
        plan.records
            .iter()
            .find(|r| r.record.key == key)
            .unwrap()
            .decision
            .clone()
    };
    assert_eq!(action("1").action, Action::Erase);
    let kyc = action("7");
    assert_eq!(kyc.action, Action::Retain);
    let until = kyc.retain_until.expect("a date set by law");
    assert_eq!(until, w.clock.today() + Months::new(24));

    let e = w.eraser.execute(&h).await.unwrap();
    assert!(e.complete());
    assert!(e.discrepancies.is_empty(), "{:?}", e.discrepancies);
    assert_eq!(e.retained, 2, "counted from the receipt");
    assert_eq!(receipt_of(&e).affected(), 1);
    assert_eq!(e.next_deferred_on, Some(until + TimeDelta::days(1)));
    assert!(w.systems.row("contacts", "1").is_none());
    assert_eq!(
        w.systems
            .row("kyc_documents", "7")
            .unwrap()
            .restricted
            .unwrap()
            .0,
        "retention"
    );

    // Before the date nothing is due.
    let early = w
        .eraser
        .execute_deferred(&h, w.clock.today())
        .await
        .unwrap();
    assert!(early.systems.is_empty());
    assert!(w.systems.row("kyc_documents", "7").is_some());

    // On the day after it, the deferred run erases both, and its receipt
    // counts them.
    w.clock.set(
        (until + TimeDelta::days(1))
            .and_hms_opt(6, 0, 0)
            .unwrap()
            .and_utc(),
    );
    let later = w
        .eraser
        .execute_deferred(&h, w.clock.today())
        .await
        .unwrap();
    assert!(later.discrepancies.is_empty(), "{:?}", later.discrepancies);
    assert_eq!(receipt_of(&later).affected(), 2);
    assert_eq!(later.retained, 0);
    assert!(w.systems.row("kyc_documents", "7").is_none());
    assert!(w.systems.row("pep_screenings", "8").is_none());

    // Idempotent: run again, nothing more is asked or counted.
    let again = w
        .eraser
        .execute_deferred(&h, w.clock.today())
        .await
        .unwrap();
    assert_eq!(again.retained, 0);
    w.db.finish().await;
}

#[tokio::test]
async fn an_art_18_restriction_outlives_the_deferred_date_and_shows_as_a_discrepancy() {
    let w = world(&[], vec![]).await;
    let h = header("req-erase-2", &w.clock);
    w.eraser.plan(&h, &map(), w.clock.today()).await.unwrap();
    w.eraser.execute(&h).await.unwrap();
    // The person then restricts processing of what is kept (Art. 18).
    let restrict = header("req-restrict-2", &w.clock);
    w.eraser
        .apply(
            &restrict,
            &map(),
            &WriteOrder::Restrict {
                ground: dsr_domain::request::RestrictionGround::NeededForLegalClaims,
            },
            w.clock.today(),
        )
        .await
        .unwrap();
    w.clock.advance(TimeDelta::days(800));
    let later = w
        .eraser
        .execute_deferred(&h, w.clock.today())
        .await
        .unwrap();
    assert!(w.systems.row("kyc_documents", "7").is_some(), "kept");
    assert_eq!(later.retained, 2, "the receipt says kept");
    assert_eq!(later.discrepancies.len(), 2, "{:?}", later.discrepancies);
    for d in &later.discrepancies {
        assert_eq!(d.expected, Expected::Removed);
        assert_eq!(d.observed, Some(RecordResult::Retained));
        assert_eq!(d.reason.as_deref(), Some("request"));
    }
    // A sweep leaves it too.
    let sweep = w
        .eraser
        .start_sweep(
            "sweep-2".into(),
            SweepTrigger::Manual,
            "handler:anna",
            &BTreeSet::new(),
            false,
            100,
        )
        .await
        .unwrap()
        .unwrap();
    let done = wait_sweep(&w.eraser, &sweep.id).await;
    assert_eq!(done.systems[0].removed, 0);
    assert_eq!(done.started_by, "handler:anna", "who started it, kept");
    assert!(w.systems.row("kyc_documents", "7").is_some());
    w.db.finish().await;
}

async fn wait_sweep(eraser: &Eraser, id: &str) -> dsr_erasure::store::Sweep {
    for _ in 0..500 {
        let s = eraser.store().sweep(id).await.unwrap();
        if s.finished_at.is_some() {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the sweep never ended");
}

#[tokio::test]
async fn a_system_that_keeps_what_the_plan_erases_is_a_discrepancy_counted_from_its_receipt() {
    let w = world(&[], vec![]).await;
    w.systems.keeps_everything.store(true, Ordering::SeqCst);
    let h = header("req-erase-3", &w.clock);
    w.eraser.plan(&h, &map(), w.clock.today()).await.unwrap();
    let e = w.eraser.execute(&h).await.unwrap();
    assert_eq!(e.retained, 3, "the receipt's count, not the plan's 2");
    assert_eq!(e.discrepancies.len(), 1, "{:?}", e.discrepancies);
    let d = &e.discrepancies[0];
    assert_eq!(d.record.key, "1");
    assert_eq!(d.expected, Expected::Removed);
    assert_eq!(d.observed, Some(RecordResult::Retained));
    // The plan shows it too.
    let (_, shown) = w.eraser.reviewed_plan(&h.request_id).await.unwrap();
    assert_eq!(shown.len(), 1);
    w.db.finish().await;
}

#[tokio::test]
async fn a_restored_backup_is_erased_again_by_replay_and_a_sweep_removes_what_has_expired() {
    let w = world(&[], vec![]).await;
    let h = header("req-erase-4", &w.clock);
    let before = w.clock.now() - TimeDelta::minutes(1);
    w.eraser.plan(&h, &map(), w.clock.today()).await.unwrap();
    w.eraser.execute(&h).await.unwrap();
    assert!(w.systems.row("contacts", "1").is_none());
    // The backup taken before the erasure is restored.
    let ended = w.clock.today() - Months::new(36);
    w.systems
        .insert("contacts", "1", "contact.name", Some(ended));
    let replay = w
        .eraser
        .replay(before, &BTreeSet::new(), false, w.clock.today())
        .await
        .unwrap();
    assert_eq!(replay.tombstones, 1);
    assert_eq!(replay.systems["crm"].erased_again, 1);
    assert!(w.systems.row("contacts", "1").is_none());

    // Past the AML date, a sweep removes the retained records.
    w.clock.advance(TimeDelta::days(365 * 2 + 2));
    let sweep = w
        .eraser
        .start_sweep(
            "sweep-4".into(),
            SweepTrigger::Manual,
            "handler:anna",
            &BTreeSet::new(),
            false,
            100,
        )
        .await
        .unwrap()
        .unwrap();
    let done = wait_sweep(&w.eraser, &sweep.id).await;
    assert_eq!(done.systems[0].removed, 2);
    assert!(w.systems.row("kyc_documents", "7").is_none());
    w.db.finish().await;
}

fn rectify() -> WriteOrder {
    WriteOrder::Rectify {
        corrections: vec![Correction {
            category: "contact.name".into(),
            value: "Anna Berg".into(),
        }],
    }
}

#[tokio::test]
async fn a_recipient_with_no_lawful_transfer_is_not_told_and_nothing_is_sent_to_its_system() {
    let w = world(
        &[("crm", "agent-in")],
        vec![
            recipient("print-mail", "SE", true),
            recipient("agent-in", "IN", false),
        ],
    )
    .await;
    let h = header("req-rectify-5", &w.clock);
    let (e, notes) = w
        .eraser
        .apply(&h, &map(), &rectify(), w.clock.today())
        .await
        .unwrap();
    // The CRM is operated by the unlawful recipient: the correction is
    // not sent there.
    assert!(e.systems.is_empty(), "{:?}", e.systems);
    assert!(w.systems.writes.lock().unwrap().is_empty());
    assert_eq!(w.systems.row("contacts", "1").unwrap().value, "old");
    let by_id: BTreeMap<&str, _> = notes.iter().map(|n| (n.recipient_id.as_str(), n)).collect();
    let refused = by_id["agent-in"];
    assert_eq!(refused.transfer, TransferVerdict::Refused);
    assert_eq!(refused.transfer_reasons, ["no_safeguard: nothing for IN"]);
    assert_eq!(refused.due_on, None, "no task");
    let lawful = by_id["print-mail"];
    assert_eq!(lawful.transfer, TransferVerdict::Lawful);
    assert!(lawful.due_on.is_some(), "a task");
    // A refused one cannot be done or approved.
    assert!(matches!(
        w.eraser.complete_notification(&refused.id, "handler").await,
        Err(NotificationError::NotLawful(TransferVerdict::Refused))
    ));
    assert!(matches!(
        w.eraser
            .approve_notification(&refused.id, "handler", "Art. 49")
            .await,
        Err(NotificationError::NotLawful(TransferVerdict::Refused))
    ));
    w.db.finish().await;
}

#[tokio::test]
async fn under_review_an_unlawful_notification_waits_for_a_case_handlers_approval() {
    let mut w = world(
        &[],
        vec![
            recipient("crm-vendor", "IE", true),
            recipient("agent-in", "IN", false),
        ],
    )
    .await;
    w.eraser = w.eraser.with_unlawful_transfers(UnlawfulTransfers::Review);
    let h = header("req-rectify-6", &w.clock);
    let (e, notes) = w
        .eraser
        .apply(&h, &map(), &rectify(), w.clock.today())
        .await
        .unwrap();
    assert_eq!(receipt_of(&e).affected(), 1, "the CRM was corrected");
    assert_eq!(w.systems.row("contacts", "1").unwrap().value, "Anna Berg");
    let held = notes.iter().find(|n| n.recipient_id == "agent-in").unwrap();
    assert_eq!(held.transfer, TransferVerdict::AwaitingApproval);
    assert!(matches!(
        w.eraser.complete_notification(&held.id, "handler").await,
        Err(NotificationError::NotLawful(
            TransferVerdict::AwaitingApproval
        ))
    ));
    let approved = w
        .eraser
        .approve_notification(&held.id, "handler:anna", "Art. 49(1)(e): legal claim")
        .await
        .unwrap();
    assert_eq!(approved.transfer, TransferVerdict::Approved);
    assert_eq!(
        approved.approval,
        Some(("handler:anna".into(), "Art. 49(1)(e): legal claim".into()))
    );
    assert_eq!(approved.due_on, Some(h.due_date));
    let done = w
        .eraser
        .complete_notification(&held.id, "handler:anna")
        .await
        .unwrap();
    assert_eq!(done.done_by.as_deref(), Some("handler:anna"));
    assert!(done.done_at.is_some_and(|t| t <= w.clock.now()));
    w.db.finish().await;
}

/// A system whose Describe does not list the right (here objection) is not
/// sent the write, which does not fail the request: its operator gets a
/// notification task instead; a system that acts on it gets the write.
#[tokio::test]
async fn a_system_that_does_not_act_on_a_right_is_not_sent_it_and_its_operator_gets_a_task() {
    let w = world(
        &[("crm", "crm-vendor")],
        vec![recipient("crm-vendor", "IE", true)],
    )
    .await;
    let object = WriteOrder::Object {
        purposes: vec![],
        direct_marketing: true,
    };
    w.systems
        .unsupported
        .lock()
        .unwrap()
        .insert("object".to_owned());
    let h = header("req-object-7", &w.clock);
    let (e, notes) = w
        .eraser
        .apply(&h, &map(), &object, w.clock.today())
        .await
        .unwrap();
    assert!(e.systems.is_empty(), "{:?}", e.systems);
    assert!(w.systems.writes.lock().unwrap().is_empty());
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].recipient_id, "crm-vendor");
    assert!(
        notes[0].due_on.is_some() && notes[0].through.is_none(),
        "a task: {:?}",
        notes[0]
    );
    // Once it acts on objections, the write is sent and its receipt is the
    // notification.
    w.systems.unsupported.lock().unwrap().clear();
    let h = header("req-object-8", &w.clock);
    let (e, notes) = w
        .eraser
        .apply(&h, &map(), &object, w.clock.today())
        .await
        .unwrap();
    assert!(
        matches!(e.systems[0].1, SystemOutcome::Done(_)),
        "{:?}",
        e.systems
    );
    assert_eq!(w.systems.writes.lock().unwrap().len(), 1);
    assert!(notes[0].through.is_some(), "{:?}", notes[0]);
    w.db.finish().await;
}

/// Holds are placed and lifted, and receipts received, at the mesh's
/// time, not the machine's: with the clock moved to a date, the hold's
/// record says that date.
#[tokio::test]
async fn a_hold_is_placed_and_lifted_at_the_clocks_time() {
    let w = world(&[], vec![]).await;
    let placed = chrono::TimeZone::with_ymd_and_hms(&Utc, 2031, 6, 1, 9, 0, 0).unwrap();
    w.clock.set(placed);
    let hold = w
        .eraser
        .place_hold(
            "556134-1248",
            dsr_erasure::store::HoldScope::Person("person-hash".into()),
            "legal_claims",
            None,
            "handler:anna",
        )
        .await
        .unwrap();
    let near = |t: chrono::DateTime<Utc>, at| t >= at && t - at < TimeDelta::minutes(1);
    assert!(near(hold.placed_at, placed), "placed at {}", hold.placed_at);
    w.clock.advance(TimeDelta::days(30));
    let lifted = w
        .eraser
        .store()
        .lift_hold(&hold.id, "handler:bo")
        .await
        .unwrap();
    let at = placed + TimeDelta::days(30);
    let when = lifted.lifted_at.expect("lifted");
    assert!(near(when, at), "lifted at {when}");
    w.db.finish().await;
}

/// The scheduled sweep runs in slots of the mesh's clock: with the clock
/// moved past the AML date, the schedule's sweep is that slot's and removes
/// what the erasure had kept until then.
#[tokio::test]
async fn the_scheduled_sweep_runs_the_clocks_slot_and_removes_what_has_expired() {
    let w = world(&[], vec![]).await;
    let h = header("req-erase-5", &w.clock);
    w.eraser.plan(&h, &map(), w.clock.today()).await.unwrap();
    w.eraser.execute(&h).await.unwrap();
    assert!(
        w.systems.row("kyc_documents", "7").is_some(),
        "kept to the AML date"
    );
    w.clock.advance(TimeDelta::days(365 * 2 + 2));
    let day = 24 * 3600;
    let id = format!(
        "scheduled-{day}-{}",
        u64::try_from(w.clock.now().timestamp()).unwrap() / day
    );
    w.eraser.spawn_schedule(Duration::from_secs(day), 100);
    let mut done = None;
    for _ in 0..500 {
        if let Ok(s) = w.eraser.store().sweep(&id).await
            && s.finished_at.is_some()
        {
            done = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let done = done.expect("the clock's slot was swept");
    assert_eq!(done.systems[0].removed, 2);
    assert!(w.systems.row("kyc_documents", "7").is_none());
    assert!(w.systems.row("pep_screenings", "8").is_none());
    w.db.finish().await;
}
