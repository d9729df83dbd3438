// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! An operation's lease: until when the process that claimed it is taken
//! to be working on it. A pending or running operation whose lease has
//! lapsed (its process stopped: a kill, a crash) is taken over by the next
//! call with the same idempotency key. Rows from before have none, and are
//! taken over at once.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum DsrOperation {
    Table,
    LeaseUntil,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(DsrOperation::Table)
                .add_column(
                    ColumnDef::new(DsrOperation::LeaseUntil)
                        .timestamp_with_time_zone()
                        .null(),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(DsrOperation::Table)
                .drop_column(DsrOperation::LeaseUntil)
                .to_owned(),
        )
        .await
    }
}
