// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! Who may fetch a package: the portal that submitted its request (the
//! token's issuer and subject, as the orchestrator recorded it). Packages
//! from before have none, and are served to case handlers only.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum ExportPackage {
    Table,
    SubmittedBy,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(ExportPackage::Table)
                .add_column(ColumnDef::new(ExportPackage::SubmittedBy).string().null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(ExportPackage::Table)
                .drop_column(ExportPackage::SubmittedBy)
                .to_owned(),
        )
        .await
    }
}
