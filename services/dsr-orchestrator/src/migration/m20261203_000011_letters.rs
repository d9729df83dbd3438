// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! The letters to the person (Art. 12): one row per letter of a request's
//! life, queued in the transaction of the event that calls for it and sent
//! by the letter sender with a lease, retries and a visible failure. A row
//! keeps what the letter was about (its kind, the non-personal values it
//! was written with) and the channel it went to, never the text.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum OrchestratorLetter {
    Table,
    Id,
    RequestId,
    Key,
    Kind,
    Facts,
    Status,
    Attempts,
    NextAttemptMs,
    LeaseOwner,
    LeaseUntilMs,
    LastError,
    Channel,
    QueuedAt,
    SentAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(OrchestratorLetter::Table)
                .if_not_exists()
                .col(big_pk_auto(OrchestratorLetter::Id))
                .col(string(OrchestratorLetter::RequestId))
                .col(string(OrchestratorLetter::Key))
                .col(string(OrchestratorLetter::Kind))
                .col(text(OrchestratorLetter::Facts))
                .col(string(OrchestratorLetter::Status))
                .col(integer(OrchestratorLetter::Attempts).default(0))
                .col(big_integer_null(OrchestratorLetter::NextAttemptMs))
                .col(string_null(OrchestratorLetter::LeaseOwner))
                .col(big_integer_null(OrchestratorLetter::LeaseUntilMs))
                .col(text_null(OrchestratorLetter::LastError))
                .col(string_null(OrchestratorLetter::Channel))
                .col(timestamp_with_time_zone(OrchestratorLetter::QueuedAt))
                .col(timestamp_with_time_zone_null(OrchestratorLetter::SentAt))
                .to_owned(),
        )
        .await?;
        // A letter of a request is queued once, whoever records the event.
        m.create_index(
            Index::create()
                .name("ux_orchestrator_letter_once")
                .table(OrchestratorLetter::Table)
                .col(OrchestratorLetter::RequestId)
                .col(OrchestratorLetter::Key)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_orchestrator_letter_next_attempt")
                .table(OrchestratorLetter::Table)
                .col(OrchestratorLetter::NextAttemptMs)
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(OrchestratorLetter::Table).to_owned())
            .await
    }
}
