// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum TransferRecipient {
    Table,
    Id,
    Name,
    Role,
    Country,
    Controllers,
    CategoryIds,
    SystemIds,
    DpaReference,
    Safeguard,
    Purpose,
    Revision,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(TransferRecipient::Table)
                .if_not_exists()
                .col(string(TransferRecipient::Id).primary_key())
                .col(string(TransferRecipient::Name))
                .col(string(TransferRecipient::Role))
                .col(string(TransferRecipient::Country))
                .col(text(TransferRecipient::Controllers))
                .col(text(TransferRecipient::CategoryIds))
                .col(text(TransferRecipient::SystemIds))
                .col(string(TransferRecipient::DpaReference))
                .col(text_null(TransferRecipient::Safeguard))
                .col(text(TransferRecipient::Purpose))
                .col(big_integer(TransferRecipient::Revision))
                .col(timestamp_with_time_zone(TransferRecipient::CreatedAt))
                .col(timestamp_with_time_zone(TransferRecipient::UpdatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_transfer_recipient_country")
                .table(TransferRecipient::Table)
                .col(TransferRecipient::Country)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(TransferRecipient::Table).to_owned())
            .await
    }
}
