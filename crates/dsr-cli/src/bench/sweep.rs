//! `dsr bench sweep`: the generic connector's retention sweep against a
//! raw batched `DELETE` of the same schema, in the same run: two copies of
//! the reference CRM with the same people; one swept by the connector (for
//! each controller, keyset-paged batches, its operation and receipt), the
//! other emptied of the same expired rows by `DELETE … WHERE id IN (SELECT
//! … LIMIT n)` in the same table order, the rows left below a table's
//! expired ones detached first (one `UPDATE`) where the schema's key would
//! cascade. Both must end with the same rows. On PostgreSQL each side
//! starts after a checkpoint ([`settle`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{Months, Utc};
use dsr_connector::instruction::Instruction;
use dsr_connector::operations::OpState;
use dsr_connector::signing::ReceiptSigner;
use dsr_system_sql::manifest::Manifest;
use dsr_system_sql::reference::{self, Reference};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

/// What to run.
#[derive(Debug)]
pub(crate) struct Plan {
    /// People in the CRM.
    pub subjects: usize,
    /// Rows per batch, both sides.
    pub batch: usize,
    /// PostgreSQL (or SQLite files in a temporary directory when `None`).
    pub database_url: Option<String>,
    /// Keep the two copies.
    pub keep: bool,
}

const CRM_ORDER: [&str; 8] = [
    "companies",
    "contacts",
    "kyc_documents",
    "pep_screenings",
    "event_registrations",
    "survey_responses",
    "prospects",
    "prospect_interactions",
];

async fn open(
    url: Option<&str>,
    dir: &std::path::Path,
    name: &str,
) -> anyhow::Result<dsr_store::Db> {
    let (url, schema) = match url {
        Some(u) => (u.to_owned(), Some(format!("dsr_bench_sweep_{name}"))),
        None => (
            dsr_store::sqlite_url(&dir.join(format!("sweep-{name}.db"))),
            None,
        ),
    };
    Ok(dsr_store::connect(
        &url,
        &dsr_store::StoreConfig {
            schema,
            ..dsr_store::StoreConfig::default()
        },
    )
    .await?)
}

async fn counts(db: &dsr_store::Db) -> anyhow::Result<Vec<i64>> {
    let mut out = Vec::new();
    for t in CRM_ORDER {
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                format!("SELECT COUNT(*) FROM {t}"),
            ))
            .await?
            .context("no count")?;
        out.push(row.try_get_by_index::<i64>(0)?);
    }
    Ok(out)
}

/// Before a side is timed: on PostgreSQL a checkpoint, so that each side
/// starts at the beginning of a checkpoint cycle. A cycle ends after about
/// `max_wal_size` of log, and the first change to a page after a cycle
/// begins logs the whole page; without this, a side would pay for the log
/// its seeding or the other side left, by where in a cycle it happened to
/// start. Needs a superuser or `pg_checkpoint`; without it the run goes on
/// and says so.
#[allow(clippy::print_stdout)]
async fn settle(db: &dsr_store::Db, backend: DbBackend) {
    if backend == DbBackend::Postgres
        && let Err(e) = db.execute_unprepared("CHECKPOINT").await
    {
        println!("(no checkpoint before a side: {e})");
    }
}

/// Runs the benchmark and prints its figures.
#[allow(clippy::print_stdout)]
pub(crate) async fn run(p: Plan) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = p.database_url.as_deref();
    let backend = url.map_or(DbBackend::Sqlite, |_| DbBackend::Postgres);
    if let Some(u) = url {
        // Fresh copies: the schemas are the benchmark's own.
        let admin = dsr_store::connect(u, &dsr_store::StoreConfig::default()).await?;
        for name in ["a", "b"] {
            admin
                .execute_unprepared(&format!(
                    "DROP SCHEMA IF EXISTS dsr_bench_sweep_{name} CASCADE"
                ))
                .await?;
        }
    }
    let a = open(url, dir.path(), "a").await?;
    let b = open(url, dir.path(), "b").await?;
    let crm = Reference::Crm;
    let t0 = Instant::now();
    dsr_store::migrate::<dsr_connector::migration::Migrator>(&a).await?;
    crm.create_schema(&a).await?;
    crm.create_schema(&b).await?;
    crm.seed(&a, p.subjects, 1, 0, reference::base_date())
        .await?;
    if backend == DbBackend::Postgres {
        for t in CRM_ORDER {
            b.execute_unprepared(&format!(
                "INSERT INTO dsr_bench_sweep_b.{t} SELECT * FROM dsr_bench_sweep_a.{t}"
            ))
            .await?;
        }
        // Vacuumed as well as analysed, both copies: tables as a system
        // that has run for a while has them (hint bits set, visibility
        // maps written), and no autovacuum of the fresh rows running
        // under one side's timing and not the other's.
        for db in [&a, &b] {
            for t in CRM_ORDER {
                db.execute_unprepared(&format!("VACUUM (ANALYZE) {t}"))
                    .await?;
            }
        }
    } else {
        crm.seed(&b, p.subjects, 1, 0, reference::base_date())
            .await?;
    }
    let start = counts(&a).await?;
    if start != counts(&b).await? {
        bail!("the two copies differ before the run");
    }
    println!(
        "Retention sweep vs raw batched DELETE: the reference CRM with {} people ({} rows), batches of {}, {} (prepared in {:.0} s)",
        p.subjects,
        start.iter().sum::<i64>(),
        p.batch,
        url.map_or("SQLite", |_| "PostgreSQL"),
        t0.elapsed().as_secs_f64()
    );

    // The connector's sweep, for each controller.
    let manifest = Arc::new(Manifest::parse(crm.manifest(), crm.manifest_name())?);
    let system = dsr_system_sql::system::SqlSystem::new(
        a.clone(),
        manifest.clone(),
        ReceiptSigner::generate("bench"),
        Arc::new(dsr_system_sql::grpc::ProtoReceipts),
    );
    settle(&a, backend).await;
    let t_sweep = Instant::now();
    for (i, controller) in manifest.controllers().into_iter().enumerate() {
        let now = Utc::now();
        let instruction = Instruction {
            request_id: format!("bench-sweep-{i}"),
            controller,
            system_id: "crm".into(),
            due_date: now.date_naive(),
            issued_at: now,
            expires_at: now + chrono::Duration::minutes(10),
            idempotency_key: format!("bench-sweep-{i}-{}", now.timestamp_millis()),
        };
        let op = system
            .sweep(instruction, vec![i as u8], false, p.batch)
            .await
            .map_err(|e| anyhow::anyhow!("sweep: {}", e.log_kind()))?;
        loop {
            let cur = system.operations().get(&op.id).await?;
            match cur.state {
                OpState::Succeeded => break,
                OpState::Failed => bail!("the sweep failed"),
                OpState::Pending | OpState::Running => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
    let sweep_secs = t_sweep.elapsed().as_secs_f64();
    let after_sweep = counts(&a).await?;

    // The raw DELETE: the same rules (restricted rows stay), the same
    // order, no controller scope; before a table's expired rows go, the
    // rows left below them are detached in one statement where the
    // schema's key would cascade (as the connector does, a batch at a time:
    // a cascade would take rows not yet due).
    let cleared = dsr_system_sql::schema::cleared_on_delete(&b, &manifest).await?;
    let today = Utc::now().date_naive();
    settle(&b, backend).await;
    let t_raw = Instant::now();
    for t in manifest.children_first() {
        let Some(rule) = &t.retention else { continue };
        let cutoff = today
            .checked_sub_months(Months::new(rule.months))
            .context("cutoff")?;
        let expired = format!(
            "{anchor} < '{cutoff}' AND {restricted} IS NULL",
            anchor = rule.anchor_column,
            restricted = t.restriction_column,
        );
        for c in &manifest.tables {
            let Some(link) = c.parent.as_ref().filter(|l| l.table == t.name) else {
                continue;
            };
            if cleared.contains(&c.name) {
                continue;
            }
            b.execute_unprepared(&format!(
                "UPDATE {child} SET {col} = NULL WHERE {col} IN (SELECT {pk} FROM {table} WHERE {expired})",
                child = c.name,
                col = link.column,
                pk = t.primary_key.column,
                table = t.name,
            ))
            .await?;
        }
        let sql = format!(
            "DELETE FROM {table} WHERE {pk} IN (SELECT {pk} FROM {table} WHERE {expired} LIMIT {n})",
            table = t.name,
            pk = t.primary_key.column,
            n = p.batch
        );
        loop {
            let res = b.execute_unprepared(&sql).await?;
            if res.rows_affected() == 0 {
                break;
            }
        }
    }
    let raw_secs = t_raw.elapsed().as_secs_f64();
    let after_raw = counts(&b).await?;

    let removed: i64 = start.iter().sum::<i64>() - after_sweep.iter().sum::<i64>();
    let removed_raw: i64 = start.iter().sum::<i64>() - after_raw.iter().sum::<i64>();
    println!(
        "{:<22} {:>12} {:>10} {:>14}",
        "", "rows removed", "seconds", "rows/s"
    );
    let rate = |n: i64, s: f64| n as f64 / s.max(1e-9);
    println!(
        "{:<22} {:>12} {:>10.2} {:>14.0}",
        "connector sweep",
        removed,
        sweep_secs,
        rate(removed, sweep_secs)
    );
    println!(
        "{:<22} {:>12} {:>10.2} {:>14.0}",
        "raw batched DELETE",
        removed_raw,
        raw_secs,
        rate(removed_raw, raw_secs)
    );
    println!(
        "sweep / raw throughput: {:.2} (aim: at least 0.9); same rows left: {}",
        rate(removed, sweep_secs) / rate(removed_raw, raw_secs),
        if after_sweep == after_raw {
            "yes"
        } else {
            "NO"
        }
    );
    if after_sweep != after_raw {
        bail!("the sweep and the raw DELETE left different rows: {after_sweep:?} vs {after_raw:?}");
    }
    if p.keep {
        println!(
            "kept: {}",
            url.map_or_else(
                || dir.keep().display().to_string(),
                |_| "schemas dsr_bench_sweep_a and dsr_bench_sweep_b".to_owned()
            )
        );
    } else if let Some(u) = url {
        let admin = dsr_store::connect(u, &dsr_store::StoreConfig::default()).await?;
        for name in ["a", "b"] {
            admin
                .execute_unprepared(&format!(
                    "DROP SCHEMA IF EXISTS dsr_bench_sweep_{name} CASCADE"
                ))
                .await?;
        }
    }
    Ok(())
}
