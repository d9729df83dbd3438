// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! Who submitted a request (the token's issuer and subject): a portal reads
//! only the requests it submitted. Rows from before have none, and are read
//! by case handlers only.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum OrchestratorRequest {
    Table,
    SubmittedBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(OrchestratorRequest::Table)
                .add_column(
                    ColumnDef::new(OrchestratorRequest::SubmittedBy)
                        .string()
                        .null(),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_orchestrator_request_submitted_by")
                .table(OrchestratorRequest::Table)
                .col(OrchestratorRequest::SubmittedBy)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(OrchestratorRequest::Table)
                .drop_column(OrchestratorRequest::SubmittedBy)
                .to_owned(),
        )
        .await
    }
}
