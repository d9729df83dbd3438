//! The work queue and the worker, with test doubles for the mesh: a request
//! runs its steps to completion; a failing system makes it retry with the
//! failure visible and it completes when the system returns; two workers on
//! one database complete every request with each step done exactly once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dsr_domain::deadline::HolidayCalendar;
use dsr_domain::identity::{Identity, IdentityType, Organisationsnummer};
use dsr_domain::request::{Kind, State};
use dsr_orchestrator::feed::Change;
use dsr_orchestrator::ledger::{Ledger, Rejection, Submission};
use dsr_orchestrator::mesh::{
    Call, CallError, Challenge, Discovery, Discrepancy, Erasure, Executed, Export, PackageRef,
    Planned, Store, SubjectMap, SystemFound, Verification, Withheld,
};
use dsr_orchestrator::metrics::Metrics;
use dsr_orchestrator::migration::Migrator;
use dsr_orchestrator::queue::StepStatus;
use dsr_orchestrator::worker::{Mesh, Worker, WorkerConfig};
use dsr_store::testing::TestDb;
use tokio::sync::{Notify, broadcast, watch};

#[derive(Default)]
struct Fake {
    system_down: AtomicBool,
    /// The CRM is a vendor without an API whose task is still open.
    vendor_waiting: AtomicBool,
    locates: AtomicU32,
    builds: Mutex<BTreeMap<String, u32>>,
    /// Executions that answer incomplete (a system down) before one
    /// completes.
    executions_failing: AtomicU32,
    plans: AtomicU32,
    executions: AtomicU32,
    deferred: AtomicU32,
    /// The next deferred erasure finds its record kept by the system (an
    /// Art. 18 restriction): a discrepancy.
    deferred_discrepant: AtomicBool,
    applied: Mutex<Vec<dsr_domain::request::WriteOrder>>,
    /// What the writes withhold from recipients (no lawful transfer).
    withheld: Mutex<Vec<Withheld>>,
    /// Letters sent: (to, subject, body).
    letters: Mutex<Vec<(String, String, String)>>,
    /// Sends that fail (the relay down) before one is taken.
    letters_failing: AtomicU32,
    /// The next send waits, once it has begun (`letter_entered`), for
    /// `letter_release`.
    hold_next_letter: AtomicBool,
    letter_entered: Notify,
    letter_release: Notify,
}

#[tonic::async_trait]
impl Verification for Fake {
    async fn start(&self, _: &Call, _: &[Identity], _: &str) -> Result<Challenge, CallError> {
        Ok(Challenge {
            id: "challenge-1".into(),
        })
    }
    async fn complete(&self, _: &Call, _: &str, _: &str) -> Result<String, CallError> {
        unreachable!("the worker never completes challenges")
    }
    async fn send_letter(
        &self,
        _: &Call,
        to: &Identity,
        subject: &str,
        body: &str,
    ) -> Result<(), CallError> {
        if self.hold_next_letter.swap(false, Ordering::SeqCst) {
            self.letter_entered.notify_one();
            self.letter_release.notified().await;
        }
        if self
            .letters_failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(CallError {
                service: "identity".into(),
                reason: "DELIVERY_FAILED".into(),
                retryable: true,
            });
        }
        self.letters.lock().unwrap().push((
            to.value().to_owned(),
            subject.to_owned(),
            body.to_owned(),
        ));
        Ok(())
    }
}

#[tonic::async_trait]
impl Discovery for Fake {
    async fn find_affected(
        &self,
        _: &Call,
        _: &dsr_orchestrator::mesh::BreachQuery,
    ) -> Result<Vec<dsr_orchestrator::mesh::SystemAffected>, CallError> {
        unreachable!("the worker never asks about breaches")
    }
    async fn locate(&self, _: &Call, ids: &[Identity]) -> Result<SubjectMap, CallError> {
        assert!(!ids.is_empty(), "locate gets the verified identities");
        self.locates.fetch_add(1, Ordering::SeqCst);
        let waiting = self.vendor_waiting.load(Ordering::SeqCst);
        let down = waiting || self.system_down.load(Ordering::SeqCst);
        Ok(SubjectMap {
            identities: vec![("email".into(), "anna@example.se".into())],
            systems: vec![SystemFound {
                system_id: "crm".into(),
                outcome: if down { "failed" } else { "found" }.into(),
                stores: if down {
                    vec![]
                } else {
                    vec![Store {
                        store: "contacts".into(),
                        keys: vec!["1".into()],
                        categories: vec!["contact.email".into()],
                    }]
                },
                error_reason: if waiting {
                    "AWAITING_VENDOR".into()
                } else if down {
                    "UNAVAILABLE".into()
                } else {
                    String::new()
                },
            }],
            partial: down,
            rounds: 1,
        })
    }
}

#[tonic::async_trait]
impl Export for Fake {
    async fn build(
        &self,
        call: &Call,
        _: Kind,
        _: &str,
        map: &SubjectMap,
    ) -> Result<PackageRef, CallError> {
        *self
            .builds
            .lock()
            .unwrap()
            .entry(call.request_id.clone())
            .or_default() += 1;
        Ok(PackageRef {
            id: format!("pkg-{}", call.request_id),
            record_count: map.record_count(),
            system_ids: vec!["crm".into()],
        })
    }
}

#[tonic::async_trait]
impl Erasure for Fake {
    async fn plan(&self, _: &Call, map: &SubjectMap) -> Result<Planned, CallError> {
        assert_eq!(map.record_count(), 1, "the plan gets the subject map");
        self.plans.fetch_add(1, Ordering::SeqCst);
        Ok(Planned {
            erase: 0,
            anonymise: 0,
            retain: 1,
        })
    }

    async fn execute(&self, _: &Call) -> Result<Executed, CallError> {
        self.executions.fetch_add(1, Ordering::SeqCst);
        let failing = self.executions_failing.load(Ordering::SeqCst);
        if failing > 0 {
            self.executions_failing.store(failing - 1, Ordering::SeqCst);
            return Ok(Executed {
                discrepancies: vec![],
                withheld: vec![],
                complete: false,
                failures: vec!["system legal: UNAVAILABLE".into()],
                affected: 0,
                refused: 0,
                retained: 1,
                next_deferred_on: None,
                system_ids: vec!["crm".into(), "legal".into()],
            });
        }
        // One record retained until yesterday: its deferred erasure is due.
        Ok(Executed {
            discrepancies: vec![],
            withheld: vec![],
            complete: true,
            failures: vec![],
            affected: 3,
            refused: 0,
            retained: 1,
            next_deferred_on: Some(chrono::Utc::now().date_naive()),
            system_ids: vec!["crm".into(), "legal".into()],
        })
    }

    async fn apply(
        &self,
        _: &Call,
        order: &dsr_domain::request::WriteOrder,
        map: &SubjectMap,
    ) -> Result<Executed, CallError> {
        assert_eq!(map.record_count(), 1, "the write gets the subject map");
        self.applied.lock().unwrap().push(order.clone());
        Ok(Executed {
            discrepancies: vec![],
            withheld: self.withheld.lock().unwrap().clone(),
            complete: true,
            failures: vec![],
            affected: 1,
            refused: 0,
            retained: 0,
            next_deferred_on: None,
            system_ids: vec!["crm".into()],
        })
    }

    async fn deferred(&self, _: &Call, as_of: chrono::NaiveDate) -> Result<Executed, CallError> {
        assert_eq!(as_of, chrono::Utc::now().date_naive());
        self.deferred.fetch_add(1, Ordering::SeqCst);
        if self.deferred_discrepant.swap(false, Ordering::SeqCst) {
            return Ok(Executed {
                discrepancies: vec![Discrepancy {
                    system_id: "crm".into(),
                    store: "kyc_documents".into(),
                    key: "7".into(),
                    phase: format!("deferred:{as_of}"),
                    expected: "removed".into(),
                    observed: "retained".into(),
                    reason: Some("request".into()),
                    ground: Some("GDPR Art. 18".into()),
                    until: None,
                    receipt_id: "receipt-1".into(),
                }],
                withheld: vec![],
                complete: true,
                failures: vec![],
                affected: 0,
                refused: 0,
                retained: 1,
                next_deferred_on: None,
                system_ids: vec!["crm".into()],
            });
        }
        Ok(Executed {
            discrepancies: vec![],
            withheld: vec![],
            complete: true,
            failures: vec![],
            affected: 1,
            refused: 0,
            retained: 0,
            next_deferred_on: None,
            system_ids: vec!["crm".into()],
        })
    }
}

fn submission(key: &str) -> Submission {
    let email = Identity::parse(IdentityType::Email, "anna@example.se").unwrap();
    Submission {
        kind: Kind::Access,
        controller: Organisationsnummer::parse("556134-1248").unwrap(),
        identities: vec![email.clone()],
        language: "sv".into(),
        idempotency_key: key.into(),
        verified: Some(vec![email]),
        write: None,
        verification_jti: None,
        submitted_by: None,
    }
}

/// `n` access requests submitted under keys `<prefix>-00000`, …; their ids
/// in order.
async fn submit_many(
    ledger: &Ledger,
    prefix: &str,
    n: usize,
    today: chrono::NaiveDate,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let (r, _) = ledger
            .submit(submission(&format!("{prefix}-{i:05}")), today, "portal")
            .await
            .unwrap();
        ids.push(r.id);
    }
    ids
}

fn config(id: &str) -> WorkerConfig {
    WorkerConfig {
        worker_id: id.into(),
        lease: Duration::from_secs(5),
        poll: Duration::from_millis(20),
        concurrency: 8,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        max_attempts: 1000,
        call_timeout: Duration::from_secs(5),
        approval_controllers: Default::default(),
        assurance: Default::default(),
    }
}

fn start(
    ledger: &Ledger,
    fake: &Arc<Fake>,
    id: &str,
    stop: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    start_with(ledger, fake, config(id), stop)
}

fn start_with(
    ledger: &Ledger,
    fake: &Arc<Fake>,
    cfg: WorkerConfig,
    stop: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    start_watched(ledger, fake, cfg, stop, broadcast::channel(64).0)
}

fn start_watched(
    ledger: &Ledger,
    fake: &Arc<Fake>,
    cfg: WorkerConfig,
    stop: &watch::Receiver<bool>,
    changes: broadcast::Sender<Change>,
) -> tokio::task::JoinHandle<()> {
    let mesh = Mesh {
        verification: fake.clone(),
        discovery: fake.clone(),
        export: fake.clone(),
        erasure: fake.clone(),
    };
    let w = Worker::new(
        ledger.clone(),
        mesh,
        cfg,
        Arc::new(Notify::new()),
        changes,
        Metrics::new(),
    );
    tokio::spawn(w.run(stop.clone()))
}

async fn wait_for(ledger: &Ledger, id: &str, state: State) -> dsr_orchestrator::ledger::Request {
    for _ in 0..1000 {
        let r = ledger.get(id).await.unwrap();
        if r.state == state {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("request never reached {state}");
}

async fn ledger() -> (TestDb, Ledger) {
    let db = TestDb::new().await.unwrap();
    dsr_store::migrate::<Migrator>(&db.db).await.unwrap();
    let l = Ledger::new(db.db.clone(), HolidayCalendar::swedish());
    (db, l)
}

#[tokio::test]
async fn a_request_runs_its_steps_and_retries_while_a_system_is_down() {
    let (db, ledger) = ledger().await;
    let fake = Arc::new(Fake::default());
    fake.system_down.store(true, Ordering::SeqCst);
    let (stop_tx, stop) = watch::channel(false);
    let worker = start(&ledger, &fake, "w1", &stop);
    let today = chrono::Utc::now().date_naive();
    let (r, _) = ledger
        .submit(submission("key-00001"), today, "portal")
        .await
        .unwrap();
    // The system is down: the locate step fails and waits to retry, visibly.
    let mut seen_retry = false;
    for _ in 0..500 {
        let r = ledger.get(&r.id).await.unwrap();
        if r.state == State::Locating && r.attempts >= 2 && r.next_attempt_at.is_some() {
            assert!(
                r.last_error
                    .as_deref()
                    .unwrap()
                    .contains("system crm: UNAVAILABLE"),
                "{:?}",
                r.last_error
            );
            let steps = ledger.steps(&r).await.unwrap();
            let locate = steps.iter().find(|s| s.name == "locate").unwrap();
            assert!(
                matches!(
                    locate.status,
                    StepStatus::WaitingRetry | StepStatus::Running
                ),
                "{locate:?}"
            );
            assert!(locate.attempts >= 2);
            seen_retry = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen_retry, "the failure shows on the request");
    // The system returns: the request completes.
    fake.system_down.store(false, Ordering::SeqCst);
    let done = wait_for(&ledger, &r.id, State::Completed).await;
    assert_eq!(
        done.package_id.as_deref(),
        Some(format!("pkg-{}", r.id).as_str())
    );
    assert_eq!(done.record_count, Some(1));
    let log = ledger.step_log(&r.id).await.unwrap();
    for step in ["verify", "locate", "export"] {
        assert_eq!(
            log.iter()
                .filter(|x| x.step == step && x.outcome == "done")
                .count(),
            1,
            "{step} done once: {log:?}"
        );
    }
    assert!(
        log.iter()
            .filter(|x| x.step == "locate" && x.outcome == "failed")
            .count()
            >= 2
    );
    assert_eq!(
        ledger.verify_audit().await.unwrap() as usize,
        4,
        "submitted + three moves"
    );
    stop_tx.send(true).unwrap();
    worker.await.unwrap();
    db.finish().await;
}

/// What `Get` and `Watch` show of a request's letters and steps, read in
/// one statement, is what their own reads give: letters queued and sent,
/// steps failed (with their errors), running and done.
#[tokio::test]
async fn a_view_reads_letters_and_steps_as_their_own_reads_do() {
    let (db, ledger) = ledger().await;
    let fake = Arc::new(Fake::default());
    fake.system_down.store(true, Ordering::SeqCst);
    let (stop_tx, stop) = watch::channel(false);
    let worker = start(&ledger, &fake, "w1", &stop);
    let letters = sender(&ledger, &fake, 5);
    let today = chrono::Utc::now().date_naive();
    let (r, _) = ledger
        .submit(submission("view-00001"), today, "portal")
        .await
        .unwrap();
    let agrees = |r: dsr_orchestrator::ledger::Request| {
        let ledger = ledger.clone();
        async move {
            let (letters, steps) = ledger.letters_and_steps(&r).await.unwrap();
            assert_eq!(letters, ledger.letters_of(&r.id).await.unwrap());
            assert_eq!(steps, ledger.steps(&r).await.unwrap());
            (letters, steps)
        }
    };
    // Failing, a letter queued.
    let mut failing = None;
    for _ in 0..500 {
        let now = ledger.get(&r.id).await.unwrap();
        if now.attempts >= 2 {
            failing = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The worker stopped first: it would retry the step between the reads.
    stop_tx.send(true).unwrap();
    worker.await.unwrap();
    let failing = ledger
        .get(&failing.expect("the locate step failed twice").id)
        .await
        .unwrap();
    let (queued, steps) = agrees(failing).await;
    assert_eq!(queued.len(), 1);
    assert!(queued[0].sent_at.is_none());
    let locate = steps.iter().find(|s| s.name == "locate").unwrap();
    assert!(
        locate.attempts >= 2 && locate.last_error.is_some(),
        "{locate:?}"
    );
    // Completed, its letters sent.
    fake.system_down.store(false, Ordering::SeqCst);
    let (stop_tx, stop) = watch::channel(false);
    let worker = start(&ledger, &fake, "w1", &stop);
    let done = wait_for(&ledger, &r.id, State::Completed).await;
    assert_eq!(send_all(&letters).await, 2);
    let (sent, steps) = agrees(done).await;
    assert_eq!(sent.len(), 2);
    assert!(
        sent.iter()
            .all(|l| l.sent_at.is_some() && l.channel.is_some())
    );
    assert!(
        steps.iter().all(|s| s.status == StepStatus::Done),
        "{steps:?}"
    );
    stop_tx.send(true).unwrap();
    worker.await.unwrap();
    db.finish().await;
}

/// What the worker tells `Watch` streams is the request as it committed
/// it (a stream shows it without reading the ledger again): each state in
/// order, the last one exactly the request as recorded.
#[tokio::test]
async fn the_worker_tells_watchers_each_move_as_recorded() {
    let (db, ledger) = ledger().await;
    let fake = Arc::new(Fake::default());
    let (stop_tx, stop) = watch::channel(false);
    let (changes, mut rx) = broadcast::channel(64);
    let worker = start_watched(&ledger, &fake, config("w1"), &stop, changes);
    let today = chrono::Utc::now().date_naive();
    let (r, _) = ledger
        .submit(submission("key-watch-1"), today, "portal")
        .await
        .unwrap();
    let mut told = Vec::new();
    let last = loop {
        let c = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the worker told nothing")
            .unwrap();
        let Change::Written(w) = c else {
            panic!("a move is told with the request: {c:?}");
        };
        assert_eq!(w.id, r.id);
        told.push((w.state, w.updated_at));
        if w.state == State::Completed {
            break w;
        }
    };
    // Verified at submission, it starts out locating.
    assert_eq!(
        told.iter().map(|t| t.0).collect::<Vec<_>>(),
        vec![State::Exporting, State::Completed]
    );
    assert!(told.windows(2).all(|w| w[0].1 <= w[1].1), "{told:?}");
    assert_eq!(*last, ledger.get(&r.id).await.unwrap());
    stop_tx.send(true).unwrap();
    worker.await.unwrap();
    db.finish().await;
}

/// A step that only waits on a vendor's person (AWAITING_VENDOR) is asked
/// again for as long as it takes, past the attempts a failure gets, and
/// the request completes once the vendor has answered.
#[tokio::test]
async fn a_request_waiting_on_a_vendor_outlasts_the_attempts_and_completes_when_it_answers() {
    let (db, ledger) = ledger().await;
    let fake = Arc::new(Fake::default());
    fake.vendor_waiting.store(true, Ordering::SeqCst);
    let (stop_tx, stop) = watch::channel(false);
    let worker = start_with(
        &ledger,
        &fake,
        WorkerConfig {
            max_attempts: 2,
            ..config("w1")
        },
        &stop,
    );
    let today = chrono::Utc::now().date_naive();
    let (r, _) = ledger
        .submit(submission("key-vendor-1"), today, "portal")
        .await
        .unwrap();
    // Five attempts, more than the two a failure gets: still waiting.
    let mut waited = None;
    for _ in 0..1000 {
        let now = ledger.get(&r.id).await.unwrap();
        if now.attempts >= 5 {
            waited = Some(now);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waited = waited.expect("the step was asked again past its attempts");
    assert_eq!(waited.state, State::Locating);
    assert!(waited.next_attempt_at.is_some(), "another attempt is due");
    assert!(
        waited
            .last_error
            .as_deref()
            .unwrap()
            .contains("waiting: system crm: AWAITING_VENDOR"),
        "{:?}",
        waited.last_error
    );
    // The vendor answers: the request completes with what it reported.
    fake.vendor_waiting.store(false, Ordering::SeqCst);
    let done = wait_for(&ledger, &r.id, State::Completed).await;
    assert_eq!(done.record_count, Some(1));
    stop_tx.send(true).unwrap();
    worker.await.unwrap();
    db.finish().await;
}

#[tokio::test]
async fn two_workers_share_the_queue_and_no_step_is_done_twice() {
    let (db, ledger) = ledger().await;
    let fake = Arc::new(Fake::default());
    let (stop_tx, stop) = watch::channel(false);
    let w1 = start(&ledger, &fake, "w1", &stop);
    let w2 = start(&ledger, &fake, "w2", &stop);
    let today = chrono::Utc::now().date_naive();
    let ids = submit_many(&ledger, "key", 60, today).await;
    for id in &ids {
        wait_for(&ledger, id, State::Completed).await;
    }
    let mut workers = std::collections::BTreeSet::new();
    for id in &ids {
        let log = ledger.step_log(id).await.unwrap();
        for step in ["verify", "locate", "export"] {
            let runs: Vec<_> = log.iter().filter(|x| x.step == step).collect();
            assert_eq!(runs.len(), 1, "{step} of {id} ran once: {log:?}");
            assert_eq!(runs[0].outcome, "done");
        }
        workers.extend(
            log.iter()
                .filter(|x| x.worker != "api")
                .map(|x| x.worker.clone()),
        );
    }
    assert_eq!(workers.len(), 2, "both workers took work: {workers:?}");
    assert_eq!(fake.locates.load(Ordering::SeqCst), 60);
    assert!(fake.builds.lock().unwrap().values().all(|n| *n == 1));
    stop_tx.send(true).unwrap();
    w1.await.unwrap();
    w2.await.unwrap();
    db.finish().await;
}

/// A worker's claim takes the request and, on PostgreSQL, begins its next
/// step's attempt in the same statement: the step the request's state
/// calls for (verify for a request not yet verified, locate for one
/// verified at submission), numbered after earlier attempts. An attempt
/// still marked running (its worker died) is not begun again: the worker
/// takes the usual way, which marks it abandoned.
#[tokio::test]
async fn a_claim_begins_the_step_the_state_calls_for_unless_one_is_still_running() {
    let (db, ledger) = ledger().await;
    let postgres = db.backend() == sea_orm::DbBackend::Postgres;
    let today = chrono::Utc::now().date_naive();
    let mut unverified = submission("key-begin-1");
    unverified.verified = None;
    let (a, _) = ledger.submit(unverified, today, "portal").await.unwrap();
    let (b, _) = ledger
        .submit(submission("key-begin-2"), today, "portal")
        .await
        .unwrap();
    let lease = Duration::from_millis(300);
    let mut begun = BTreeMap::new();
    for _ in 0..2 {
        let (claim, r, row) = ledger.claim_and_begin("w1", lease).await.unwrap().unwrap();
        assert_eq!(claim.request_id, r.id);
        assert_eq!(row.is_some(), postgres, "{row:?}");
        begun.insert(r.id.clone(), row);
    }
    assert!(ledger.claim_and_begin("w1", lease).await.unwrap().is_none());
    for (id, step) in [(&a.id, "verify"), (&b.id, "locate")] {
        let running: Vec<_> = ledger
            .step_log(id)
            .await
            .unwrap()
            .into_iter()
            .filter(|x| x.outcome == "running")
            .collect();
        if postgres {
            assert_eq!(running.len(), 1, "{running:?}");
            assert_eq!(
                (
                    running[0].step.as_str(),
                    running[0].attempt,
                    running[0].worker.as_str()
                ),
                (step, 1, "w1")
            );
        } else {
            assert!(running.is_empty(), "{running:?}");
        }
    }
    // Both workers die; a second claims each once the leases lapsed, and
    // begins nothing where an attempt is still marked running.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..2 {
        let (claim, r, row) = ledger
            .claim_and_begin("w2", Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row, None);
        if postgres {
            let step = if r.id == a.id { "verify" } else { "locate" };
            let (_, attempt) = ledger.start_step(&claim, step, "w2").await.unwrap();
            assert_eq!(attempt, 2);
            let log = ledger.step_log(&r.id).await.unwrap();
            let outcomes: Vec<_> = log
                .iter()
                .filter(|x| x.step == step)
                .map(|x| (x.outcome.as_str(), x.worker.as_str()))
                .collect();
            assert_eq!(outcomes, [("abandoned", "w1"), ("running", "w2")]);
        }
    }
    assert_eq!(begun.len(), 2, "each request claimed once");
    db.finish().await;
}

#[tokio::test]
async fn a_claimed_request_whose_worker_died_is_taken_over_after_its_lease() {
    let (db, ledger) = ledger().await;
    let today = chrono::Utc::now().date_naive();
    let (r, _) = ledger
        .submit(submission("key-dead1"), today, "portal")
        .await
        .unwrap();
    // A worker claims it, starts the step, and dies.
    let claim = ledger
        .claim("dead", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claim.request_id, r.id);
    // (The verification token was checked at submission: the request is
    // locating.)
    assert_eq!(ledger.get(&r.id).await.unwrap().state, State::Locating);
    let (dead_row, _) = ledger.start_step(&claim, "locate", "dead").await.unwrap();
    // While the lease holds nobody else gets it.
    assert!(
        ledger
            .claim("other", Duration::from_secs(5))
            .await
            .unwrap()
            .is_none()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fake = Arc::new(Fake::default());
    let (stop_tx, stop) = watch::channel(false);
    let w = start(&ledger, &fake, "alive", &stop);
    wait_for(&ledger, &r.id, State::Completed).await;
    // The dead worker's late completion is refused: its lease is gone.
    let late = ledger
        .complete_step(
            &claim,
            dead_row,
            dsr_orchestrator::queue::Outcome::Verified,
            "dead",
            None,
        )
        .await;
    assert!(late.is_err());
    let log = ledger.step_log(&r.id).await.unwrap();
    let locate: Vec<_> = log.iter().filter(|x| x.step == "locate").collect();
    assert_eq!(locate.len(), 2, "{log:?}");
    assert_eq!(locate[0].outcome, "abandoned");
    assert_eq!(locate[1].outcome, "done");
    assert_eq!(locate[1].worker, "alive");
    let verify: Vec<_> = log.iter().filter(|x| x.step == "verify").collect();
    assert_eq!(verify.len(), 1);
    assert_eq!(
        verify[0].worker, "api",
        "the token was checked at submission"
    );
    stop_tx.send(true).unwrap();
    w.await.unwrap();
    db.finish().await;
}

/// A step's completion writes the request from the claim's sight of it
/// only while nobody changed it: a deadline extended while the step ran is
/// kept and the step still completes; a request cancelled meanwhile stays
/// cancelled (its completion is refused), not moved on from the state the
/// worker saw.
#[tokio::test]
async fn a_completion_decides_from_the_request_as_it_is_when_it_changed_meanwhile() {
    let (db, ledger) = ledger().await;
    let today = chrono::Utc::now().date_naive();
    let located = || dsr_orchestrator::queue::Outcome::Located {
        map: SubjectMap {
            identities: Vec::new(),
            systems: Vec::new(),
            partial: false,
            rounds: 1,
        },
        needs_approval: false,
    };
    let lease = Duration::from_secs(30);

    // Extended while locating: the completion keeps the extension.
    let (r, _) = ledger
        .submit(submission("key-meanwhile-1"), today, "portal")
        .await
        .unwrap();
    let claim = ledger.claim("w", lease).await.unwrap().unwrap();
    assert_eq!(claim.request_id, r.id);
    let (row, _) = ledger.start_step(&claim, "locate", "w").await.unwrap();
    ledger
        .extend(&r.id, 2, "many systems to search", today, "handler")
        .await
        .unwrap();
    let extended = ledger.get(&r.id).await.unwrap().deadline.due();
    assert!(extended > r.deadline.due());
    let (moved, next) = ledger
        .complete_step(&claim, row, located(), "w", Some("w"))
        .await
        .unwrap();
    assert_eq!(moved.state, State::Exporting);
    assert!(next.is_some(), "the export's attempt begun");
    let now = ledger.get(&r.id).await.unwrap();
    assert_eq!(now.state, State::Exporting);
    assert_eq!(now.deadline.due(), extended, "the extension stays");

    // Cancelled while locating: the completion is refused, the request
    // stays cancelled, and the step is not recorded as done.
    let (r, _) = ledger
        .submit(submission("key-meanwhile-2"), today, "portal")
        .await
        .unwrap();
    let claim = loop {
        let c = ledger.claim("w", lease).await.unwrap().unwrap();
        if c.request_id == r.id {
            break c;
        }
        ledger.release(&c).await.unwrap();
    };
    let (row, _) = ledger.start_step(&claim, "locate", "w").await.unwrap();
    ledger
        .cancel(&r.id, "the person withdrew it", "handler")
        .await
        .unwrap();
    assert!(
        ledger
            .complete_step(&claim, row, located(), "w", Some("w"))
            .await
            .is_err()
    );
    assert_eq!(ledger.get(&r.id).await.unwrap().state, State::Cancelled);
    let log = ledger.step_log(&r.id).await.unwrap();
    assert!(
        log.iter()
            .all(|x| x.step != "locate" || x.outcome != "done"),
        "{log:?}"
    );
    db.finish().await;
}

#[tokio::test]
async fn a_controller_that_requires_approval_waits_for_a_case_handler() {
    let (db, ledger) = ledger().await;
    let fake = Arc::new(Fake::default());
    let (stop_tx, stop) = watch::channel(false);
    let mesh = Mesh {
        verification: fake.clone(),
        discovery: fake.clone(),
        export: fake.clone(),
        erasure: fake.clone(),
    };
    let mut cfg = config("w1");
    cfg.approval_controllers = [Organisationsnummer::parse("556134-1248").unwrap()].into();
    let (changes, _) = broadcast::channel(64);
    let w = tokio::spawn(
        Worker::new(
            ledger.clone(),
            mesh,
            cfg,
            Arc::new(Notify::new()),
            changes,
            Metrics::new(),
        )
        .run(stop.clone()),
    );
    let today = chrono::Utc::now().date_naive();
    let (a, _) = ledger
        .submit(submission("key-appr-1"), today, "portal")
        .await
        .unwrap();
    let (b, _) = ledger
        .submit(submission("key-appr-2"), today, "portal")
        .await
        .unwrap();
    for id in [&a.id, &b.id] {
        let r = wait_for(&ledger, id, State::AwaitingApproval).await;
        assert!(r.subject_map.is_some(), "located before approval");
        assert!(
            r.next_attempt_at.is_none(),
            "nothing to run until a decision"
        );
    }
    // Nothing is exported without a decision.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(fake.builds.lock().unwrap().is_empty());
    ledger.approve(&a.id, "case-handler-7").await.unwrap();
    let done = wait_for(&ledger, &a.id, State::Completed).await;
    assert!(done.package_id.is_some());
    let rejected = ledger
        .reject(
            &b.id,
            dsr_orchestrator::ledger::Rejection::ManifestlyUnfoundedOrExcessive,
            "the fifth identical request this month",
            "case-handler-7",
        )
        .await
        .unwrap();
    assert_eq!(rejected.state, State::Rejected);
    assert_eq!(
        rejected.rejection,
        Some((
            Rejection::ManifestlyUnfoundedOrExcessive,
            "the fifth identical request this month".to_owned()
        ))
    );
    // A decided request cannot be approved again, nor a completed one rejected.
    assert!(ledger.approve(&b.id, "case-handler-7").await.is_err());
    assert!(
        ledger
            .reject(
                &a.id,
                dsr_orchestrator::ledger::Rejection::Other,
                "late",
                "case-handler-7"
            )
            .await
            .is_err()
    );
    assert_eq!(fake.builds.lock().unwrap().len(), 1);
    assert!(ledger.verify_audit().await.unwrap() >= 8);
    stop_tx.send(true).unwrap();
    w.await.unwrap();
    db.finish().await;
}

#[tokio::test]
async fn an_erasure_plans_executes_until_every_system_answers_then_runs_its_deferred_erasure() {
    let (db, ledger) = ledger().await;
    let fake = Arc::new(Fake::default());
    fake.executions_failing.store(2, Ordering::SeqCst);
    let (stop_tx, stop) = watch::channel(false);
    let worker = start(&ledger, &fake, "w1", &stop);
    let today = chrono::Utc::now().date_naive();
    let mut sub = submission("erase-0001");
    sub.kind = Kind::Erasure;
    let (r, _) = ledger.submit(sub, today, "portal").await.unwrap();
    let done = wait_for(&ledger, &r.id, State::Completed).await;
    stop_tx.send(true).unwrap();
    worker.await.unwrap();
    assert_eq!(fake.plans.load(Ordering::SeqCst), 1);
    // Two incomplete executions retried, then one complete.
    assert_eq!(fake.executions.load(Ordering::SeqCst), 3);
    assert_eq!(fake.deferred.load(Ordering::SeqCst), 1);
    assert_eq!(done.record_count, Some(4), "3 erased, then 1 deferred");
    assert_eq!(done.retained_count, Some(0));
    assert_eq!(done.system_ids, vec!["crm".to_owned(), "legal".to_owned()]);
    let steps = ledger.steps(&done).await.unwrap();
    let names: Vec<(&str, &str, u32)> = steps
        .iter()
        .map(|s| (s.name, s.status.as_str(), s.attempts))
        .collect();
    assert_eq!(
        names,
        vec![
            ("verify", "done", 1),
            ("locate", "done", 1),
            ("plan", "done", 1),
            ("execute", "done", 3),
            ("deferred", "done", 1),
        ]
    );
    // Submitted (verified: straight to locating), then planning, executing,
    // completed with retained, completed: the chain holds.
    assert_eq!(ledger.verify_audit().await.unwrap(), 6);
    drop(db);
}

#[tokio::test]
async fn a_receipt_that_differs_from_the_plan_waits_for_a_case_handler() {
    let (db, ledger) = ledger().await;
    let fake = Arc::new(Fake::default());
    fake.deferred_discrepant.store(true, Ordering::SeqCst);
    let (stop_tx, stop) = watch::channel(false);
    let worker = start(&ledger, &fake, "w1", &stop);
    let today = chrono::Utc::now().date_naive();
    let mut sub = submission("erase-0002");
    sub.kind = Kind::Erasure;
    let (r, _) = ledger.submit(sub, today, "portal").await.unwrap();
    // The deferred erasure's receipt kept the record: never completed.
    let review = wait_for(&ledger, &r.id, State::AwaitingReview).await;
    assert_eq!(review.discrepancies.len(), 1);
    assert_eq!(review.discrepancies[0].observed, "retained");
    assert_eq!(review.discrepancies[0].reason.as_deref(), Some("request"));
    assert_eq!(review.retained_count, Some(1), "the receipts' count");
    assert_eq!(review.next_attempt_at, None, "nothing runs until reviewed");
    // A case handler accepts the outcome: completed with the record
    // retained, its deferred erasure run again (now it erases).
    let approved = ledger.approve(&r.id, "handler:anna").await.unwrap();
    assert_eq!(approved.state, State::CompletedWithRetained);
    let done = wait_for(&ledger, &r.id, State::Completed).await;
    assert_eq!(done.retained_count, Some(0));
    assert_eq!(done.discrepancies.len(), 1, "kept on the request");
    assert_eq!(fake.deferred.load(Ordering::SeqCst), 2);
    stop_tx.send(true).unwrap();
    worker.await.unwrap();
    // The trail names the discrepancy and the review.
    let trail: Vec<String> = ledger
        .audit_of(&r.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(
        trail.iter().any(
            |a| a.starts_with("discrepancy:crm/kyc_documents/7 deferred:")
                && a.ends_with("expected removed, receipt says retained (restricted: request)")
        ),
        "{trail:?}"
    );
    assert!(
        trail.contains(&"state:awaiting_review".to_owned()),
        "{trail:?}"
    );
    assert!(trail.contains(&"reviewed".to_owned()), "{trail:?}");
    assert!(ledger.verify_audit().await.unwrap() >= 8);
    drop(db);
}

#[tokio::test]
async fn an_objection_is_located_then_applied_once_with_its_order() {
    let (db, ledger) = ledger().await;
    let fake = Arc::new(Fake::default());
    let (stop_tx, stop) = watch::channel(false);
    let worker = start(&ledger, &fake, "w1", &stop);
    let today = chrono::Utc::now().date_naive();
    let order = dsr_domain::request::WriteOrder::Object {
        purposes: vec![],
        direct_marketing: true,
    };
    let mut sub = submission("object-0001");
    sub.kind = Kind::Objection;
    sub.write = Some(order.clone());
    let (r, _) = ledger.submit(sub.clone(), today, "portal").await.unwrap();
    assert_eq!(r.write_order.as_ref(), Some(&order));
    let done = wait_for(&ledger, &r.id, State::Completed).await;
    stop_tx.send(true).unwrap();
    worker.await.unwrap();
    assert_eq!(*fake.applied.lock().unwrap(), vec![order]);
    assert_eq!(done.record_count, Some(1));
    let steps: Vec<(&str, &str)> = ledger
        .steps(&done)
        .await
        .unwrap()
        .iter()
        .map(|s| (s.name, s.status.as_str()))
        .collect();
    assert_eq!(
        steps,
        vec![("verify", "done"), ("locate", "done"), ("apply", "done")]
    );
    // The same key with another order is another payload: refused.
    sub.write = Some(dsr_domain::request::WriteOrder::Object {
        purposes: vec!["explore business opportunities with you".into()],
        direct_marketing: false,
    });
    assert!(matches!(
        ledger.submit(sub, today, "portal").await,
        Err(dsr_orchestrator::ledger::Error::KeyReused)
    ));
    drop(db);
}

fn withheld(verdict: &str) -> Withheld {
    Withheld {
        recipient_id: "agent-in".into(),
        recipient_name: "Collection agent (India)".into(),
        country: "IN".into(),
        action: "rectify".into(),
        verdict: verdict.into(),
        reasons: vec!["no_safeguard: no adequacy decision or safeguard for IN".into()],
        notification_id: "n-1".into(),
    }
}

async fn rectified_with(withheld_as: &str) -> (TestDb, Ledger, String) {
    let (db, ledger) = ledger().await;
    let fake = Arc::new(Fake::default());
    fake.withheld.lock().unwrap().push(withheld(withheld_as));
    let (stop_tx, stop) = watch::channel(false);
    let worker = start(&ledger, &fake, "w1", &stop);
    let today = chrono::Utc::now().date_naive();
    let mut sub = submission("rectify-0001");
    sub.kind = Kind::Rectification;
    sub.write = Some(dsr_domain::request::WriteOrder::Rectify {
        corrections: vec![dsr_domain::request::Correction {
            category: "contact.address".into(),
            value: "Storgatan 1".into(),
        }],
    });
    let (r, _) = ledger.submit(sub, today, "portal").await.unwrap();
    let want = if withheld_as == "refused" {
        State::Completed
    } else {
        State::AwaitingReview
    };
    let r = wait_for(&ledger, &r.id, want).await;
    stop_tx.send(true).unwrap();
    worker.await.unwrap();
    assert_eq!(r.withheld, vec![withheld(withheld_as)], "on the request");
    (db, ledger, r.id)
}

#[tokio::test]
async fn a_disclosure_refused_for_want_of_a_lawful_transfer_is_on_the_request_and_in_the_trail() {
    let (db, ledger, id) = rectified_with("refused").await;
    let trail: Vec<String> = ledger
        .audit_of(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(
        trail.contains(
            &"disclosure_withheld:agent-in rectify (refused): no_safeguard: no adequacy decision or safeguard for IN"
                .to_owned()
        ),
        "{trail:?}"
    );
    drop(db);
}

#[tokio::test]
async fn a_disclosure_held_for_approval_waits_for_a_case_handler() {
    let (db, ledger, id) = rectified_with("awaiting_approval").await;
    let reviewed = ledger.approve(&id, "handler:anna").await.unwrap();
    assert_eq!(reviewed.state, State::Completed);
    let trail: Vec<String> = ledger
        .audit_of(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(
        trail
            .iter()
            .any(|a| a.starts_with("disclosure_withheld:agent-in rectify (awaiting_approval)")),
        "{trail:?}"
    );
    assert!(trail.contains(&"reviewed".to_owned()), "{trail:?}");
    drop(db);
}

fn sender(
    ledger: &Ledger,
    fake: &Arc<Fake>,
    max_attempts: u32,
) -> dsr_orchestrator::letters::Sender {
    let (changes, _) = broadcast::channel(64);
    sender_on(
        ledger,
        fake,
        max_attempts,
        changes,
        Duration::from_millis(20),
        "letters",
        Duration::ZERO,
    )
}

fn sender_on(
    ledger: &Ledger,
    fake: &Arc<Fake>,
    max_attempts: u32,
    changes: broadcast::Sender<Change>,
    poll: Duration,
    worker_id: &str,
    linger: Duration,
) -> dsr_orchestrator::letters::Sender {
    dsr_orchestrator::letters::Sender::new(
        ledger.clone(),
        fake.clone(),
        dsr_domain::letters::Letters::shipped(),
        Arc::new(dsr_domain::group::Group::shipped()),
        dsr_orchestrator::letters::SenderConfig {
            worker_id: worker_id.into(),
            lease: Duration::from_secs(5),
            poll,
            linger,
            backoff_base: Duration::from_secs(60),
            backoff_max: Duration::from_secs(600),
            max_attempts,
            call_timeout: Duration::from_secs(5),
            privacy_centre_url: "https://mina-uppgifter.bolaget.se".into(),
        },
        changes,
    )
}

/// A sender running until told to stop, woken by `changes` only (its poll
/// far longer than any test), after its first look (which finds nothing).
async fn run_on_changes(
    ledger: &Ledger,
    fake: &Arc<Fake>,
    changes: &broadcast::Sender<Change>,
    linger: Duration,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let letters = sender_on(
        ledger,
        fake,
        5,
        changes.clone(),
        Duration::from_secs(3600),
        "letters",
        linger,
    );
    let (stop_tx, stop) = watch::channel(false);
    let run = tokio::spawn(letters.run(stop));
    tokio::time::sleep(Duration::from_millis(100)).await;
    (stop_tx, run)
}

/// When each "received" letter of request `id` was recorded as sent.
async fn received_sent_at(ledger: &Ledger, id: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
    ledger
        .audit_of(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action.starts_with("letter_sent:received"))
        .map(|e| e.at)
        .collect()
}

/// Sends every letter due now; returns how many were handled.
async fn send_all(s: &dsr_orchestrator::letters::Sender) -> usize {
    let mut n = 0;
    loop {
        match s.send_due().await.unwrap() {
            0 => return n,
            sent => n += sent,
        }
    }
}

#[tokio::test]
async fn a_request_life_writes_each_letter_once_in_its_language_to_the_verified_address() {
    use dsr_orchestrator::letters::Status;
    let (db, ledger) = ledger().await;
    let fake = Arc::new(Fake::default());
    let (stop_tx, stop) = watch::channel(false);
    let w = start(&ledger, &fake, "w1", &stop);
    let letters = sender(&ledger, &fake, 5);
    let today = chrono::Utc::now().date_naive();
    // An access request in English, verified at submission: received, then
    // completed, each once however often the sender looks.
    let mut sub = submission("letters-0001");
    sub.language = "en".into();
    let (a, _) = ledger.submit(sub, today, "portal").await.unwrap();
    wait_for(&ledger, &a.id, State::Completed).await;
    assert_eq!(send_all(&letters).await, 2);
    assert_eq!(send_all(&letters).await, 0);
    let sent = fake.letters.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let (to, subject, body) = &sent[0];
    assert_eq!(to, "anna@example.se");
    assert!(subject.contains("We have received your request") && subject.contains(&a.id));
    assert!(body.contains(&a.deadline.due().to_string()), "{body}");
    assert!(body.contains("access to your data") && body.contains("Intrum Sverige AB"));
    let (_, subject, body) = &sent[1];
    assert!(subject.starts_with("We have answered"), "{subject}");
    assert!(
        body.contains("https://mina-uppgifter.bolaget.se/en/fetch"),
        "{body}"
    );
    let recorded = ledger.letters_of(&a.id).await.unwrap();
    let keys: Vec<(&str, Status, Option<&str>)> = recorded
        .iter()
        .map(|l| (l.key.as_str(), l.status, l.channel.as_deref()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("received", Status::Sent, Some("email (verified)")),
            ("completed", Status::Sent, Some("email (verified)")),
        ]
    );
    assert!(recorded.iter().all(|l| l.sent_at.is_some()));
    let trail: Vec<String> = ledger
        .audit_of(&a.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(trail.contains(&"letter_sent:received by email (verified)".to_owned()));

    // In Swedish: the extension with its months and reason, the refusal
    // with its reason, the handler's note and the way to IMY.
    fake.system_down.store(true, Ordering::SeqCst);
    let (b, _) = ledger
        .submit(submission("letters-0002"), today, "portal")
        .await
        .unwrap();
    ledger
        .extend(
            &b.id,
            2,
            "Uppgifter hos ombud i tre länder.",
            today,
            "case-handler-7",
        )
        .await
        .unwrap();
    // Refused while the person is still to be verified: the letter goes to
    // the address they gave (it tells nothing of their data).
    let mut sub = submission("letters-0003");
    sub.verified = None;
    let (c, _) = ledger.submit(sub, today, "portal").await.unwrap();
    wait_for(&ledger, &c.id, State::Verifying).await;
    ledger
        .reject(
            &c.id,
            dsr_orchestrator::ledger::Rejection::ManifestlyUnfoundedOrExcessive,
            "Femte likadana begäran denna månad.",
            "case-handler-7",
        )
        .await
        .unwrap();
    fake.letters.lock().unwrap().clear();
    assert_eq!(send_all(&letters).await, 3);
    let sent = fake.letters.lock().unwrap().clone();
    let subjects: Vec<&str> = sent.iter().map(|(_, s, _)| s.as_str()).collect();
    assert!(subjects[0].starts_with("Vi har tagit emot"), "{subjects:?}");
    assert!(
        subjects[1].starts_with("Vi behöver längre tid"),
        "{subjects:?}"
    );
    assert!(
        subjects[2].starts_with("Besked om din begäran"),
        "{subjects:?}"
    );
    let extended = &sent[1].2;
    assert!(extended.contains("med 2 månad(er)") && extended.contains("tre länder"));
    let extended_due = ledger.get(&b.id).await.unwrap().deadline.due();
    assert!(extended.contains(&extended_due.to_string()), "{extended}");
    let refused = &sent[2].2;
    assert!(refused.contains("uppenbart ogrundad eller orimlig (artikel 12.5)"));
    assert!(refused.contains("Femte likadana"));
    assert!(
        refused.contains("Integritetsskyddsmyndigheten") && refused.contains("https://www.imy.se")
    );
    assert!(refused.contains("domstol"));
    let l = &ledger.letters_of(&c.id).await.unwrap()[0];
    assert_eq!(l.channel.as_deref(), Some("email (claimed)"));
    stop_tx.send(true).unwrap();
    w.await.unwrap();
    db.finish().await;
}

#[tokio::test]
async fn letters_due_together_are_sent_in_batches_each_once_with_its_event() {
    use dsr_orchestrator::letters::Status;
    let (db, ledger) = ledger().await;
    let fake = Arc::new(Fake::default());
    let letters = sender(&ledger, &fake, 5);
    let today = chrono::Utc::now().date_naive();
    // Twenty requests verified at submission and not yet worked on: each
    // has its acknowledgement queued.
    let ids = submit_many(&ledger, "batch", 20, today).await;
    // Sixteen at a time, then the rest, then nothing.
    assert_eq!(letters.send_due().await.unwrap(), 16);
    assert_eq!(letters.send_due().await.unwrap(), 4);
    assert_eq!(letters.send_due().await.unwrap(), 0);
    let sent = fake.letters.lock().unwrap().clone();
    assert_eq!(sent.len(), 20);
    // In the order they were queued.
    for (id, (_, subject, _)) in ids.iter().zip(&sent) {
        assert!(subject.contains(id.as_str()), "{subject}");
    }
    for id in &ids {
        let recorded = ledger.letters_of(id).await.unwrap();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].status, Status::Sent);
        assert_eq!(recorded[0].attempts, 1);
        assert_eq!(received_sent_at(&ledger, id).await.len(), 1, "request {id}");
    }
    // Each request's submission and start, and its letter's event: the
    // chain links every one of them, those of one batch included.
    assert_eq!(ledger.verify_audit().await.unwrap(), 20 * 3);
    db.finish().await;
}

#[tokio::test]
async fn a_letter_whose_lease_ran_out_while_it_was_sent_is_recorded_by_the_sender_holding_it() {
    use dsr_orchestrator::letters::Status;
    let (db, ledger) = ledger().await;
    let clock = dsr_domain::clock::Clock::system();
    let ledger = ledger.with_clock(clock.clone());
    let fake = Arc::new(Fake::default());
    let (changes, _) = broadcast::channel(64);
    let first = sender_on(
        &ledger,
        &fake,
        5,
        changes.clone(),
        Duration::from_millis(20),
        "letters-1",
        Duration::ZERO,
    );
    let second = sender_on(
        &ledger,
        &fake,
        5,
        changes,
        Duration::from_millis(20),
        "letters-2",
        Duration::ZERO,
    );
    let (r, _) = ledger
        .submit(submission("letters-0031"), clock.today(), "portal")
        .await
        .unwrap();
    // The first sender's relay is slow: its 5 s lease runs out while it
    // sends, and the second sender claims the letter and sends it too.
    fake.hold_next_letter.store(true, Ordering::SeqCst);
    let slow = tokio::spawn(async move { first.send_due().await.unwrap() });
    fake.letter_entered.notified().await;
    clock.advance(chrono::TimeDelta::seconds(10));
    assert_eq!(second.send_due().await.unwrap(), 1);
    fake.letter_release.notify_one();
    slow.await.unwrap();
    // Sent twice (a relay that outlives its lease), recorded once: by the
    // sender holding it, with its one attempt and one event.
    assert_eq!(fake.letters.lock().unwrap().len(), 2);
    let l = &ledger.letters_of(&r.id).await.unwrap()[0];
    assert_eq!((l.status, l.attempts), (Status::Sent, 1));
    assert_eq!(received_sent_at(&ledger, &r.id).await.len(), 1);
    db.finish().await;
}

#[tokio::test]
async fn letters_queued_while_the_sender_lingers_go_in_one_batch() {
    let (db, ledger) = ledger().await;
    let fake = Arc::new(Fake::default());
    let (changes, _) = broadcast::channel(64);
    // Lingering a second after the first change.
    let (stop_tx, run) = run_on_changes(&ledger, &fake, &changes, Duration::from_secs(1)).await;
    // Five requests received one after another, each told at once.
    let mut ids = Vec::new();
    for i in 0..5 {
        let (r, _) = ledger
            .submit(
                submission(&format!("linger-{i:04}")),
                chrono::Utc::now().date_naive(),
                "portal",
            )
            .await
            .unwrap();
        changes.send(Change::written(&r)).unwrap();
        ids.push(r.id);
    }
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while fake.letters.lock().unwrap().len() < 5 {
        assert!(
            tokio::time::Instant::now() < until,
            "the letters were not sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One batch: the five recorded in one transaction, at one time.
    let mut at = std::collections::BTreeSet::new();
    for id in &ids {
        at.extend(received_sent_at(&ledger, id).await);
    }
    assert_eq!(at.len(), 1, "{at:?}");
    assert_eq!(fake.letters.lock().unwrap().len(), 5);
    stop_tx.send(true).unwrap();
    run.await.unwrap();
    db.finish().await;
}

#[tokio::test]
async fn the_sender_is_woken_by_a_change_that_queued_a_letter() {
    let (db, ledger) = ledger().await;
    let fake = Arc::new(Fake::default());
    let (changes, _) = broadcast::channel(64);
    let (stop_tx, run) = run_on_changes(&ledger, &fake, &changes, Duration::ZERO).await;
    // Then a request is received.
    let (r, _) = ledger
        .submit(
            submission("wake-0001"),
            chrono::Utc::now().date_naive(),
            "portal",
        )
        .await
        .unwrap();
    assert!(fake.letters.lock().unwrap().is_empty());
    changes.send(Change::written(&r)).unwrap();
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while ledger.letters_of(&r.id).await.unwrap()[0].status
        != dsr_orchestrator::letters::Status::Sent
    {
        assert!(
            tokio::time::Instant::now() < until,
            "the letter was not sent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(fake.letters.lock().unwrap().len(), 1);
    stop_tx.send(true).unwrap();
    run.await.unwrap();
    db.finish().await;
}

#[tokio::test]
async fn a_letter_the_relay_refuses_is_retried_then_shown_as_failed_and_one_with_no_address_as_undeliverable()
 {
    use dsr_orchestrator::letters::Status;
    let (db, ledger) = ledger().await;
    let clock = dsr_domain::clock::Clock::system();
    let ledger = ledger.with_clock(clock.clone());
    let fake = Arc::new(Fake::default());
    let letters = sender(&ledger, &fake, 3);
    let today = clock.today();
    fake.letters_failing.store(100, Ordering::SeqCst);
    let (a, _) = ledger
        .submit(submission("letters-0013"), today, "portal")
        .await
        .unwrap();
    assert_eq!(send_all(&letters).await, 1);
    // Waiting for its next attempt, the failure visible.
    let l = &ledger.letters_of(&a.id).await.unwrap()[0];
    assert_eq!((l.status, l.attempts), (Status::Pending, 1));
    assert_eq!(l.last_error.as_deref(), Some("DELIVERY_FAILED"));
    assert_eq!(send_all(&letters).await, 0, "not before its time");
    for _ in 0..2 {
        clock.advance(chrono::TimeDelta::minutes(30));
        assert_eq!(send_all(&letters).await, 1);
    }
    let l = &ledger.letters_of(&a.id).await.unwrap()[0];
    assert_eq!((l.status, l.attempts), (Status::Failed, 3));
    clock.advance(chrono::TimeDelta::days(1));
    assert_eq!(send_all(&letters).await, 0, "given up");
    let trail: Vec<String> = ledger
        .audit_of(&a.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(trail.contains(&"letter_failed:received: DELIVERY_FAILED".to_owned()));

    // A person known only by personnummer: nowhere to write.
    let pnr = Identity::parse(IdentityType::Personnummer, "19811218-9876").unwrap();
    let mut sub = submission("letters-0004");
    sub.identities = vec![pnr.clone()];
    sub.verified = Some(vec![pnr]);
    let (b, _) = ledger.submit(sub, today, "portal").await.unwrap();
    assert_eq!(send_all(&letters).await, 1);
    let l = &ledger.letters_of(&b.id).await.unwrap()[0];
    assert_eq!(l.status, Status::Undeliverable);
    assert!(fake.letters.lock().unwrap().is_empty());
    db.finish().await;
}

#[tokio::test]
async fn a_lift_told_by_the_mesh_is_applied_only_after_its_letter_is_sent() {
    let (db, ledger) = ledger().await;
    let fake = Arc::new(Fake::default());
    let (stop_tx, stop) = watch::channel(false);
    let w = start(&ledger, &fake, "w1", &stop);
    let letters = sender(&ledger, &fake, 5);
    let today = chrono::Utc::now().date_naive();
    let mut sub = submission("lift-00001");
    sub.kind = Kind::Restriction;
    sub.write = Some(dsr_domain::request::WriteOrder::Lift {
        person_informed_at: None,
    });
    let (r, _) = ledger.submit(sub, today, "case-handler-7").await.unwrap();
    // The apply step waits for the letter, visibly.
    for _ in 0..500 {
        if ledger.get(&r.id).await.unwrap().attempts > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waiting = ledger.get(&r.id).await.unwrap();
    assert_eq!(waiting.state, State::Executing);
    assert!(
        waiting
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("restriction-lifted letter")),
        "{waiting:?}"
    );
    assert!(fake.applied.lock().unwrap().is_empty());
    assert_eq!(send_all(&letters).await, 1);
    let (_, subject, body) = fake.letters.lock().unwrap()[0].clone();
    assert!(subject.starts_with("Begränsningen av dina uppgifter upphör"));
    assert!(body.contains(&today.to_string()) && body.contains("artikel 18.3"));
    wait_for(&ledger, &r.id, State::Completed).await;
    let sent_at = ledger.letters_of(&r.id).await.unwrap()[0].sent_at;
    assert_eq!(
        *fake.applied.lock().unwrap(),
        vec![dsr_domain::request::WriteOrder::Lift {
            person_informed_at: sent_at
        }]
    );
    // Neither a "received" nor a "completed" letter: the lift was not the
    // person's request.
    assert_eq!(ledger.letters_of(&r.id).await.unwrap().len(), 1);
    stop_tx.send(true).unwrap();
    w.await.unwrap();
    db.finish().await;
}
