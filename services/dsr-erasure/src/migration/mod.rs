//! Plans, receipts, holds, tombstones, notifications, sweeps. Recorded in `seaql_migrations_erasure`.

use sea_orm_migration::prelude::*;

mod m20261201_000001_create_erasure;
mod m20261201_000002_notifications;
mod m20261201_000003_sweeps;
mod m20261202_000004_notification_transfer;
mod m20261202_000005_sweep_started_by;

/// The migrations.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        "seaql_migrations_erasure".into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261201_000001_create_erasure::Migration),
            Box::new(m20261201_000002_notifications::Migration),
            Box::new(m20261201_000003_sweeps::Migration),
            Box::new(m20261202_000004_notification_transfer::Migration),
            Box::new(m20261202_000005_sweep_started_by::Migration),
        ]
    }
}
