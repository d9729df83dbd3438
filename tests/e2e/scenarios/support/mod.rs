//! What the scenarios share: the mesh's processes and how to wait for
//! them ([`process`], [`mesh`]), the databases as their operators see them
//! ([`db`]), the development outbox ([`outbox`]), the documents a person
//! receives ([`documents`]), an OTLP receiver ([`otlp`]), and the gRPC
//! helpers below.

pub(crate) mod db;
pub(crate) mod documents;
pub(crate) mod mesh;
pub(crate) mod otlp_sink;
pub(crate) mod outbox;
pub(crate) mod process;

pub(crate) use db::*;
pub(crate) use documents::*;
pub(crate) use mesh::*;
pub(crate) use otlp_sink::*;
pub(crate) use outbox::*;
pub(crate) use process::*;

pub(crate) use std::collections::{BTreeMap, BTreeSet};
pub(crate) use std::io::{BufRead as _, BufReader, Read as _};
pub(crate) use std::path::{Path, PathBuf};
pub(crate) use std::process::{Child, Command, Stdio};
pub(crate) use std::time::{Duration, Instant};

pub(crate) use dsr_proto::common::v1 as common;
pub(crate) use dsr_proto::erasure::v1 as era;
pub(crate) use dsr_proto::erasure::v1::erasure_client::ErasureClient;
pub(crate) use dsr_proto::identity::v1 as idv;
pub(crate) use dsr_proto::identity::v1::identity_verification_client::IdentityVerificationClient;
pub(crate) use dsr_proto::orchestrator::v1 as pb;
pub(crate) use dsr_proto::orchestrator::v1::requests_client::RequestsClient;
pub(crate) use dsr_store::testing::{POSTGRES_ENV, TestDb};
pub(crate) use opentelemetry_proto::tonic as otlp;
pub(crate) use tonic::transport::Channel;
pub(crate) use tonic_types::StatusExt as _;

pub(crate) const SVERIGE: &str = "556134-1248";
pub(crate) const FINANS: &str = "556885-5265";
/// Seeded person 0: in the CRM by email; in the legal system only by the
/// phone number the CRM links to them.
pub(crate) const PERSON: &str = "per.johansson0@bolaget.se";

/// The tests here start many processes: one at a time.
pub(crate) static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every scope of the mesh's services (the multi-process test mesh signs
/// every service's calls with one key, whose issuer is granted them all).
pub(crate) const ALL_SCOPES: [&str; 22] = [
    "transfers:read",
    "transfers:write",
    "system:describe",
    "system:read",
    "system:write",
    "identity:verify",
    "identity:attest",
    "identity:notify",
    "discovery:locate",
    "discovery:read",
    "export:build",
    "export:read",
    "erasure:execute",
    "erasure:read",
    "erasure:holds",
    "erasure:replay",
    "erasure:sweep",
    "requests:submit",
    "requests:read",
    "requests:manage",
    "incidents:report",
    "incidents:manage",
];

/// `n` consecutive free ports below the kernel's ephemeral range (32768 and
/// up on Linux): ports picked from that range may be taken, before a
/// service binds them, by the ephemeral end of any outgoing connection (the
/// mesh's own, PostgreSQL's), which made a service fail with "address in
/// use" now and then.
pub(crate) fn consecutive_ports(n: u16) -> u16 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id();
    for attempt in 0..200u32 {
        let base = 20_000 + u16::try_from((seed.wrapping_add(attempt * 7919)) % 12_000).unwrap();
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

pub(crate) async fn postgres() -> Option<TestDb> {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => Some(TestDb::postgres(&url).await.unwrap()),
        _ => None,
    }
}

pub(crate) fn bearer<T>(token: &str, m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

pub(crate) fn email(v: &str) -> common::Identity {
    common::Identity {
        r#type: common::IdentityType::Email as i32,
        format: 0,
        value: v.into(),
        hmac_key_id: String::new(),
    }
}

pub(crate) fn controller(o: &str) -> Option<common::ControllerRef> {
    Some(common::ControllerRef {
        organisation_number: o.into(),
    })
}

pub(crate) async fn get(
    client: &mut RequestsClient<Channel>,
    token: &str,
    id: &str,
) -> pb::DataSubjectRequest {
    client
        .get(bearer(token, pb::GetRequest { id: id.into() }))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
}

pub(crate) async fn wait_state(
    client: &mut RequestsClient<Channel>,
    token: &str,
    id: &str,
    state: pb::State,
    within: Duration,
) -> pb::DataSubjectRequest {
    let deadline = Instant::now() + within;
    loop {
        let r = get(client, token, id).await;
        if r.state == state as i32 {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "request never reached {state:?}: {r:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn date_pb(d: chrono::NaiveDate) -> common::Date {
    use chrono::Datelike as _;
    common::Date {
        year: d.year(),
        month: i32::try_from(d.month()).unwrap(),
        day: i32::try_from(d.day()).unwrap(),
    }
}

pub(crate) fn request_id(stdout: &str) -> String {
    stdout.lines().next().unwrap().trim().to_owned()
}

/// Waits for a write request of `id` to finish (with or without retained
/// records).
pub(crate) async fn wait_finished(
    client: &mut RequestsClient<Channel>,
    token: &str,
    id: &str,
) -> pb::DataSubjectRequest {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let r = get(client, token, id).await;
        if r.state == pb::State::Completed as i32
            || r.state == pb::State::CompletedWithRetained as i32
        {
            return r;
        }
        assert!(Instant::now() < deadline, "request never finished: {r:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
