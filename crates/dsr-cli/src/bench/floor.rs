//! The floor of a request, measured in the same run as the request itself,
//! so that its figures read as a ratio that holds from machine to machine:
//!
//! - the raw SQL a hand-written program would run to fetch the person's
//!   records from the three reference systems' own databases (each table
//!   with an identity column looked up by each of the person's identities,
//!   then every linked table by its parent keys, whole rows read, no
//!   controller scope, no checks), and
//! - the gRPC round trips the request made, counted from the services' own
//!   `dsr_rpc_server_duration_seconds_count` before and after, each at the
//!   time of an empty unary call (a health check) on the same loopback.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dsr_system_sql::manifest::{IdentityKind, KeyType, Manifest, TableSpec};
use dsr_system_sql::reference::{Person, Reference};
use sea_orm::{ConnectionTrait, Statement, Value};

use crate::config::Config;
use crate::services::Instance;

/// One reference system's database and its tables.
pub(super) struct RawSystem {
    db: dsr_store::Db,
    manifest: Manifest,
}

impl RawSystem {
    /// The system on `db`, its tables as `manifest` maps them.
    pub(super) fn new(db: dsr_store::Db, manifest: Manifest) -> Self {
        Self { db, manifest }
    }
}

/// Opens one reference system's database as the mesh under `cfg` has it.
pub(super) async fn reference_db(cfg: &Config, r: Reference) -> anyhow::Result<dsr_store::Db> {
    Instance::reference(r).connect_pool(cfg, 1).await
}

/// Opens the reference systems' databases as the mesh under `cfg` has them.
pub(super) async fn open(cfg: &Config) -> anyhow::Result<Vec<RawSystem>> {
    let mut out = Vec::new();
    for r in Reference::ALL {
        let db = reference_db(cfg, r).await?;
        let manifest = Manifest::parse(r.manifest(), r.manifest_name())?;
        out.push(RawSystem { db, manifest });
    }
    Ok(out)
}

fn value_of(p: &Person, kind: IdentityKind) -> Option<String> {
    match kind {
        IdentityKind::Email => Some(p.email.clone()),
        IdentityKind::Phone => Some(p.phone.clone()),
        IdentityKind::SePersonnummer => p.personnummer.clone(),
        IdentityKind::CustomerId => Some(p.customer_number.clone()),
        IdentityKind::SeOrganisationsnummer => None,
    }
}

/// A primary key as read, bound back with its own type.
fn key_of(row: &sea_orm::QueryResult, t: &TableSpec) -> anyhow::Result<Value> {
    Ok(match t.primary_key.kind {
        KeyType::Integer => Value::from(row.try_get_by_index::<i64>(0)?),
        KeyType::Text => Value::from(row.try_get_by_index::<String>(0)?),
    })
}

async fn rows(
    db: &dsr_store::Db,
    t: &TableSpec,
    column: &str,
    values: Vec<Value>,
) -> anyhow::Result<Vec<Value>> {
    let marks: Vec<String> = (1..=values.len())
        .map(|i| {
            if db.get_database_backend() == sea_orm::DbBackend::Postgres {
                format!("${i}")
            } else {
                "?".to_owned()
            }
        })
        .collect();
    let sql = format!(
        "SELECT \"{pk}\", * FROM \"{table}\" WHERE \"{column}\" IN ({marks})",
        pk = t.primary_key.column,
        table = t.name,
        marks = marks.join(", ")
    );
    let found = db
        .query_all_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            sql,
            values,
        ))
        .await?;
    found.iter().map(|r| key_of(r, t)).collect()
}

/// Runs the raw statements for `p` on one system; returns how many ran.
pub(super) async fn fetch(sys: &RawSystem, p: &Person) -> anyhow::Result<usize> {
    let mut statements = 0;
    let mut frontier: Vec<(&TableSpec, Vec<Value>)> = Vec::new();
    for t in sys
        .manifest
        .tables
        .iter()
        .filter(|t| !t.identities.is_empty())
    {
        let mut keys: Vec<Value> = Vec::new();
        let mut seen = BTreeSet::new();
        for c in &t.identities {
            let Some(v) = value_of(p, c.kind) else {
                continue;
            };
            statements += 1;
            for k in rows(&sys.db, t, &c.column, vec![Value::from(v)]).await? {
                if seen.insert(format!("{k:?}")) {
                    keys.push(k);
                }
            }
        }
        if !keys.is_empty() {
            frontier.push((t, keys));
        }
    }
    while let Some((parent, keys)) = frontier.pop() {
        for child in sys.manifest.children(&parent.name) {
            let Some(link) = &child.parent else { continue };
            statements += 1;
            let found = rows(&sys.db, child, &link.column, keys.clone()).await?;
            if !found.is_empty() {
                frontier.push((child, found));
            }
        }
    }
    Ok(statements)
}

/// The raw SQL for each of `people` in turn, `rounds` times: the median time
/// for one person across the three systems, and the statements it took.
pub(super) async fn raw_sql(
    systems: &[RawSystem],
    people: &[Person],
    rounds: usize,
) -> anyhow::Result<(Duration, usize)> {
    let mut times = Vec::with_capacity(people.len() * rounds);
    let mut statements = 0;
    for _ in 0..rounds {
        for p in people {
            let t0 = Instant::now();
            let mut n = 0;
            for s in systems {
                n += fetch(s, p).await?;
            }
            times.push(t0.elapsed());
            statements = n;
        }
    }
    times.sort();
    Ok((super::percentile(&times, 0.5), statements))
}

/// Every service's server-side call count by method (Prometheus text on
/// the ops ports `from..from + n`); ports that do not answer are skipped.
pub(super) async fn calls_served(from: u16, n: u16) -> anyhow::Result<BTreeMap<String, f64>> {
    let http = reqwest::Client::new();
    let mut out = BTreeMap::new();
    for port in from..from + n {
        let Ok(resp) = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
        else {
            continue;
        };
        // Across ports the largest: services in one process (`dsr up`, the
        // bench) share one registry, and every ops port shows all of it.
        for (k, v) in parse_calls(&resp.text().await?) {
            let e = out.entry(k).or_insert(0.0_f64);
            *e = e.max(v);
        }
    }
    Ok(out)
}

/// The server-side call counts in one Prometheus text, by
/// `service/method`, summed over result codes.
fn parse_calls(text: &str) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("dsr_rpc_server_duration_seconds_count{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        *out.entry(format!("{}/{}", label("service"), label("method")))
            .or_default() += v;
    }
    out
}

/// The calls per request between two readings of [`calls_served`]: in
/// all, and the methods that took the most.
pub(super) fn per_request(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    requests: usize,
) -> (f64, Vec<(String, f64)>) {
    let n = requests.max(1) as f64;
    let mut by: Vec<(String, f64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), (v - before.get(k).copied().unwrap_or(0.0)) / n))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    by.sort_by(|a, b| b.1.total_cmp(&a.1));
    (by.iter().map(|(_, v)| v).sum(), by)
}

/// The median time of an empty unary gRPC call (health `Check`) to the
/// service at `url`, over `n` calls one after another.
pub(super) async fn round_trip(url: String, n: usize) -> anyhow::Result<Duration> {
    let channel = tonic::transport::Channel::from_shared(url)?
        .connect()
        .await
        .context("health check channel")?;
    let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        client
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        times.push(t0.elapsed());
    }
    times.sort();
    Ok(super::percentile(&times, 0.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_method_over_codes_and_per_request() {
        let before = parse_calls(
            "# TYPE dsr_rpc_server_duration_seconds histogram\n\
             dsr_rpc_server_duration_seconds_count{code=\"ok\",method=\"Submit\",service=\"dsr.orchestrator.v1.Requests\"} 4\n\
             dsr_rpc_server_duration_seconds_sum{code=\"ok\",method=\"Submit\",service=\"dsr.orchestrator.v1.Requests\"} 0.5\n",
        );
        let after = parse_calls(
            "dsr_rpc_server_duration_seconds_count{code=\"ok\",method=\"Submit\",service=\"dsr.orchestrator.v1.Requests\"} 12\n\
             dsr_rpc_server_duration_seconds_count{code=\"invalid_argument\",method=\"Submit\",service=\"dsr.orchestrator.v1.Requests\"} 2\n\
             dsr_rpc_server_duration_seconds_count{code=\"ok\",method=\"Locate\",service=\"dsr.system.v1.DataSystem\"} 30\n",
        );
        assert_eq!(after["dsr.orchestrator.v1.Requests/Submit"], 14.0);
        let (total, by) = per_request(&before, &after, 10);
        assert_eq!(total, 4.0);
        assert_eq!(
            by,
            [
                ("dsr.system.v1.DataSystem/Locate".to_owned(), 3.0),
                ("dsr.orchestrator.v1.Requests/Submit".to_owned(), 1.0)
            ]
        );
    }
}
