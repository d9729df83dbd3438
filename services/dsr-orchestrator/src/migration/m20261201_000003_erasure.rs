// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! Erasure requests: the records retained after execution, and a deferred
//! step that may be done more than once (one per retain-until date).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum OrchestratorRequest {
    Table,
    RetainedCount,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(OrchestratorRequest::Table)
                .add_column(
                    ColumnDef::new(OrchestratorRequest::RetainedCount)
                        .big_integer()
                        .null(),
                )
                .to_owned(),
        )
        .await?;
        let c = m.get_connection();
        c.execute_unprepared("DROP INDEX IF EXISTS ux_orchestrator_step_done")
            .await?;
        c.execute_unprepared(
            "CREATE UNIQUE INDEX ux_orchestrator_step_once ON orchestrator_step (request_id, step) WHERE outcome = 'done' AND step <> 'deferred'",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        let c = m.get_connection();
        c.execute_unprepared("DROP INDEX IF EXISTS ux_orchestrator_step_once")
            .await?;
        c.execute_unprepared(
            "CREATE UNIQUE INDEX ux_orchestrator_step_done ON orchestrator_step (request_id, step) WHERE outcome = 'done'",
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(OrchestratorRequest::Table)
                .drop_column(OrchestratorRequest::RetainedCount)
                .to_owned(),
        )
        .await
    }
}
