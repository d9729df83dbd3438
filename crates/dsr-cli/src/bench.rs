//! `dsr bench`: figures that tests must not assert (the machines are shared
//! and noisy), measured on demand.
//!
//! - `locate`: per reference system, Locate over gRPC (real server on
//!   loopback, real token) next to its floor: the statements a hand-written
//!   program runs for it on the same database (each of the person's
//!   identity columns, then every linked table, one statement each), plus
//!   one empty gRPC round trip.
//! - `access`: peak resident memory while streaming Access for one person
//!   with `--records` letters at the print-and-mail vendor, then over that
//!   person's whole access request through the mesh, whose package is
//!   downloaded and verified.
//! - `requests`: access requests Submit → COMPLETED over the whole embedded
//!   mesh, at concurrency 1 and N.
//! - `soak`: a burst of calls and streams against a whole `dsr up`; its
//!   memory and the statuses that came back.

mod access;
mod floor;
mod requests;
mod soak;
mod sweep;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use dsr_auth::{KeySet, TokenRequest, TokenSigner, Validator, ValidatorConfig};
use dsr_connector::signing::ReceiptSigner;
use dsr_proto::common::v1 as common;
use dsr_proto::system::v1 as pb;
use dsr_proto::system::v1::data_system_client::DataSystemClient;
use dsr_system_sql::manifest::Manifest;
use dsr_system_sql::reference::{self, Reference};
use tonic::transport::Channel;

use crate::config::Config;

/// Arguments of `dsr bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Database URL for the benchmark databases (default: SQLite files in a
    /// temporary directory). On PostgreSQL each system gets its own schema.
    #[arg(long, global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Locate latency per system against its floor: a hand-written
    /// program's statements for it run raw, plus one empty gRPC round trip.
    Locate {
        /// People seeded.
        #[arg(long, default_value_t = 1000)]
        subjects: usize,
        /// Lookups per system.
        #[arg(long, default_value_t = 300)]
        iterations: usize,
    },
    /// Peak memory of Access for one person with many records.
    Access {
        /// Letters held for the person.
        #[arg(long, default_value_t = 100_000)]
        records: usize,
    },
    /// Access requests end to end over the embedded mesh: latency at
    /// concurrency 1, throughput at --concurrency.
    Requests {
        /// People seeded in each reference system.
        #[arg(long, default_value_t = 100_000)]
        subjects: usize,
        /// Requests one after another.
        #[arg(long, default_value_t = 200)]
        sequential: usize,
        /// Requests at --concurrency.
        #[arg(long, default_value_t = 1000)]
        concurrent: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Keep the mesh's data directory (databases with the step log) and
        /// print where it is.
        #[arg(long)]
        keep: bool,
    },
    /// Erasure requests end to end over the embedded mesh (plan, execute at
    /// every system, receipts verified and reconciled), each for a person
    /// of its own: latency at concurrency 1, throughput at --concurrency.
    Erasures {
        /// People seeded in each reference system (at least as many as
        /// requests, of one controller).
        #[arg(long, default_value_t = 100_000)]
        subjects: usize,
        /// Requests one after another.
        #[arg(long, default_value_t = 100)]
        sequential: usize,
        /// Requests at --concurrency.
        #[arg(long, default_value_t = 500)]
        concurrent: usize,
        /// Requests in flight.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Keep the mesh's data directory and print where it is.
        #[arg(long)]
        keep: bool,
    },
    /// A burst of unary calls and Watch streams against a whole `dsr up`
    /// (started as a child process): peak resident memory and the statuses
    /// seen, which must be only OK or RESOURCE_EXHAUSTED.
    Soak {
        /// Unary calls (Get, List, GetJwks, ListRecipients in turn).
        #[arg(long, default_value_t = 10_000)]
        calls: usize,
        /// Watch streams asked for, held open during the burst.
        #[arg(long, default_value_t = 2000)]
        streams: usize,
        /// Unary calls in flight.
        #[arg(long, default_value_t = 1000)]
        concurrency: usize,
        /// Portals the streams and calls come from.
        #[arg(long, default_value_t = 40)]
        callers: usize,
    },
    /// The connector's retention sweep against a raw batched DELETE of the
    /// same schema, in the same run (two copies of the reference CRM).
    Sweep {
        /// People in the CRM.
        #[arg(long, default_value_t = 1_000_000)]
        subjects: usize,
        /// Rows per batch, both sides.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Keep the two copies.
        #[arg(long)]
        keep: bool,
    },
}

/// `m` with `token` as its bearer.
fn bearer<T>(token: &str, m: T) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(r)
}

struct Bench {
    client: DataSystemClient<Channel>,
    /// The server's address (it also answers gRPC health).
    addr: std::net::SocketAddr,
    token: String,
    db: dsr_store::Db,
    system_id: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn start(
    r: Reference,
    url: Option<&str>,
    subjects: usize,
    extra_letters: usize,
) -> anyhow::Result<Bench> {
    let dir = tempfile::tempdir()?;
    let (url, schema) = match url {
        Some(u) => (
            u.to_owned(),
            Some(format!("dsr_bench_{}", r.id().replace('-', "_"))),
        ),
        None => (
            dsr_store::sqlite_url(&dir.path().join(format!("{}.db", r.id()))),
            None,
        ),
    };
    let db = dsr_store::connect(
        &url,
        &dsr_store::StoreConfig {
            schema,
            ..dsr_store::StoreConfig::default()
        },
    )
    .await?;
    dsr_store::migrate::<dsr_connector::migration::Migrator>(&db).await?;
    r.create_schema(&db).await?;
    if r.is_seeded(&db).await? {
        anyhow::bail!(
            "{}: the benchmark database already holds data; give an empty one",
            r.id()
        );
    }
    r.seed(
        &db,
        subjects,
        1,
        extra_letters,
        dsr_system_sql::reference::base_date(),
    )
    .await?;
    let keys = dsr_auth::generate_ed25519("bench")?;
    let validator = Arc::new(Validator::new(
        Arc::new(KeySet::from_jwks_json(&keys.jwks_json)?),
        ValidatorConfig {
            issuers: vec!["bench".into()],
            audience: r.id().into(),
            leeway_secs: 5,
            grants: None,
        },
    ));
    let token = TokenSigner::from_ed25519_pem(&keys.private_pem, "bench", "bench")?.mint(
        &TokenRequest {
            subject: "service:bench".into(),
            audiences: vec![r.id().into()],
            scopes: vec![dsr_system_sql::grpc::SCOPE_READ.into()],
            ttl: Duration::from_secs(3600),
        },
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // The system as `dsr serve` assembles it (its manifest checked against
    // the schema), without its background jobs.
    let set = dsr_system_sql::assembly::build_sql(
        dsr_system_sql::assembly::SqlSource::Manifest {
            manifest: Manifest::parse(r.manifest(), r.manifest_name())?,
            file: r.manifest_name().to_owned(),
        },
        dsr_system_sql::assembly::Deps {
            db: db.clone(),
            validator,
            signer: ReceiptSigner::generate("bench"),
            clock: dsr_domain::clock::Clock::default(),
            jobs_every: None,
        },
    )
    .await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = dsr_server::serve(listener, set, &dsr_server::ServerConfig::default(), async {
            let _ = stopped.await;
        })
        .await;
    });
    let client = DataSystemClient::new(
        Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?,
    )
    .max_decoding_message_size(64 * 1024 * 1024)
    .max_encoding_message_size(64 * 1024 * 1024);
    Ok(Bench {
        client,
        addr,
        token,
        db,
        system_id: r.id().into(),
        _dir: dir,
        stop: Some(stop),
    })
}

impl Bench {
    fn req<T>(&self, m: T) -> anyhow::Result<tonic::Request<T>> {
        let mut r = tonic::Request::new(m);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {}", self.token).parse()?);
        Ok(r)
    }

    fn header(&self, controller: &str, n: usize) -> pb::Instruction {
        let now = chrono::Utc::now();
        pb::Instruction {
            request_id: "bench".into(),
            controller: Some(common::ControllerRef {
                organisation_number: controller.into(),
            }),
            system_id: self.system_id.clone(),
            due_date: Some(dsr_connector::grpc::date_to_pb(now.date_naive())),
            issued_at: Some(dsr_connector::grpc::timestamp(
                now - chrono::Duration::seconds(5),
            )),
            expires_at: Some(dsr_connector::grpc::timestamp(
                now + chrono::Duration::minutes(10),
            )),
            idempotency_key: format!("bench-locate-{n:08}"),
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn identity_of(r: Reference, p: &reference::Person) -> Option<(common::IdentityType, String)> {
    match r {
        Reference::Crm => Some((common::IdentityType::Email, p.email.clone())),
        Reference::PrintMail => (!p.idx.is_multiple_of(3))
            .then(|| (common::IdentityType::CustomerId, p.customer_number.clone())),
        Reference::Legal => p
            .idx
            .is_multiple_of(7)
            .then(|| (common::IdentityType::Phone, p.phone.clone())),
    }
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time this process has used so far (user and system, every thread),
/// from `/proc/self/stat`: with the whole mesh and the bench client in one
/// process, the CPU a phase used divided by its requests is what one request
/// costs the machine, a figure that moves far less between runs than
/// latency on a shared machine.
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is the first; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis((utime + stime) * 10))
}

fn current_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs a benchmark and prints its figures.
#[allow(clippy::print_stdout)]
pub(crate) async fn run(cfg: &Config, args: BenchArgs) -> anyhow::Result<()> {
    let url = args.database_url.as_deref();
    match args.command {
        BenchCommand::Requests {
            subjects,
            sequential,
            concurrent,
            concurrency,
            keep,
        } => {
            requests::run(
                cfg,
                requests::Plan {
                    kind: dsr_proto::orchestrator::v1::Kind::Access,
                    subjects,
                    sequential,
                    concurrent,
                    concurrency,
                    keep,
                    database_url: args.database_url.clone(),
                },
            )
            .await?;
        }
        BenchCommand::Erasures {
            subjects,
            sequential,
            concurrent,
            concurrency,
            keep,
        } => {
            requests::run(
                cfg,
                requests::Plan {
                    kind: dsr_proto::orchestrator::v1::Kind::Erasure,
                    subjects,
                    sequential,
                    concurrent,
                    concurrency,
                    keep,
                    database_url: args.database_url.clone(),
                },
            )
            .await?;
        }
        BenchCommand::Soak {
            calls,
            streams,
            concurrency,
            callers,
        } => {
            soak::run(soak::Plan {
                calls,
                streams,
                concurrency,
                callers,
            })
            .await?;
        }
        BenchCommand::Sweep {
            subjects,
            batch,
            keep,
        } => {
            sweep::run(sweep::Plan {
                subjects,
                batch,
                database_url: args.database_url.clone(),
                keep,
            })
            .await?;
        }
        BenchCommand::Locate {
            subjects,
            iterations,
        } => {
            println!(
                "Locate over gRPC vs a hand-written program's statements run raw plus one round trip ({subjects} people, {iterations} lookups per system, {})",
                url.map_or("SQLite", |_| "PostgreSQL")
            );
            println!(
                "{:<12} {:>12} {:>12} {:>14} {:>11} {:>11} {:>8}",
                "system", "locate p50", "locate p95", "raw SQL p50", "round trip", "floor", "ratio"
            );
            let people = reference::people(subjects, 1);
            for r in Reference::ALL {
                let mut b = start(r, url, subjects, 0).await?;
                let raw = floor::RawSystem::new(
                    b.db.clone(),
                    Manifest::parse(r.manifest(), r.manifest_name())?,
                );
                let sample: Vec<_> = people
                    .iter()
                    .filter_map(|p| identity_of(r, p).map(|i| (p, i)))
                    .collect();
                anyhow::ensure!(!sample.is_empty(), "{}: nobody to look up", r.id());
                let (mut grpc, mut sql) = (
                    Vec::with_capacity(iterations),
                    Vec::with_capacity(iterations),
                );
                let mut statements = 0;
                for n in 0..iterations {
                    let (person, (t, value)) = &sample[n % sample.len()];
                    let identity = common::Identity {
                        r#type: *t as i32,
                        format: common::IdentityFormat::Raw as i32,
                        value: value.clone(),
                        hmac_key_id: String::new(),
                    };
                    let started = Instant::now();
                    let resp = b
                        .client
                        .locate(b.req(pb::LocateRequest {
                            instruction: Some(b.header(person.controller, n)),
                            identities: vec![identity],
                        })?)
                        .await?;
                    grpc.push(started.elapsed());
                    anyhow::ensure!(
                        resp.into_inner().found,
                        "{}: a seeded person was not found",
                        r.id()
                    );
                    // A hand-written program's statements, raw: each of
                    // the person's identity columns looked up, then every
                    // linked table by its parent's keys, whole rows, one
                    // statement each.
                    let started = Instant::now();
                    statements = floor::fetch(&raw, person).await?;
                    sql.push(started.elapsed());
                }
                let trip = floor::round_trip(format!("http://{}", b.addr), 300).await?;
                grpc.sort();
                sql.sort();
                let (g50, g95, s50) = (
                    percentile(&grpc, 0.5),
                    percentile(&grpc, 0.95),
                    percentile(&sql, 0.5),
                );
                let floor = s50 + trip;
                println!(
                    "{:<12} {:>10.0}µs {:>10.0}µs {:>7.0}µs ({statements:>2}) {:>9.0}µs {:>9.0}µs {:>7.1}x",
                    r.id(),
                    g50.as_secs_f64() * 1e6,
                    g95.as_secs_f64() * 1e6,
                    s50.as_secs_f64() * 1e6,
                    trip.as_secs_f64() * 1e6,
                    floor.as_secs_f64() * 1e6,
                    g50.as_secs_f64() / floor.as_secs_f64().max(1e-9)
                );
                if let Some(s) = b.stop.take() {
                    let _ = s.send(());
                }
            }
            println!(
                "(Locate includes the token check, the instruction checks, identity normalisation, identity expansion and every linked table; the floor is a hand-written program's statements for it run raw (one per identity column and per linked table, whole rows), in brackets how many, plus one empty gRPC call on the same connection.)"
            );
        }
        BenchCommand::Access { records } => {
            let b = start(Reference::PrintMail, url, 10, records)
                .await
                .context("seeding")?;
            let person = &reference::people(2, 1)[1];
            let identity = common::Identity {
                r#type: common::IdentityType::CustomerId as i32,
                format: common::IdentityFormat::Raw as i32,
                value: person.customer_number.clone(),
                hmac_key_id: String::new(),
            };
            let mut client = b.client.clone();
            let loc = client
                .locate(b.req(pb::LocateRequest {
                    instruction: Some(b.header(person.controller, 0)),
                    identities: vec![identity],
                })?)
                .await?
                .into_inner();
            let refs: Vec<pb::RecordRef> =
                loc.stores.iter().flat_map(|s| s.records.clone()).collect();
            let before = current_rss_kib().unwrap_or(0);
            // Reset the peak (Linux: "5" clears VmHWM).
            let _ = std::fs::write("/proc/self/clear_refs", "5");
            let started = Instant::now();
            let mut stream = client
                .access(b.req(pb::AccessRequest {
                    instruction: Some(b.header(person.controller, 1)),
                    records: refs.clone(),
                    portable_only: false,
                })?)
                .await?
                .into_inner();
            let (mut n, mut messages) = (0usize, 0usize);
            while let Some(batch) = stream.message().await? {
                n += batch.records.len();
                messages += 1;
            }
            let took = started.elapsed();
            let peak = peak_rss_kib().unwrap_or(0);
            println!(
                "Access for one person: {} records located, {n} streamed in {messages} messages, {:.2} s",
                refs.len(),
                took.as_secs_f64()
            );
            println!(
                "resident memory before: {:.1} MiB; peak while streaming (client and server in this process): {:.1} MiB; growth {:.1} MiB",
                before as f64 / 1024.0,
                peak as f64 / 1024.0,
                peak.saturating_sub(before) as f64 / 1024.0
            );
            drop(client);
            drop(b);
            println!();
            Box::pin(access::whole_request(cfg, records, url)).await?;
        }
    }
    Ok(())
}
