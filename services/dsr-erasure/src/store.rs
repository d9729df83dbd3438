//! Where erasure keeps its evidence: plans, receipts (the signed bytes as
//! the systems sent them), legal holds and tombstones.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder, SqlErr,
};
use serde::{Deserialize, Serialize};

use crate::entity::{hold, notification, plan, receipt, sweep, tombstone};
use crate::model::{EraseOrder, Plan, Receipt, RecordOutcome, RecordRef, StoreResult};

/// A receipt as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredReceipt {
    /// Its id.
    pub id: String,
    /// The request.
    pub request_id: String,
    /// The system.
    pub system_id: String,
    /// "erase", "deferred:<date>", "replay:<id>".
    pub phase: String,
    /// The receipt.
    pub receipt: Receipt,
    /// Verified when stored.
    pub verified: bool,
    /// Stored at.
    pub received_at: DateTime<Utc>,
}

/// What a hold covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldScope {
    /// A person, by the keyed hash of one identity.
    Person(String),
    /// One record of one system.
    Record {
        /// The system.
        system_id: String,
        /// The record.
        record: RecordRef,
    },
}

/// A legal hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    /// Id.
    pub id: String,
    /// The controller.
    pub controller: String,
    /// What it covers.
    pub scope: HoldScope,
    /// Why.
    pub ground: String,
    /// Until when.
    pub until: Option<NaiveDate>,
    /// Placed by.
    pub placed_by: String,
    /// Placed at.
    pub placed_at: DateTime<Utc>,
    /// Lifted at.
    pub lifted_at: Option<DateTime<Utc>>,
    /// Lifted by.
    pub lifted_by: Option<String>,
}

/// A tombstone: what one erasure erased, without the person's identities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// Id.
    pub id: String,
    /// The request.
    pub request_id: String,
    /// The phase.
    pub phase: String,
    /// The controller.
    pub controller: String,
    /// Keyed hashes of the person's identities.
    pub identity_hashes: Vec<String>,
    /// Per system, the order that was carried out.
    pub orders: BTreeMap<String, EraseOrder>,
    /// When.
    pub erased_at: DateTime<Utc>,
}

/// An Art. 19 notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// Id.
    pub id: String,
    /// The request.
    pub request_id: String,
    /// The recipient.
    pub recipient_id: String,
    /// Its name.
    pub recipient_name: String,
    /// Its country.
    pub country: String,
    /// What it is told.
    pub action: String,
    /// Through its data system (with the receipt), else a task.
    pub through: Option<(String, String)>,
    /// For a task: due.
    pub due_on: Option<NaiveDate>,
    /// Done at.
    pub done_at: Option<DateTime<Utc>>,
    /// Done by.
    pub done_by: Option<String>,
    /// Whether it may go to the recipient (the transfer registry's verdict
    /// when it was recorded).
    pub transfer: TransferVerdict,
    /// When not lawful: the registry's blocking reasons.
    pub transfer_reasons: Vec<String>,
    /// When a case handler approved an unlawful one: who, and why.
    pub approval: Option<(String, String)>,
}

/// Whether a notification may go to its recipient (Art. 44-49).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransferVerdict {
    /// The transfer rests on a lawful basis (or stays in the EEA).
    Lawful,
    /// Not lawful: refused, nothing is sent.
    Refused,
    /// Not lawful: held until a case handler approves it.
    AwaitingApproval,
    /// Not lawful, approved by a case handler (with a note): a task.
    Approved,
}

impl TransferVerdict {
    /// Its name in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lawful => "lawful",
            Self::Refused => "refused",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Approved => "approved",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "lawful" => Self::Lawful,
            "refused" => Self::Refused,
            "awaiting_approval" => Self::AwaitingApproval,
            "approved" => Self::Approved,
            _ => return Err(StoreError::Corrupt("notification transfer")),
        })
    }

    /// Whether the recipient may be told (a task may be done).
    pub fn may_send(self) -> bool {
        matches!(self, Self::Lawful | Self::Approved)
    }
}

/// Where one system's part of a sweep stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SweptState {
    /// Under way.
    #[default]
    Running,
    /// Every expired record handled, receipts stored.
    Done,
    /// Stopped on a failure (`error`).
    Failed,
}

/// What started a sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepTrigger {
    /// A caller (StartSweep, `dsr sweep`).
    Manual,
    /// The daily schedule.
    Schedule,
}

impl SweepTrigger {
    /// Its name in the store, the logs and the wire's deprecated string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Manual => "manual",
            Self::Schedule => "schedule",
        }
    }

    /// From its name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "manual" => Some(Self::Manual),
            "schedule" => Some(Self::Schedule),
            _ => None,
        }
    }
}

/// One system's part of a sweep.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweptSystem {
    /// The system.
    pub system_id: String,
    /// Where it stands.
    pub state: SweptState,
    /// Records handled so far.
    pub done: u64,
    /// Records removed.
    pub removed: u64,
    /// Receipts stored.
    pub receipt_ids: Vec<String>,
    /// The failure.
    pub error: Option<String>,
}

/// A retention sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sweep {
    /// Id.
    pub id: String,
    /// What started it.
    pub trigger: SweepTrigger,
    /// A dry run.
    pub dry_run: bool,
    /// Per system.
    pub systems: Vec<SweptSystem>,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Who started it by hand: the caller's subject (empty: the schedule).
    pub started_by: String,
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Not there.
    #[error("not found")]
    NotFound,
    /// The database.
    #[error("database: {0}")]
    Db(#[from] DbErr),
    /// A stored document does not parse.
    #[error("stored {0} is corrupt")]
    Corrupt(&'static str),
}

#[derive(Serialize, Deserialize)]
struct Summary {
    system_id: String,
    request_id: String,
    idempotency_key: String,
    stores: Vec<StoreResult>,
    #[serde(default)]
    records: Vec<RecordOutcome>,
}

/// The store.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// The time receipts are received and holds placed and lifted at.
    clock: dsr_domain::clock::Clock,
}

fn unique_violation(e: &DbErr) -> bool {
    matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

impl Store {
    /// Over `db` (migrated).
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            clock: dsr_domain::clock::Clock::system(),
        }
    }

    /// The same store on `clock` (the eraser's).
    pub fn with_clock(mut self, clock: dsr_domain::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Saves a plan unless one exists for its request; returns the one
    /// stored.
    pub async fn save_plan(&self, p: &Plan) -> Result<Plan, StoreError> {
        let am = plan::ActiveModel {
            request_id: Set(p.request_id.clone()),
            controller: Set(p.controller.clone()),
            created_at: Set(p.created_at),
            policy_version: Set(p.policy_version.clone()),
            body: Set(serde_json::to_string(p).expect("serialisable plan")),
        };
        match am.insert(&self.db).await {
            Ok(_) => Ok(p.clone()),
            Err(e) if unique_violation(&e) => self.plan(&p.request_id).await,
            Err(e) => Err(e.into()),
        }
    }

    /// A request's plan.
    pub async fn plan(&self, request_id: &str) -> Result<Plan, StoreError> {
        let m = plan::Entity::find_by_id(request_id.to_owned())
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)?;
        serde_json::from_str(&m.body).map_err(|_| StoreError::Corrupt("plan"))
    }

    fn receipt_from(m: receipt::Model) -> Result<StoredReceipt, StoreError> {
        let s: Summary =
            serde_json::from_str(&m.summary).map_err(|_| StoreError::Corrupt("receipt"))?;
        Ok(StoredReceipt {
            receipt: Receipt {
                payload: hex::decode(&m.payload).map_err(|_| StoreError::Corrupt("receipt"))?,
                key_id: m.key_id,
                signature: hex::decode(&m.signature).map_err(|_| StoreError::Corrupt("receipt"))?,
                system_id: s.system_id,
                request_id: s.request_id,
                idempotency_key: s.idempotency_key,
                stores: s.stores,
                retained: u64::try_from(m.retained).unwrap_or(0),
                records: s.records,
            },
            id: m.id,
            request_id: m.request_id,
            system_id: m.system_id,
            phase: m.phase,
            verified: m.verified,
            received_at: m.received_at,
        })
    }

    /// The receipt stored under an idempotency key.
    pub async fn receipt_by_key(&self, key: &str) -> Result<Option<StoredReceipt>, StoreError> {
        receipt::Entity::find()
            .filter(receipt::Column::IdempotencyKey.eq(key))
            .one(&self.db)
            .await?
            .map(Self::receipt_from)
            .transpose()
    }

    /// Stores a verified receipt (once per idempotency key: a second store
    /// of the same key returns the first).
    pub async fn save_receipt(
        &self,
        request_id: &str,
        phase: &str,
        r: &Receipt,
    ) -> Result<StoredReceipt, StoreError> {
        let summary = Summary {
            system_id: r.system_id.clone(),
            request_id: r.request_id.clone(),
            idempotency_key: r.idempotency_key.clone(),
            stores: r.stores.clone(),
            records: r.records.clone(),
        };
        let am = receipt::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            request_id: Set(request_id.to_owned()),
            system_id: Set(r.system_id.clone()),
            phase: Set(phase.to_owned()),
            idempotency_key: Set(r.idempotency_key.clone()),
            payload: Set(hex::encode(&r.payload)),
            key_id: Set(r.key_id.clone()),
            signature: Set(hex::encode(&r.signature)),
            verified: Set(true),
            summary: Set(serde_json::to_string(&summary).expect("serialisable")),
            retained: Set(i64::try_from(r.retained).unwrap_or(i64::MAX)),
            received_at: Set(self.clock.now()),
        };
        match am.insert(&self.db).await {
            Ok(m) => Self::receipt_from(m),
            Err(e) if unique_violation(&e) => self
                .receipt_by_key(&r.idempotency_key)
                .await?
                .ok_or(StoreError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    /// A request's receipts, oldest first.
    pub async fn receipts(&self, request_id: &str) -> Result<Vec<StoredReceipt>, StoreError> {
        receipt::Entity::find()
            .filter(receipt::Column::RequestId.eq(request_id))
            .order_by_asc(receipt::Column::ReceivedAt)
            .order_by_asc(receipt::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Self::receipt_from)
            .collect()
    }

    fn hold_from(m: hold::Model) -> Result<Hold, StoreError> {
        let scope = match (m.scope.as_str(), m.subject_hash, m.system_id) {
            ("person", Some(h), _) => HoldScope::Person(h),
            ("record", _, Some(system_id)) => HoldScope::Record {
                system_id,
                record: RecordRef {
                    store: m.store.unwrap_or_default(),
                    key: m.record_key.unwrap_or_default(),
                },
            },
            _ => return Err(StoreError::Corrupt("hold")),
        };
        Ok(Hold {
            id: m.id,
            controller: m.controller,
            scope,
            ground: m.ground,
            until: m.until,
            placed_by: m.placed_by,
            placed_at: m.placed_at,
            lifted_at: m.lifted_at,
            lifted_by: m.lifted_by,
        })
    }

    /// Places a hold.
    pub async fn place_hold(
        &self,
        controller: &str,
        scope: HoldScope,
        ground: &str,
        until: Option<NaiveDate>,
        by: &str,
    ) -> Result<Hold, StoreError> {
        let (name, subject, system, store, key) = match scope {
            HoldScope::Person(h) => ("person", Some(h), None, None, None),
            HoldScope::Record { system_id, record } => (
                "record",
                None,
                Some(system_id),
                Some(record.store),
                Some(record.key),
            ),
        };
        let m = hold::ActiveModel {
            id: Set(uuid::Uuid::new_v4().to_string()),
            controller: Set(controller.to_owned()),
            scope: Set(name.to_owned()),
            subject_hash: Set(subject),
            system_id: Set(system),
            store: Set(store),
            record_key: Set(key),
            ground: Set(ground.to_owned()),
            until: Set(until),
            placed_by: Set(by.to_owned()),
            placed_at: Set(self.clock.now()),
            lifted_at: Set(None),
            lifted_by: Set(None),
        }
        .insert(&self.db)
        .await?;
        Self::hold_from(m)
    }

    /// Lifts a hold (lifting a lifted hold changes nothing).
    pub async fn lift_hold(&self, id: &str, by: &str) -> Result<Hold, StoreError> {
        let m = hold::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)?;
        if m.lifted_at.is_some() {
            return Self::hold_from(m);
        }
        let mut am: hold::ActiveModel = m.into();
        am.lifted_at = Set(Some(self.clock.now()));
        am.lifted_by = Set(Some(by.to_owned()));
        Self::hold_from(am.update(&self.db).await?)
    }

    /// The holds: standing ones (not lifted, not past their date) unless
    /// `include_lifted`.
    pub async fn holds(
        &self,
        include_lifted: bool,
        today: NaiveDate,
    ) -> Result<Vec<Hold>, StoreError> {
        let mut q = hold::Entity::find().order_by_asc(hold::Column::PlacedAt);
        if !include_lifted {
            q = q.filter(hold::Column::LiftedAt.is_null());
        }
        let all: Vec<Hold> = q
            .all(&self.db)
            .await?
            .into_iter()
            .map(Self::hold_from)
            .collect::<Result<_, _>>()?;
        Ok(all
            .into_iter()
            .filter(|h| include_lifted || h.until.is_none_or(|u| u >= today))
            .collect())
    }

    /// Records a tombstone (once per request and phase).
    pub async fn save_tombstone(&self, t: &Tombstone) -> Result<(), StoreError> {
        let am = tombstone::ActiveModel {
            id: Set(t.id.clone()),
            request_id: Set(t.request_id.clone()),
            phase: Set(t.phase.clone()),
            controller: Set(t.controller.clone()),
            identity_hashes: Set(serde_json::to_string(&t.identity_hashes).expect("serialisable")),
            orders: Set(serde_json::to_string(&t.orders).expect("serialisable")),
            erased_at: Set(t.erased_at),
        };
        match am.insert(&self.db).await {
            Ok(_) => Ok(()),
            Err(e) if unique_violation(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Tombstones of erasures completed at or after `since`, oldest first.
    pub async fn tombstones_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<Tombstone>, StoreError> {
        tombstone::Entity::find()
            .filter(tombstone::Column::ErasedAt.gte(since))
            .order_by_asc(tombstone::Column::ErasedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| {
                Ok(Tombstone {
                    identity_hashes: serde_json::from_str(&m.identity_hashes)
                        .map_err(|_| StoreError::Corrupt("tombstone"))?,
                    orders: serde_json::from_str(&m.orders)
                        .map_err(|_| StoreError::Corrupt("tombstone"))?,
                    id: m.id,
                    request_id: m.request_id,
                    phase: m.phase,
                    controller: m.controller,
                    erased_at: m.erased_at,
                })
            })
            .collect()
    }

    fn notification_from(m: notification::Model) -> Result<Notification, StoreError> {
        Ok(Notification {
            transfer: TransferVerdict::parse(&m.transfer)?,
            transfer_reasons: m
                .transfer_reasons
                .as_deref()
                .map(|r| r.lines().map(str::to_owned).collect())
                .unwrap_or_default(),
            approval: m.approved_by.zip(m.approval_note),
            through: m.system_id.zip(m.receipt_id),
            id: m.id,
            request_id: m.request_id,
            recipient_id: m.recipient_id,
            recipient_name: m.recipient_name,
            country: m.country,
            action: m.action,
            due_on: m.due_on,
            done_at: m.done_at,
            done_by: m.done_by,
        })
    }

    /// Records the notifications, each unless one exists for its request,
    /// recipient and action; in one statement.
    pub async fn save_notifications(&self, ns: &[Notification]) -> Result<(), StoreError> {
        if ns.is_empty() {
            return Ok(());
        }
        let rows = ns.iter().map(|n| {
            let (system, receipt) = n.through.clone().unzip();
            notification::ActiveModel {
                id: Set(n.id.clone()),
                request_id: Set(n.request_id.clone()),
                recipient_id: Set(n.recipient_id.clone()),
                recipient_name: Set(n.recipient_name.clone()),
                country: Set(n.country.clone()),
                action: Set(n.action.clone()),
                channel: Set(if n.through.is_some() {
                    "data_system"
                } else {
                    "task"
                }
                .into()),
                system_id: Set(system),
                receipt_id: Set(receipt),
                due_on: Set(n.due_on),
                done_at: Set(n.done_at),
                done_by: Set(n.done_by.clone()),
                transfer: Set(n.transfer.as_str().to_owned()),
                transfer_reasons: Set(
                    (!n.transfer_reasons.is_empty()).then(|| n.transfer_reasons.join("\n"))
                ),
                approved_by: Set(n.approval.as_ref().map(|a| a.0.clone())),
                approval_note: Set(n.approval.as_ref().map(|a| a.1.clone())),
            }
        });
        notification::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::columns([
                    notification::Column::RequestId,
                    notification::Column::RecipientId,
                    notification::Column::Action,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// A request's notifications, by recipient and action.
    pub async fn notifications(&self, request_id: &str) -> Result<Vec<Notification>, StoreError> {
        notification::Entity::find()
            .filter(notification::Column::RequestId.eq(request_id))
            .order_by_asc(notification::Column::RecipientId)
            .order_by_asc(notification::Column::Action)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Self::notification_from)
            .collect()
    }

    /// One notification.
    pub async fn notification(&self, id: &str) -> Result<Notification, StoreError> {
        Self::notification_from(
            notification::Entity::find_by_id(id.to_owned())
                .one(&self.db)
                .await?
                .ok_or(StoreError::NotFound)?,
        )
    }

    /// Marks a task done at `at` (done tasks stay as they were).
    pub async fn complete_notification(
        &self,
        id: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<Notification, StoreError> {
        let m = notification::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)?;
        if m.done_at.is_some() {
            return Self::notification_from(m);
        }
        let mut am: notification::ActiveModel = m.into();
        am.done_at = Set(Some(at));
        am.done_by = Set(Some(by.to_owned()));
        Self::notification_from(am.update(&self.db).await?)
    }

    /// Records a case handler's approval of a notification held for one:
    /// it becomes a task due on `due_on`. Only a notification awaiting
    /// approval changes; the others are returned as they are.
    pub async fn approve_notification(
        &self,
        id: &str,
        by: &str,
        note: &str,
        due_on: NaiveDate,
    ) -> Result<Notification, StoreError> {
        let m = notification::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .ok_or(StoreError::NotFound)?;
        if m.transfer != TransferVerdict::AwaitingApproval.as_str() {
            return Self::notification_from(m);
        }
        let mut am: notification::ActiveModel = m.into();
        am.transfer = Set(TransferVerdict::Approved.as_str().to_owned());
        am.approved_by = Set(Some(by.to_owned()));
        am.approval_note = Set(Some(note.to_owned()));
        am.due_on = Set(Some(due_on));
        Self::notification_from(am.update(&self.db).await?)
    }

    fn sweep_from(m: sweep::Model) -> Result<Sweep, StoreError> {
        Ok(Sweep {
            systems: serde_json::from_str(&m.systems).map_err(|_| StoreError::Corrupt("sweep"))?,
            id: m.id,
            trigger: SweepTrigger::parse(&m.trigger).ok_or(StoreError::Corrupt("sweep"))?,
            dry_run: m.dry_run,
            started_at: m.started_at,
            finished_at: m.finished_at,
            started_by: m.started_by,
        })
    }

    /// Records a new sweep; `None` when one with this id exists (another
    /// replica took the scheduled slot).
    pub async fn create_sweep(&self, s: &Sweep) -> Result<Option<Sweep>, StoreError> {
        let am = sweep::ActiveModel {
            id: Set(s.id.clone()),
            trigger: Set(s.trigger.as_str().to_owned()),
            dry_run: Set(s.dry_run),
            systems: Set(serde_json::to_string(&s.systems).expect("serialisable")),
            started_at: Set(s.started_at),
            finished_at: Set(s.finished_at),
            started_by: Set(s.started_by.clone()),
        };
        match am.insert(&self.db).await {
            Ok(m) => Ok(Some(Self::sweep_from(m)?)),
            Err(e) if unique_violation(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Saves a sweep's progress (its runner is its only writer).
    pub async fn save_sweep(&self, s: &Sweep) -> Result<(), StoreError> {
        sweep::Entity::update_many()
            .col_expr(
                sweep::Column::Systems,
                serde_json::to_string(&s.systems)
                    .expect("serialisable")
                    .into(),
            )
            .col_expr(sweep::Column::FinishedAt, s.finished_at.into())
            .filter(sweep::Column::Id.eq(s.id.as_str()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// A sweep.
    pub async fn sweep(&self, id: &str) -> Result<Sweep, StoreError> {
        Self::sweep_from(
            sweep::Entity::find_by_id(id.to_owned())
                .one(&self.db)
                .await?
                .ok_or(StoreError::NotFound)?,
        )
    }

    /// The latest sweeps, newest first.
    pub async fn sweeps(&self, limit: u64) -> Result<Vec<Sweep>, StoreError> {
        use sea_orm::QuerySelect as _;
        sweep::Entity::find()
            .order_by_desc(sweep::Column::StartedAt)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(Self::sweep_from)
            .collect()
    }
}
