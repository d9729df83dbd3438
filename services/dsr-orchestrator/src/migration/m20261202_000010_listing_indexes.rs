// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! Indexes for the two scans that grow with the ledger: `List` without a
//! filter walks requests newest first (submitted_at, id), and the change
//! feed behind `Watch` looks for requests changed since its last look
//! (updated_at).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum OrchestratorRequest {
    Table,
    SubmittedAt,
    Id,
    UpdatedAt,
}

const BY_SUBMITTED: &str = "ix_orchestrator_request_submitted_at_id";
const BY_UPDATED: &str = "ix_orchestrator_request_updated_at";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create()
                .name(BY_SUBMITTED)
                .table(OrchestratorRequest::Table)
                .col(OrchestratorRequest::SubmittedAt)
                .col(OrchestratorRequest::Id)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name(BY_UPDATED)
                .table(OrchestratorRequest::Table)
                .col(OrchestratorRequest::UpdatedAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(
            Index::drop()
                .name(BY_UPDATED)
                .table(OrchestratorRequest::Table)
                .to_owned(),
        )
        .await?;
        m.drop_index(
            Index::drop()
                .name(BY_SUBMITTED)
                .table(OrchestratorRequest::Table)
                .to_owned(),
        )
        .await
    }
}
