//! sea-orm entities: plans, receipts, legal holds and tombstones. None holds
//! an identity: persons appear only as keyed hashes.
// The derive macros generate public items inside these private modules.
#![allow(unreachable_pub)]

pub(crate) mod plan {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "erasure_plan")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub request_id: String,
        pub controller: String,
        pub created_at: DateTimeUtc,
        pub policy_version: String,
        /// The plan (JSON: records, decisions, identity hashes).
        pub body: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod receipt {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "erasure_receipt")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub request_id: String,
        pub system_id: String,
        /// "erase", "deferred:<date>", "replay:<id>".
        pub phase: String,
        #[sea_orm(unique)]
        pub idempotency_key: String,
        /// The signed bytes (hex).
        pub payload: String,
        pub key_id: String,
        /// The signature (hex).
        pub signature: String,
        pub verified: bool,
        /// Per store: matched, affected, refused (JSON); the retained count.
        pub summary: String,
        pub retained: i64,
        pub received_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod hold {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "erasure_hold")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub controller: String,
        /// "person" or "record".
        pub scope: String,
        /// For a person: the keyed hash of the identity.
        pub subject_hash: Option<String>,
        pub system_id: Option<String>,
        pub store: Option<String>,
        pub record_key: Option<String>,
        pub ground: String,
        pub until: Option<Date>,
        pub placed_by: String,
        pub placed_at: DateTimeUtc,
        pub lifted_at: Option<DateTimeUtc>,
        pub lifted_by: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod tombstone {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "erasure_tombstone")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub request_id: String,
        /// The phase whose erasure it records.
        pub phase: String,
        pub controller: String,
        /// Keyed hashes of the person's identities (JSON list).
        pub identity_hashes: String,
        /// Per system: the erase order sent (record keys of the system and
        /// retention orders; JSON).
        pub orders: String,
        pub erased_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod notification {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "erasure_notification")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub request_id: String,
        pub recipient_id: String,
        pub recipient_name: String,
        pub country: String,
        /// "erase", "rectify", "restrict", "lift_restriction", "object".
        pub action: String,
        /// "data_system" or "task".
        pub channel: String,
        pub system_id: Option<String>,
        pub receipt_id: Option<String>,
        pub due_on: Option<Date>,
        pub done_at: Option<DateTimeUtc>,
        pub done_by: Option<String>,
        /// "lawful", "refused", "awaiting_approval" or "approved".
        pub transfer: String,
        /// The registry's blocking reasons, one per line.
        pub transfer_reasons: Option<String>,
        pub approved_by: Option<String>,
        pub approval_note: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod sweep {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "erasure_sweep")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// "manual" or "schedule".
        pub trigger: String,
        pub dry_run: bool,
        /// Per system: state, done, removed, receipts, error (JSON).
        pub systems: String,
        pub started_at: DateTimeUtc,
        pub finished_at: Option<DateTimeUtc>,
        /// Who started it by hand (empty: the schedule).
        pub started_by: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
