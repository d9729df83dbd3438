//! The package index. Recorded in `seaql_migrations_export`.

use sea_orm_migration::prelude::*;

mod m20261124_000001_create_packages;
mod m20261202_000002_package_owner;

/// The migrations.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        "seaql_migrations_export".into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_create_packages::Migration),
            Box::new(m20261202_000002_package_owner::Migration),
        ]
    }
}
