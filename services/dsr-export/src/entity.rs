//! sea-orm entity of the package index.
// The derive macros generate public items inside this private module.
#![allow(unreachable_pub)]

pub(crate) mod package {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "export_package")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        #[sea_orm(unique)]
        pub request_id: String,
        pub kind: String,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
        /// The package key, wrapped under the master key (hex).
        pub wrapped_key: String,
        /// The files: name, media type, size, digest (JSON; no personal data).
        pub files: String,
        pub record_count: i64,
        /// The systems the records came from (JSON).
        pub system_ids: String,
        /// Who may fetch it besides case handlers: the submitting portal's
        /// issuer and subject.
        pub submitted_by: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
