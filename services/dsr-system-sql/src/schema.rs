//! The manifest against the live database: every table and column it names
//! must exist, or the connector refuses to start naming the manifest file and
//! field. Identity and parent columns without an index are reported.

use std::collections::BTreeSet;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use crate::manifest::{Manifest, ManifestError};

// Only SQLite, PostgreSQL and MySQL are opened (dsr-store); DbBackend is non-exhaustive.
#[allow(clippy::wildcard_enum_match_arm)]
async fn columns(db: &DatabaseConnection, table: &str) -> Result<BTreeSet<String>, sea_orm::DbErr> {
    let stmt = match db.get_database_backend() {
        DbBackend::Postgres => Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1",
            [table.into()],
        ),
        DbBackend::MySql => Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT CAST(column_name AS CHAR) FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ?",
            [table.into()],
        ),
        _ => Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT name FROM pragma_table_info(?)",
            [table.into()],
        ),
    };
    let rows = db.query_all_raw(stmt).await?;
    rows.iter()
        .map(|r| r.try_get_by_index::<String>(0))
        .collect()
}

/// Columns that lead some index of `table`.
#[allow(clippy::wildcard_enum_match_arm)]
async fn indexed_first_columns(
    db: &DatabaseConnection,
    table: &str,
) -> Result<BTreeSet<String>, sea_orm::DbErr> {
    let stmt = match db.get_database_backend() {
        DbBackend::Postgres => Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT a.attname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] \
             WHERE c.relname = $1 AND c.relnamespace = current_schema()::regnamespace",
            [table.into()],
        ),
        DbBackend::MySql => Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT CAST(column_name AS CHAR) FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name = ? AND seq_in_index = 1",
            [table.into()],
        ),
        _ => Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT ii.name FROM pragma_index_list(?1) il JOIN pragma_index_info(il.name) ii WHERE ii.seqno = 0",
            [table.into()],
        ),
    };
    let rows = db.query_all_raw(stmt).await?;
    rows.iter()
        .map(|r| r.try_get_by_index::<String>(0))
        .collect()
}

/// Checks `manifest` (read from `file`) against the database.
pub async fn check(
    db: &DatabaseConnection,
    manifest: &Manifest,
    file: &str,
) -> Result<(), ManifestError> {
    let err = |field: String, problem: String| ManifestError {
        file: file.to_owned(),
        field,
        problem,
    };
    for (i, t) in manifest.tables.iter().enumerate() {
        let cols = columns(db, &t.name)
            .await
            .map_err(|e| err(format!("tables[{i}].name"), e.to_string()))?;
        if cols.is_empty() {
            return Err(err(
                format!("tables[{i}].name"),
                format!("no table {} in the database", t.name),
            ));
        }
        for (field, col) in t.named_columns() {
            if !cols.contains(col) {
                return Err(err(
                    format!("tables[{i}].{field}"),
                    format!("no column {col} in table {}", t.name),
                ));
            }
        }
        let indexed = indexed_first_columns(db, &t.name)
            .await
            .map_err(|e| err(format!("tables[{i}].name"), e.to_string()))?;
        let lookups = t
            .identities
            .iter()
            .map(|c| c.column.as_str())
            .chain(t.parent.as_ref().map(|p| p.column.as_str()));
        for col in lookups {
            if !indexed.contains(col) && col != t.primary_key.column {
                tracing::warn!(manifest = file, table = %t.name, column = col, "lookup column has no index: Locate will scan the table");
            }
        }
    }
    Ok(())
}
