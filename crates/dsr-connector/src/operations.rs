//! Operations and the idempotency ledger, kept in the system's own
//! database so a restart neither loses a receipt nor repeats a write.
//!
//! A write first [`Operations::claim`]s its idempotency key with a digest of
//! the instruction: a new key starts an operation; the same key with the same
//! digest returns the existing operation (its receipt, byte for byte); the
//! same key with another digest is refused. A failed operation may be run
//! again under the same key.
//!
//! A claim holds a lease: while it runs, the operation belongs to the
//! process that claimed it. A pending or running operation whose lease has
//! lapsed (that process was killed or crashed) is taken over by the next
//! claim of the same key, which runs the work again: the work commits in
//! one transaction with its receipt ([`Operations::succeed_in`]), so a
//! stopped run left nothing half done.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::{
    ActiveModelTrait,
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, SqlErr,
    TransactionTrait,
    sea_query::{Expr, ExprTrait as _},
};
use tokio::sync::watch;

use crate::entity::{idempotency, operation};
use crate::signing::Signed;

/// Where an operation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpState {
    /// Accepted.
    Pending,
    /// Under way.
    Running,
    /// Done, with a receipt.
    Succeeded,
    /// Failed.
    Failed,
}

impl OpState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self, Error> {
        match s {
            "pending" => Ok(Self::Pending),
            "running" => Ok(Self::Running),
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            _ => Err(Error::Storage(DbErr::Custom(
                "stored operation has an unknown state".into(),
            ))),
        }
    }

    /// Whether the operation has ended.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// An operation as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Id.
    pub id: String,
    /// What it does, e.g. "erase".
    pub kind: String,
    /// State.
    pub state: OpState,
    /// Records handled.
    pub done: u64,
    /// Records in all.
    pub total: u64,
    /// The signed receipt once it succeeded.
    pub receipt: Option<Signed>,
    /// Why it failed.
    pub error: Option<String>,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Ended.
    pub ended_at: Option<DateTime<Utc>>,
}

/// Why the ledger refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The key was used for a different instruction.
    #[error("idempotency key reused with a different instruction")]
    KeyReused,
    /// No such operation.
    #[error("operation not found")]
    NotFound,
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[from] DbErr),
}

/// The outcome of a claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// A new operation: do the work.
    New(String),
    /// The key was seen with this instruction: answer with this operation.
    Existing(Operation),
    /// The key's earlier run failed, or stopped without ending (its lease
    /// lapsed): do the work again under this id.
    Retry(String),
}

/// How long a claim holds before another caller may take the operation
/// over, unless the work ends or reports progress first.
pub const DEFAULT_LEASE: TimeDelta = TimeDelta::seconds(30);

/// Operations and their ledger.
#[derive(Clone, Debug)]
pub struct Operations {
    db: DatabaseConnection,
    watchers: Arc<Mutex<HashMap<String, watch::Sender<Operation>>>>,
    lease: TimeDelta,
}

fn from_model(m: operation::Model) -> Result<Operation, Error> {
    let receipt = match (m.receipt_payload, m.receipt_key_id, m.receipt_signature) {
        (Some(payload), Some(key_id), Some(signature)) => Some(Signed {
            payload,
            key_id,
            signature,
        }),
        _ => None,
    };
    Ok(Operation {
        state: OpState::parse(&m.state)?,
        id: m.id,
        kind: m.kind,
        done: u64::try_from(m.done).unwrap_or(0),
        total: u64::try_from(m.total).unwrap_or(0),
        receipt,
        error: m.error,
        started_at: m.started_at,
        ended_at: m.ended_at,
    })
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Operations {
    /// Operations over `db` (the connector's migrations applied).
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            watchers: Arc::new(Mutex::new(HashMap::new())),
            lease: DEFAULT_LEASE,
        }
    }

    /// The same ledger with claims holding `lease`.
    #[must_use]
    pub fn with_lease(mut self, lease: TimeDelta) -> Self {
        self.lease = lease;
        self
    }

    /// Takes over `op` when it stopped without ending (pending or running,
    /// its lease lapsed): `true` when this caller now holds it. One caller
    /// wins when several try at once.
    async fn take_over(&self, op: &Operation) -> Result<bool, Error> {
        if op.state.is_final() {
            return Ok(false);
        }
        let now = Utc::now();
        let taken = operation::Entity::update_many()
            .col_expr(
                operation::Column::LeaseUntil,
                Expr::value(Some(now + self.lease)),
            )
            .col_expr(
                operation::Column::State,
                Expr::value(OpState::Pending.as_str()),
            )
            .filter(operation::Column::Id.eq(op.id.clone()))
            .filter(
                operation::Column::State
                    .is_in([OpState::Pending.as_str(), OpState::Running.as_str()]),
            )
            .filter(
                operation::Column::LeaseUntil
                    .is_null()
                    .or(operation::Column::LeaseUntil.lt(now)),
            )
            .exec(&self.db)
            .await?;
        if taken.rows_affected == 1 {
            tracing::warn!(
                operation = %op.id,
                "an operation stopped without ending (its lease lapsed): taken over and run again"
            );
        }
        Ok(taken.rows_affected == 1)
    }

    /// Claims `key` for an instruction with `digest` (hex SHA-256).
    pub async fn claim(&self, key: &str, digest: &str, kind: &str) -> Result<Claim, Error> {
        for _ in 0..5 {
            let txn = self.db.begin().await?;
            let seen = match idempotency::Entity::find_by_id(key.to_owned())
                .one(&txn)
                .await
            {
                Ok(seen) => seen,
                Err(e) if dsr_store::is_busy(&e) => {
                    let _ = txn.rollback().await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if let Some(seen) = seen {
                txn.commit().await?;
                if seen.digest != digest {
                    return Err(Error::KeyReused);
                }
                let op = self.get(&seen.operation_id).await?;
                return Ok(
                    if op.state == OpState::Failed || self.take_over(&op).await? {
                        Claim::Retry(op.id)
                    } else {
                        Claim::Existing(op)
                    },
                );
            }
            let id = uuid::Uuid::new_v4().to_string();
            let now = Utc::now();
            let inserted = async {
                operation::ActiveModel {
                    id: Set(id.clone()),
                    kind: Set(kind.to_owned()),
                    state: Set(OpState::Pending.as_str().to_owned()),
                    done: Set(0),
                    total: Set(0),
                    receipt_payload: Set(None),
                    receipt_key_id: Set(None),
                    receipt_signature: Set(None),
                    error: Set(None),
                    started_at: Set(now),
                    ended_at: Set(None),
                    lease_until: Set(Some(now + self.lease)),
                }
                .insert(&txn)
                .await?;
                idempotency::ActiveModel {
                    key: Set(key.to_owned()),
                    digest: Set(digest.to_owned()),
                    operation_id: Set(id.clone()),
                    created_at: Set(now),
                }
                .insert(&txn)
                .await
            }
            .await;
            match inserted {
                Ok(_) => match txn.commit().await {
                    Ok(()) => return Ok(Claim::New(id)),
                    Err(e) if dsr_store::is_busy(&e) => {}
                    Err(e) => return Err(e.into()),
                },
                // Another caller claimed the key at the same moment: read
                // theirs. Or, on SQLite, another connection wrote since this
                // transaction read (a caller cut short whose work goes on):
                // start again from a fresh read.
                Err(e)
                    if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
                        || dsr_store::is_busy(&e) =>
                {
                    let _ = txn.rollback().await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Storage(DbErr::Custom(
            "idempotency claim did not settle".into(),
        )))
    }

    /// One operation.
    pub async fn get(&self, id: &str) -> Result<Operation, Error> {
        let m = operation::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .ok_or(Error::NotFound)?;
        from_model(m)
    }

    /// Marks the operation running with `total` records (its lease
    /// renewed).
    pub async fn start(&self, id: &str, total: u64) -> Result<Operation, Error> {
        let lease = Utc::now() + self.lease;
        self.update(id, move |m| {
            m.state = Set(OpState::Running.as_str().to_owned());
            m.total = Set(count(total));
            m.done = Set(0);
            m.error = Set(None);
            m.ended_at = Set(None);
            m.lease_until = Set(Some(lease));
        })
        .await
    }

    /// Records progress (and renews the lease: the work is alive).
    pub async fn progress(&self, id: &str, done: u64) -> Result<Operation, Error> {
        let lease = Utc::now() + self.lease;
        self.update(id, move |m| {
            m.done = Set(count(done));
            m.lease_until = Set(Some(lease));
        })
        .await
    }

    /// Ends the operation with its signed receipt inside `txn`, the
    /// transaction that did the work: both commit or neither. Call
    /// [`Operations::published`] once `txn` has committed.
    pub async fn succeed_in<C: ConnectionTrait>(
        &self,
        txn: &C,
        id: &str,
        done: u64,
        receipt: Signed,
    ) -> Result<Operation, Error> {
        let m = operation::Entity::find_by_id(id.to_owned())
            .one(txn)
            .await?
            .ok_or(Error::NotFound)?;
        let mut am: operation::ActiveModel = m.into();
        am.state = Set(OpState::Succeeded.as_str().to_owned());
        am.done = Set(count(done));
        am.receipt_payload = Set(Some(receipt.payload));
        am.receipt_key_id = Set(Some(receipt.key_id));
        am.receipt_signature = Set(Some(receipt.signature));
        am.ended_at = Set(Some(Utc::now()));
        am.lease_until = Set(None);
        from_model(am.update(txn).await?)
    }

    /// Tells the operation's watchers its state (after a commit).
    pub fn published(&self, op: &Operation) {
        let watchers = self
            .watchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = watchers.get(&op.id) {
            tx.send_replace(op.clone());
        }
    }

    /// Ends the operation with its signed receipt.
    pub async fn succeed(&self, id: &str, done: u64, receipt: Signed) -> Result<Operation, Error> {
        self.update(id, move |m| {
            m.state = Set(OpState::Succeeded.as_str().to_owned());
            m.done = Set(count(done));
            m.receipt_payload = Set(Some(receipt.payload.clone()));
            m.receipt_key_id = Set(Some(receipt.key_id.clone()));
            m.receipt_signature = Set(Some(receipt.signature.clone()));
            m.ended_at = Set(Some(Utc::now()));
            m.lease_until = Set(None);
        })
        .await
    }

    /// Ends the operation as failed; `error` must hold no personal data.
    pub async fn fail(&self, id: &str, error: &str) -> Result<Operation, Error> {
        let error = error.to_owned();
        self.update(id, move |m| {
            m.state = Set(OpState::Failed.as_str().to_owned());
            m.error = Set(Some(error.clone()));
            m.ended_at = Set(Some(Utc::now()));
            m.lease_until = Set(None);
        })
        .await
    }

    async fn update(
        &self,
        id: &str,
        f: impl FnOnce(&mut operation::ActiveModel),
    ) -> Result<Operation, Error> {
        let m = operation::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .ok_or(Error::NotFound)?;
        let mut am: operation::ActiveModel = m.into();
        f(&mut am);
        let op = from_model(am.update(&self.db).await?)?;
        self.published(&op);
        Ok(op)
    }

    /// A receiver of the operation's states, starting with the current one.
    pub async fn watch(&self, id: &str) -> Result<watch::Receiver<Operation>, Error> {
        let current = self.get(id).await?;
        let mut watchers = self
            .watchers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        watchers.retain(|_, tx| tx.receiver_count() > 0);
        let tx = watchers
            .entry(id.to_owned())
            .or_insert_with(|| watch::channel(current.clone()).0);
        Ok(tx.subscribe())
    }
}
