//! `dsr bench soak`: a burst against a whole `dsr up` (a child process, so
//! its memory is its own): `--streams` Watch streams held open by many
//! callers and `--calls` unary calls at `--concurrency` across the
//! orchestrator, identity and the transfer registry. Reports the statuses
//! seen and the process's resident memory at rest, at its peak (the
//! kernel's high-water mark) and after; fails when any status other than OK
//! or RESOURCE_EXHAUSTED came back.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dsr_proto::common::v1 as common;
use dsr_proto::identity::v1 as idv;
use dsr_proto::identity::v1::identity_verification_client::IdentityVerificationClient;
use dsr_proto::orchestrator::v1 as pb;
use dsr_proto::orchestrator::v1::requests_client::RequestsClient;
use dsr_proto::transfer::v1 as tr;
use dsr_proto::transfer::v1::transfer_registry_client::TransferRegistryClient;
use tonic::transport::Channel;

use super::bearer;

/// What to run.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    pub(super) calls: usize,
    pub(super) streams: usize,
    pub(super) concurrency: usize,
    pub(super) callers: usize,
}

/// Statuses seen, by kind of call.
#[derive(Default)]
struct Tally(BTreeMap<(&'static str, String), usize>);

impl Tally {
    fn add(&mut self, what: &'static str, code: tonic::Code) {
        *self.0.entry((what, format!("{code:?}"))).or_default() += 1;
    }

    fn only_ok_or_exhausted(&self) -> bool {
        self.0
            .keys()
            .all(|(_, c)| c == "Ok" || c == "ResourceExhausted")
    }
}

/// Resident memory of `pid` in KiB: (now, peak).
fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_base_port() -> anyhow::Result<u16> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for i in 0..200u32 {
        let p = 20_000 + u16::try_from((seed / 7 + i * 97) % 12_000).unwrap_or(0);
        if (0..20).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            return Ok(p);
        }
    }
    anyhow::bail!("no twenty free consecutive ports (ten services, ten ops ports)")
}

async fn until_serving(port: u16, child: &mut Child) -> anyhow::Result<Channel> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(status) = child.0.try_wait()? {
            anyhow::bail!("dsr up stopped while starting: {status}");
        }
        if let Ok(ch) = Channel::from_shared(format!("http://127.0.0.1:{port}"))?
            .connect()
            .await
        {
            let ok = tonic_health::pb::health_client::HealthClient::new(ch.clone())
                .check(tonic_health::pb::HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok_and(|r| r.into_inner().status == 1);
            if ok {
                return Ok(ch);
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "dsr up did not start in time");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn mint(data: &Path, subject: &str) -> anyhow::Result<String> {
    crate::dev::token_or_mint(
        data,
        None,
        subject,
        crate::services::all_audiences(),
        crate::services::people_scopes()
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        Duration::from_secs(3600),
    )
}

/// Runs the soak; prints the figures.
#[allow(clippy::print_stdout)]
pub(super) async fn run(plan: Plan) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let base = free_base_port()?;
    let exe = std::env::current_exe()?;
    let mut child = Child(
        std::process::Command::new(exe)
            .args(["up", "--base-port", &base.to_string(), "--data-dir"])
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot start dsr up")?,
    );
    let pid = child.0.id();
    let orch = until_serving(base + 7, &mut child).await?;
    let identity = Channel::from_shared(format!("http://127.0.0.1:{}", base + 4))?
        .connect()
        .await?;
    let registry = Channel::from_shared(format!("http://127.0.0.1:{base}"))?
        .connect()
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (at_rest, _) = rss(pid).context("cannot read the process's memory")?;
    println!(
        "dsr up (pid {pid}) serving; {:.1} MiB resident at rest",
        mib(at_rest)
    );

    // Each caller submits a request that stays open (waiting for the
    // person's verification) and watches it.
    let callers = plan.callers.max(1);
    let mut who = Vec::with_capacity(callers);
    for i in 0..callers {
        let token = mint(&data, &format!("soak-portal-{i}"))?;
        let r = RequestsClient::new(orch.clone())
            .submit(bearer(
                &token,
                pb::SubmitRequest {
                    kind: pb::Kind::Access as i32,
                    controller: Some(common::ControllerRef {
                        organisation_number: "556134-1248".into(),
                    }),
                    claimed: vec![common::Identity {
                        r#type: common::IdentityType::Email as i32,
                        format: 0,
                        value: format!("soak-{i}@example.se"),
                        hmac_key_id: String::new(),
                    }],
                    language: "sv".into(),
                    idempotency_key: format!("soak-{i}-{}", uuid::Uuid::new_v4().simple()),
                    ..Default::default()
                },
            )?)
            .await
            .map_err(|s| crate::request::explain(&s))?
            .into_inner()
            .request
            .context("empty answer")?;
        who.push((token, r.id));
    }
    let who = Arc::new(who);
    let tally = Arc::new(Mutex::new(Tally::default()));

    // Memory sampled while the burst runs.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut most = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                if let Some((now, _)) = rss(pid) {
                    most = most.max(now);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            most
        })
    };

    // The streams, opened over a handful of connections and held.
    let started = Instant::now();
    let mut held = Vec::new();
    let mut connections = Vec::new();
    for _ in 0..8 {
        connections.push(
            Channel::from_shared(format!("http://127.0.0.1:{}", base + 7))?
                .connect()
                .await?,
        );
    }
    let mut opening = Vec::with_capacity(plan.streams);
    for i in 0..plan.streams {
        let (token, id) = who[i % who.len()].clone();
        let ch = connections[i % connections.len()].clone();
        let tally = tally.clone();
        opening.push(tokio::spawn(async move {
            let req = bearer(&token, pb::WatchRequest { id }).ok()?;
            match RequestsClient::new(ch).watch(req).await {
                Ok(s) => {
                    let mut s = s.into_inner();
                    // The first message is the request as it stands.
                    let first = s.message().await;
                    let code = match &first {
                        Ok(_) => tonic::Code::Ok,
                        Err(e) => e.code(),
                    };
                    tally.lock().ok()?.add("Watch", code);
                    Some(s)
                }
                Err(e) => {
                    tally.lock().ok()?.add("Watch", e.code());
                    None
                }
            }
        }));
    }
    for o in opening {
        if let Some(s) = o.await? {
            held.push(s);
        }
    }
    let streams_open = held.len();
    let streams_took = started.elapsed();

    // The unary burst.
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let burst = Instant::now();
    let mut tasks = Vec::with_capacity(plan.concurrency);
    for t in 0..plan.concurrency {
        let next = next.clone();
        let who = who.clone();
        let tally = tally.clone();
        let orch = connections[t % connections.len()].clone();
        let identity = identity.clone();
        let registry = registry.clone();
        let calls = plan.calls;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= calls {
                    return Ok::<_, anyhow::Error>(());
                }
                let (token, id) = &who[i % who.len()];
                let (what, code) = match i % 4 {
                    0 => (
                        "Requests.Get",
                        RequestsClient::new(orch.clone())
                            .get(bearer(token, pb::GetRequest { id: id.clone() })?)
                            .await
                            .map_or_else(|e| e.code(), |_| tonic::Code::Ok),
                    ),
                    1 => (
                        "Requests.List",
                        RequestsClient::new(orch.clone())
                            .list(bearer(
                                token,
                                pb::ListRequest {
                                    page: Some(common::PageRequest {
                                        page_size: 50,
                                        page_token: String::new(),
                                    }),
                                    ..Default::default()
                                },
                            )?)
                            .await
                            .map_or_else(|e| e.code(), |_| tonic::Code::Ok),
                    ),
                    2 => (
                        "IdentityVerification.GetJwks",
                        IdentityVerificationClient::new(identity.clone())
                            .get_jwks(bearer(token, idv::GetJwksRequest {})?)
                            .await
                            .map_or_else(|e| e.code(), |_| tonic::Code::Ok),
                    ),
                    _ => (
                        "TransferRegistry.ListRecipients",
                        TransferRegistryClient::new(registry.clone())
                            .list_recipients(bearer(
                                token,
                                tr::ListRecipientsRequest {
                                    ..Default::default()
                                },
                            )?)
                            .await
                            .map_or_else(|e| e.code(), |_| tonic::Code::Ok),
                    ),
                };
                if let Ok(mut t) = tally.lock() {
                    t.add(what, code);
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let burst_took = burst.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let sampled = sampler.await?;
    let (_, peak) = rss(pid).context("cannot read the process's memory")?;
    drop(held);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after, _) = rss(pid).context("cannot read the process's memory")?;

    println!(
        "{} Watch streams asked for by {callers} callers in {:.1} s, {streams_open} held open during the burst",
        plan.streams,
        streams_took.as_secs_f64()
    );
    println!(
        "{} unary calls at concurrency {} in {:.1} s ({:.0} calls/s)",
        plan.calls,
        plan.concurrency,
        burst_took.as_secs_f64(),
        plan.calls as f64 / burst_took.as_secs_f64()
    );
    let t = tally
        .lock()
        .map_err(|_| anyhow::anyhow!("tally poisoned"))?;
    println!("statuses:");
    for ((what, code), n) in &t.0 {
        println!("  {what:<34} {code:<18} {n:>6}");
    }
    println!(
        "resident memory of dsr up: at rest {:.1} MiB, peak {:.1} MiB (sampled {:.1} MiB), after {:.1} MiB",
        mib(at_rest),
        mib(peak),
        mib(sampled),
        mib(after)
    );
    anyhow::ensure!(
        t.only_ok_or_exhausted(),
        "a status other than OK or RESOURCE_EXHAUSTED came back"
    );
    println!("only OK and RESOURCE_EXHAUSTED came back");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.0.wait();
    Ok(())
}
