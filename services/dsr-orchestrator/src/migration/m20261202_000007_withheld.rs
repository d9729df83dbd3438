// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! Disclosures withheld for want of a lawful transfer (Art. 44-49): what a
//! case handler sees on the request (JSON, no personal data).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum OrchestratorRequest {
    Table,
    Withheld,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(OrchestratorRequest::Table)
                .add_column(ColumnDef::new(OrchestratorRequest::Withheld).text().null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(OrchestratorRequest::Table)
                .drop_column(OrchestratorRequest::Withheld)
                .to_owned(),
        )
        .await
    }
}
