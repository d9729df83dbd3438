// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! Rectification, restriction and objection requests: what they ask.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum OrchestratorRequest {
    Table,
    WriteOrder,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(OrchestratorRequest::Table)
                .add_column(
                    ColumnDef::new(OrchestratorRequest::WriteOrder)
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
                .drop_column(OrchestratorRequest::WriteOrder)
                .to_owned(),
        )
        .await
    }
}
