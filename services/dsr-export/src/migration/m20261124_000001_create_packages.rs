// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum ExportPackage {
    Table,
    Id,
    RequestId,
    Kind,
    CreatedAt,
    ExpiresAt,
    WrappedKey,
    Files,
    RecordCount,
    SystemIds,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ExportPackage::Table)
                .if_not_exists()
                .col(string(ExportPackage::Id).primary_key())
                .col(string_uniq(ExportPackage::RequestId))
                .col(string(ExportPackage::Kind))
                .col(timestamp_with_time_zone(ExportPackage::CreatedAt))
                .col(timestamp_with_time_zone(ExportPackage::ExpiresAt))
                .col(text(ExportPackage::WrappedKey))
                .col(text(ExportPackage::Files))
                .col(big_integer(ExportPackage::RecordCount))
                .col(text(ExportPackage::SystemIds))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_export_package_expires_at")
                .table(ExportPackage::Table)
                .col(ExportPackage::ExpiresAt)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ExportPackage::Table).to_owned())
            .await
    }
}
