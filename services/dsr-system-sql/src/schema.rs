//! The manifest against the live database: every table and column it names
//! must exist, or the connector refuses to start naming the manifest file and
//! field. Identity and parent columns without an index are reported.

use std::collections::{BTreeMap, BTreeSet};

use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};

use crate::manifest::{Manifest, ManifestError};

/// `table`'s columns, each with whether it may hold NULL.
// Only SQLite, PostgreSQL and MySQL are opened (dsr-store); DbBackend is non-exhaustive.
#[allow(clippy::wildcard_enum_match_arm)]
async fn columns(
    db: &DatabaseConnection,
    table: &str,
) -> Result<BTreeMap<String, bool>, sea_orm::DbErr> {
    let stmt = match db.get_database_backend() {
        DbBackend::Postgres => Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT column_name::text, is_nullable::text FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = $1",
            [table.into()],
        ),
        DbBackend::MySql => Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT CAST(column_name AS CHAR), CAST(is_nullable AS CHAR) FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = ?",
            [table.into()],
        ),
        _ => Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "SELECT name, CASE WHEN \"notnull\" = 0 AND pk = 0 THEN 'YES' ELSE 'NO' END FROM pragma_table_info(?)",
            [table.into()],
        ),
    };
    let rows = db.query_all_raw(stmt).await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get_by_index::<String>(0)?,
                r.try_get_by_index::<String>(1)? == "YES",
            ))
        })
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

/// The child tables whose link to their parent the database itself clears
/// when the parent row is deleted (a foreign key on the parent column with
/// `ON DELETE SET NULL`). Below any other parent (`CASCADE`, `RESTRICT`, no
/// foreign key) the connector clears the link of a row it keeps before it
/// deletes the parent: a cascade would take a record the receipt says is
/// kept, a restriction would refuse the erasure, and a dangling link would
/// tie the record to no one's scope.
// Only SQLite, PostgreSQL and MySQL are opened (dsr-store); DbBackend is non-exhaustive.
#[allow(clippy::wildcard_enum_match_arm)]
pub async fn cleared_on_delete<C: ConnectionTrait>(
    db: &C,
    manifest: &Manifest,
) -> Result<BTreeSet<String>, sea_orm::DbErr> {
    let mut out = BTreeSet::new();
    for t in &manifest.tables {
        let Some(p) = &t.parent else { continue };
        let stmt = match db.get_database_backend() {
            DbBackend::Postgres => Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT rc.delete_rule::text FROM information_schema.referential_constraints rc \
                 JOIN information_schema.key_column_usage k ON k.constraint_schema = rc.constraint_schema \
                 AND k.constraint_name = rc.constraint_name \
                 WHERE k.table_schema = current_schema() AND k.table_name = $1 AND k.column_name = $2",
                [t.name.as_str().into(), p.column.as_str().into()],
            ),
            DbBackend::MySql => Statement::from_sql_and_values(
                DbBackend::MySql,
                "SELECT CAST(rc.delete_rule AS CHAR) FROM information_schema.referential_constraints rc \
                 JOIN information_schema.key_column_usage k ON k.constraint_schema = rc.constraint_schema \
                 AND k.constraint_name = rc.constraint_name AND k.table_name = rc.table_name \
                 WHERE k.table_schema = DATABASE() AND k.table_name = ? AND k.column_name = ?",
                [t.name.as_str().into(), p.column.as_str().into()],
            ),
            _ => Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "SELECT on_delete FROM pragma_foreign_key_list(?1) WHERE \"from\" = ?2",
                [t.name.as_str().into(), p.column.as_str().into()],
            ),
        };
        let rules = db
            .query_all_raw(stmt)
            .await?
            .iter()
            .map(|r| r.try_get_by_index::<String>(0))
            .collect::<Result<Vec<_>, _>>()?;
        // Every key on the column clears it (a name shared by two tables'
        // keys can match another table's rule: then the connector clears it).
        if !rules.is_empty() && rules.iter().all(|r| r.eq_ignore_ascii_case("SET NULL")) {
            out.insert(t.name.clone());
        }
    }
    Ok(out)
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
            if !cols.contains_key(col) {
                return Err(err(
                    format!("tables[{i}].{field}"),
                    format!("no column {col} in table {}", t.name),
                ));
            }
        }
        if let Some(p) = &t.parent
            && cols.get(&p.column) == Some(&false)
        {
            tracing::warn!(manifest = file, table = %t.name, column = %p.column, "parent column is NOT NULL: a record kept below a parent that is deleted cannot be detached from it, and that deletion will fail");
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
