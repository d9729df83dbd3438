//! Schema migrations of the transfer registry, one file each, recorded in
//! their own table (`seaql_migrations_transfer`) so services can share a
//! PostgreSQL database.

use sea_orm_migration::prelude::*;

mod m20261123_000001_create_recipient;
mod m20261202_000002_swedish_texts;

/// The registry's migrations.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        "seaql_migrations_transfer".into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_recipient::Migration),
            Box::new(m20261202_000002_swedish_texts::Migration),
        ]
    }
}
