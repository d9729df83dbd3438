// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! The code rate limit's slots: a code is sent only after taking one of the
//! hour's slots for its identity (keyed hash, hour, slot number), under the
//! database's unique key, so parallel requests cannot exceed the limit.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum IdentityRateSlot {
    Table,
    Key,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(IdentityRateSlot::Table)
                .if_not_exists()
                .col(string(IdentityRateSlot::Key).primary_key())
                .col(timestamp_with_time_zone(IdentityRateSlot::CreatedAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(IdentityRateSlot::Table).to_owned())
            .await
    }
}
