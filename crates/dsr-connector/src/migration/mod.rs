//! The connector's own tables in the system's database: the idempotency
//! ledger and the operations. Recorded in `seaql_migrations_connector`.

use sea_orm_migration::prelude::*;

mod m20261123_000001_create_ledger;

/// The connector's migrations.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        "seaql_migrations_connector".into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(m20261123_000001_create_ledger::Migration)]
    }
}
