// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! Verification tokens already used: each token (its `jti`) verifies one
//! request, once.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum OrchestratorVerificationUse {
    Table,
    Jti,
    RequestId,
    UsedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(OrchestratorVerificationUse::Table)
                .if_not_exists()
                .col(string(OrchestratorVerificationUse::Jti).primary_key())
                .col(string(OrchestratorVerificationUse::RequestId))
                .col(timestamp_with_time_zone(
                    OrchestratorVerificationUse::UsedAt,
                ))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(
            Table::drop()
                .table(OrchestratorVerificationUse::Table)
                .to_owned(),
        )
        .await
    }
}
