//! The identity service's tables: challenges and the audit of attempts.
//! Recorded in `seaql_migrations_identity`.

use sea_orm_migration::prelude::*;

mod m20261123_000001_create_challenges;
mod m20261202_000002_rate_slots;

/// The migrations.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        "seaql_migrations_identity".into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_challenges::Migration),
            Box::new(m20261202_000002_rate_slots::Migration),
        ]
    }
}
