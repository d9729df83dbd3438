//! The connector's own tables in the system's database: the idempotency
//! ledger, the operations and the suppression list. Recorded in `seaql_migrations_connector`.

use sea_orm_migration::prelude::*;

mod m20261123_000001_create_ledger;
mod m20261201_000002_suppressions;
mod m20261202_000003_operation_lease;
mod m20261203_000004_mysql_precise_times;

/// The connector's migrations.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        "seaql_migrations_connector".into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_ledger::Migration),
            Box::new(m20261201_000002_suppressions::Migration),
            Box::new(m20261202_000003_operation_lease::Migration),
            Box::new(m20261203_000004_mysql_precise_times::Migration),
        ]
    }
}
