//! `dsr bench requests` and `dsr bench erasures`: access (or erasure)
//! requests Submit → COMPLETED over the whole embedded mesh (every service
//! on its own loopback port, real gRPC, real tokens), with the reference
//! systems seeded at `--subjects` people each; latency percentiles at
//! concurrency 1, throughput and percentiles at `--concurrency`. An erasure
//! is planned, executed at every system, its receipts verified and
//! reconciled with the plan; each erasure request is for a person of its
//! own (erasing one person twice would find nothing the second time).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use dsr_proto::common::v1 as common;
use dsr_proto::identity::v1 as idv;
use dsr_proto::identity::v1::identity_verification_client::IdentityVerificationClient;
use dsr_proto::orchestrator::v1 as pb;
use dsr_proto::orchestrator::v1::requests_client::RequestsClient;
use tonic::transport::Channel;

use super::bearer;
use crate::config::Config;

/// What to run.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    /// Access or erasure.
    pub(super) kind: pb::Kind,
    pub(super) subjects: usize,
    pub(super) sequential: usize,
    pub(super) concurrent: usize,
    pub(super) concurrency: usize,
    pub(super) keep: bool,
    pub(super) database_url: Option<String>,
}

/// One request, Submit to COMPLETED (followed with Watch): its time.
async fn one(
    client: &mut RequestsClient<Channel>,
    kind: pb::Kind,
    token: &str,
    vt: &str,
    key: String,
) -> anyhow::Result<Duration> {
    Ok(follow(client, kind, token, vt, key).await?.0)
}

/// One request, Submit to COMPLETED (followed with Watch): its time and
/// the request as it ended.
pub(super) async fn follow(
    client: &mut RequestsClient<Channel>,
    kind: pb::Kind,
    token: &str,
    vt: &str,
    key: String,
) -> anyhow::Result<(Duration, pb::DataSubjectRequest)> {
    let t0 = Instant::now();
    let r = client
        .submit(bearer(
            token,
            pb::SubmitRequest {
                kind: kind as i32,
                controller: Some(common::ControllerRef {
                    organisation_number: "556134-1248".into(),
                }),
                claimed: vec![],
                verification_token: vt.to_owned(),
                language: "sv".into(),
                idempotency_key: key,
                ..Default::default()
            },
        )?)
        .await
        .map_err(|s| crate::request::explain(&s))?
        .into_inner()
        .request
        .context("empty answer")?;
    let mut stream = client
        .watch(bearer(token, pb::WatchRequest { id: r.id.clone() })?)
        .await
        .map_err(|s| crate::request::explain(&s))?
        .into_inner();
    while let Some(m) = stream
        .message()
        .await
        .map_err(|s| crate::request::explain(&s))?
    {
        let seen = m.request.unwrap_or_default();
        let st = seen.state;
        // An erasure whose receipts differ from its plan waits for a case
        // handler: the mesh's work is done (planned, executed, receipts
        // verified and reconciled). The legal vendor keeps its party
        // records on its own ground (Art. 17(3)(e)) where the group's
        // policy erases them, so a person with a legal case ends here.
        if st == pb::State::AwaitingReview as i32 && kind == pb::Kind::Erasure {
            return Ok((t0.elapsed(), seen));
        }
        // Records the retention policy keeps (a debt under collection) end
        // an erasure COMPLETED_WITH_RETAINED: done, as the law asks.
        if st == pb::State::Completed as i32 || st == pb::State::CompletedWithRetained as i32 {
            return Ok((t0.elapsed(), seen));
        }
        if st == pb::State::Rejected as i32
            || st == pb::State::Cancelled as i32
            || st == pb::State::AwaitingReview as i32
            || st == pb::State::AwaitingApproval as i32
        {
            anyhow::bail!("request {} ended in state {st}", r.id);
        }
    }
    anyhow::bail!("the watch of {} ended before completion", r.id)
}

/// Letters the identity service took to send so far (its `SendLetter`
/// calls served), from the ops ports at `ops`.
async fn letters_sent(ops: u16) -> anyhow::Result<f64> {
    Ok(super::floor::calls_served(ops, 10)
        .await?
        .iter()
        .filter(|(m, _)| m.ends_with("/SendLetter"))
        .map(|(_, n)| n)
        .sum())
}

/// The process's CPU time since `from`, per request, for printing.
fn cpu_per(from: Option<Duration>, requests: usize) -> String {
    match (from, super::process_cpu()) {
        (Some(a), Some(b)) if requests > 0 => {
            format!(
                "{:.2?}",
                (b.saturating_sub(a)) / u32::try_from(requests).unwrap_or(u32::MAX)
            )
        }
        _ => "unknown".to_owned(),
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    super::percentile(sorted, p)
}

/// The whole mesh, started in this process for a benchmark.
pub(super) struct Embedded {
    /// Its data directory (removed on drop unless kept).
    pub(super) dir: tempfile::TempDir,
    /// The running mesh.
    pub(super) mesh: crate::up::Mesh,
    /// Its base port.
    pub(super) port: u16,
    /// A portal's token for every service.
    pub(super) token: String,
}

impl Embedded {
    /// The mesh with `subjects` people per reference system, on `database_url`
    /// (SQLite files when `None`), with `workers` request workers.
    #[allow(clippy::print_stdout)]
    pub(super) async fn start(
        base: &Config,
        subjects: usize,
        database_url: Option<&str>,
        workers: usize,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut cfg = base.clone();
        cfg.data_dir = dir.path().join("data");
        cfg.system_sql.seed_subjects = subjects;
        cfg.orchestrator.workers = workers.max(1);
        // Every request in flight is followed by a Watch of the one bench
        // portal: the per-caller bound must let them all open.
        cfg.orchestrator.max_watch_streams_per_caller = cfg
            .orchestrator
            .max_watch_streams_per_caller
            .max(workers.saturating_mul(2));
        cfg.database.max_connections = cfg.database.max_connections.max(8);
        if let Some(u) = database_url {
            cfg.database.url = u.to_owned();
        }
        // Free ports for the services and their ops ports.
        let port = loop {
            let p = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            if p < 65_000
                && (1..20).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok())
            {
                break p;
            }
        };
        cfg.up.base_port = port;
        let seeding = Instant::now();
        let mesh = crate::up::start(&cfg).await?;
        println!(
            "mesh up with {subjects} people per reference system in {:.1} s ({})",
            seeding.elapsed().as_secs_f64(),
            if cfg.database.url.is_empty() {
                "SQLite"
            } else {
                "PostgreSQL"
            }
        );
        let token = crate::dev::token_or_mint(
            &mesh.cfg.data_dir,
            None,
            "bench-portal",
            crate::services::all_audiences(),
            crate::services::people_scopes()
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            Duration::from_secs(3600),
        )?;
        Ok(Self {
            dir,
            mesh,
            port,
            token,
        })
    }

    /// The URL of the service at `offset` from the base port.
    pub(super) fn url(&self, offset: u16) -> String {
        format!("http://127.0.0.1:{}", self.port + offset)
    }

    /// A verification token for `email`, from a case handler's attestation.
    pub(super) async fn verification_token(
        &self,
        identity: &mut IdentityVerificationClient<Channel>,
        email: &str,
    ) -> anyhow::Result<String> {
        Ok(identity
            .start_verification(bearer(
                &self.token,
                idv::StartVerificationRequest {
                    claimed: vec![common::Identity {
                        r#type: common::IdentityType::Email as i32,
                        format: 0,
                        value: email.to_owned(),
                        hmac_key_id: String::new(),
                    }],
                    method: idv::Method::CaseHandlerAttestation as i32,
                    idp_assertion: String::new(),
                    attestation: Some(idv::Attestation {
                        evidence: idv::AttestationEvidence::InPerson as i32,
                        note: "benchmark".into(),
                    }),
                    language: "sv".into(),
                    dry_run: false,
                },
            )?)
            .await
            .map_err(|s| crate::request::explain(&s))?
            .into_inner()
            .token
            .context("no token")?
            .jwt)
    }
}

/// Runs the benchmark; prints the figures.
#[allow(clippy::print_stdout)]
pub(super) async fn run(base: &Config, plan: Plan) -> anyhow::Result<()> {
    let embedded = Embedded::start(
        base,
        plan.subjects,
        plan.database_url.as_deref(),
        plan.concurrency,
    )
    .await?;
    let (mesh, port, token) = (&embedded.mesh, embedded.port, embedded.token.clone());
    let url = |offset: u16| format!("http://127.0.0.1:{}", port + offset);
    // A verification token verifies one request, once: one per request,
    // made before the clock starts, for people of Intrum Sverige AB, from a
    // case handler's attestation (a code per request would meet the code
    // rate limit; the check of the token on Submit is the same).
    // Warm-up: the first requests, `--concurrency` at once, grow the
    // services' pools and channels to what the load needs, as a running
    // mesh's are; they are not measured.
    let warm = plan.concurrency.max(5);
    let total = warm + plan.sequential + plan.concurrent;
    let erasure = plan.kind == pb::Kind::Erasure;
    // Access: forty people in turn. Erasure: a person of its own each.
    let wanted = if erasure { total } else { 40 };
    let people: Vec<_> = dsr_system_sql::reference::people(plan.subjects, mesh.cfg.system_sql.seed)
        .into_iter()
        .filter(|p| p.controller == "556134-1248")
        .take(wanted)
        .collect();
    if people.len() < wanted {
        anyhow::bail!(
            "{} erasure requests need as many people of one controller: seed more (--subjects)",
            total
        );
    }
    let mut identity =
        IdentityVerificationClient::new(Channel::from_shared(url(4))?.connect().await?);
    let mut tokens = Vec::with_capacity(total);
    for i in 0..total {
        let p = &people[i % people.len()];
        tokens.push(embedded.verification_token(&mut identity, &p.email).await?);
    }
    let tokens = std::sync::Arc::new(tokens);
    let channel = Channel::from_shared(url(7))?.connect().await?;
    let mut client = RequestsClient::new(channel.clone());
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let warming: Vec<_> = (0..warm)
        .map(|i| {
            let mut client = RequestsClient::new(channel.clone());
            let (token, tokens, key) =
                (token.clone(), tokens.clone(), format!("warm-{run_id}-{i}"));
            let kind = plan.kind;
            tokio::spawn(async move { one(&mut client, kind, &token, &tokens[i], key).await })
        })
        .collect();
    for w in warming {
        w.await??;
    }
    // The floor, in the same run: the raw SQL for the records of the people
    // the sequential phase asks about (read before an erasure removes them).
    let floor_people: Vec<_> = (0..plan.sequential.min(40))
        .map(|i| people[(warm + i) % people.len()].clone())
        .collect();
    let raw = super::floor::open(&mesh.cfg).await?;
    let (sql, statements) = super::floor::raw_sql(&raw, &floor_people, 5).await?;
    let ops = port + crate::up::OPS_OFFSET;
    let calls0 = super::floor::calls_served(ops, 10).await?;
    // Concurrency 1.
    let cpu0 = super::process_cpu();
    let mut lat = Vec::with_capacity(plan.sequential);
    for i in 0..plan.sequential {
        lat.push(
            one(
                &mut client,
                plan.kind,
                &token,
                &tokens[warm + i],
                format!("seq-{run_id}-{i}"),
            )
            .await?,
        );
    }
    let cpu_seq = cpu_per(cpu0, lat.len());
    let (calls, by_method) = super::floor::per_request(
        &calls0,
        &super::floor::calls_served(ops, 10).await?,
        lat.len(),
    );
    let trip = super::floor::round_trip(url(crate::up::OPS_OFFSET + 7), 300).await?;
    let floor = sql + trip.mul_f64(calls);
    lat.sort();
    println!();
    if erasure {
        println!(
            "erasure requests, Submit → COMPLETED, COMPLETED_WITH_RETAINED or AWAITING_REVIEW (verify, locate over 3 systems, plan, execute, receipts verified and reconciled; a person with a legal case awaits review: the legal vendor keeps its party record):"
        );
    } else {
        println!("access requests, Submit → COMPLETED (verify, locate over 3 systems, export):");
    }
    println!(
        "  concurrency  1: {:>5} requests  p50 {:>8.2?}  p99 {:>8.2?}  ({:.1} requests/s, {cpu_seq} CPU each)",
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.len() as f64 / lat.iter().sum::<Duration>().as_secs_f64()
    );
    println!(
        "  floor (same run):   {floor:>8.2?} = raw SQL for the person's records {sql:.2?} ({statements} statements over the 3 systems' databases) + {calls:.1} gRPC calls × {trip:.2?} (an empty call); p50 is {:.1}× the floor",
        pct(&lat, 0.5).as_secs_f64() / floor.as_secs_f64().max(1e-9)
    );
    let top: Vec<String> = by_method
        .iter()
        .take(8)
        .map(|(m, n)| format!("{m} {n:.1}"))
        .collect();
    println!("  gRPC calls per request, most first: {}", top.join(", "));
    // The letters a request sends (acknowledgement, answer), as the
    // sequential phase sent them: the concurrent phase's letters are
    // counted as sent when as many went out per request.
    let letters_per = by_method
        .iter()
        .find(|(m, _)| m.ends_with("/SendLetter"))
        .map_or(0.0, |(_, n)| (n * 10.0).round() / 10.0);
    let letters0 = letters_sent(ops).await?;
    // Concurrency N.
    let cpu0 = super::process_cpu();
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..plan.concurrency {
        let next = next.clone();
        let token = token.clone();
        let tokens = tokens.clone();
        let run_id = run_id.clone();
        let mut client = RequestsClient::new(channel.clone());
        let total = plan.concurrent;
        let plan_sequential = plan.sequential;
        let kind = plan.kind;
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(mine);
                }
                mine.push(
                    one(
                        &mut client,
                        kind,
                        &token,
                        &tokens[warm + plan_sequential + i],
                        format!("par-{run_id}-{i}"),
                    )
                    .await?,
                );
            }
        }));
    }
    let mut lat = Vec::with_capacity(plan.concurrent);
    for t in tasks {
        lat.extend(t.await??);
    }
    let wall = started.elapsed();
    let cpu_par = cpu_per(cpu0, lat.len());
    lat.sort();
    println!(
        "  concurrency {:>2}: {:>5} requests  p50 {:>8.2?}  p99 {:>8.2?}  ({:.1} requests/s, {cpu_par} CPU each)",
        plan.concurrency,
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.len() as f64 / wall.as_secs_f64()
    );
    // A request is answered when its letters are sent too: a mesh that
    // completes requests faster than it writes to the people would show
    // a throughput its letters do not keep up with.
    let expected = (letters_per * lat.len() as f64).floor();
    let at_end = letters_sent(ops).await? - letters0;
    let mut sent = at_end;
    let drain = Instant::now();
    while sent < expected && drain.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        sent = letters_sent(ops).await? - letters0;
    }
    let whole = wall + drain.elapsed();
    println!(
        "  letters of the phase ({letters_per:.1} a request): {at_end:.0} of {expected:.0} sent when its last request completed, {sent:.0} {:.2} s later; with every letter sent {:.1} requests/s, {} CPU each",
        drain.elapsed().as_secs_f64(),
        lat.len() as f64 / whole.as_secs_f64(),
        cpu_per(cpu0, lat.len())
    );
    let Embedded { dir, mesh, .. } = embedded;
    mesh.stop().await?;
    if plan.keep {
        println!("data directory kept: {}", dir.keep().join("data").display());
    }
    Ok(())
}
