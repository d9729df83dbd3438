//! The work queue over the ledger. A worker claims a runnable request with a
//! lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has one writer, so
//! the claiming statement alone is atomic there), records the attempt in the
//! step log, and completes or fails it only while its lease holds: every
//! write is fenced on the lease token, so a worker that lost its lease (it
//! stalled, or was presumed dead) changes nothing. A step's completion is
//! unique in the database (`ux_orchestrator_step_once`): no step of a
//! request is done twice, whatever the number of replicas.

use std::time::Duration;

use chrono::{DateTime, Utc};
use dsr_domain::identity::Identity;
use dsr_domain::request::{self, Kind, State};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr,
    EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect, Statement, Value,
};

use crate::entity::{request as req, step};
use crate::ledger::{Error, Ledger, Request, corrupt, identity_json, json_list};
use crate::mesh::{Executed, PackageRef, Planned, SubjectMap};

/// The steps, in order.
pub const STEPS: [&str; 3] = ["verify", "locate", "export"];

/// The steps of an erasure request, in order ("deferred" runs once per
/// retain-until date).
pub const ERASURE_STEPS: [&str; 5] = ["verify", "locate", "plan", "execute", "deferred"];

/// The steps of a rectification, restriction or objection.
pub const WRITE_STEPS: [&str; 3] = ["verify", "locate", "apply"];

/// The steps of a request of `kind`.
pub fn steps_of(kind: Kind) -> &'static [&'static str] {
    if kind.exports() {
        &STEPS
    } else if kind.is_write() {
        &WRITE_STEPS
    } else {
        &ERASURE_STEPS
    }
}

/// The step a request of `kind` in `state` runs next, if a worker should
/// run one.
pub fn step_for(kind: Kind, state: State) -> Option<&'static str> {
    match state {
        State::Submitted => Some("verify"),
        State::Locating => Some("locate"),
        State::Exporting => Some("export"),
        State::Planning => Some("plan"),
        State::Executing if kind.is_write() => Some("apply"),
        State::Executing => Some("execute"),
        State::CompletedWithRetained => Some("deferred"),
        State::Verifying
        | State::AwaitingApproval
        | State::AwaitingReview
        | State::Completed
        | State::Rejected
        | State::Cancelled => None,
    }
}

/// An SQL expression of a request row's `kind` and `state` columns naming
/// the step it runs next, as [`step_for`] does (NULL for none).
fn next_step_sql(kind: &str, state: &str) -> String {
    let mut arms = String::new();
    for k in Kind::ALL {
        for st in State::ALL {
            if let Some(step) = step_for(k, st) {
                arms.push_str(&format!(
                    " WHEN {kind} = '{}' AND {state} = '{}' THEN '{step}'",
                    k.as_str(),
                    st.as_str()
                ));
            }
        }
    }
    format!("(CASE{arms} END)")
}

/// [`Ledger::claim_and_begin`]'s statement on PostgreSQL (made once): the
/// claim of `claim_due`, then the attempt of the step the claimed row's
/// state calls for, unless one is still marked running.
static CLAIM_AND_BEGIN: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let step = next_step_sql("c.kind", "c.state");
    format!(
        "WITH claimed AS (\
           UPDATE orchestrator_request SET lease_owner = $1, lease_until_ms = $2 \
           WHERE id IN (SELECT id FROM orchestrator_request \
             WHERE next_attempt_ms IS NOT NULL AND next_attempt_ms <= $3 \
             AND (lease_until_ms IS NULL OR lease_until_ms < $3) \
             ORDER BY next_attempt_ms LIMIT 1 FOR UPDATE SKIP LOCKED) \
           RETURNING *), \
         begun AS (\
           INSERT INTO orchestrator_step (request_id, step, attempt, worker, started_at, outcome) \
           SELECT c.id, {step}, (SELECT COUNT(*) + 1 FROM orchestrator_step s \
                                 WHERE s.request_id = c.id AND s.step = {step}), $4, $5, 'running' \
           FROM claimed c \
           WHERE {step} IS NOT NULL AND NOT EXISTS (SELECT 1 FROM orchestrator_step s \
             WHERE s.request_id = c.id AND s.step = {step} AND s.outcome = 'running') \
           RETURNING id, request_id) \
         SELECT claimed.*, begun.id AS begun_step FROM claimed \
         LEFT JOIN begun ON begun.request_id = claimed.id"
    )
});

/// A lease for `worker` taken at `now_ms`: its token (the worker and a
/// fresh nonce) and when it ends.
fn lease_terms(worker: &str, now_ms: i64, lease: Duration) -> (String, i64) {
    let until = now_ms + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
    (format!("{worker}/{}", uuid::Uuid::new_v4().simple()), until)
}

/// The claim under `token` of the request row a claim returned, and the row.
fn claimed(token: String, row: &sea_orm::QueryResult) -> Result<(Claim, req::Model), Error> {
    let m = req::Model::from_query_result(row, "")?;
    let claim = Claim {
        request_id: m.id.clone(),
        token,
        seen: std::sync::Arc::new(std::sync::Mutex::new(Some(m.clone()))),
    };
    Ok((claim, m))
}

/// A claimed request: the worker holds its lease while it renews it.
#[derive(Clone, Debug)]
pub struct Claim {
    /// The request.
    pub request_id: String,
    /// The lease token (worker id and a fresh nonce).
    pub token: String,
    /// The request's row as this claim last read or wrote it: a step's
    /// completion writes from it without reading the row again, on
    /// condition that nobody changed the row since (its state and
    /// `updated_at` unchanged); otherwise it reads the row and decides
    /// from that.
    seen: std::sync::Arc<std::sync::Mutex<Option<req::Model>>>,
}

impl Claim {
    fn seen(&self) -> std::sync::MutexGuard<'_, Option<req::Model>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A request moved by a step's outcome: the row to write and the audit
/// events of the move.
struct Move {
    am: req::ActiveModel,
    runnable: bool,
    events: Vec<String>,
}

/// What a completed step produced, and where the request goes next.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Verified at once (a token at submission): on to locating.
    Verified,
    /// A challenge was started: wait for the person's code.
    ChallengeStarted(String),
    /// Located: on to approval or export.
    Located {
        /// The map.
        map: SubjectMap,
        /// Whether a case handler must approve first.
        needs_approval: bool,
    },
    /// Exported: completed.
    Exported(PackageRef),
    /// Planned: on to approval or execution.
    Planned {
        /// The plan's counts.
        plan: Planned,
        /// Whether a case handler must approve first.
        needs_approval: bool,
    },
    /// Executed (an erasure, a deferred erasure, or a rectification,
    /// restriction or objection applied): completed, or completed with
    /// records retained until their deferred erasure.
    Executed(Executed),
}

/// One step of a request as the step log shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepView {
    /// Its name.
    pub name: &'static str,
    /// Where it stands.
    pub status: StepStatus,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure, without personal data.
    pub last_error: Option<String>,
    /// The next attempt, while waiting to retry.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was done.
    pub done_at: Option<DateTime<Utc>>,
}

/// Where one step of a request stands, from its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepStatus {
    /// Not started yet (or an earlier attempt was abandoned by a worker
    /// that died, and the step is not the request's current one).
    Pending,
    /// A worker is on it now.
    Running,
    /// Its last attempt failed; the next is due at the request's
    /// `next_attempt_at`.
    WaitingRetry,
    /// Done.
    Done,
    /// Failed for good.
    Failed,
}

impl StepStatus {
    /// Its name, as the wire's deprecated string and the CLI show it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::WaitingRetry => "waiting_retry",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }
}

/// One row of the step log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepRun {
    /// The request.
    pub request_id: String,
    /// The step.
    pub step: String,
    /// Its attempt number.
    pub attempt: u32,
    /// The worker.
    pub worker: String,
    /// "running", "done", "failed" or "abandoned".
    pub outcome: String,
    /// The failure.
    pub error: Option<String>,
}

fn lost() -> Error {
    Error::Storage(DbErr::Custom("lease lost".into()))
}

/// The claimed request's row, while the claim's lease holds.
async fn leased<C: ConnectionTrait>(conn: &C, claim: &Claim) -> Result<req::Model, Error> {
    req::Entity::find_by_id(claim.request_id.clone())
        .filter(req::Column::LeaseOwner.eq(claim.token.as_str()))
        .one(conn)
        .await?
        .ok_or_else(lost)
}

/// Records a new attempt of `name` (earlier attempts still "running" become
/// "abandoned"); returns the log row's id and the attempt number.
async fn begin_attempt<C: ConnectionTrait>(
    conn: &C,
    request_id: &str,
    name: &str,
    worker: &str,
    now: DateTime<Utc>,
) -> Result<(i64, u32), Error> {
    // The earlier attempts' outcomes: how many there were, and whether one
    // is still marked running (one read; the update only when needed).
    let previous: Vec<String> = step::Entity::find()
        .select_only()
        .column(step::Column::Outcome)
        .filter(step::Column::RequestId.eq(request_id))
        .filter(step::Column::Step.eq(name))
        .into_tuple()
        .all(conn)
        .await?;
    if previous.iter().any(|o| o == "running") {
        step::Entity::update_many()
            .col_expr(step::Column::Outcome, "abandoned".into())
            .filter(step::Column::RequestId.eq(request_id))
            .filter(step::Column::Step.eq(name))
            .filter(step::Column::Outcome.eq("running"))
            .exec(conn)
            .await?;
    }
    let attempt = u32::try_from(previous.len() + 1).unwrap_or(u32::MAX);
    let row = step::ActiveModel {
        request_id: Set(request_id.to_owned()),
        step: Set(name.to_owned()),
        attempt: Set(i32::try_from(attempt).unwrap_or(i32::MAX)),
        worker: Set(worker.to_owned()),
        started_at: Set(now),
        finished_at: Set(None),
        outcome: Set("running".into()),
        error: Set(None),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    Ok((row.id, attempt))
}

/// [`begin_attempt`] in one statement, for the usual case: no earlier
/// attempt of `name` is still marked running and `claim`'s lease holds.
/// The attempt is inserted only then, numbered after the earlier ones;
/// `None` when it was not (the caller takes the long way, which abandons a
/// running attempt or reports the lease lost). One round trip instead of a
/// transaction's five: the lease read, the earlier outcomes read and the
/// insert.
async fn begin_attempt_at_once<C: ConnectionTrait>(
    conn: &C,
    claim: &Claim,
    name: &str,
    worker: &str,
    now: DateTime<Utc>,
) -> Result<Option<(i64, u32)>, Error> {
    let backend = conn.get_database_backend();
    let p = |n: usize| {
        if backend == DbBackend::Postgres {
            format!("${n}")
        } else {
            format!("?{n}")
        }
    };
    // Explicit columns, not `RETURNING *` (see `claim_due`).
    let sql = format!(
        "INSERT INTO orchestrator_step (request_id, step, attempt, worker, started_at, outcome) \
         SELECT {r}, {s}, (SELECT COUNT(*) + 1 FROM orchestrator_step \
                          WHERE request_id = {r} AND step = {s}), {w}, {t}, 'running' \
         WHERE EXISTS (SELECT 1 FROM orchestrator_request WHERE id = {r} AND lease_owner = {l}) \
           AND NOT EXISTS (SELECT 1 FROM orchestrator_step \
                           WHERE request_id = {r} AND step = {s} AND outcome = 'running') \
         RETURNING id, attempt",
        r = p(1),
        s = p(2),
        w = p(3),
        t = p(4),
        l = p(5),
    );
    let row = conn
        .query_one_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [
                Value::from(claim.request_id.clone()),
                Value::from(name.to_owned()),
                Value::from(worker.to_owned()),
                Value::from(now),
                Value::from(claim.token.clone()),
            ],
        ))
        .await?;
    let Some(row) = row else { return Ok(None) };
    let id: i64 = row.try_get("", "id")?;
    let attempt: i32 = row.try_get("", "attempt")?;
    Ok(Some((id, u32::try_from(attempt).unwrap_or(0))))
}

/// Leases to `owner` until `until` the rows of `table` whose next attempt
/// is due at `now` (ms since the epoch) and not leased, at most `limit`,
/// those due first: on PostgreSQL one statement, `FOR UPDATE SKIP LOCKED`
/// (replicas share the work) returning the rows; on SQLite, whose single
/// writer makes the update atomic, the update and then the rows read by
/// their owner. Returns the leased rows, whole (the claimant needs them at
/// once), in no particular order.
pub(crate) async fn claim_due(
    db: &sea_orm::DatabaseConnection,
    table: &str,
    owner: &str,
    until: i64,
    now: i64,
    limit: u32,
) -> Result<Vec<sea_orm::QueryResult>, DbErr> {
    let backend = db.get_database_backend();
    if backend == DbBackend::Postgres {
        let sql = format!(
            "UPDATE {table} SET lease_owner = $1, lease_until_ms = $2 \
             WHERE id IN (SELECT id FROM {table} \
               WHERE next_attempt_ms IS NOT NULL AND next_attempt_ms <= $3 \
               AND (lease_until_ms IS NULL OR lease_until_ms < $3) \
               ORDER BY next_attempt_ms LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING *"
        );
        return db
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [
                    Value::from(owner.to_owned()),
                    Value::from(until),
                    Value::from(now),
                    Value::from(i64::from(limit)),
                ],
            ))
            .await;
    }
    // SQLite: one writer at a time makes the statement atomic. The rows are
    // read back by their (unique) owner rather than through `RETURNING *`,
    // which made sqlx-sqlite 0.9's worker thread panic now and then (index
    // out of bounds reading the returned row); the connection died holding
    // the write lock, and every writer of the database waited 30 s.
    let claimed = db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            format!(
                "UPDATE {table} SET lease_owner = ?1, lease_until_ms = ?2 \
                 WHERE id IN (SELECT id FROM {table} \
                   WHERE next_attempt_ms IS NOT NULL AND next_attempt_ms <= ?3 \
                   AND (lease_until_ms IS NULL OR lease_until_ms < ?3) \
                   ORDER BY next_attempt_ms LIMIT ?4)"
            ),
            [
                Value::from(owner.to_owned()),
                Value::from(until),
                Value::from(now),
                Value::from(i64::from(limit)),
            ],
        ))
        .await?;
    if claimed.rows_affected() == 0 {
        return Ok(Vec::new());
    }
    db.query_all_raw(Statement::from_sql_and_values(
        backend,
        format!("SELECT * FROM {table} WHERE lease_owner = ?1"),
        [Value::from(owner.to_owned())],
    ))
    .await
}

/// Records a step the API did itself (a verification token checked at
/// submission) as one done attempt.
pub(crate) async fn record_done<C: ConnectionTrait>(
    conn: &C,
    request_id: &str,
    name: &str,
    worker: &str,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    step::ActiveModel {
        request_id: Set(request_id.to_owned()),
        step: Set(name.to_owned()),
        attempt: Set(1),
        worker: Set(worker.to_owned()),
        started_at: Set(now),
        finished_at: Set(Some(now)),
        outcome: Set("done".into()),
        error: Set(None),
        ..Default::default()
    }
    .insert(conn)
    .await?;
    Ok(())
}

impl Ledger {
    /// Claims the runnable request whose attempt is due first, for `lease`.
    pub async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Claim>, Error> {
        Ok(self.claim_request(worker, lease).await?.map(|(c, _)| c))
    }

    /// [`Self::claim`], with the claimed request as the claim left it.
    pub async fn claim_request(
        &self,
        worker: &str,
        lease: Duration,
    ) -> Result<Option<(Claim, Request)>, Error> {
        let now = self.clock().now().timestamp_millis();
        let (token, until) = lease_terms(worker, now, lease);
        let row = claim_due(self.db(), "orchestrator_request", &token, until, now, 1)
            .await?
            .pop();
        let Some(row) = row else { return Ok(None) };
        let (claim, m) = claimed(token, &row)?;
        Ok(Some((claim, self.request_of(m)?)))
    }

    /// [`Self::claim_request`] for a worker about to run the claimed
    /// request's next step: on PostgreSQL the step's attempt is begun in
    /// the claim's statement (as [`Self::start_step`] begins it when no
    /// earlier attempt is still marked running) and its log row returned,
    /// one round trip instead of two. `None` for the row when it was not
    /// begun (SQLite, a step still marked running, or no step to run): the
    /// worker starts it the usual way.
    pub async fn claim_and_begin(
        &self,
        worker: &str,
        lease: Duration,
    ) -> Result<Option<(Claim, Request, Option<i64>)>, Error> {
        if self.db().get_database_backend() != DbBackend::Postgres {
            return Ok(self
                .claim_request(worker, lease)
                .await?
                .map(|(claim, r)| (claim, r, None)));
        }
        let now = self.clock().now();
        let now_ms = now.timestamp_millis();
        let (token, until) = lease_terms(worker, now_ms, lease);
        let row = self
            .db()
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                CLAIM_AND_BEGIN.as_str(),
                [
                    Value::from(token.clone()),
                    Value::from(until),
                    Value::from(now_ms),
                    Value::from(worker.to_owned()),
                    Value::from(now),
                ],
            ))
            .await?;
        let Some(row) = row else { return Ok(None) };
        let begun: Option<i64> = row.try_get("", "begun_step")?;
        let (claim, m) = claimed(token, &row)?;
        Ok(Some((claim, self.request_of(m)?, begun)))
    }

    /// Extends a held lease; false when it was lost.
    pub async fn renew(&self, claim: &Claim, lease: Duration) -> Result<bool, Error> {
        let until =
            self.clock().now().timestamp_millis() + i64::try_from(lease.as_millis()).unwrap_or(0);
        let res = req::Entity::update_many()
            .col_expr(req::Column::LeaseUntilMs, until.into())
            .filter(req::Column::Id.eq(claim.request_id.as_str()))
            .filter(req::Column::LeaseOwner.eq(claim.token.as_str()))
            .exec(self.leases())
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Gives a lease back without changing anything else (a worker shutting
    /// down, or a request with nothing to run).
    pub async fn release(&self, claim: &Claim) -> Result<(), Error> {
        req::Entity::update_many()
            .col_expr(req::Column::LeaseOwner, Option::<String>::None.into())
            .col_expr(req::Column::LeaseUntilMs, Option::<i64>::None.into())
            .filter(req::Column::Id.eq(claim.request_id.as_str()))
            .filter(req::Column::LeaseOwner.eq(claim.token.as_str()))
            .exec(self.db())
            .await?;
        Ok(())
    }

    /// Records the start of an attempt of `name`; earlier attempts still
    /// "running" (their worker died) become "abandoned". Returns the log
    /// row's id and the attempt number.
    pub async fn start_step(
        &self,
        claim: &Claim,
        name: &str,
        worker: &str,
    ) -> Result<(i64, u32), Error> {
        let now = self.clock().now();
        if let Some(begun) = begin_attempt_at_once(self.db(), claim, name, worker, now).await? {
            return Ok(begun);
        }
        let txn = self.write_txn().await?;
        leased(&txn, claim).await?;
        let (row, attempt) = begin_attempt(&txn, &claim.request_id, name, worker, now).await?;
        txn.commit().await?;
        Ok((row, attempt))
    }

    /// Completes a step: the log row done, the outputs stored, the request
    /// moved on, the audit event appended; all in one transaction and only
    /// while the lease holds. The lease is given back, unless `keep_as` names
    /// the worker and the request has a next step: then that step's attempt
    /// is begun in the same transaction and its log row returned, for the
    /// caller to run at once.
    ///
    /// The request's row is written from the claim's last sight of it when
    /// nobody changed it since (one `UPDATE`, fenced on the lease, the state
    /// and `updated_at`); otherwise it is read again and the move decided
    /// from what it holds now.
    pub async fn complete_step(
        &self,
        claim: &Claim,
        step_row: i64,
        outcome: Outcome,
        actor: &str,
        keep_as: Option<&str>,
    ) -> Result<(Request, Option<i64>), Error> {
        let now = self.clock().now();
        let txn = self.write_txn().await?;
        let seen = claim.seen().take();
        let mut written = None;
        if let Some(m) = seen {
            let (state, updated_at) = (m.state.clone(), m.updated_at);
            // A move the row as seen does not allow is decided again from
            // the row as it is.
            if let Ok(mv) = self.moved(m, &outcome, keep_as.is_some(), now) {
                match req::Entity::update(mv.am.clone())
                    .validate()?
                    .filter(req::Column::LeaseOwner.eq(claim.token.as_str()))
                    .filter(req::Column::State.eq(state))
                    .filter(req::Column::UpdatedAt.eq(updated_at))
                    .exec(&txn)
                    .await
                {
                    Ok(updated) => written = Some((updated, mv)),
                    Err(DbErr::RecordNotUpdated) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let (updated, mv) = match written {
            Some(w) => w,
            None => {
                let m = leased(&txn, claim).await?;
                let mv = self.moved(m, &outcome, keep_as.is_some(), now)?;
                (mv.am.clone().update(&txn).await?, mv)
            }
        };
        let done = step::Entity::update_many()
            .col_expr(step::Column::Outcome, "done".into())
            .col_expr(step::Column::FinishedAt, now.into())
            .filter(step::Column::Id.eq(step_row))
            .filter(step::Column::Outcome.eq("running"))
            .exec(&txn)
            .await?;
        if done.rows_affected != 1 {
            return Err(lost());
        }
        let kind = Kind::parse(&updated.kind).ok_or_else(|| corrupt("kind"))?;
        let to = State::parse(&updated.state).ok_or_else(|| corrupt("state"))?;
        let next = match (keep_as.filter(|_| mv.runnable), step_for(kind, to)) {
            (Some(worker), Some(name)) => Some(
                match begin_attempt_at_once(&txn, claim, name, worker, now).await? {
                    Some((row, _)) => row,
                    None => {
                        begin_attempt(&txn, &claim.request_id, name, worker, now)
                            .await?
                            .0
                    }
                },
            ),
            _ => None,
        };
        // The audit events last: the chain's lock is held from the first
        // until the commit.
        self.append_all_for(&txn, actor, &updated, &mv.events)
            .await?;
        txn.commit().await?;
        if next.is_some() {
            *claim.seen() = Some(updated.clone());
        }
        Ok((self.request_of(updated)?, next))
    }

    /// How `outcome` moves the request whose row is `m` at `now`: the row
    /// to write (the lease kept when `keep` and the request has a next
    /// step to run at once) and the move's audit events, the state's last.
    fn moved(
        &self,
        m: req::Model,
        outcome: &Outcome,
        keep: bool,
        now: DateTime<Utc>,
    ) -> Result<Move, Error> {
        let from = State::parse(&m.state).ok_or_else(|| corrupt("state"))?;
        let kind = Kind::parse(&m.kind).ok_or_else(|| corrupt("kind"))?;
        let mut am: req::ActiveModel = m.into();
        // When the next step may run: now, at a date, or when a person acts.
        let mut at: Option<i64> = None;
        let mut discrepancies: Vec<String> = Vec::new();
        let mut withheld: Vec<String> = Vec::new();
        let (to, runnable) = match outcome {
            Outcome::Verified => (State::Locating, true),
            Outcome::ChallengeStarted(id) => {
                am.challenge_id = Set(Some(id.clone()));
                (State::Verifying, false)
            }
            Outcome::Located {
                map,
                needs_approval,
            } => {
                am.subject_map = Set(Some(serde_json::to_string(map).expect("serialisable map")));
                if kind == Kind::Erasure {
                    // The case handler approves the plan, not the map.
                    (State::Planning, true)
                } else if *needs_approval {
                    (State::AwaitingApproval, false)
                } else if kind.is_write() {
                    (State::Executing, true)
                } else {
                    (State::Exporting, true)
                }
            }
            Outcome::Planned {
                plan: _,
                needs_approval,
            } => {
                if *needs_approval {
                    (State::AwaitingApproval, false)
                } else {
                    (State::Executing, true)
                }
            }
            Outcome::Executed(e) => {
                let prior = if from == State::CompletedWithRetained {
                    am.record_count.clone().unwrap().unwrap_or(0)
                } else {
                    0
                };
                am.record_count = Set(Some(
                    prior.saturating_add(i64::try_from(e.affected).unwrap_or(i64::MAX)),
                ));
                if from == State::Executing {
                    am.system_ids = Set(Some(
                        serde_json::to_string(&e.system_ids).expect("serialisable"),
                    ));
                }
                am.retained_count = Set(Some(i64::from(e.retained)));
                // Disclosures withheld for want of a lawful transfer: the
                // erasure service reports every one of the request; the
                // new ones go to the audit trail.
                let prior: Vec<crate::mesh::Withheld> =
                    json_list(am.withheld.clone().unwrap().as_deref(), "withheld")?;
                withheld = e
                    .withheld
                    .iter()
                    .filter(|w| !prior.iter().any(|p| p.notification_id == w.notification_id))
                    .map(|w| {
                        format!(
                            "disclosure_withheld:{} {} ({}): {}",
                            w.recipient_id,
                            w.action,
                            w.verdict,
                            w.reasons.join("; ")
                        )
                    })
                    .collect();
                if !e.withheld.is_empty() {
                    am.withheld = Set(Some(
                        serde_json::to_string(&e.withheld).expect("serialisable"),
                    ));
                }
                let awaiting_approval = e.withheld.iter().any(|w| w.verdict == "awaiting_approval");
                if !e.discrepancies.is_empty() {
                    // What the systems did differs from the plan: a case
                    // handler reviews it; the request is not completed.
                    let mut all: Vec<crate::mesh::Discrepancy> = json_list(
                        am.discrepancies.clone().unwrap().as_deref(),
                        "discrepancies",
                    )?;
                    all.extend(e.discrepancies.iter().cloned());
                    am.discrepancies =
                        Set(Some(serde_json::to_string(&all).expect("serialisable")));
                    // Each one in the audit trail (a system, a store and
                    // a record key: no personal data).
                    discrepancies = e
                        .discrepancies
                        .iter()
                        .map(|d| {
                            format!(
                                "discrepancy:{}/{}/{} {}: expected {}, receipt says {}{}",
                                d.system_id,
                                d.store,
                                d.key,
                                d.phase,
                                d.expected,
                                d.observed,
                                d.reason
                                    .as_deref()
                                    .map(|r| format!(" (restricted: {r})"))
                                    .unwrap_or_default()
                            )
                        })
                        .collect();
                    (State::AwaitingReview, false)
                } else if awaiting_approval {
                    // A disclosure held for a case handler's approval.
                    (State::AwaitingReview, false)
                } else if e.retained == 0 {
                    (State::Completed, false)
                } else {
                    // The deferred erasure runs by itself on its date.
                    at = e
                        .next_deferred_on
                        .and_then(|d| d.and_hms_opt(0, 0, 0))
                        .map(|t| t.and_utc().timestamp_millis());
                    (State::CompletedWithRetained, false)
                }
            }
            Outcome::Exported(p) => {
                am.package_id = Set(Some(p.id.clone()));
                am.record_count = Set(Some(i64::try_from(p.record_count).unwrap_or(i64::MAX)));
                am.system_ids = Set(Some(
                    serde_json::to_string(&p.system_ids).expect("serialisable"),
                ));
                (State::Completed, false)
            }
        };
        request::check_move(from, to)?;
        am.state = Set(to.as_str().to_owned());
        am.next_attempt_ms = Set(if runnable {
            Some(now.timestamp_millis())
        } else {
            at
        });
        if !(keep && runnable) {
            am.lease_owner = Set(None);
            am.lease_until_ms = Set(None);
        }
        am.attempts = Set(0);
        am.last_error = Set(None);
        am.updated_at = Set(now);
        let mut events: Vec<String> = discrepancies;
        events.append(&mut withheld);
        if matches!(outcome, Outcome::ChallengeStarted(id) if id.is_empty()) {
            // No code could be enough: the person is told how to prove
            // who they are.
            events.push(crate::letters::AWAITING_STRONGER_PROOF.to_owned());
        }
        events.push(format!("state:{}", to.as_str()));
        Ok(Move {
            am,
            runnable,
            events,
        })
    }

    /// Fails an attempt: the log row failed with the reason, the request's
    /// failure count and error updated, its next attempt at `retry_at`
    /// (`None`: the attempts are exhausted and it waits for a person).
    pub async fn fail_step(
        &self,
        claim: &Claim,
        step_row: i64,
        error: &str,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<(), Error> {
        let txn = self.write_txn().await?;
        let m = leased(&txn, claim).await?;
        let attempts = m.attempts.saturating_add(1);
        let mut am: req::ActiveModel = m.into();
        am.attempts = Set(attempts);
        am.last_error = Set(Some(error.to_owned()));
        am.next_attempt_ms = Set(retry_at.map(|t| t.timestamp_millis()));
        am.lease_owner = Set(None);
        am.lease_until_ms = Set(None);
        am.updated_at = Set(self.clock().now());
        am.update(&txn).await?;
        step::Entity::update_many()
            .col_expr(step::Column::Outcome, "failed".into())
            .col_expr(step::Column::FinishedAt, self.clock().now().into())
            .col_expr(step::Column::Error, Some(error.to_owned()).into())
            .filter(step::Column::Id.eq(step_row))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Records the person's verified identities for a request waiting in
    /// VERIFYING, and makes it runnable for locating.
    pub async fn verified(
        &self,
        id: &str,
        identities: &[Identity],
        actor: &str,
    ) -> Result<Request, Error> {
        let json = identity_json(identities);
        self.change(id, actor, "state:locating".into(), move |m, am| {
            let from = State::parse(&m.state).ok_or_else(|| corrupt("state"))?;
            request::check_move(from, State::Locating)?;
            if from != State::Verifying {
                return Err(request::IllegalMove {
                    from,
                    to: State::Locating,
                }
                .into());
            }
            am.state = Set(State::Locating.as_str().to_owned());
            am.verified_identities = Set(Some(json.clone()));
            am.challenge_id = Set(None);
            am.next_attempt_ms = Set(Some(self.clock().now().timestamp_millis()));
            Ok(())
        })
        .await
    }

    /// A case handler approves a request awaiting approval: on to export,
    /// or to the erasure of the plan they saw. Approving an erasure awaiting
    /// review accepts the outcome its receipts show: completed, or
    /// completed with records retained (their deferred erasure runs at
    /// once, and then on its date).
    pub async fn approve(&self, id: &str, actor: &str) -> Result<Request, Error> {
        self.change_deciding(id, actor, |m, am| {
            let from = State::parse(&m.state).ok_or_else(|| corrupt("state"))?;
            let kind = Kind::parse(&m.kind).ok_or_else(|| corrupt("kind"))?;
            let to = if from == State::AwaitingReview {
                if m.retained_count.unwrap_or(0) > 0 {
                    State::CompletedWithRetained
                } else {
                    State::Completed
                }
            } else if kind.exports() {
                State::Exporting
            } else {
                State::Executing
            };
            request::check_move(from, to)?;
            if !from.awaits_decision() {
                return Err(request::IllegalMove { from, to }.into());
            }
            am.state = Set(to.as_str().to_owned());
            am.next_attempt_ms =
                Set(step_for(kind, to).map(|_| self.clock().now().timestamp_millis()));
            // The trail says which decision it was, as the row showed it.
            Ok(if from == State::AwaitingReview {
                "reviewed"
            } else {
                "approved"
            }
            .to_owned())
        })
        .await
    }

    /// The step log of a request, as steps.
    pub async fn steps(&self, r: &Request) -> Result<Vec<StepView>, Error> {
        let rows = step::Entity::find()
            .filter(step::Column::RequestId.eq(r.id.as_str()))
            .order_by_asc(step::Column::Id)
            .all(self.reads())
            .await?;
        Ok(step_views(r, &rows))
    }

    /// A request's letters, in the order they were queued, and its steps
    /// (what a view of it shows), read in one statement.
    pub async fn letters_and_steps(
        &self,
        r: &Request,
    ) -> Result<(Vec<crate::letters::LetterView>, Vec<StepView>), Error> {
        let backend = self.reads().get_database_backend();
        let (a, b) = if backend == DbBackend::Postgres {
            ("$1", "$2")
        } else {
            ("?1", "?2")
        };
        let sql = format!(
            "SELECT 0 AS part, id, key AS s1, kind AS s2, status AS s3, channel AS s4, \
               last_error AS s5, attempts AS n, queued_at AS t1, sent_at AS t2 \
             FROM orchestrator_letter WHERE request_id = {a} \
             UNION ALL \
             SELECT 1, id, step, worker, outcome, NULL, error, attempt, started_at, finished_at \
             FROM orchestrator_step WHERE request_id = {b} \
             ORDER BY part, id"
        );
        let rows = self
            .reads()
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                sql,
                [Value::from(r.id.clone()), Value::from(r.id.clone())],
            ))
            .await?;
        let mut letters = Vec::new();
        let mut steps = Vec::new();
        for row in rows {
            let part: i32 = row.try_get("", "part")?;
            let id: i64 = row.try_get("", "id")?;
            let s1: String = row.try_get("", "s1")?;
            let s2: String = row.try_get("", "s2")?;
            let s3: String = row.try_get("", "s3")?;
            let s4: Option<String> = row.try_get("", "s4")?;
            let s5: Option<String> = row.try_get("", "s5")?;
            let n: i32 = row.try_get("", "n")?;
            let t1: DateTime<Utc> = row.try_get("", "t1")?;
            let t2: Option<DateTime<Utc>> = row.try_get("", "t2")?;
            if part == 0 {
                letters.extend(crate::letters::letter_view(&s2, s1, &s3, s4, t1, t2, n, s5));
            } else {
                steps.push(step::Model {
                    id,
                    request_id: r.id.clone(),
                    step: s1,
                    attempt: n,
                    worker: s2,
                    started_at: t1,
                    finished_at: t2,
                    outcome: s3,
                    error: s5,
                });
            }
        }
        Ok((letters, step_views(r, &steps)))
    }

    /// Every row of the step log of a request, in order (for tests and
    /// operators).
    pub async fn step_log(&self, request_id: &str) -> Result<Vec<StepRun>, Error> {
        Ok(step::Entity::find()
            .filter(step::Column::RequestId.eq(request_id))
            .order_by_asc(step::Column::Id)
            .all(self.db())
            .await?
            .into_iter()
            .map(|m| StepRun {
                request_id: m.request_id,
                step: m.step,
                attempt: u32::try_from(m.attempt).unwrap_or(0),
                worker: m.worker,
                outcome: m.outcome,
                error: m.error,
            })
            .collect())
    }
}

/// The steps of request `r` from its step log's rows (in order).
fn step_views(r: &Request, rows: &[step::Model]) -> Vec<StepView> {
    let current = step_for(r.kind, r.state);
    steps_of(r.kind)
        .iter()
        .map(|name| {
            let mine: Vec<&step::Model> = rows.iter().filter(|x| x.step == *name).collect();
            let last = mine.last();
            let done = mine.iter().find(|x| x.outcome == "done");
            let last_error = mine.iter().rev().find_map(|x| x.error.clone());
            let status = match (done, last.map(|x| x.outcome.as_str())) {
                (Some(_), _) => StepStatus::Done,
                (None, None) => StepStatus::Pending,
                (None, Some("running")) => StepStatus::Running,
                (None, Some(_)) if current == Some(*name) && r.next_attempt_at.is_some() => {
                    StepStatus::WaitingRetry
                }
                (None, Some(_)) if current == Some(*name) => StepStatus::Failed,
                (None, Some(_)) => StepStatus::Pending,
            };
            StepView {
                name,
                status,
                attempts: u32::try_from(mine.len()).unwrap_or(u32::MAX),
                last_error,
                next_attempt_at: (status == StepStatus::WaitingRetry)
                    .then_some(r.next_attempt_at)
                    .flatten(),
                done_at: done.and_then(|x| x.finished_at),
            }
        })
        .collect()
}
