// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! Art. 19 notifications: one per (request, recipient, action).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum ErasureNotification {
    Table,
    Id,
    RequestId,
    RecipientId,
    RecipientName,
    Country,
    Action,
    Channel,
    SystemId,
    ReceiptId,
    DueOn,
    DoneAt,
    DoneBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ErasureNotification::Table)
                .if_not_exists()
                .col(string(ErasureNotification::Id).primary_key())
                .col(string(ErasureNotification::RequestId))
                .col(string(ErasureNotification::RecipientId))
                .col(string(ErasureNotification::RecipientName))
                .col(string(ErasureNotification::Country))
                .col(string(ErasureNotification::Action))
                .col(string(ErasureNotification::Channel))
                .col(string_null(ErasureNotification::SystemId))
                .col(string_null(ErasureNotification::ReceiptId))
                .col(date_null(ErasureNotification::DueOn))
                .col(timestamp_with_time_zone_null(ErasureNotification::DoneAt))
                .col(string_null(ErasureNotification::DoneBy))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ux_erasure_notification_once")
                .table(ErasureNotification::Table)
                .col(ErasureNotification::RequestId)
                .col(ErasureNotification::RecipientId)
                .col(ErasureNotification::Action)
                .unique()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ErasureNotification::Table).to_owned())
            .await
    }
}
