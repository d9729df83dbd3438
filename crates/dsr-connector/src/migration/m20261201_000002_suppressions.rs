// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! The suppression list: objections that hold for records imported later.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum DsrSuppression {
    Table,
    IdentityHash,
    Purpose,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(DsrSuppression::Table)
                .if_not_exists()
                .col(string(DsrSuppression::IdentityHash))
                .col(string(DsrSuppression::Purpose))
                .col(timestamp_with_time_zone(DsrSuppression::CreatedAt))
                .primary_key(
                    Index::create()
                        .col(DsrSuppression::IdentityHash)
                        .col(DsrSuppression::Purpose),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(DsrSuppression::Table).to_owned())
            .await
    }
}
