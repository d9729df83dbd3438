// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum ErasurePlan {
    Table,
    RequestId,
    Controller,
    CreatedAt,
    PolicyVersion,
    Body,
}

#[derive(DeriveIden)]
enum ErasureReceipt {
    Table,
    Id,
    RequestId,
    SystemId,
    Phase,
    IdempotencyKey,
    Payload,
    KeyId,
    Signature,
    Verified,
    Summary,
    Retained,
    ReceivedAt,
}

#[derive(DeriveIden)]
enum ErasureHold {
    Table,
    Id,
    Controller,
    Scope,
    SubjectHash,
    SystemId,
    Store,
    RecordKey,
    Ground,
    Until,
    PlacedBy,
    PlacedAt,
    LiftedAt,
    LiftedBy,
}

#[derive(DeriveIden)]
enum ErasureTombstone {
    Table,
    Id,
    RequestId,
    Phase,
    Controller,
    IdentityHashes,
    Orders,
    ErasedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ErasurePlan::Table)
                .if_not_exists()
                .col(string(ErasurePlan::RequestId).primary_key())
                .col(string(ErasurePlan::Controller))
                .col(timestamp_with_time_zone(ErasurePlan::CreatedAt))
                .col(string(ErasurePlan::PolicyVersion))
                .col(text(ErasurePlan::Body))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ErasureReceipt::Table)
                .if_not_exists()
                .col(string(ErasureReceipt::Id).primary_key())
                .col(string(ErasureReceipt::RequestId))
                .col(string(ErasureReceipt::SystemId))
                .col(string(ErasureReceipt::Phase))
                .col(string_uniq(ErasureReceipt::IdempotencyKey))
                .col(text(ErasureReceipt::Payload))
                .col(string(ErasureReceipt::KeyId))
                .col(string(ErasureReceipt::Signature))
                .col(boolean(ErasureReceipt::Verified))
                .col(text(ErasureReceipt::Summary))
                .col(big_integer(ErasureReceipt::Retained))
                .col(timestamp_with_time_zone(ErasureReceipt::ReceivedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_erasure_receipt_request")
                .table(ErasureReceipt::Table)
                .col(ErasureReceipt::RequestId)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ErasureHold::Table)
                .if_not_exists()
                .col(string(ErasureHold::Id).primary_key())
                .col(string(ErasureHold::Controller))
                .col(string(ErasureHold::Scope))
                .col(string_null(ErasureHold::SubjectHash))
                .col(string_null(ErasureHold::SystemId))
                .col(string_null(ErasureHold::Store))
                .col(string_null(ErasureHold::RecordKey))
                .col(text(ErasureHold::Ground))
                .col(date_null(ErasureHold::Until))
                .col(string(ErasureHold::PlacedBy))
                .col(timestamp_with_time_zone(ErasureHold::PlacedAt))
                .col(timestamp_with_time_zone_null(ErasureHold::LiftedAt))
                .col(string_null(ErasureHold::LiftedBy))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ErasureTombstone::Table)
                .if_not_exists()
                .col(string(ErasureTombstone::Id).primary_key())
                .col(string(ErasureTombstone::RequestId))
                .col(string(ErasureTombstone::Phase))
                .col(string(ErasureTombstone::Controller))
                .col(text(ErasureTombstone::IdentityHashes))
                .col(text(ErasureTombstone::Orders))
                .col(timestamp_with_time_zone(ErasureTombstone::ErasedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_erasure_tombstone_phase")
                .table(ErasureTombstone::Table)
                .col(ErasureTombstone::RequestId)
                .col(ErasureTombstone::Phase)
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_erasure_tombstone_erased_at")
                .table(ErasureTombstone::Table)
                .col(ErasureTombstone::ErasedAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            ErasureTombstone::Table.into_iden(),
            ErasureHold::Table.into_iden(),
            ErasureReceipt::Table.into_iden(),
            ErasurePlan::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}
