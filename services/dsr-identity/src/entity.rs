//! sea-orm entities.
// The derive macros generate public items inside this private module.
#![allow(unreachable_pub)]

pub(crate) mod challenge {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "identity_challenge")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub method: String,
        /// The claimed identities, normalised, as JSON (personal data: purged
        /// with the challenge).
        pub identities: String,
        /// HMAC of the identity the code went to, for the rate limit.
        pub identity_hash: String,
        /// HMAC of the challenge id and the code; the code itself is never stored.
        pub code_hash: String,
        pub attempts: i32,
        pub state: String,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod attempt {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "identity_attempt")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub challenge_id: String,
        pub method: String,
        pub outcome: String,
        /// Who acted: "subject" for the person, or the case handler's
        /// principal for an attestation.
        pub actor: String,
        pub at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod rate_slot {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "identity_rate_slot")]
    pub struct Model {
        /// "<identity hash>:<hour>:<slot>".
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
