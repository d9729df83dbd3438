// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! Whether an Art. 19 notification may go to its recipient: the transfer
//! registry's verdict when it was recorded ("lawful", "refused",
//! "awaiting_approval", "approved"), its blocking reasons, and the case
//! handler's approval.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum ErasureNotification {
    Table,
    Transfer,
    TransferReasons,
    ApprovedBy,
    ApprovalNote,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one at a time.
        for col in [
            ColumnDef::new(ErasureNotification::Transfer)
                .string()
                .not_null()
                .default("lawful")
                .to_owned(),
            ColumnDef::new(ErasureNotification::TransferReasons)
                .text()
                .null()
                .to_owned(),
            ColumnDef::new(ErasureNotification::ApprovedBy)
                .string()
                .null()
                .to_owned(),
            ColumnDef::new(ErasureNotification::ApprovalNote)
                .text()
                .null()
                .to_owned(),
        ] {
            m.alter_table(
                Table::alter()
                    .table(ErasureNotification::Table)
                    .add_column(col)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for col in [
            ErasureNotification::Transfer,
            ErasureNotification::TransferReasons,
            ErasureNotification::ApprovedBy,
            ErasureNotification::ApprovalNote,
        ] {
            m.alter_table(
                Table::alter()
                    .table(ErasureNotification::Table)
                    .drop_column(col)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
