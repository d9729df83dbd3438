// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum OrchestratorRequest {
    Table,
    Id,
    Kind,
    State,
    Controller,
    Language,
    Identities,
    ReceivedOn,
    OriginalDue,
    Due,
    ExtendedMonths,
    ExtensionReason,
    ExtensionDecidedOn,
    RejectionReason,
    RejectionNote,
    IdempotencyKey,
    PayloadDigest,
    SubmittedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum OrchestratorAudit {
    Table,
    Seq,
    At,
    Actor,
    RequestId,
    Action,
    PrevHash,
    Hash,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(OrchestratorRequest::Table)
                .if_not_exists()
                .col(string(OrchestratorRequest::Id).primary_key())
                .col(string(OrchestratorRequest::Kind))
                .col(string(OrchestratorRequest::State))
                .col(string(OrchestratorRequest::Controller))
                .col(string(OrchestratorRequest::Language))
                .col(text(OrchestratorRequest::Identities))
                .col(date(OrchestratorRequest::ReceivedOn))
                .col(date(OrchestratorRequest::OriginalDue))
                .col(date(OrchestratorRequest::Due))
                .col(integer(OrchestratorRequest::ExtendedMonths))
                .col(text_null(OrchestratorRequest::ExtensionReason))
                .col(date_null(OrchestratorRequest::ExtensionDecidedOn))
                .col(string_null(OrchestratorRequest::RejectionReason))
                .col(text_null(OrchestratorRequest::RejectionNote))
                .col(string_uniq(OrchestratorRequest::IdempotencyKey))
                .col(string(OrchestratorRequest::PayloadDigest))
                .col(timestamp_with_time_zone(OrchestratorRequest::SubmittedAt))
                .col(timestamp_with_time_zone(OrchestratorRequest::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_orchestrator_request_state_due")
                .table(OrchestratorRequest::Table)
                .col(OrchestratorRequest::State)
                .col(OrchestratorRequest::Due)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(OrchestratorAudit::Table)
                .if_not_exists()
                .col(big_integer(OrchestratorAudit::Seq).primary_key())
                .col(timestamp_with_time_zone(OrchestratorAudit::At))
                .col(string(OrchestratorAudit::Actor))
                .col(string(OrchestratorAudit::RequestId))
                .col(string(OrchestratorAudit::Action))
                .col(string(OrchestratorAudit::PrevHash))
                .col(string(OrchestratorAudit::Hash))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(OrchestratorAudit::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(OrchestratorRequest::Table).to_owned())
            .await
    }
}
