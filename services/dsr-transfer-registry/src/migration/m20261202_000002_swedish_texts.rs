// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! A recipient's name and purpose in Swedish, beside the English ones: what
//! a person reading in Swedish sees in their access report. Rows from
//! before get empty texts, which the next update must fill.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[derive(DeriveIden)]
enum TransferRecipient {
    Table,
    NameSv,
    PurposeSv,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one at a time.
        for col in [TransferRecipient::NameSv, TransferRecipient::PurposeSv] {
            m.alter_table(
                Table::alter()
                    .table(TransferRecipient::Table)
                    .add_column(ColumnDef::new(col).string().not_null().default(""))
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for col in [TransferRecipient::NameSv, TransferRecipient::PurposeSv] {
            m.alter_table(
                Table::alter()
                    .table(TransferRecipient::Table)
                    .drop_column(col)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
