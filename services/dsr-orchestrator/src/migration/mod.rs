//! The ledger's tables. Recorded in `seaql_migrations_orchestrator`.

use sea_orm_migration::prelude::*;

mod m20261123_000001_create_ledger;
mod m20261124_000002_work_queue;
mod m20261201_000003_erasure;
mod m20261201_000004_write_orders;
mod m20261202_000005_trace_context;
mod m20261202_000006_discrepancies;
mod m20261202_000007_withheld;
mod m20261202_000008_verification_use;
mod m20261202_000009_submitted_by;
mod m20261202_000010_listing_indexes;
mod m20261203_000011_letters;
mod m20261203_000012_incidents;
mod m20261206_000013_audit_head;

/// The migrations.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        "seaql_migrations_orchestrator".into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_create_ledger::Migration),
            Box::new(m20261124_000002_work_queue::Migration),
            Box::new(m20261201_000003_erasure::Migration),
            Box::new(m20261201_000004_write_orders::Migration),
            Box::new(m20261202_000005_trace_context::Migration),
            Box::new(m20261202_000006_discrepancies::Migration),
            Box::new(m20261202_000007_withheld::Migration),
            Box::new(m20261202_000008_verification_use::Migration),
            Box::new(m20261202_000009_submitted_by::Migration),
            Box::new(m20261202_000010_listing_indexes::Migration),
            Box::new(m20261203_000011_letters::Migration),
            Box::new(m20261203_000012_incidents::Migration),
            Box::new(m20261206_000013_audit_head::Migration),
        ]
    }
}
