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
        pub challenge_id: Option<String>,
        /// The verified identities, as JSON (personal data).
        pub verified_identities: Option<String>,
        /// The subject map, as JSON (personal data).
        pub subject_map: Option<String>,
        pub package_id: Option<String>,
        pub record_count: Option<i64>,
        pub system_ids: Option<String>,
        pub retained_count: Option<i64>,
        pub write_order: Option<String>,
        pub cancel_reason: Option<String>,
        pub lease_owner: Option<String>,
        pub lease_until_ms: Option<i64>,
        pub next_attempt_ms: Option<i64>,
        pub attempts: i32,
        pub last_error: Option<String>,
        pub trace_parent: Option<String>,
        pub discrepancies: Option<String>,
        /// Disclosures withheld for want of a lawful transfer (JSON).
        pub withheld: Option<String>,
        /// Who submitted it: the token's issuer and subject.
        pub submitted_by: Option<String>,
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

pub(crate) mod step {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "orchestrator_step")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub request_id: String,
        pub step: String,
        pub attempt: i32,
        pub worker: String,
        pub started_at: DateTimeUtc,
        pub finished_at: Option<DateTimeUtc>,
        /// "running", "done", "failed" or "abandoned".
        pub outcome: String,
        pub error: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod verification_use {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "orchestrator_verification_use")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub jti: String,
        pub request_id: String,
        pub used_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod letter {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "orchestrator_letter")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub request_id: String,
        /// The letter's place in the request's life, once per request:
        /// "received", "extended:2", "completed", ...
        pub key: String,
        /// `dsr_domain::letters::LetterKind`.
        pub kind: String,
        /// JSON: the values it is written with that are not the person's
        /// data (dates, months, a reason).
        pub facts: String,
        /// "pending", "sent", "failed" (attempts exhausted) or
        /// "undeliverable" (no email address or phone to write to).
        pub status: String,
        pub attempts: i32,
        pub next_attempt_ms: Option<i64>,
        pub lease_owner: Option<String>,
        pub lease_until_ms: Option<i64>,
        pub last_error: Option<String>,
        /// "email" or "phone", and whether verified: "email (verified)".
        pub channel: Option<String>,
        pub queued_at: DateTimeUtc,
        pub sent_at: Option<DateTimeUtc>,
        /// For a letter not to a request's person (a breach notice, a
        /// complaint's answer): where it goes, `[type, value]`, cleared
        /// once it is sent or given up.
        pub to_identity: Option<String>,
        /// Its language, for such a letter.
        pub language: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod incident {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "orchestrator_incident")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub summary: String,
        pub started_at: Option<DateTimeUtc>,
        pub discovered_at: DateTimeUtc,
        pub reported_at: DateTimeUtc,
        /// "staff" or "public_form".
        pub source: String,
        pub reported_by: String,
        /// JSON list.
        pub system_ids: String,
        /// JSON list.
        pub category_ids: String,
        pub approximate_people: i64,
        pub containment: String,
        /// "none", "risk" or "high".
        pub risk: Option<String>,
        pub risk_reasoning: Option<String>,
        pub consequences: Option<String>,
        pub measures: Option<String>,
        /// JSON: `crate::incidents::Affected`.
        pub affected: Option<String>,
        pub authority_notified_at: Option<DateTimeUtc>,
        pub authority_reference: Option<String>,
        pub late_reason: Option<String>,
        pub notices_started_at: Option<DateTimeUtc>,
        /// "unintelligible", "risk_no_longer_likely", "public_communication".
        pub notice_exception: Option<String>,
        pub notice_exception_explanation: Option<String>,
        pub remedial_action: Option<String>,
        pub closed_at: Option<DateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod incident_person {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "orchestrator_incident_person")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub incident_id: String,
        pub controller: String,
        /// JSON list of `[type, value]`.
        pub contacts: String,
        /// "sv" or "en".
        pub language: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod complaint {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "orchestrator_complaint")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub controller: String,
        pub text: String,
        /// `[type, value]` JSON; cleared once the answer is sent.
        pub reply_to: Option<String>,
        pub language: String,
        /// JSON list.
        pub request_ids: String,
        pub filed_at: DateTimeUtc,
        pub answer_due: DateTimeUtc,
        pub filed_by: String,
        pub answer: Option<String>,
        pub answered_at: Option<DateTimeUtc>,
        pub answered_by: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
