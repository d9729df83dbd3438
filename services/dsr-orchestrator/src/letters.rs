//! The letters of a request's life (Art. 12, and Art. 18(3) before a
//! restriction is lifted), to the person in their language.
//!
//! A letter is queued in the transaction of the audit event that calls for
//! it ([`queue_for`], called by the ledger's append), so an event is never
//! recorded without its letter nor a letter without its event; each letter
//! of a request is queued once (`ux_orchestrator_letter_once`). The
//! [`Sender`] claims queued letters with a lease (several replicas share
//! them), writes them from the company's templates
//! (`dsr_domain::letters`), and sends them through the identity service's
//! notifier to the person's verified email address or phone (before
//! verification, the one they gave, where their code went: identity
//! needed, an extension or a refusal, none of which tells anything of the
//! person's data). A failure retries with backoff; when the
//! attempts are spent, or there is no address to write to, the letter is
//! marked so on the request and in the audit trail, where a case handler
//! sees it. The text is written when sent and not kept: the row holds the
//! letter's kind, the values it was written with that are not the person's
//! data, the channel and the time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use dsr_domain::group::Group;
use dsr_domain::identity::{Identity, IdentityType, Organisationsnummer};
use dsr_domain::letters::{LetterKind, Letters};
use dsr_domain::request::{Kind, WriteOrder};
use dsr_domain::text::Lang;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, FromQueryResult,
    QueryFilter, QueryOrder,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::entity::{letter, request as req};
use crate::ledger::{Error, Ledger, parse_identities};
use crate::mesh::{Call, Verification};

/// The audit event recorded when a request needs a stronger proof of
/// identity than a code (it waits in VERIFYING): the identity-needed letter.
pub const AWAITING_STRONGER_PROOF: &str = "awaiting_stronger_proof";

/// What a letter is written with, besides the request itself: nothing of
/// the person's data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// The day the request was received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<NaiveDate>,
    /// The due date then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<NaiveDate>,
    /// An extension's months in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub months: Option<u32>,
    /// A refusal's reason (its wire name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// The case handler's explanation: an extension's reason, a refusal's
    /// note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
    /// The day a restriction is lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lift_on: Option<NaiveDate>,
    /// For a letter not about a request: the controller it speaks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<String>,
    /// A breach notice's nature of the breach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nature: Option<String>,
    /// A breach notice's likely consequences.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consequences: Option<String>,
    /// A breach notice's measures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measures: Option<String>,
    /// A complaint's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// Where a letter is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Queued or being retried.
    Pending,
    /// Taken by the relay.
    Sent,
    /// Every attempt failed; a case handler writes instead.
    Failed,
    /// No email address or phone to write to.
    Undeliverable,
}

impl Status {
    /// Stable name, for storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
            Self::Undeliverable => "undeliverable",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "sent" => Self::Sent,
            "failed" => Self::Failed,
            "undeliverable" => Self::Undeliverable,
            _ => return None,
        })
    }
}

/// A letter as recorded on its request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LetterView {
    /// Which letter.
    pub kind: LetterKind,
    /// Its place in the request's life ("received", "extended:1", ...).
    pub key: String,
    /// Where it is.
    pub status: Status,
    /// "email" or "phone", and whether the address was verified.
    pub channel: Option<String>,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
    /// When the relay took it.
    pub sent_at: Option<DateTime<Utc>>,
    /// Attempts so far.
    pub attempts: u32,
    /// The last failure (a stable reason, no personal data).
    pub last_error: Option<String>,
}

/// The letter an audit event on request `m` calls for: its kind, its key
/// (once per request) and facts.
fn letter_for(action: &str, m: &req::Model) -> Option<(LetterKind, String, Facts)> {
    let order: Option<WriteOrder> = m
        .write_order
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok());
    // A lift is the controller's decision, not the person's request: they
    // are told of it (Art. 18(3)), not of a request received or answered.
    let lift = matches!(order, Some(WriteOrder::Lift { .. }));
    let (kind, key, facts) = match action {
        "state:locating" if lift => (
            LetterKind::RestrictionLifted,
            "restriction_lifted".to_owned(),
            Facts {
                lift_on: Some(m.updated_at.date_naive()),
                ..Facts::default()
            },
        ),
        "state:locating" => (
            LetterKind::Received,
            "received".to_owned(),
            Facts {
                received: Some(m.received_on),
                due: Some(m.due),
                ..Facts::default()
            },
        ),
        AWAITING_STRONGER_PROOF => (
            LetterKind::IdentityNeeded,
            "identity_needed".to_owned(),
            Facts::default(),
        ),
        a if a.starts_with("extended:") => (
            LetterKind::Extended,
            a.to_owned(),
            Facts {
                due: Some(m.due),
                months: u32::try_from(m.extended_months).ok(),
                explanation: m.extension_reason.clone(),
                ..Facts::default()
            },
        ),
        "state:completed" | "state:completed_with_retained" | "reviewed" if !lift => (
            LetterKind::Completed,
            "completed".to_owned(),
            Facts::default(),
        ),
        a if a.starts_with("rejected:") => (
            LetterKind::Refused,
            "refused".to_owned(),
            Facts {
                reason_code: m.rejection_reason.clone(),
                explanation: m.rejection_note.clone().filter(|n| !n.trim().is_empty()),
                ..Facts::default()
            },
        ),
        _ => return None,
    };
    Some((kind, key, facts))
}

/// Whether an audit action may call for a letter (read before the request
/// is, so that other events cost nothing).
fn may_call_for_letter(action: &str) -> bool {
    matches!(
        action,
        "state:locating"
            | AWAITING_STRONGER_PROOF
            | "state:completed"
            | "state:completed_with_retained"
            | "reviewed"
    ) || action.starts_with("extended:")
        || action.starts_with("rejected:")
}

/// Whether change `c` may have queued a letter (see [`letter_for`]): a
/// request of this process committed received, waiting for a stronger
/// proof, completed or refused, or with an extension. Another replica's
/// changes are its own sender's; a letter queued otherwise (a breach
/// notice, a complaint's answer, a retry) is found by the sender's poll.
fn may_have_queued(c: &crate::feed::Change) -> bool {
    use dsr_domain::request::State;
    match c {
        crate::feed::Change::Written(r) => {
            matches!(
                r.state,
                State::Locating
                    | State::Verifying
                    | State::Completed
                    | State::CompletedWithRetained
                    | State::Rejected
            ) || r.deadline.extension().is_some()
        }
        crate::feed::Change::Changed { .. } | crate::feed::Change::Everyone => false,
    }
}

/// Queues the letter that audit event `action` on `request_id` calls for,
/// in the caller's transaction; nothing when it calls for none or the
/// request already has that letter.
pub(crate) async fn queue_for<C: ConnectionTrait>(
    conn: &C,
    request_id: &str,
    action: &str,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    if !may_call_for_letter(action) {
        return Ok(());
    }
    let Some(m) = req::Entity::find_by_id(request_id.to_owned())
        .one(conn)
        .await?
    else {
        return Ok(());
    };
    queue_for_request(conn, &m, action, now).await
}

/// [`queue_for`] with the request's row as the transaction holds it now.
pub(crate) async fn queue_for_request<C: ConnectionTrait>(
    conn: &C,
    m: &req::Model,
    action: &str,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let Some((kind, key, facts)) = letter_for(action, m) else {
        return Ok(());
    };
    letter::Entity::insert(letter::ActiveModel {
        request_id: Set(m.id.clone()),
        key: Set(key),
        kind: Set(kind.as_str().to_owned()),
        facts: Set(serde_json::to_string(&facts).expect("serialisable facts")),
        status: Set(Status::Pending.as_str().to_owned()),
        attempts: Set(0),
        next_attempt_ms: Set(Some(now.timestamp_millis())),
        lease_owner: Set(None),
        lease_until_ms: Set(None),
        last_error: Set(None),
        channel: Set(None),
        queued_at: Set(now),
        sent_at: Set(None),
        to_identity: Set(None),
        language: Set(None),
        ..Default::default()
    })
    .on_conflict(
        OnConflict::columns([letter::Column::RequestId, letter::Column::Key])
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

fn view(m: letter::Model) -> Option<LetterView> {
    letter_view(
        &m.kind,
        m.key,
        &m.status,
        m.channel,
        m.queued_at,
        m.sent_at,
        m.attempts,
        m.last_error,
    )
}

/// A letter as shown, from its recorded columns; `None` for a kind or a
/// status this version does not know.
#[allow(clippy::too_many_arguments)]
pub(crate) fn letter_view(
    kind: &str,
    key: String,
    status: &str,
    channel: Option<String>,
    queued_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    attempts: i32,
    last_error: Option<String>,
) -> Option<LetterView> {
    Some(LetterView {
        kind: LetterKind::parse(kind)?,
        key,
        status: Status::parse(status)?,
        channel,
        queued_at,
        sent_at,
        attempts: u32::try_from(attempts).unwrap_or(0),
        last_error,
    })
}

impl Ledger {
    /// The letters of a request, in the order they were queued.
    pub async fn letters_of(&self, request_id: &str) -> Result<Vec<LetterView>, Error> {
        Ok(self
            .letters_of_many(&[request_id.to_owned()])
            .await?
            .remove(request_id)
            .unwrap_or_default())
    }

    /// The letters of several requests (a page of a list), by request, in
    /// one query per 500.
    pub async fn letters_of_many(
        &self,
        request_ids: &[String],
    ) -> Result<BTreeMap<String, Vec<LetterView>>, Error> {
        let mut out: BTreeMap<String, Vec<LetterView>> = BTreeMap::new();
        for chunk in request_ids.chunks(500) {
            let rows = letter::Entity::find()
                .filter(letter::Column::RequestId.is_in(chunk.iter().map(String::as_str)))
                .order_by_asc(letter::Column::Id)
                .all(self.reads())
                .await?;
            for m in rows {
                let id = m.request_id.clone();
                if let Some(v) = view(m) {
                    out.entry(id).or_default().push(v);
                }
            }
        }
        Ok(out)
    }

    /// When the restriction-lifted letter of request `id` was sent, if it
    /// was; `Err` when it can no longer be (failed, undeliverable).
    pub async fn lift_letter_sent(&self, id: &str) -> Result<Option<DateTime<Utc>>, LiftNotice> {
        let row = letter::Entity::find()
            .filter(letter::Column::RequestId.eq(id))
            .filter(letter::Column::Key.eq("restriction_lifted"))
            .one(self.db())
            .await
            .map_err(|_| LiftNotice::Unknown)?;
        match row.map(|m| (Status::parse(&m.status), m.sent_at)) {
            Some((Some(Status::Sent), at)) => Ok(at),
            Some((Some(Status::Failed | Status::Undeliverable), _)) => Err(LiftNotice::NotSent),
            Some((Some(Status::Pending) | None, _)) | None => Ok(None),
        }
    }

    /// Claims the queued letters due first, at most `limit`, for `lease`.
    async fn claim_letters(
        &self,
        worker: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<letter::Model>, DbErr> {
        let now = self.clock().now().timestamp_millis();
        let until = now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        let mut claimed =
            crate::queue::claim_due(self.db(), "orchestrator_letter", worker, until, now, limit)
                .await?
                .iter()
                .map(|r| letter::Model::from_query_result(r, ""))
                .collect::<Result<Vec<_>, _>>()?;
        // Sent in the order they fell due, then were queued.
        claimed.sort_by_key(|m| (m.next_attempt_ms, m.id));
        Ok(claimed)
    }

    /// Records the outcome of one attempt at each letter held by `worker`,
    /// with the audit event of each that is final, in one transaction.
    ///
    /// A letter's count of attempts is the one it was claimed with: while
    /// the lease holds nobody else changes it, so each update is fenced on
    /// the lease and the row is not read again. A letter whose lease was
    /// lost (another sender has it) is left as that sender records it.
    /// The letters sent by one channel are recorded in one statement (the
    /// usual outcome, and the same columns for each); any other outcome in
    /// one statement a letter.
    async fn settle_letters(
        &self,
        worker: &str,
        settled: Vec<(&letter::Model, Attempt)>,
    ) -> Result<(), DbErr> {
        let txn = self.write_txn().await?;
        let now = self.clock().now();
        let mut sent: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for (m, outcome) in &settled {
            if let Attempt::Sent { channel } = outcome {
                sent.entry(channel.as_str()).or_default().push(m.id);
            }
        }
        let mut recorded: std::collections::BTreeSet<i64> = std::collections::BTreeSet::new();
        for (channel, ids) in sent {
            // Sent: no address of its own is needed any more.
            let updated = letter::Entity::update_many()
                .col_expr(letter::Column::Status, Status::Sent.as_str().into())
                .col_expr(
                    letter::Column::Attempts,
                    Expr::col(letter::Column::Attempts).add(1),
                )
                .col_expr(letter::Column::SentAt, Some(now).into())
                .col_expr(letter::Column::NextAttemptMs, Option::<i64>::None.into())
                .col_expr(letter::Column::LastError, Option::<String>::None.into())
                .col_expr(letter::Column::Channel, Some(channel.to_owned()).into())
                .col_expr(letter::Column::ToIdentity, Option::<String>::None.into())
                .col_expr(letter::Column::LeaseOwner, Option::<String>::None.into())
                .col_expr(letter::Column::LeaseUntilMs, Option::<i64>::None.into())
                .filter(letter::Column::Id.is_in(ids))
                .filter(letter::Column::LeaseOwner.eq(worker))
                .exec_with_returning(&txn)
                .await?;
            recorded.extend(updated.iter().map(|u| u.id));
        }
        let mut events: Vec<(&str, String)> = Vec::new();
        for (m, outcome) in settled {
            let attempts = m.attempts.saturating_add(1);
            let key = &m.key;
            let mut am = letter::ActiveModel {
                lease_owner: Set(None),
                lease_until_ms: Set(None),
                ..Default::default()
            };
            let event = match outcome {
                Attempt::Sent { channel } => {
                    // Recorded above with the channel's other letters,
                    // unless its lease was lost.
                    if recorded.contains(&m.id) {
                        events.push((
                            m.request_id.as_str(),
                            format!("letter_sent:{key} by {channel}"),
                        ));
                    }
                    continue;
                }
                Attempt::Retry { error, at } => {
                    am.attempts = Set(attempts);
                    am.last_error = Set(Some(error));
                    am.next_attempt_ms = Set(Some(at.timestamp_millis()));
                    None
                }
                Attempt::Failed { error } => {
                    am.attempts = Set(attempts);
                    am.status = Set(Status::Failed.as_str().to_owned());
                    am.next_attempt_ms = Set(None);
                    let e = format!("letter_failed:{key}: {error}");
                    am.last_error = Set(Some(error));
                    Some(e)
                }
                Attempt::Undeliverable => {
                    am.status = Set(Status::Undeliverable.as_str().to_owned());
                    am.next_attempt_ms = Set(None);
                    am.last_error = Set(Some("NO_CONTACT_IDENTITY".into()));
                    Some(format!(
                        "letter_undeliverable:{key}: no email address or phone"
                    ))
                }
            };
            if event.is_some() {
                // Given up: an address of its own is no longer needed.
                am.to_identity = Set(None);
            }
            let updated = letter::Entity::update_many()
                .set(am)
                .filter(letter::Column::Id.eq(m.id))
                .filter(letter::Column::LeaseOwner.eq(worker))
                .exec(&txn)
                .await?;
            if updated.rows_affected == 0 {
                // The lease was lost: another sender has it.
                continue;
            }
            if let Some(e) = event {
                events.push((m.request_id.as_str(), e));
            }
        }
        let events: Vec<(&str, &str, &str)> = events
            .iter()
            .map(|(request_id, e)| (SENDER, *request_id, e.as_str()))
            .collect();
        self.append_many(&txn, &events).await?;
        txn.commit().await
    }
}

/// Who records a letter's fate in the audit trail.
const SENDER: &str = "service:orchestrator/letters";

/// Most letters one sender claims and sends at once.
const BATCH: u32 = 16;

/// Why a lift cannot be told by letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LiftNotice {
    /// The letter failed or had nowhere to go: a person tells them.
    NotSent,
    /// The ledger could not be read.
    Unknown,
}

enum Attempt {
    Sent { channel: String },
    Retry { error: String, at: DateTime<Utc> },
    Failed { error: String },
    Undeliverable,
}

/// How the sender runs.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// This sender's id in leases.
    pub worker_id: String,
    /// How long a claim holds.
    pub lease: Duration,
    /// How often an idle sender looks for letters.
    pub poll: Duration,
    /// How long the sender waits, once a change has queued a letter, for
    /// the letters of the next moment to go in the same batch (one claim
    /// and one record for all of them); zero sends at once.
    pub linger: Duration,
    /// First retry delay (doubling, with jitter).
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Attempts before a letter is marked failed.
    pub max_attempts: u32,
    /// Deadline of one send.
    pub call_timeout: Duration,
    /// The privacy centre's address, where the person fetches an answer
    /// (e.g. `https://privacy.example.se`).
    pub privacy_centre_url: String,
}

/// Sends the queued letters.
#[derive(Clone)]
pub struct Sender {
    ledger: Ledger,
    notifier: Arc<dyn Verification>,
    letters: Arc<Letters>,
    group: Arc<Group>,
    cfg: Arc<SenderConfig>,
    changes: broadcast::Sender<crate::feed::Change>,
    sent: Counter<u64>,
    failed: Counter<u64>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sender(..)")
    }
}

impl Sender {
    /// A sender over `ledger`, writing `letters` for `group`'s controllers
    /// and sending them through `notifier`. `changes` carries the ids of
    /// requests that changed (and may have queued a letter).
    pub fn new(
        ledger: Ledger,
        notifier: Arc<dyn Verification>,
        letters: Letters,
        group: Arc<Group>,
        cfg: SenderConfig,
        changes: broadcast::Sender<crate::feed::Change>,
    ) -> Self {
        let meter = opentelemetry::global::meter("dsr-orchestrator");
        let sent = meter
            .u64_counter("dsr.letters.sent")
            .with_description("letters to people taken by the relay, by letter")
            .build();
        let failed = meter
            .u64_counter("dsr.letters.failed")
            .with_description(
                "letters to people given up (attempts spent, or no address), by letter",
            )
            .build();
        // From zero for every letter, so that the first one given up is an
        // increase Prometheus sees.
        for kind in dsr_domain::letters::LetterKind::ALL {
            sent.add(0, &[KeyValue::new("letter", kind.as_str())]);
            failed.add(0, &[KeyValue::new("letter", kind.as_str())]);
        }
        Self {
            ledger,
            notifier,
            letters: Arc::new(letters),
            group,
            cfg: Arc::new(cfg),
            changes,
            sent,
            failed,
        }
    }

    /// Sends until `shutdown` turns true: the letters due, then again at
    /// each change of this process that may have queued one, `linger`
    /// after it (or, for anything else, every `poll`).
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut changed = self.changes.subscribe();
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.send_due().await {
                // A full batch: more may be due at once.
                Ok(n) if n >= BATCH as usize => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "letters: cannot read the queue"),
            }
            let queued = async {
                loop {
                    match changed.recv().await {
                        Ok(c) if may_have_queued(&c) => return,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await;
                        }
                    }
                }
            };
            let woken = tokio::select! {
                () = tokio::time::sleep(self.cfg.poll) => false,
                () = queued => true,
                _ = shutdown.changed() => false,
            };
            if woken && !self.cfg.linger.is_zero() {
                // The letters queued in the next moment go with this one.
                tokio::select! {
                    () = tokio::time::sleep(self.cfg.linger) => {}
                    _ = shutdown.changed() => {}
                }
            }
            // One look at the queue answers every change seen so far.
            while !matches!(
                changed.try_recv(),
                Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed)
            ) {}
        }
    }

    /// Claims the letters due first, up to [`BATCH`], reads the requests
    /// they answer at once, sends them all at once and records what
    /// became of each in one transaction; returns how many were handled.
    pub async fn send_due(&self) -> Result<usize, DbErr> {
        let worker = format!("{}/{}", self.cfg.worker_id, uuid::Uuid::new_v4().simple());
        let claimed = self
            .ledger
            .claim_letters(&worker, self.cfg.lease, BATCH)
            .await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let ids: std::collections::BTreeSet<&str> =
            claimed.iter().map(|m| m.request_id.as_str()).collect();
        let requests: Result<BTreeMap<String, req::Model>, DbErr> = req::Entity::find()
            .filter(req::Column::Id.is_in(ids))
            .all(self.ledger.db())
            .await
            .map(|rows| rows.into_iter().map(|r| (r.id.clone(), r)).collect());
        let requests = requests.as_ref().ok();
        let outcomes = futures_util::future::join_all(
            claimed
                .iter()
                .map(|m| self.attempt(m, requests.map(|rs| rs.get(&m.request_id)))),
        )
        .await;
        for (m, outcome) in claimed.iter().zip(&outcomes) {
            let kind = KeyValue::new("letter", m.kind.clone());
            match outcome {
                Attempt::Sent { .. } => self.sent.add(1, &[kind]),
                Attempt::Failed { error } => {
                    self.failed.add(1, &[kind]);
                    tracing::warn!(request = %m.request_id, letter = %m.key, error = %error, "letter not sent; attempts spent");
                }
                Attempt::Undeliverable => self.failed.add(1, &[kind]),
                Attempt::Retry { .. } => {}
            }
        }
        let n = claimed.len();
        self.ledger
            .settle_letters(&worker, claimed.iter().zip(outcomes).collect())
            .await?;
        Ok(n)
    }

    /// One attempt at letter `m`; `request` is the request it answers as
    /// read with its batch (`None`: the read failed; `Some(None)`: no such
    /// request).
    async fn attempt(&self, m: &letter::Model, request: Option<Option<&req::Model>>) -> Attempt {
        let fail = |error: &str| Attempt::Failed {
            error: error.to_owned(),
        };
        let Some(kind) = LetterKind::parse(&m.kind) else {
            return fail("UNKNOWN_LETTER");
        };
        let facts: Facts = serde_json::from_str(&m.facts).unwrap_or_default();
        let target = match kind {
            LetterKind::BreachNotice | LetterKind::ComplaintAnswer => {
                self.direct(m, kind, &facts, m.to_identity.as_deref())
            }
            LetterKind::Received
            | LetterKind::IdentityNeeded
            | LetterKind::Extended
            | LetterKind::Completed
            | LetterKind::Refused
            | LetterKind::RestrictionLifted => self.to_requester(m, kind, &facts, request),
        };
        let Target {
            to,
            how,
            call,
            written,
        } = match target {
            Ok(t) => t,
            Err(a) => return a,
        };
        match self
            .notifier
            .send_letter(&call, &to, &written.subject, &written.body)
            .await
        {
            Ok(()) => Attempt::Sent {
                channel: format!(
                    "{} ({how})",
                    if to.kind() == IdentityType::Email {
                        "email"
                    } else {
                        "phone"
                    }
                ),
            },
            Err(e) if e.retryable => self.retry(m, &e.reason),
            Err(e) => fail(&e.reason),
        }
    }

    /// A letter about a request, to its person.
    fn to_requester(
        &self,
        m: &letter::Model,
        kind: LetterKind,
        facts: &Facts,
        request: Option<Option<&req::Model>>,
    ) -> Result<Target, Attempt> {
        let fail = |error: &str| Attempt::Failed {
            error: error.to_owned(),
        };
        let r = match request {
            Some(Some(r)) => r,
            Some(None) => return Err(fail("REQUEST_NOT_FOUND")),
            None => return Err(self.retry(m, "STORAGE")),
        };
        let verified = r
            .verified_identities
            .as_deref()
            .and_then(|v| parse_identities(v).ok());
        // Before verification (a stronger proof needed, an extension, a
        // refusal: Art. 12(3)-(4) say the person is told all the same),
        // the address they gave, where their code went; no such letter
        // tells anything of their data.
        let (ids, how) = match verified {
            Some(v) if !v.is_empty() => (v, "verified"),
            _ => (
                parse_identities(&r.identities).unwrap_or_default(),
                "claimed",
            ),
        };
        let Some(to) = contact(&ids).cloned() else {
            return Err(Attempt::Undeliverable);
        };
        let Some(written) = self.write(kind, r, facts) else {
            return Err(fail("UNKNOWN_REQUEST_KIND"));
        };
        let Ok(controller) = Organisationsnummer::parse(&r.controller) else {
            return Err(fail("INVALID_CONTROLLER"));
        };
        Ok(Target {
            to,
            how,
            call: Call {
                request_id: r.id.clone(),
                controller,
                due_date: r.due,
                submitted_by: r.submitted_by.clone(),
                timeout: self.cfg.call_timeout,
            },
            written,
        })
    }

    /// A letter to an address of its own: a breach notice (the address the
    /// system holds), a complaint's answer (the address the person gave).
    fn direct(
        &self,
        m: &letter::Model,
        kind: LetterKind,
        facts: &Facts,
        to: Option<&str>,
    ) -> Result<Target, Attempt> {
        let to = to
            .and_then(|t| serde_json::from_str::<[String; 2]>(t).ok())
            .and_then(|[t, v]| Identity::parse(IdentityType::parse(&t)?, &v).ok())
            .filter(|i| matches!(i.kind(), IdentityType::Email | IdentityType::Phone))
            .ok_or(Attempt::Undeliverable)?;
        let lang = m
            .language
            .as_deref()
            .and_then(Lang::parse)
            .unwrap_or(Lang::Sv);
        let controller = facts
            .controller
            .as_deref()
            .and_then(|c| Organisationsnummer::parse(c).ok())
            .or_else(|| {
                self.group
                    .controllers
                    .first()
                    .map(|c| c.organisation_number.clone())
            })
            .ok_or_else(|| Attempt::Failed {
                error: "INVALID_CONTROLLER".into(),
            })?;
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut values = self.common_values(&m.request_id, &controller, lang);
        values.insert("nature", text(&facts.nature));
        values.insert("consequences", text(&facts.consequences));
        values.insert("measures", text(&facts.measures));
        values.insert("answer", text(&facts.answer));
        Ok(Target {
            to,
            how: if kind == LetterKind::BreachNotice {
                "recorded"
            } else {
                "given"
            },
            call: Call {
                request_id: m.request_id.clone(),
                controller,
                due_date: self.ledger.clock().today(),
                submitted_by: None,
                timeout: self.cfg.call_timeout,
            },
            written: self.letters.write(kind, lang, &values),
        })
    }

    fn retry(&self, m: &letter::Model, error: &str) -> Attempt {
        let attempt = u32::try_from(m.attempts).unwrap_or(0).saturating_add(1);
        if attempt >= self.cfg.max_attempts {
            return Attempt::Failed {
                error: error.to_owned(),
            };
        }
        let wait = crate::worker::backoff(attempt, self.cfg.backoff_base, self.cfg.backoff_max);
        Attempt::Retry {
            error: error.to_owned(),
            at: self.ledger.clock().now()
                + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::seconds(60)),
        }
    }

    /// The values every letter may use: its reference, the company, the
    /// DPO and the supervisory authority.
    fn common_values(
        &self,
        reference: &str,
        controller: &Organisationsnummer,
        lang: Lang,
    ) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("reference", reference.to_owned()),
            (
                "company",
                self.group
                    .controllers
                    .iter()
                    .find(|c| &c.organisation_number == controller)
                    .map(|c| c.name.clone())
                    .unwrap_or_else(|| controller.as_str().to_owned()),
            ),
            ("dpo", self.group.dpo_email.clone()),
            (
                "authority",
                if lang == Lang::Sv {
                    self.group.authority.name_sv.clone()
                } else {
                    self.group.authority.name_en.clone()
                },
            ),
            ("authority_url", self.group.authority.url.clone()),
        ])
    }

    /// The letter written out for request `r`, in its language.
    fn write(
        &self,
        kind: LetterKind,
        r: &req::Model,
        facts: &Facts,
    ) -> Option<dsr_domain::letters::Written> {
        let lang = Lang::parse(&r.language).unwrap_or(Lang::Sv);
        let request_kind = Kind::parse(&r.kind)?;
        let controller = Organisationsnummer::parse(&r.controller).ok()?;
        let reason = match kind {
            LetterKind::Refused => {
                let code = facts.reason_code.as_deref().unwrap_or("other");
                let mut s = self.letters.reason(code, lang).to_owned();
                if let Some(note) = &facts.explanation {
                    s.push_str("\n\n");
                    s.push_str(note);
                }
                s
            }
            LetterKind::Received
            | LetterKind::IdentityNeeded
            | LetterKind::Extended
            | LetterKind::Completed
            | LetterKind::RestrictionLifted
            | LetterKind::BreachNotice
            | LetterKind::ComplaintAnswer => facts.explanation.clone().unwrap_or_default(),
        };
        let date = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
        let base = self.cfg.privacy_centre_url.trim_end_matches('/');
        let mut values = self.common_values(&r.id, &controller, lang);
        values.extend([
            ("kind", self.letters.kind(request_kind, lang).to_owned()),
            ("received", date(facts.received.or(Some(r.received_on)))),
            ("due", date(facts.due.or(Some(r.due)))),
            (
                "months",
                facts.months.map(|m| m.to_string()).unwrap_or_default(),
            ),
            ("reason", reason),
            ("fetch", format!("{base}/{}/fetch", lang.code())),
            ("lift_on", date(facts.lift_on)),
        ]);
        Some(self.letters.write(kind, lang, &values))
    }
}

/// Where a letter goes and what it says.
struct Target {
    to: Identity,
    how: &'static str,
    call: Call,
    written: dsr_domain::letters::Written,
}

/// The address a letter goes to: the first email address, else the first
/// phone.
fn contact(ids: &[Identity]) -> Option<&Identity> {
    ids.iter()
        .find(|i| i.kind() == IdentityType::Email)
        .or_else(|| ids.iter().find(|i| i.kind() == IdentityType::Phone))
}
