//! The durable ledger: requests, their moves, and the hash-chained audit
//! trail, in one transaction per change.

use chrono::{DateTime, NaiveDate, Utc};
use dsr_domain::clock::Clock;
use dsr_domain::deadline::{Deadline, DeadlineError, HolidayCalendar};
use dsr_domain::identity::{Identity, IdentityType, Organisationsnummer};
use dsr_domain::request::{self, AuditEvent, ChainError, IllegalMove, Kind, State, WriteOrder};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction,
    DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, SqliteTransactionMode,
    Statement, TransactionOptions, TransactionTrait, TryInsertResult,
};
use sha2::{Digest, Sha256};

use crate::entity::{audit, request as req};
use crate::mesh::SubjectMap;

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such request.
    #[error("request not found")]
    NotFound,
    /// The idempotency key was used with another payload.
    #[error("idempotency key reused with another payload")]
    KeyReused,
    /// The state machine refuses the move.
    #[error(transparent)]
    IllegalMove(#[from] IllegalMove),
    /// The deadline rules refuse the extension.
    #[error(transparent)]
    Deadline(#[from] DeadlineError),
    /// The verification token already verified another request.
    #[error("the verification token was already used")]
    VerificationUsed,
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[from] DbErr),
}

/// A validated submission.
#[derive(Clone, Debug)]
pub struct Submission {
    /// What.
    pub kind: Kind,
    /// To whom.
    pub controller: Organisationsnummer,
    /// The person's claimed identities.
    pub identities: Vec<Identity>,
    /// sv or en.
    pub language: String,
    /// The portal's key.
    pub idempotency_key: String,
    /// The identities a verification token vouched for, when the portal
    /// verified the person before submitting; `None` means the orchestrator
    /// verifies.
    pub verified: Option<Vec<Identity>>,
    /// For a rectification, restriction or objection: what to write.
    pub write: Option<WriteOrder>,
    /// The verification token's id (`jti`), when one came with the
    /// submission: a token verifies one request, once.
    pub verification_jti: Option<String>,
    /// Who submits it (the caller's issuer and subject): a portal reads
    /// only its own requests.
    pub submitted_by: Option<String>,
}

/// Why a request was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Art. 12(6).
    IdentityInsufficient,
    /// Art. 12(5).
    ManifestlyUnfoundedOrExcessive,
    /// No data.
    NoData,
    /// Other.
    Other,
}

impl Rejection {
    /// From its stored name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::IdentityInsufficient,
            Self::ManifestlyUnfoundedOrExcessive,
            Self::NoData,
            Self::Other,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    /// Its name in the ledger and the letters.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IdentityInsufficient => "identity_insufficient",
            Self::ManifestlyUnfoundedOrExcessive => "manifestly_unfounded_or_excessive",
            Self::NoData => "no_data",
            Self::Other => "other",
        }
    }
}

/// A request as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Id.
    pub id: String,
    /// Kind.
    pub kind: Kind,
    /// State.
    pub state: State,
    /// Controller.
    pub controller: Organisationsnummer,
    /// Language.
    pub language: String,
    /// The claimed identities.
    pub identities: Vec<Identity>,
    /// The deadline.
    pub deadline: Deadline,
    /// For a rejection: reason and note.
    pub rejection: Option<(Rejection, String)>,
    /// The verified identities, once verified.
    pub verified: Option<Vec<Identity>>,
    /// While verifying: the challenge.
    pub challenge_id: Option<String>,
    /// Once located.
    pub subject_map: Option<SubjectMap>,
    /// Once exported.
    pub package_id: Option<String>,
    /// Once exported: records in the package.
    pub record_count: Option<u64>,
    /// Once exported or erased: the systems the records came from, or
    /// that erased.
    pub system_ids: Vec<String>,
    /// Once erased: records retained on a legal ground (deferred erasures
    /// still to run).
    pub retained_count: Option<u64>,
    /// For a rectification, restriction or objection: what to write.
    pub write_order: Option<WriteOrder>,
    /// For a cancellation.
    pub cancel_reason: Option<String>,
    /// Failed attempts of the step in progress.
    pub attempts: u32,
    /// The last failure of the step in progress.
    pub last_error: Option<String>,
    /// The W3C `traceparent` of the submitting call, when it was traced:
    /// the steps join that trace.
    pub trace_parent: Option<String>,
    /// Where the erasure's receipts differ from its plan, every execution
    /// so far (a case handler reviews them).
    pub discrepancies: Vec<crate::mesh::Discrepancy>,
    /// Disclosures withheld for want of a lawful transfer.
    pub withheld: Vec<crate::mesh::Withheld>,
    /// Who submitted it (issuer and subject), when recorded.
    pub submitted_by: Option<String>,
    /// When a worker may next take it up (`None`: waiting for a person,
    /// or final).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Submitted.
    pub submitted_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A JSON list column: empty when unset, `corrupt(what)` when it does not
/// parse.
pub(crate) fn json_list<T: serde::de::DeserializeOwned>(
    text: Option<&str>,
    what: &str,
) -> Result<Vec<T>, Error> {
    Ok(text
        .map(serde_json::from_str)
        .transpose()
        .map_err(|_| corrupt(what))?
        .unwrap_or_default())
}

pub(crate) fn corrupt(what: &str) -> Error {
    Error::Storage(DbErr::Custom(format!(
        "stored request has an invalid {what}"
    )))
}

pub(crate) fn identity_json(ids: &[Identity]) -> String {
    let v: Vec<[&str; 2]> = ids.iter().map(|i| [i.kind().as_str(), i.value()]).collect();
    serde_json::to_string(&v).expect("strings serialise")
}

/// An identity from its stored (type, value) pair.
pub(crate) fn identity_from_parts(kind: &str, value: &str) -> Option<Identity> {
    Identity::parse(IdentityType::parse(kind)?, value).ok()
}

pub(crate) fn parse_identities(text: &str) -> Result<Vec<Identity>, Error> {
    let v: Vec<[String; 2]> = serde_json::from_str(text).map_err(|_| corrupt("identity list"))?;
    v.iter()
        .map(|[t, val]| identity_from_parts(t, val).ok_or_else(|| corrupt("identity")))
        .collect()
}

/// Records the use of verification token `jti` for request `id`; `false`
/// when it was used for another request (the same request may present it
/// again).
async fn use_verification<C: sea_orm::ConnectionTrait>(
    db: &C,
    jti: &str,
    id: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    use crate::entity::verification_use;
    // The first use is recorded in one statement; a token seen before is
    // read to tell its own request (presenting it again) from another.
    let first = verification_use::Entity::insert(verification_use::ActiveModel {
        jti: Set(jti.to_owned()),
        request_id: Set(id.to_owned()),
        used_at: Set(now),
    })
    .on_conflict_do_nothing_on([verification_use::Column::Jti])
    .exec_without_returning(db)
    .await?;
    if matches!(first, TryInsertResult::Inserted(1)) {
        return Ok(true);
    }
    Ok(verification_use::Entity::find_by_id(jti.to_owned())
        .one(db)
        .await?
        .is_some_and(|seen| seen.request_id == id))
}

/// The digest that decides whether a repeated key carries the same payload.
fn payload_digest(s: &Submission) -> String {
    let mut ids: Vec<String> = s
        .identities
        .iter()
        .map(|i| format!("{}={}", i.kind(), i.value()))
        .chain(
            s.verified
                .iter()
                .flatten()
                .map(|i| format!("verified:{}={}", i.kind(), i.value())),
        )
        .collect();
    ids.sort();
    let ids = ids.join("\n");
    // A write order is part of the payload; requests without one keep the
    // digest they had before write orders existed.
    let order = s
        .write
        .as_ref()
        .map(|w| serde_json::to_string(w).expect("serialisable order"));
    let mut h = Sha256::new();
    for part in [
        s.kind.as_str(),
        s.controller.as_str(),
        s.language.as_str(),
        &ids,
    ]
    .into_iter()
    .chain(order.as_deref())
    {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The ledger.
#[derive(Clone, Debug)]
pub struct Ledger {
    db: DatabaseConnection,
    /// Where leases are renewed: `db`, or a small pool of its own.
    leases: DatabaseConnection,
    /// Where reads outside a transaction go: `db`, or on SQLite a pool of
    /// readers beside its one writer.
    reads: DatabaseConnection,
    calendar: HolidayCalendar,
    clock: Clock,
}

impl Ledger {
    /// A ledger over `db` (migrated), computing deadlines with `calendar`.
    pub fn new(db: DatabaseConnection, calendar: HolidayCalendar) -> Self {
        Self {
            leases: db.clone(),
            reads: db.clone(),
            db,
            calendar,
            clock: Clock::system(),
        }
    }

    /// The same ledger on `clock` (receipt times, deadlines, the queue's
    /// dates and the audit trail's times).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Renews leases over `leases` (a small pool of the same database), so
    /// that a running step's lease does not lapse while the workers'
    /// transactions queue for connections of the main pool (they serialise
    /// on the audit trail's lock).
    pub fn with_lease_pool(mut self, leases: DatabaseConnection) -> Self {
        self.leases = leases;
        self
    }

    /// Reads requests, their steps and letters for views over `reads` (on
    /// SQLite a pool that only reads, [`dsr_store::connect_reader`]), so
    /// that a `Get` or a `Watch` does not queue for the writer's one
    /// connection behind the workers' transactions. Reads inside a
    /// transaction stay on the writer; a read outside one sees, on either
    /// pool, what was committed before it began.
    pub fn with_read_pool(mut self, reads: DatabaseConnection) -> Self {
        self.reads = reads;
        self
    }

    /// The connection views read over.
    pub(crate) fn reads(&self) -> &DatabaseConnection {
        &self.reads
    }

    /// The connection leases are renewed over.
    pub(crate) fn leases(&self) -> &DatabaseConnection {
        &self.leases
    }

    /// The database.
    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// A transaction that writes: on SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so two writers wait for each other instead of
    /// failing when a reader turns writer.
    pub(crate) async fn write_txn(&self) -> Result<DatabaseTransaction, DbErr> {
        self.db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
    }

    /// A request from its row.
    pub(crate) fn request_from_row(&self, m: req::Model) -> Result<Request, Error> {
        self.request_of(m)
    }

    pub(crate) fn request_of(&self, m: req::Model) -> Result<Request, Error> {
        let mut deadline = Deadline::for_request(m.received_on, &self.calendar)?;
        if m.extended_months > 0 {
            deadline = deadline.extend(
                u32::try_from(m.extended_months).map_err(|_| corrupt("extension"))?,
                m.extension_reason.as_deref().unwrap_or_default(),
                m.extension_decided_on.unwrap_or(m.received_on),
                &self.calendar,
            )?;
        }
        Ok(Request {
            verified: m
                .verified_identities
                .as_deref()
                .map(parse_identities)
                .transpose()?,
            challenge_id: m.challenge_id,
            subject_map: m
                .subject_map
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|_| corrupt("subject map"))?,
            package_id: m.package_id,
            record_count: m.record_count.map(|n| u64::try_from(n).unwrap_or(0)),
            system_ids: json_list(m.system_ids.as_deref(), "system list")?,
            retained_count: m.retained_count.map(|n| u64::try_from(n).unwrap_or(0)),
            write_order: m
                .write_order
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|_| corrupt("write order"))?,
            cancel_reason: m.cancel_reason,
            attempts: u32::try_from(m.attempts).unwrap_or(0),
            last_error: m.last_error,
            trace_parent: m.trace_parent,
            discrepancies: json_list(m.discrepancies.as_deref(), "discrepancies")?,
            submitted_by: m.submitted_by.clone(),
            withheld: json_list(m.withheld.as_deref(), "withheld")?,
            next_attempt_at: m.next_attempt_ms.and_then(DateTime::from_timestamp_millis),
            submitted_at: m.submitted_at,
            updated_at: m.updated_at,
            kind: Kind::parse(&m.kind).ok_or_else(|| corrupt("kind"))?,
            state: State::parse(&m.state).ok_or_else(|| corrupt("state"))?,
            controller: Organisationsnummer::parse(&m.controller)
                .map_err(|_| corrupt("controller"))?,
            identities: parse_identities(&m.identities)?,
            rejection: match m.rejection_reason.as_deref() {
                None => None,
                Some(r) => Some((
                    Rejection::parse(r).ok_or_else(|| corrupt("rejection_reason"))?,
                    m.rejection_note.unwrap_or_default(),
                )),
            },
            id: m.id,
            language: m.language,
            deadline,
        })
    }

    pub(crate) async fn append<C: ConnectionTrait>(
        &self,
        conn: &C,
        actor: &str,
        request_id: &str,
        action: &str,
    ) -> Result<(), DbErr> {
        self.append_many(conn, &[(actor, request_id, action)]).await
    }

    /// [`Self::append`] for several events, of any requests, in this
    /// order: their letters, then the events in one statement under one
    /// lock of the chain's head.
    pub(crate) async fn append_many<C: ConnectionTrait>(
        &self,
        conn: &C,
        events: &[(&str, &str, &str)],
    ) -> Result<(), DbErr> {
        // The letter each event calls for, in the same transaction; before
        // the events, which take the chain's lock until the commit.
        for (_, request_id, action) in events {
            crate::letters::queue_for(conn, request_id, action, self.clock.now()).await?;
        }
        self.append_events(conn, events).await
    }

    /// [`Self::append`] for a request whose row the transaction has just
    /// written (`m`): its letter is written from it, not read again.
    pub(crate) async fn append_for<C: ConnectionTrait>(
        &self,
        conn: &C,
        actor: &str,
        m: &req::Model,
        action: &str,
    ) -> Result<(), DbErr> {
        self.append_all_for(conn, actor, m, &[action]).await
    }

    /// [`Self::append_for`] for several events of request `m`, in this
    /// order, under one lock of the chain's head.
    pub(crate) async fn append_all_for<C: ConnectionTrait, A: AsRef<str>>(
        &self,
        conn: &C,
        actor: &str,
        m: &req::Model,
        actions: &[A],
    ) -> Result<(), DbErr> {
        for action in actions {
            crate::letters::queue_for_request(conn, m, action.as_ref(), self.clock.now()).await?;
        }
        let events: Vec<(&str, &str, &str)> = actions
            .iter()
            .map(|a| (actor, m.id.as_str(), a.as_ref()))
            .collect();
        self.append_events(conn, &events).await
    }

    /// Appends `events` (actor, request, action) to the chain, in this
    /// order, in one statement.
    async fn append_events<C: ConnectionTrait>(
        &self,
        conn: &C,
        events: &[(&str, &str, &str)],
    ) -> Result<(), DbErr> {
        if events.is_empty() {
            return Ok(());
        }
        // One appender at a time across replicas: the chain has one head,
        // a row kept by a trigger on every event, locked until the
        // transaction ends (callers append last, just before the commit).
        // SQLite's write lock already serialises.
        let backend = conn.get_database_backend();
        let head = conn
            .query_one_raw(Statement::from_string(
                backend,
                if backend == DbBackend::Sqlite {
                    "SELECT seq, hash FROM orchestrator_audit_head WHERE id = 1"
                } else {
                    "SELECT seq, hash FROM orchestrator_audit_head WHERE id = 1 FOR UPDATE"
                },
            ))
            .await?
            .ok_or_else(|| DbErr::RecordNotFound("the audit chain's head".into()))?;
        let seq: i64 = head.try_get_by_index(0)?;
        let mut seq = u64::try_from(seq).unwrap_or(0);
        let mut hash: String = head.try_get_by_index(1)?;
        let now = self.clock.now();
        let mut rows = Vec::with_capacity(events.len());
        for (actor, request_id, action) in events {
            let e = request::event_after(seq, &hash, now, actor, request_id, action);
            seq = e.seq;
            hash.clone_from(&e.hash);
            rows.push(audit::ActiveModel {
                seq: Set(i64::try_from(e.seq).unwrap_or(i64::MAX)),
                at: Set(e.at),
                actor: Set(e.actor),
                request_id: Set(e.request_id),
                action: Set(e.action),
                prev_hash: Set(e.prev_hash),
                hash: Set(e.hash),
            });
        }
        // Rows are inserted, and the head's trigger follows them, in this
        // order: the head ends at the last.
        audit::Entity::insert_many(rows)
            .exec_without_returning(conn)
            .await?;
        Ok(())
    }

    /// Whether a request was recorded under `idempotency_key`.
    pub async fn recorded(&self, idempotency_key: &str) -> Result<bool, Error> {
        Ok(req::Entity::find()
            .filter(req::Column::IdempotencyKey.eq(idempotency_key))
            .one(&self.db)
            .await?
            .is_some())
    }

    /// Records a submission received on `received_on`; returns the request and
    /// whether it was new. The same key with the same payload returns the
    /// request first recorded; with another payload it is refused.
    pub async fn submit(
        &self,
        s: Submission,
        received_on: NaiveDate,
        actor: &str,
    ) -> Result<(Request, bool), Error> {
        let digest = payload_digest(&s);
        for _ in 0..3 {
            let deadline = Deadline::for_request(received_on, &self.calendar)?;
            let id = uuid::Uuid::new_v4().to_string();
            // A verification token checked at submission is the verify step,
            // done by the API: the request starts out locating.
            let state = if s.verified.is_some() {
                State::Locating
            } else {
                State::Submitted
            };
            let now = self.clock.now();
            let txn = self.write_txn().await?;
            // Inserted unless the key is taken (a repeated submission): one
            // statement for a new request, no read before it.
            let inserted = req::Entity::insert(req::ActiveModel {
                id: Set(id.clone()),
                kind: Set(s.kind.as_str().to_owned()),
                state: Set(state.as_str().to_owned()),
                controller: Set(s.controller.as_str().to_owned()),
                language: Set(s.language.clone()),
                identities: Set(identity_json(&s.identities)),
                received_on: Set(received_on),
                original_due: Set(deadline.original_due()),
                due: Set(deadline.due()),
                extended_months: Set(0),
                extension_reason: Set(None),
                extension_decided_on: Set(None),
                rejection_reason: Set(None),
                rejection_note: Set(None),
                idempotency_key: Set(s.idempotency_key.clone()),
                payload_digest: Set(digest.clone()),
                submitted_at: Set(now),
                updated_at: Set(now),
                challenge_id: Set(None),
                verified_identities: Set(s.verified.as_deref().map(identity_json)),
                subject_map: Set(None),
                package_id: Set(None),
                record_count: Set(None),
                system_ids: Set(None),
                retained_count: Set(None),
                write_order: Set(s
                    .write
                    .as_ref()
                    .map(|w| serde_json::to_string(w).expect("serialisable order"))),
                cancel_reason: Set(None),
                lease_owner: Set(None),
                lease_until_ms: Set(None),
                // The verify step may start at once.
                next_attempt_ms: Set(Some(now.timestamp_millis())),
                attempts: Set(0),
                last_error: Set(None),
                trace_parent: Set(dsr_telemetry::propagation::current_traceparent()),
                discrepancies: Set(None),
                withheld: Set(None),
                submitted_by: Set(s.submitted_by.clone()),
            })
            .on_conflict_do_nothing_on([req::Column::IdempotencyKey])
            .exec_with_returning(&txn)
            .await;
            match inserted {
                Ok(TryInsertResult::Inserted(m)) => {
                    if let Some(jti) = &s.verification_jti {
                        // Another request already used this token: refused,
                        // nothing recorded.
                        if !use_verification(&txn, jti, &id, now).await? {
                            txn.rollback().await?;
                            return Err(Error::VerificationUsed);
                        }
                    }
                    // The row as inserted is the row committed: its letter
                    // and the answer are written from it, not read again.
                    if state == State::Locating {
                        crate::queue::record_done(&txn, &id, "verify", "api", now).await?;
                    }
                    // The audit events last (the chain's lock until the commit).
                    let submitted = format!("submitted:{}", s.kind.as_str());
                    if state == State::Locating {
                        self.append_all_for(
                            &txn,
                            actor,
                            &m,
                            &[submitted.as_str(), "state:locating"],
                        )
                        .await?;
                    } else {
                        self.append_for(&txn, actor, &m, &submitted).await?;
                    }
                    txn.commit().await?;
                    tracing::info!(request = %id, kind = s.kind.as_str(), "request submitted");
                    return Ok((self.request_of(m)?, true));
                }
                // The key was used before (or at the same moment by another
                // caller): the request recorded under it, if the payload is
                // the same.
                // (sea-orm 2 reports the row an `ON CONFLICT DO NOTHING`
                // skipped as not found when it asked for it back.)
                Ok(TryInsertResult::Conflicted | TryInsertResult::Empty)
                | Err(DbErr::RecordNotFound(_) | DbErr::RecordNotInserted) => {
                    txn.rollback().await?;
                    if let Some(m) = req::Entity::find()
                        .filter(req::Column::IdempotencyKey.eq(s.idempotency_key.as_str()))
                        .one(&self.db)
                        .await?
                    {
                        if m.payload_digest != digest {
                            return Err(Error::KeyReused);
                        }
                        return Ok((self.request_of(m)?, false));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Storage(DbErr::Custom(
            "submission did not settle".into(),
        )))
    }

    /// Records that verification token `jti` verified request `id`;
    /// `Err(VerificationUsed)` when it verified another one before.
    pub async fn use_verification(&self, jti: &str, id: &str) -> Result<(), Error> {
        let txn = self.write_txn().await?;
        if use_verification(&txn, jti, id, self.clock.now()).await? {
            txn.commit().await?;
            Ok(())
        } else {
            txn.rollback().await?;
            Err(Error::VerificationUsed)
        }
    }

    /// One request.
    pub async fn get(&self, id: &str) -> Result<Request, Error> {
        let m = req::Entity::find_by_id(id.to_owned())
            .one(&self.reads)
            .await?
            .ok_or(Error::NotFound)?;
        self.request_of(m)
    }

    pub(crate) async fn change(
        &self,
        id: &str,
        actor: &str,
        action: String,
        f: impl FnOnce(&req::Model, &mut req::ActiveModel) -> Result<(), Error>,
    ) -> Result<Request, Error> {
        self.change_deciding(id, actor, move |m, am| f(m, am).map(|()| action))
            .await
    }

    /// As [`Ledger::change`], for a change whose audit action depends on
    /// what it finds: `f` decides from the row as locked, and returns the
    /// action to record.
    pub(crate) async fn change_deciding(
        &self,
        id: &str,
        actor: &str,
        f: impl FnOnce(&req::Model, &mut req::ActiveModel) -> Result<String, Error>,
    ) -> Result<Request, Error> {
        let txn = self.write_txn().await?;
        let changed = async {
            // The row locked until the change commits (PostgreSQL; SQLite's
            // writer already is alone): a worker recording a step meanwhile
            // waits, or is waited for, instead of failing the change.
            let m = req::Entity::find_by_id(id.to_owned())
                .lock_exclusive()
                .one(&txn)
                .await?
                .ok_or(Error::NotFound)?;
            let current = m.clone();
            let mut am: req::ActiveModel = m.into();
            let action = f(&current, &mut am)?;
            am.updated_at = Set(self.clock.now());
            // Only if nobody moved it meanwhile.
            let res = req::Entity::update_many()
                .set(am)
                .filter(req::Column::Id.eq(id))
                .filter(req::Column::State.eq(current.state.as_str()))
                .filter(req::Column::UpdatedAt.eq(current.updated_at))
                .exec(&txn)
                .await?;
            if res.rows_affected == 0 {
                return Err(Error::Storage(DbErr::Custom(
                    "request changed concurrently; retry".into(),
                )));
            }
            self.append(&txn, actor, id, &action).await?;
            Ok(())
        }
        .await;
        // A refused change (a wrong state, a third extension) ends its
        // transaction here, at once, rather than whenever the dropped
        // transaction's rollback runs: on SQLite it holds the write lock
        // (BEGIN IMMEDIATE) every other writer of the ledger waits for.
        if let Err(e) = changed {
            txn.rollback().await?;
            return Err(e);
        }
        txn.commit().await?;
        self.get(id).await
    }

    /// Ends the requests received before `received_before` that still wait
    /// in VERIFYING: the person never proved who they are. Each is refused
    /// for identity (Art. 12(6)), which queues the refusal letter and stops
    /// it counting towards the deadline. Returns their ids.
    pub async fn expire_unverified(
        &self,
        received_before: NaiveDate,
    ) -> Result<Vec<String>, Error> {
        let ids: Vec<String> = req::Entity::find()
            .select_only()
            .column(req::Column::Id)
            .filter(req::Column::State.eq(State::Verifying.as_str()))
            .filter(req::Column::ReceivedOn.lt(received_before))
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut ended = Vec::new();
        for id in ids {
            match self
                .reject(
                    &id,
                    Rejection::IdentityInsufficient,
                    "",
                    "service:orchestrator",
                )
                .await
            {
                Ok(_) => ended.push(id),
                // Verified, or ended, since it was read: left as it is.
                Err(Error::IllegalMove(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ended)
    }

    /// Purges the person's identities (claimed, verified, the subject map
    /// that names them, and a rectification's corrections) from every
    /// request answered for good (completed, with or without retained
    /// records, rejected, cancelled) and last changed before `before`;
    /// the request, its counts and its audit trail stay, which hold no
    /// identity; the database's log keeps no earlier copy. Returns how many
    /// were purged.
    pub async fn purge_identities(&self, before: DateTime<Utc>) -> Result<u64, Error> {
        let ids: Vec<String> = req::Entity::find()
            .select_only()
            .column(req::Column::Id)
            .filter(req::Column::State.is_in([
                State::Completed.as_str(),
                State::CompletedWithRetained.as_str(),
                State::Rejected.as_str(),
                State::Cancelled.as_str(),
            ]))
            .filter(req::Column::UpdatedAt.lt(before))
            .filter(
                sea_orm::Condition::any()
                    .add(req::Column::Identities.ne("[]"))
                    .add(req::Column::VerifiedIdentities.is_not_null())
                    .add(req::Column::SubjectMap.is_not_null())
                    .add(req::Column::WriteOrder.is_not_null()),
            )
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut purged = 0;
        for id in ids {
            let done = self
                .change(
                    &id,
                    "service:retention",
                    "identities_purged".into(),
                    |_, am| {
                        am.identities = Set("[]".into());
                        am.verified_identities = Set(None);
                        am.subject_map = Set(None);
                        am.write_order = Set(None);
                        Ok(())
                    },
                )
                .await;
            match done {
                Ok(_) => purged += 1,
                Err(e) => {
                    tracing::warn!(request = %id, error = %e, "identities not purged; next run")
                }
            }
        }
        if purged > 0 {
            dsr_store::scrub_log(&self.db).await?;
        }
        Ok(purged)
    }

    /// Moves a request to `to` (the state machine decides).
    pub async fn advance(&self, id: &str, to: State, actor: &str) -> Result<Request, Error> {
        self.change(id, actor, format!("state:{}", to.as_str()), |m, am| {
            let from = State::parse(&m.state).ok_or_else(|| corrupt("state"))?;
            request::check_move(from, to)?;
            am.state = Set(to.as_str().to_owned());
            Ok(())
        })
        .await
    }

    /// Cancels a request that has not begun irreversible work.
    pub async fn cancel(&self, id: &str, reason: &str, actor: &str) -> Result<Request, Error> {
        let reason = reason.to_owned();
        self.change(id, actor, "state:cancelled".into(), move |m, am| {
            let from = State::parse(&m.state).ok_or_else(|| corrupt("state"))?;
            request::check_move(from, State::Cancelled)?;
            am.state = Set(State::Cancelled.as_str().to_owned());
            am.cancel_reason = Set(Some(reason.clone()));
            am.next_attempt_ms = Set(None);
            am.lease_owner = Set(None);
            am.lease_until_ms = Set(None);
            Ok(())
        })
        .await
    }

    /// Rejects a request, with a reason and a note.
    pub async fn reject(
        &self,
        id: &str,
        reason: Rejection,
        note: &str,
        actor: &str,
    ) -> Result<Request, Error> {
        let note = note.to_owned();
        self.change(
            id,
            actor,
            format!("rejected:{}", reason.as_str()),
            move |m, am| {
                let from = State::parse(&m.state).ok_or_else(|| corrupt("state"))?;
                request::check_move(from, State::Rejected)?;
                am.state = Set(State::Rejected.as_str().to_owned());
                am.rejection_reason = Set(Some(reason.as_str().to_owned()));
                am.rejection_note = Set(Some(note.clone()));
                am.next_attempt_ms = Set(None);
                am.lease_owner = Set(None);
                am.lease_until_ms = Set(None);
                Ok(())
            },
        )
        .await
    }

    /// Extends the deadline (Art. 12(3)), decided on `today`. Decided from
    /// the request as locked for the change, so two extensions at once
    /// count each other: the second adds to the first, or is refused if
    /// the two would pass two months.
    pub async fn extend(
        &self,
        id: &str,
        months: u32,
        reason: &str,
        today: NaiveDate,
        actor: &str,
    ) -> Result<Request, Error> {
        let reason = reason.to_owned();
        self.change_deciding(id, actor, move |m, am| {
            let current = self.request_of(m.clone())?;
            if current.state.is_answered() {
                return Err(IllegalMove {
                    from: current.state,
                    to: current.state,
                }
                .into());
            }
            let extended = current
                .deadline
                .extend(months, &reason, today, &self.calendar)?;
            let ext = extended
                .extension()
                .cloned()
                .expect("extend sets an extension");
            am.due = Set(extended.due());
            am.extended_months = Set(i32::try_from(ext.months).unwrap_or(2));
            am.extension_reason = Set(Some(ext.reason));
            am.extension_decided_on = Set(Some(ext.decided_on));
            Ok(format!("extended:{}", ext.months))
        })
        .await
    }

    /// Checks the whole audit trail; returns the number of events.
    pub async fn verify_audit(&self) -> Result<u64, AuditError> {
        let rows = audit::Entity::find()
            .order_by_asc(audit::Column::Seq)
            .all(&self.db)
            .await
            .map_err(AuditError::Storage)?;
        let events: Vec<AuditEvent> = rows.into_iter().map(audit_event).collect();
        request::verify_chain(&events).map_err(AuditError::Broken)
    }

    /// The audit trail's events of one request, in order.
    pub async fn audit_of(&self, request_id: &str) -> Result<Vec<AuditEvent>, Error> {
        Ok(audit::Entity::find()
            .filter(audit::Column::RequestId.eq(request_id))
            .order_by_asc(audit::Column::Seq)
            .all(&self.db)
            .await?
            .into_iter()
            .map(audit_event)
            .collect())
    }
}

fn audit_event(m: audit::Model) -> AuditEvent {
    AuditEvent {
        seq: u64::try_from(m.seq).unwrap_or(0),
        at: m.at,
        actor: m.actor,
        request_id: m.request_id,
        action: m.action,
        prev_hash: m.prev_hash,
        hash: m.hash,
    }
}

/// Why the audit trail did not verify.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The chain is broken.
    #[error("audit trail broken: {0}")]
    Broken(ChainError),
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(DbErr),
}
