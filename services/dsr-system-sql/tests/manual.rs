//! A vendor without an API (a manual system): searches and writes become
//! tasks emailed to the vendor's contact; the request waits until a person
//! answers; a write's receipt is signed for the attestation; reminders and
//! the escalation go out as the clock moves to their dates.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use chrono::{NaiveDate, TimeDelta, TimeZone, Utc};
use dsr_connector::instruction::Instruction;
use dsr_connector::operations::OpState;
use dsr_connector::signing::ReceiptSigner;
use dsr_domain::clock::Clock;
use dsr_domain::identity::{Identity, IdentityType, Organisationsnummer};
use dsr_proto::system::v1 as pb;
use dsr_server::notifier::{DeliveryError, Message, Notifier};
use dsr_store::testing::TestDb;
use dsr_system_sql::grpc::Source as _;
use dsr_system_sql::manual::manifest::ManualManifest;
use dsr_system_sql::manual::tasks::{Kept, TaskRecord};
use dsr_system_sql::manual::texts::Texts;
use dsr_system_sql::manual::{Answer, AnswerError, ManualSystem};
use dsr_system_sql::system::{Error, Method, RecordRef, Write};

/// Keeps what would be emailed (a test double for SMTP).
#[derive(Default)]
struct Sent(Mutex<Vec<Message>>);

#[tonic::async_trait]
impl Notifier for Sent {
    async fn send(&self, m: &Message) -> Result<(), DeliveryError> {
        self.0.lock().unwrap().push(m.clone());
        Ok(())
    }
}

impl Sent {
    fn take(&self) -> Vec<Message> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

const CONTACT: &str = "dsr@advokatlind.example";
const DPO: &str = "dpo@intrum.example";

struct Vendor {
    _db: TestDb,
    system: ManualSystem,
    sent: Arc<Sent>,
    clock: Clock,
}

async fn vendor() -> Vendor {
    let db = TestDb::new().await.unwrap();
    dsr_store::migrate::<dsr_connector::migration::Migrator>(&db.db)
        .await
        .unwrap();
    dsr_store::migrate::<dsr_system_sql::manual::Migrator>(&db.db)
        .await
        .unwrap();
    let manifest = ManualManifest::parse(
        include_str!("../reference/law-firm-manual.yaml"),
        "law-firm-manual.yaml",
    )
    .unwrap();
    let clock = Clock::starting_at(Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap());
    let sent = Arc::new(Sent::default());
    let system = ManualSystem::new(
        db.db.clone(),
        Arc::new(manifest),
        ReceiptSigner::generate("law-firm-test"),
        sent.clone(),
        Texts::builtin(),
    )
    .with_clock(clock.clone());
    Vendor {
        _db: db,
        system,
        sent,
        clock,
    }
}

fn instruction(request: &str, key: &str, due: NaiveDate, clock: &Clock) -> Instruction {
    Instruction {
        request_id: request.into(),
        controller: Organisationsnummer::parse("556134-1248").unwrap(),
        system_id: "law-firm".into(),
        due_date: due,
        issued_at: clock.now(),
        expires_at: clock.now() + TimeDelta::minutes(10),
        idempotency_key: key.into(),
    }
}

fn record(key: &str) -> RecordRef {
    RecordRef {
        store: "case-files".into(),
        key: key.into(),
    }
}

fn found(key: &str, name: &str) -> TaskRecord {
    TaskRecord {
        store: "case-files".into(),
        key: key.into(),
        fields: vec![
            ("name".into(), name.into()),
            ("email".into(), "anna@example.se".into()),
        ],
    }
}

#[tokio::test]
async fn a_search_waits_for_the_vendor_and_then_answers_with_what_they_reported() {
    let v = vendor().await;
    let far = NaiveDate::from_ymd_opt(2027, 1, 1).unwrap();
    let i = instruction("req-1", "k-1", far, &v.clock);
    let ids = vec![
        Identity::parse(IdentityType::Email, "anna@example.se").unwrap(),
        Identity::parse(IdentityType::Personnummer, "19121212-1212").unwrap(),
    ];
    let e = v.system.locate(&i, ids.clone()).await.unwrap_err();
    assert!(matches!(e, Error::AwaitingVendor), "{e:?}");

    // One email to the contact, in Swedish, naming what to look for: the
    // email address, not the personnummer the vendor does not search by.
    let sent = v.sent.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].to.value(), CONTACT);
    assert!(
        sent[0].subject.contains("2026-12-11"),
        "{}",
        sent[0].subject
    );
    assert!(
        sent[0].body.contains("E-post: anna@example.se"),
        "{}",
        sent[0].body
    );
    assert!(
        !sent[0].body.contains("191212"),
        "minimised: {}",
        sent[0].body
    );

    // Asked again meanwhile: still waiting, no second task or email.
    assert!(matches!(
        v.system.locate(&i, ids.clone()).await,
        Err(Error::AwaitingVendor)
    ));
    assert!(v.sent.take().is_empty());
    let open = v.system.tasks().list(Some(false), None).await.unwrap();
    assert_eq!(open.len(), 1);
    let task = &open[0].id;

    // Answers that do not fit are refused naming the field.
    let bad = v
        .system
        .answer(
            task,
            Answer {
                found: vec![TaskRecord {
                    store: "archive".into(),
                    ..found("C-1", "Anna")
                }],
                ..Answer::default()
            },
        )
        .await
        .unwrap_err();
    let AnswerError::Invalid(fields) = bad else {
        panic!("{bad:?}")
    };
    let named: BTreeSet<&str> = fields.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(named, BTreeSet::from(["attested_by", "found[0].store"]));

    let answered = v
        .system
        .answer(
            task,
            Answer {
                found: vec![found("C-1", "Anna Andersson")],
                attested_by: "Maria Lind".into(),
                statement: "sökte i ärenderegistret på e-post".into(),
                ..Answer::default()
            },
        )
        .await
        .unwrap();
    assert!(answered.answered);
    assert_eq!(answered.body.attested.as_ref().unwrap().contact, CONTACT);

    // Now the search answers, and Access gives the fields reported.
    let located = v.system.locate(&i, ids).await.unwrap();
    assert_eq!(located.stores.len(), 1);
    assert_eq!(located.stores[0].keys, ["C-1"]);
    let mut rx = v
        .system
        .access(i.controller.clone(), vec![record("C-1")], false, 10)
        .unwrap();
    let batch = rx.recv().await.unwrap().unwrap();
    let name = batch[0].fields.iter().find(|f| f.name == "name").unwrap();
    assert_eq!(name.value.as_deref(), Some("Anna Andersson"));
    assert_eq!(name.category, "contact.name");

    assert!(matches!(
        v.system
            .answer(
                task,
                Answer {
                    not_found: true,
                    attested_by: "Maria Lind".into(),
                    ..Answer::default()
                }
            )
            .await,
        Err(AnswerError::Answered)
    ));
}

#[tokio::test]
async fn an_erasure_done_by_hand_ends_with_a_receipt_signed_for_the_attestation() {
    let v = vendor().await;
    let due = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
    let i = instruction("req-2", "erase-1", due, &v.clock);
    let write = || Write::Erase {
        records: vec![record("C-1"), record("C-2")],
        acceptable: BTreeSet::from([Method::Delete]),
        retain: vec![],
    };
    let op = v
        .system
        .write(i.clone(), vec![7; 32], write())
        .await
        .unwrap();
    assert_eq!(op.state, OpState::Running);
    let mail = v.sent.take();
    assert_eq!(mail.len(), 1);
    assert!(mail[0].body.contains("case-files C-2"), "{}", mail[0].body);
    // Due within the request's deadline less the margin (31 - 5 days).
    assert!(
        mail[0].subject.contains("2026-12-11"),
        "{}",
        mail[0].subject
    );

    // The same instruction again: the same operation, no second task.
    let again = v
        .system
        .write(i.clone(), vec![7; 32], write())
        .await
        .unwrap();
    assert_eq!(again.id, op.id);
    assert!(v.sent.take().is_empty());
    let open = v.system.tasks().list(Some(false), None).await.unwrap();
    assert_eq!(open.len(), 1);

    // A count that does not add up is refused.
    let kept = vec![Kept {
        store: "case-files".into(),
        key: "C-2".into(),
        legal_ground: "pågående tvistemål T 77-26 (art. 17.3 e)".into(),
    }];
    let e = v
        .system
        .answer(
            &open[0].id,
            Answer {
                done: 2,
                kept: kept.clone(),
                attested_by: "Maria Lind".into(),
                ..Answer::default()
            },
        )
        .await
        .unwrap_err();
    let AnswerError::Invalid(fields) = e else {
        panic!("{e:?}")
    };
    assert_eq!(fields[0].0, "done");
    assert!(fields[0].1.starts_with("1:"), "{fields:?}");

    v.clock.advance(TimeDelta::days(2));
    v.system
        .answer(
            &open[0].id,
            Answer {
                done: 1,
                kept,
                attested_by: "Maria Lind".into(),
                statement: "C-1 raderad ur akten".into(),
                ..Answer::default()
            },
        )
        .await
        .unwrap();
    let op = v.system.operations().get(&op.id).await.unwrap();
    assert_eq!(op.state, OpState::Succeeded);
    let signed = op.receipt.unwrap();
    let receipt = dsr_connector::grpc::verify_receipt(
        &pb::SignedReceipt {
            payload: signed.payload,
            key_id: signed.key_id,
            signature: signed.signature,
        },
        &v.system.describe().signing_keys,
    )
    .unwrap();
    let a = receipt.attestation.unwrap();
    assert_eq!(
        (a.name.as_str(), a.contact.as_str()),
        ("Maria Lind", CONTACT)
    );
    assert_eq!(a.statement, "C-1 raderad ur akten");
    assert_eq!(receipt.instruction_digest, vec![7; 32]);
    let results: Vec<(String, i32)> = receipt
        .records
        .iter()
        .map(|r| (r.record.clone().unwrap().key, r.result))
        .collect();
    assert_eq!(
        results,
        [
            ("C-1".to_owned(), pb::RecordResult::Erased as i32),
            ("C-2".to_owned(), pb::RecordResult::Retained as i32)
        ]
    );
    assert!(receipt.retained[0].legal_ground.contains("T 77-26"));
}

#[tokio::test]
async fn reminders_go_before_the_due_date_and_an_overdue_task_escalates() {
    let v = vendor().await;
    let far = NaiveDate::from_ymd_opt(2027, 1, 15).unwrap();
    let i = instruction("req-3", "k-3", far, &v.clock);
    let email = Identity::parse(IdentityType::Email, "bo@example.se").unwrap();
    let _ = v.system.locate(&i, vec![email]).await;
    v.sent.take();
    let task = v.system.tasks().list(Some(false), None).await.unwrap()[0].clone();
    assert_eq!(task.due_at - task.created_at, TimeDelta::days(10));

    let round = v.system.tick().await.unwrap();
    assert_eq!((round.reminded, round.escalated), (0, 0));

    // Three days before: the first reminder, once.
    v.clock
        .set(task.due_at - TimeDelta::days(3) + TimeDelta::hours(1));
    assert_eq!(v.system.tick().await.unwrap().reminded, 1);
    assert_eq!(v.system.tick().await.unwrap().reminded, 0);
    let mail = v.sent.take();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].to.value(), CONTACT);
    assert!(
        mail[0].subject.starts_with("Påminnelse"),
        "{}",
        mail[0].subject
    );

    // The day before: the second.
    v.clock.set(task.due_at - TimeDelta::hours(20));
    assert_eq!(v.system.tick().await.unwrap().reminded, 1);
    v.sent.take();

    // Overdue: the DPO (in English, as the manifest says) and the contact
    // are told, once.
    v.clock.set(task.due_at + TimeDelta::days(2));
    let round = v.system.tick().await.unwrap();
    assert_eq!((round.escalated, round.overdue), (1, 1));
    let mail = v.sent.take();
    let to: BTreeSet<&str> = mail.iter().map(|m| m.to.value()).collect();
    assert_eq!(to, BTreeSet::from([CONTACT, DPO]));
    let dpo = mail.iter().find(|m| m.to.value() == DPO).unwrap();
    assert!(dpo.subject.starts_with("Overdue"), "{}", dpo.subject);
    assert!(dpo.body.contains("is 2 day(s)"), "{}", dpo.body);
    assert_eq!(v.system.tick().await.unwrap().escalated, 0);
    assert!(v.sent.take().is_empty());
    let stored = v.system.tasks().get(&task.id).await.unwrap().unwrap();
    assert_eq!(stored.reminders_sent, 2);
    assert!(stored.escalated_at.is_some());

    // Answered, then deleted with what was reported after the keeping time.
    v.system
        .answer(
            &task.id,
            Answer {
                not_found: true,
                attested_by: "Maria Lind".into(),
                ..Answer::default()
            },
        )
        .await
        .unwrap();
    v.clock.advance(TimeDelta::days(89));
    assert_eq!(v.system.tick().await.unwrap().purged, 0);
    v.clock.advance(TimeDelta::days(2));
    assert_eq!(v.system.tick().await.unwrap().purged, 1);
    assert!(v.system.tasks().get(&task.id).await.unwrap().is_none());
}
