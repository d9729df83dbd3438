// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! Who started a sweep: the case handler's subject for one started by hand
//! (the console, the CLI), empty for the schedule's.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum ErasureSweep {
    Table,
    StartedBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(ErasureSweep::Table)
                .add_column(
                    ColumnDef::new(ErasureSweep::StartedBy)
                        .string()
                        .not_null()
                        .default(""),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(ErasureSweep::Table)
                .drop_column(ErasureSweep::StartedBy)
                .to_owned(),
        )
        .await
    }
}
