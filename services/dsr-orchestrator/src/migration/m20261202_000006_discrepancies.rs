// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! Where an erasure's receipts differ from its plan: the discrepancies a
//! case handler resolves (JSON, no personal data).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum OrchestratorRequest {
    Table,
    Discrepancies,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(OrchestratorRequest::Table)
                .add_column(
                    ColumnDef::new(OrchestratorRequest::Discrepancies)
                        .text()
                        .null(),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(OrchestratorRequest::Table)
                .drop_column(OrchestratorRequest::Discrepancies)
                .to_owned(),
        )
        .await
    }
}
