// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! Retention sweeps and their progress.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum ErasureSweep {
    Table,
    Id,
    Trigger,
    DryRun,
    Systems,
    StartedAt,
    FinishedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ErasureSweep::Table)
                .if_not_exists()
                .col(string(ErasureSweep::Id).primary_key())
                .col(string(ErasureSweep::Trigger))
                .col(boolean(ErasureSweep::DryRun))
                .col(text(ErasureSweep::Systems))
                .col(timestamp_with_time_zone(ErasureSweep::StartedAt))
                .col(timestamp_with_time_zone_null(ErasureSweep::FinishedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_erasure_sweep_started_at")
                .table(ErasureSweep::Table)
                .col(ErasureSweep::StartedAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ErasureSweep::Table).to_owned())
            .await
    }
}
