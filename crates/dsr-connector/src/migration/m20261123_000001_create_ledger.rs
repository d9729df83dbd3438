// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum DsrOperation {
    Table,
    Id,
    Kind,
    State,
    Done,
    Total,
    ReceiptPayload,
    ReceiptKeyId,
    ReceiptSignature,
    Error,
    StartedAt,
    EndedAt,
}

#[derive(DeriveIden)]
enum DsrIdempotency {
    Table,
    Key,
    Digest,
    OperationId,
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(DsrOperation::Table)
                .if_not_exists()
                .col(string(DsrOperation::Id).primary_key())
                .col(string(DsrOperation::Kind))
                .col(string(DsrOperation::State))
                .col(big_integer(DsrOperation::Done))
                .col(big_integer(DsrOperation::Total))
                .col(blob_null(DsrOperation::ReceiptPayload))
                .col(string_null(DsrOperation::ReceiptKeyId))
                .col(blob_null(DsrOperation::ReceiptSignature))
                .col(text_null(DsrOperation::Error))
                .col(timestamp_with_time_zone(DsrOperation::StartedAt))
                .col(timestamp_with_time_zone_null(DsrOperation::EndedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(DsrIdempotency::Table)
                .if_not_exists()
                .col(string(DsrIdempotency::Key).primary_key())
                .col(string(DsrIdempotency::Digest))
                .col(string(DsrIdempotency::OperationId))
                .col(timestamp_with_time_zone(DsrIdempotency::CreatedAt))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(DsrIdempotency::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(DsrOperation::Table).to_owned())
            .await
    }
}
