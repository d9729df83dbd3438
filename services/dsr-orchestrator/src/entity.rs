//! sea-orm entities of the ledger.
// The derive macros generate public items inside this private module.
#![allow(unreachable_pub)]

pub(crate) mod request {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "orchestrator_request")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub kind: String,
        pub state: String,
        pub controller: String,
        pub language: String,
        /// The claimed identities, normalised, as JSON (personal data).
        pub identities: String,
        pub received_on: Date,
        pub original_due: Date,
        pub due: Date,
        pub extended_months: i32,
        pub extension_reason: Option<String>,
        pub extension_decided_on: Option<Date>,
        pub rejection_reason: Option<String>,
        pub rejection_note: Option<String>,
        #[sea_orm(unique)]
        pub idempotency_key: String,
        pub payload_digest: String,
        pub submitted_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod audit {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "orchestrator_audit")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        pub at: DateTimeUtc,
        pub actor: String,
        pub request_id: String,
        pub action: String,
        pub prev_hash: String,
        pub hash: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
