// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! The work queue: per request the outputs of its steps, its lease and its
//! next attempt (times in milliseconds since the epoch, compared the same
//! way on SQLite and PostgreSQL); and the step log, where a partial unique
//! index lets each step of a request be done at most once.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum OrchestratorRequest {
    Table,
    ChallengeId,
    VerifiedIdentities,
    SubjectMap,
    PackageId,
    RecordCount,
    SystemIds,
    CancelReason,
    LeaseOwner,
    LeaseUntilMs,
    NextAttemptMs,
    Attempts,
    LastError,
}

#[derive(DeriveIden)]
enum OrchestratorStep {
    Table,
    Id,
    RequestId,
    Step,
    Attempt,
    Worker,
    StartedAt,
    FinishedAt,
    Outcome,
    Error,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        let columns = [
            string_null(OrchestratorRequest::ChallengeId),
            text_null(OrchestratorRequest::VerifiedIdentities),
            text_null(OrchestratorRequest::SubjectMap),
            string_null(OrchestratorRequest::PackageId),
            big_integer_null(OrchestratorRequest::RecordCount),
            text_null(OrchestratorRequest::SystemIds),
            text_null(OrchestratorRequest::CancelReason),
            string_null(OrchestratorRequest::LeaseOwner),
            big_integer_null(OrchestratorRequest::LeaseUntilMs),
            big_integer_null(OrchestratorRequest::NextAttemptMs),
            integer(OrchestratorRequest::Attempts).default(0).to_owned(),
            text_null(OrchestratorRequest::LastError),
        ];
        for mut c in columns {
            m.alter_table(
                Table::alter()
                    .table(OrchestratorRequest::Table)
                    .add_column(&mut c)
                    .to_owned(),
            )
            .await?;
        }
        m.create_index(
            Index::create()
                .name("idx_orchestrator_request_next_attempt")
                .table(OrchestratorRequest::Table)
                .col(OrchestratorRequest::NextAttemptMs)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(OrchestratorStep::Table)
                .if_not_exists()
                .col(big_pk_auto(OrchestratorStep::Id))
                .col(string(OrchestratorStep::RequestId))
                .col(string(OrchestratorStep::Step))
                .col(integer(OrchestratorStep::Attempt))
                .col(string(OrchestratorStep::Worker))
                .col(timestamp_with_time_zone(OrchestratorStep::StartedAt))
                .col(timestamp_with_time_zone_null(OrchestratorStep::FinishedAt))
                .col(string(OrchestratorStep::Outcome))
                .col(text_null(OrchestratorStep::Error))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_orchestrator_step_request")
                .table(OrchestratorStep::Table)
                .col(OrchestratorStep::RequestId)
                .to_owned(),
        )
        .await?;
        // At most one completion per step of a request, whatever the number
        // of replicas: the database says no to a second.
        m.get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX ux_orchestrator_step_done ON orchestrator_step (request_id, step) WHERE outcome = 'done'",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(OrchestratorStep::Table).to_owned())
            .await?;
        m.drop_index(
            Index::drop()
                .name("idx_orchestrator_request_next_attempt")
                .table(OrchestratorRequest::Table)
                .to_owned(),
        )
        .await?;
        for c in [
            OrchestratorRequest::ChallengeId,
            OrchestratorRequest::VerifiedIdentities,
            OrchestratorRequest::SubjectMap,
            OrchestratorRequest::PackageId,
            OrchestratorRequest::RecordCount,
            OrchestratorRequest::SystemIds,
            OrchestratorRequest::CancelReason,
            OrchestratorRequest::LeaseOwner,
            OrchestratorRequest::LeaseUntilMs,
            OrchestratorRequest::NextAttemptMs,
            OrchestratorRequest::Attempts,
            OrchestratorRequest::LastError,
        ] {
            m.alter_table(
                Table::alter()
                    .table(OrchestratorRequest::Table)
                    .drop_column(c)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
