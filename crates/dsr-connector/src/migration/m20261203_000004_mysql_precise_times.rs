// The trait is declared with an elided lifetime through async_trait.
#![allow(elided_lifetimes_in_paths)]

//! On MySQL and MariaDB, `timestamp` keeps whole seconds: a lease of less
//! than a second would lapse at once and a lease's end would come early.
//! The ledger's times become `datetime(6)` (microseconds, UTC as written,
//! no 2038 limit). Other databases keep their types.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != DbBackend::MySql {
            return Ok(());
        }
        let db = m.get_connection();
        for sql in [
            "ALTER TABLE dsr_operation MODIFY started_at DATETIME(6) NOT NULL, \
             MODIFY ended_at DATETIME(6) NULL, MODIFY lease_until DATETIME(6) NULL",
            "ALTER TABLE dsr_idempotency MODIFY created_at DATETIME(6) NOT NULL",
            "ALTER TABLE dsr_suppression MODIFY created_at DATETIME(6) NOT NULL",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        if m.get_database_backend() != DbBackend::MySql {
            return Ok(());
        }
        let db = m.get_connection();
        for sql in [
            "ALTER TABLE dsr_operation MODIFY started_at TIMESTAMP NOT NULL, \
             MODIFY ended_at TIMESTAMP NULL, MODIFY lease_until TIMESTAMP NULL",
            "ALTER TABLE dsr_idempotency MODIFY created_at TIMESTAMP NOT NULL",
            "ALTER TABLE dsr_suppression MODIFY created_at TIMESTAMP NOT NULL",
        ] {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}
