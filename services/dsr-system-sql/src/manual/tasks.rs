//! The task table in the manual connector's own database, and its
//! migration (recorded in `seaql_migrations_manual`, beside the connector's
//! ledger).
//!
//! A task's row keeps what the lists and the background job filter on in
//! columns, and what it asks and what was answered (personal data: the
//! identities searched for, the records reported) in a JSON body. Answered
//! tasks are deleted after the manifest's `keep_answered_days`.

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait,
    QueryFilter, QueryOrder,
};
use serde::{Deserialize, Serialize};

/// What a task asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Search for the person.
    Locate,
    /// Erase records.
    Erase,
    /// Correct fields.
    Rectify,
    /// Restrict processing.
    Restrict,
    /// Lift a restriction.
    LiftRestriction,
}

impl Kind {
    /// The stored name (and the texts' message name).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Locate => "locate",
            Self::Erase => "erase",
            Self::Rectify => "rectify",
            Self::Restrict => "restrict",
            Self::LiftRestriction => "lift_restriction",
        }
    }

    fn parse(s: &str) -> Result<Self, DbErr> {
        Ok(match s {
            "locate" => Self::Locate,
            "erase" => Self::Erase,
            "rectify" => Self::Rectify,
            "restrict" => Self::Restrict,
            "lift_restriction" => Self::LiftRestriction,
            other => return Err(DbErr::Custom(format!("unknown task kind {other}"))),
        })
    }
}

/// A record as the vendor reports it, or as a write task lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The store.
    pub store: String,
    /// The record's key.
    pub key: String,
    /// (field, value) pairs.
    pub fields: Vec<(String, String)>,
}

/// A record kept after an erasure task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// The store.
    pub store: String,
    /// The key.
    pub key: String,
    /// The legal ground.
    pub legal_ground: String,
}

/// A record the mesh orders kept at an erasure (a retention period or a
/// legal hold): the vendor keeps it, restricted to storage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The store.
    pub store: String,
    /// The key.
    pub key: String,
    /// The legal ground.
    pub legal_ground: String,
    /// Until when.
    pub until: Option<NaiveDate>,
    /// "retention" or "hold".
    pub reason: String,
}

/// Who attested an answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attested {
    /// Their name.
    pub name: String,
    /// How to reach them.
    pub contact: String,
    /// When.
    pub at: DateTime<Utc>,
    /// What they stated.
    pub statement: String,
}

/// The instruction a write task answers, to sign its receipt later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    /// The due date of the request.
    pub due_date: NaiveDate,
    /// Issued.
    pub issued_at: DateTime<Utc>,
    /// Expires.
    pub expires_at: DateTime<Utc>,
    /// The idempotency key.
    pub idempotency_key: String,
    /// The instruction's digest.
    pub digest: Vec<u8>,
    /// For Restrict: the basis ("request" or "hold").
    pub basis: Option<String>,
}

/// What a task asks and, once answered, the answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    /// Locate: the identities, as (type, value).
    pub identities: Vec<(String, String)>,
    /// Writes: the records (Rectify: with the new values). Locate,
    /// answered: the records found.
    pub records: Vec<TaskRecord>,
    /// Writes: every record of the instruction, in its order.
    pub asked: Vec<TaskRecord>,
    /// Erase: records the mesh orders kept.
    pub orders: Vec<Order>,
    /// Writes: the instruction.
    pub issued: Option<Issued>,
    /// Locate, answered: nothing found.
    pub not_found: bool,
    /// Writes, answered: records acted on.
    pub done: u64,
    /// Erase, answered: records kept.
    pub kept: Vec<Kept>,
    /// Answered: who attested it.
    pub attested: Option<Attested>,
}

/// One task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// Id.
    pub id: String,
    /// The system.
    pub system_id: String,
    /// What is asked.
    pub kind: Kind,
    /// Answered yet.
    pub answered: bool,
    /// The request.
    pub request_id: String,
    /// The controller.
    pub controller: String,
    /// Locate: the identities' digest; writes: the operation id.
    pub lookup: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Due.
    pub due_at: DateTime<Utc>,
    /// Reminders sent.
    pub reminders_sent: u32,
    /// Escalated.
    pub escalated_at: Option<DateTime<Utc>>,
    /// Answered.
    pub answered_at: Option<DateTime<Utc>>,
    /// The rest.
    pub body: Body,
}

pub(crate) mod entity {
    #![allow(unreachable_pub)]
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "dsr_manual_task")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub system_id: String,
        pub kind: String,
        pub answered: bool,
        pub request_id: String,
        pub controller: String,
        pub lookup: String,
        pub created_ms: i64,
        pub due_ms: i64,
        pub reminders_sent: i32,
        pub escalated_ms: Option<i64>,
        pub answered_ms: Option<i64>,
        pub body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use entity::{ActiveModel, Column, Entity};

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn from_model(m: entity::Model) -> Result<Task, DbErr> {
    Ok(Task {
        kind: Kind::parse(&m.kind)?,
        body: serde_json::from_str(&m.body).map_err(|e| DbErr::Json(e.to_string()))?,
        id: m.id,
        system_id: m.system_id,
        answered: m.answered,
        request_id: m.request_id,
        controller: m.controller,
        lookup: m.lookup,
        created_at: at(m.created_ms),
        due_at: at(m.due_ms),
        reminders_sent: u32::try_from(m.reminders_sent).unwrap_or(0),
        escalated_at: m.escalated_ms.map(at),
        answered_at: m.answered_ms.map(at),
    })
}

fn to_model(t: &Task) -> Result<ActiveModel, DbErr> {
    Ok(ActiveModel {
        id: Set(t.id.clone()),
        system_id: Set(t.system_id.clone()),
        kind: Set(t.kind.as_str().to_owned()),
        answered: Set(t.answered),
        request_id: Set(t.request_id.clone()),
        controller: Set(t.controller.clone()),
        lookup: Set(t.lookup.clone()),
        created_ms: Set(t.created_at.timestamp_millis()),
        due_ms: Set(t.due_at.timestamp_millis()),
        reminders_sent: Set(i32::try_from(t.reminders_sent).unwrap_or(i32::MAX)),
        escalated_ms: Set(t.escalated_at.map(|d| d.timestamp_millis())),
        answered_ms: Set(t.answered_at.map(|d| d.timestamp_millis())),
        body: Set(serde_json::to_string(&t.body).map_err(|e| DbErr::Json(e.to_string()))?),
    })
}

/// The task table.
#[derive(Clone, Debug)]
pub struct Tasks {
    db: DatabaseConnection,
}

impl Tasks {
    /// The tasks in `db` (migrated with [`Migrator`]).
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    /// Adds `t`.
    pub async fn insert(&self, t: &Task) -> Result<(), DbErr> {
        to_model(t)?.insert(&self.db).await.map(|_| ())
    }

    /// Replaces the stored `t`.
    pub async fn update(&self, t: &Task) -> Result<(), DbErr> {
        to_model(t)?.update(&self.db).await.map(|_| ())
    }

    /// One task.
    pub async fn get(&self, id: &str) -> Result<Option<Task>, DbErr> {
        Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?
            .map(from_model)
            .transpose()
    }

    /// The task of `kind` found by `lookup`, the newest first.
    pub async fn find(&self, kind: Kind, lookup: &str) -> Result<Option<Task>, DbErr> {
        Entity::find()
            .filter(Column::Kind.eq(kind.as_str()))
            .filter(Column::Lookup.eq(lookup))
            .order_by_desc(Column::CreatedMs)
            .one(&self.db)
            .await?
            .map(from_model)
            .transpose()
    }

    /// Tasks, newest first: open ones, answered ones, or all (`None`), of
    /// one request when `request_id` is set.
    pub async fn list(
        &self,
        answered: Option<bool>,
        request_id: Option<&str>,
    ) -> Result<Vec<Task>, DbErr> {
        let mut q = Entity::find();
        if let Some(a) = answered {
            q = q.filter(Column::Answered.eq(a));
        }
        if let Some(r) = request_id {
            q = q.filter(Column::RequestId.eq(r));
        }
        q.order_by_desc(Column::CreatedMs)
            .all(&self.db)
            .await?
            .into_iter()
            .map(from_model)
            .collect()
    }

    /// Answered Locate tasks of `controller`, newest first.
    pub async fn answered_searches(&self, controller: &str) -> Result<Vec<Task>, DbErr> {
        Entity::find()
            .filter(Column::Kind.eq(Kind::Locate.as_str()))
            .filter(Column::Answered.eq(true))
            .filter(Column::Controller.eq(controller))
            .order_by_desc(Column::AnsweredMs)
            .all(&self.db)
            .await?
            .into_iter()
            .map(from_model)
            .collect()
    }

    /// Deletes tasks answered before `before`; how many.
    pub async fn purge_answered(&self, before: DateTime<Utc>) -> Result<u64, DbErr> {
        Ok(Entity::delete_many()
            .filter(Column::Answered.eq(true))
            .filter(Column::AnsweredMs.lt(before.timestamp_millis()))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}

pub use migration::Migrator;

/// The task table's migrations.
pub mod migration {
    // The trait is declared with an elided lifetime through async_trait.
    #![allow(elided_lifetimes_in_paths)]
    use sea_orm_migration::prelude::*;

    /// The manual connector's migrations.
    #[derive(Debug)]
    pub struct Migrator;

    impl MigratorTrait for Migrator {
        fn migration_table_name() -> DynIden {
            "seaql_migrations_manual".into_iden()
        }

        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            vec![Box::new(CreateTasks)]
        }
    }

    #[derive(DeriveIden)]
    enum DsrManualTask {
        Table,
        Id,
        SystemId,
        Kind,
        Answered,
        RequestId,
        Controller,
        Lookup,
        CreatedMs,
        DueMs,
        RemindersSent,
        EscalatedMs,
        AnsweredMs,
        Body,
    }

    struct CreateTasks;

    impl MigrationName for CreateTasks {
        fn name(&self) -> &str {
            "m20261204_000001_manual_tasks"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for CreateTasks {
        async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
            use sea_orm_migration::schema::{
                big_integer, big_integer_null, boolean, integer, string, string_len, text,
            };
            m.create_table(
                Table::create()
                    .table(DsrManualTask::Table)
                    .if_not_exists()
                    .col(string_len(DsrManualTask::Id, 64).primary_key())
                    .col(string_len(DsrManualTask::SystemId, 64))
                    .col(string_len(DsrManualTask::Kind, 32))
                    .col(boolean(DsrManualTask::Answered))
                    .col(string(DsrManualTask::RequestId))
                    .col(string_len(DsrManualTask::Controller, 16))
                    .col(string_len(DsrManualTask::Lookup, 128))
                    .col(big_integer(DsrManualTask::CreatedMs))
                    .col(big_integer(DsrManualTask::DueMs))
                    .col(integer(DsrManualTask::RemindersSent))
                    .col(big_integer_null(DsrManualTask::EscalatedMs))
                    .col(big_integer_null(DsrManualTask::AnsweredMs))
                    .col(text(DsrManualTask::Body))
                    .to_owned(),
            )
            .await?;
            m.create_index(
                Index::create()
                    .name("dsr_manual_task_lookup")
                    .table(DsrManualTask::Table)
                    .col(DsrManualTask::Lookup)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
            m.create_index(
                Index::create()
                    .name("dsr_manual_task_open")
                    .table(DsrManualTask::Table)
                    .col(DsrManualTask::Answered)
                    .col(DsrManualTask::DueMs)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
        }

        async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
            m.drop_table(Table::drop().table(DsrManualTask::Table).to_owned())
                .await
        }
    }
}
