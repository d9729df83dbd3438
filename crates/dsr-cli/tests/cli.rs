//! The `dsr` binary as a user runs it: `dsr up`, `dsr token`, `dsr transfers`,
//! `dsr serve`, `dsr migrate`, configuration errors, SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dsr_proto::transfer::v1 as pb;
use dsr_proto::transfer::v1::transfer_registry_client::TransferRegistryClient;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const DSR: &str = env!("CARGO_BIN_EXE_dsr");

fn dsr(args: &[&str]) -> Output {
    Command::new(DSR)
        .args(args)
        .env_remove("DSR_TEST_POSTGRES_URL")
        .output()
        .unwrap()
}

/// Tests that run `dsr up` take it in turn: each binds ten consecutive ports,
/// and two picking overlapping ranges at once would fail for no fault of
/// the code.
static UP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `dsr up` in the background, returned once it printed its banner.
fn up(data: &Path, port: u16) -> Child {
    up_with(data, port, &[])
}

/// `dsr up` with extra environment variables.
fn up_with(data: &Path, port: u16, env: &[(&str, &str)]) -> Child {
    let mut child = Command::new(DSR)
        .args([
            "up",
            "--data-dir",
            data.to_str().unwrap(),
            "--base-port",
            &port.to_string(),
            "--log-format",
            "json",
        ])
        .env_remove("DSR_TEST_POSTGRES_URL")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let Some(Ok(first)) = lines.next() else {
        let mut err = String::new();
        use std::io::Read as _;
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        panic!("dsr up did not start:\n{err}");
    };
    assert!(first.starts_with("DSR Mesh is up"), "{first}");
    // keep draining stdout and stderr so the child never blocks on a full
    // pipe (a busy machine's shutdown logs more than a pipe holds)
    std::thread::spawn(move || for _ in lines {});
    let drained = drain(child.stderr.take().unwrap());
    STDERR.lock().unwrap().insert(child.id(), drained);
    child
}

/// The threads draining each `dsr up`'s stderr, by process id.
static STDERR: std::sync::Mutex<std::collections::BTreeMap<u32, std::thread::JoinHandle<String>>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// `logs` with every RFC 3339 time (`2026-12-06T14:50:09.939049Z`) blanked
/// out, the digits of its fraction included.
fn without_times(logs: &str) -> String {
    let shape = b"dddd-dd-ddTdd:dd:dd";
    let b = logs.as_bytes();
    let fits = |i: usize| {
        b.len() >= i + shape.len()
            && shape.iter().zip(&b[i..]).all(|(s, c)| match s {
                b'd' => c.is_ascii_digit(),
                s => s == c,
            })
    };
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if fits(i) {
            i += shape.len();
            if b.get(i) == Some(&b'.') {
                i += 1;
                while b.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            out.extend_from_slice(b"<time>");
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("only ASCII was taken out")
}

#[test]
fn times_are_left_out_of_a_search_of_the_logs() {
    let logs = "2026-12-06T14:50:09.939049Z INFO code 123456 sent\n{\"timestamp\":\"2026-12-06T14:50:10.000001Z\"}";
    let blanked = without_times(logs);
    assert!(
        !blanked.contains("939049") && !blanked.contains("000001"),
        "{blanked}"
    );
    assert!(blanked.contains("code 123456 sent"), "{blanked}");
}

fn terminate(mut child: Child) -> (bool, String) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let drained = STDERR.lock().unwrap().remove(&child.id());
            let err = drained.map(|t| t.join().unwrap()).unwrap_or_default();
            return (st.success(), err);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let drained = STDERR.lock().unwrap().remove(&child.id());
            let err = drained.map(|t| t.join().unwrap()).unwrap_or_default();
            let tail: String = err
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            panic!("dsr did not stop after SIGTERM; its last log lines:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads `from` to its end in a thread of its own (so that the process
/// writing it never blocks on a full pipe); joined, the text read.
fn drain(mut from: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = from.read_to_string(&mut text);
        text
    })
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

// Multi-threaded: the client connection must answer the server's HTTP/2
// shutdown handshake while the test thread waits for the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_authenticates_persists_and_stops_on_sigterm() {
    let _turn = UP.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_ports();
    let child = up(&data, port);
    let endpoint = format!("http://127.0.0.1:{port}");
    let ch = Channel::from_shared(endpoint.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();

    let st = HealthClient::new(ch.clone())
        .check(HealthCheckRequest {
            service: "dsr.transfer.v1.TransferRegistry".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(st, 1, "SERVING");

    let mut client = TransferRegistryClient::new(ch.clone());
    let err = client
        .get_recipient(pb::GetRecipientRequest {
            id: "print-mail".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let token = stdout(&dsr(&["token", "--data-dir", data.to_str().unwrap()]))
        .trim()
        .to_owned();
    let mut req = tonic::Request::new(pb::GetRecipientRequest {
        id: "print-mail".into(),
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    assert_eq!(
        client
            .get_recipient(req)
            .await
            .unwrap()
            .into_inner()
            .recipient
            .unwrap()
            .id,
        "print-mail"
    );

    // the CLI against the running mesh
    let d = data.to_str().unwrap();
    let check = stdout(&dsr(&[
        "transfers",
        "--endpoint",
        &endpoint,
        "--data-dir",
        d,
        "check",
        "storage-us",
        "--category",
        "contact.email",
    ]));
    assert!(
        check.starts_with("LAWFUL (TRANSFER_BASIS_DATA_PRIVACY_FRAMEWORK, US)"),
        "{check}"
    );
    let file = dir.path().join("r.toml");
    std::fs::write(
        &file,
        "[[recipient]]\nid = \"agent-in\"\nname = { sv = \"Ombud i Indien\", en = \"Agent in India\" }\nrole = \"agent\"\ncountry = \"IN\"\ncontrollers = [\"556134-1248\"]\ncategories = [\"contact.name\"]\ndpa_reference = \"AG-1\"\n",
    )
    .unwrap();
    let put = stdout(&dsr(&[
        "transfers",
        "--endpoint",
        &endpoint,
        "--data-dir",
        d,
        "put",
        "--file",
        file.to_str().unwrap(),
    ]));
    assert_eq!(put.trim(), "created agent-in (revision 1)");
    let check = stdout(&dsr(&[
        "transfers",
        "--endpoint",
        &endpoint,
        "--data-dir",
        d,
        "check",
        "agent-in",
        "--category",
        "contact.name",
    ]));
    assert!(
        check.starts_with("NOT LAWFUL (TRANSFER_BASIS_NONE, IN)") && check.contains("NO_SAFEGUARD"),
        "{check}"
    );

    // Only the erasure service may write to a data system: discovery's key
    // asking for system:write, or the CLI's (a portal's) token, are refused
    // at the CRM; the same key claiming to be the erasure service is not
    // believed.
    let crm = Channel::from_shared(format!("http://127.0.0.1:{}", port + 1))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let as_service = |name: &str, iss: &str, scope: &str| {
        let key = data.join(format!("keys/{name}-service.pem"));
        let (signer, _) = dsr_auth::TokenSigner::from_key_file(&key, None, iss).unwrap();
        signer
            .mint(&dsr_auth::TokenRequest {
                subject: format!("service:{name}"),
                audiences: vec!["crm".into()],
                scopes: vec![scope.into()],
                ttl: Duration::from_secs(60),
            })
            .unwrap()
    };
    let describe = |token: String| {
        let crm = crm.clone();
        async move {
            let mut r = tonic::Request::new(dsr_proto::system::v1::DescribeRequest {});
            r.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            dsr_proto::system::v1::data_system_client::DataSystemClient::new(crm)
                .describe(r)
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }
    };
    assert_eq!(
        describe(as_service("discovery", "dsr-discovery", "system:describe")).await,
        Ok(())
    );
    assert_eq!(
        describe(as_service("discovery", "dsr-discovery", "system:write")).await,
        Err(tonic::Code::PermissionDenied)
    );
    assert_eq!(
        describe(as_service("discovery", "dsr-erasure", "system:describe")).await,
        Err(tonic::Code::Unauthenticated)
    );
    let portal = stdout(&dsr(&[
        "token",
        "--data-dir",
        data.to_str().unwrap(),
        "--audience",
        "crm",
        "--scope",
        "system:describe",
    ]))
    .trim()
    .to_owned();
    assert_eq!(describe(portal).await, Err(tonic::Code::PermissionDenied));

    // SIGTERM: exit 0, then nothing listens
    let (ok, logs) = terminate(child);
    assert!(ok, "exit status not 0; logs:\n{logs}");
    assert!(logs.contains("draining in-flight calls"), "{logs}");
    assert!(
        Channel::from_shared(endpoint.clone())
            .unwrap()
            .connect()
            .await
            .is_err()
    );

    // data survives a restart
    let child = up(&data, port);
    let got = stdout(&dsr(&[
        "transfers",
        "--endpoint",
        &endpoint,
        "--data-dir",
        d,
        "get",
        "agent-in",
    ]));
    assert!(
        got.contains("Agent in India") && got.contains("sv: Ombud i Indien"),
        "{got}"
    );
    assert!(got.contains("transfer: NOT LAWFUL"), "{got}");
    let (ok, _) = terminate(child);
    assert!(ok);
}

#[test]
fn bad_configuration_stops_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(DSR)
        .args(["up", "--data-dir", dir.path().to_str().unwrap()])
        .env("DSR_SERVER__CONCURRENCY_LIMIT", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.concurrency_limit must be at least 1"),
        "{err}"
    );

    let cfg = dir.path().join("dsr.toml");
    std::fs::write(&cfg, "[database]\nurl = \"oracle://db/x\"\n").unwrap();
    let out = Command::new(DSR)
        .args(["--config", cfg.to_str().unwrap(), "migrate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("database.url"));
    // MySQL is a data system's database, never the mesh's.
    std::fs::write(&cfg, "[database]\nurl = \"mysql://db/x\"\n").unwrap();
    let out = Command::new(DSR)
        .args(["--config", cfg.to_str().unwrap(), "migrate", "orchestrator"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("database.url") && err.contains("system-sql"),
        "{err}"
    );
}

#[test]
fn serve_requires_migrations_and_keys() {
    // It listens on a port too: not while a `dsr up` picks its ten.
    let _turn = UP.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let port = free_ports().to_string();
    let listen = format!("127.0.0.1:{port}");
    // no verification keys
    let out = dsr(&[
        "serve",
        "transfer-registry",
        "--data-dir",
        d,
        "--listen",
        &listen,
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no token verification keys"));

    let jwks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dsr-auth/tests/fixtures/jwks.json");
    let serve = |extra: &[&str]| {
        let mut args = vec![
            "serve",
            "transfer-registry",
            "--data-dir",
            d,
            "--listen",
            &listen,
        ];
        args.extend_from_slice(extra);
        Command::new(DSR)
            .args(&args)
            .env("DSR_AUTH__JWKS_FILE", &jwks)
            .env("DSR_AUTH__ISSUERS", "[\"https://idp.test\"]")
            .env(
                "DSR_AUTH__GRANTS",
                "{ \"https://idp.test\" = [\"system:describe\", \"system:read\"] }",
            )
            .env(
                "DSR_AUTH__GRANTS",
                "{ \"https://idp.test\" = [\"transfers:read\", \"transfers:write\"] }",
            )
            .env_remove("DSR_TEST_POSTGRES_URL")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // an unmigrated database is refused
    let out = serve(&[]).wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("pending migrations: run `dsr migrate transfer-registry`")
    );
    // after `dsr migrate` it serves, and SIGTERM stops it with 0
    stdout(&dsr(&["migrate", "--data-dir", d]));
    let child = serve(&[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&listen).is_err() {
        assert!(Instant::now() < deadline, "dsr serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, logs) = terminate(child);
    assert!(ok, "{logs}");
}

/// Twenty consecutive free ports (every service of `dsr up`, the privacy centre last, then their ops ports).
fn free_ports() -> u16 {
    // Below the kernel's ephemeral range (32768 and up): a port picked there
    // may be taken by an outgoing connection before `dsr up` binds it.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id();
    for attempt in 0..200u32 {
        let base = 20_000 + u16::try_from((seed.wrapping_add(attempt * 7919)) % 12_000).unwrap();
        if (0..20).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no twenty consecutive free ports (dsr up binds twenty)");
}

// Multi-threaded for the same reason as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_passes_against_every_reference_system() {
    let _turn = UP.lock().await;
    use dsr_system_sql::reference::Reference;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    // On PostgreSQL when DSR_TEST_POSTGRES_URL is set: a fresh database, a schema per service.
    let pg = match std::env::var(dsr_store::testing::POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => {
            Some(dsr_store::testing::TestDb::postgres(&url).await.unwrap())
        }
        _ => None,
    };
    let mut env = vec![("DSR_SYSTEM_SQL__SEED_SUBJECTS", "200")];
    if let Some(db) = &pg {
        env.push(("DSR_DATABASE__URL", db.url.as_str()));
    }
    let port = free_ports();
    let child = up_with(&data, port, &env);

    // Discovery finds person 0 at the CRM by email, and at the legal vendor
    // only through the phone number the CRM links.
    {
        use dsr_proto::discovery::v1 as dpb;
        let p = &dsr_system_sql::reference::people(1, 1)[0];
        let token = stdout(&dsr(&["token", "--data-dir", d])).trim().to_owned();
        let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", port + 5))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut req = tonic::Request::new(dpb::LocateRequest {
            request_id: "7f0c2a4e-0000-4000-8000-000000000001".into(),
            controller: Some(dsr_proto::common::v1::ControllerRef {
                organisation_number: p.controller.into(),
            }),
            due_date: Some(dsr_proto::common::v1::Date {
                year: 2026,
                month: 12,
                day: 23,
            }),
            identities: vec![dsr_proto::common::v1::Identity {
                r#type: dsr_proto::common::v1::IdentityType::Email as i32,
                format: 0,
                value: p.email.clone(),
                hmac_key_id: String::new(),
            }],
            max_rounds: 0,
        });
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let map = dsr_proto::discovery::v1::discovery_client::DiscoveryClient::new(ch)
            .locate(req)
            .await
            .unwrap()
            .into_inner()
            .subject_map
            .unwrap();
        let found: Vec<&str> = map
            .systems
            .iter()
            .filter(|s| s.outcome == dpb::Outcome::Found as i32)
            .map(|s| s.system_id.as_str())
            .collect();
        assert_eq!(found, ["crm", "legal"], "{map:?}");
        assert!(!map.partial);
    }

    for (i, r) in Reference::ALL.iter().enumerate() {
        let endpoint = format!("http://127.0.0.1:{}", port + 1 + i as u16);
        let out = dsr(&[
            "conformance",
            &endpoint,
            "--data-dir",
            d,
            "--identity",
            &r.sample_identity(1),
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {text}{}",
            r.id(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("29 passed, 0 failed, 0 not applicable"),
            "{}: {text}",
            r.id()
        );
    }
    // A kit that cannot be fooled: handed a token that may write (the
    // erasure service's) as the one that must be refused, it reports the
    // system as accepting a writer outside the policy.
    let (erasure, _) = dsr_auth::TokenSigner::from_key_file(
        &data.join("keys/erasure-service.pem"),
        None,
        "dsr-erasure",
    )
    .unwrap();
    let writer = erasure
        .mint(&dsr_auth::TokenRequest {
            subject: "service:dsr-erasure".into(),
            audiences: vec!["crm".into()],
            scopes: vec![
                "system:describe".into(),
                "system:read".into(),
                "system:write".into(),
            ],
            ttl: std::time::Duration::from_secs(300),
        })
        .unwrap();
    let other = &dsr_system_sql::reference::people(200, 1)[2];
    let out = dsr(&[
        "conformance",
        &format!("http://127.0.0.1:{}", port + 1),
        "--data-dir",
        d,
        "--identity",
        &format!("email:{}", other.email),
        "--reader-token",
        &writer,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    let line = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line {name}: {text}"))
            .to_owned()
    };
    assert!(line("Locate finds the person").contains(" ok "), "{text}");
    assert!(
        line("An Erase from a service other than erasure is refused").contains("FAIL"),
        "{text}"
    );
    // the same person again: gone, so conformance fails and says why
    let endpoint = format!("http://127.0.0.1:{}", port + 1);
    let out = dsr(&[
        "conformance",
        &endpoint,
        "--data-dir",
        d,
        "--identity",
        &Reference::Crm.sample_identity(1),
    ]);
    assert!(!out.status.success());
    let (ok, logs) = terminate(child);
    assert!(ok, "{logs}");
    if let Some(db) = pg {
        db.finish().await;
    }
}

#[test]
fn a_manifest_naming_a_missing_column_stops_the_connector() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    stdout(&dsr(&[
        "seed",
        "--system",
        "crm",
        "--subjects",
        "5",
        "--data-dir",
        d,
    ]));
    let manifest = dir.path().join("crm-broken.yaml");
    let text = dsr_system_sql::reference::Reference::Crm
        .manifest()
        .replacen("name: job_title,", "name: job_titel,", 1);
    std::fs::write(&manifest, text).unwrap();
    let jwks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dsr-auth/tests/fixtures/jwks.json");
    let out = Command::new(DSR)
        .args([
            "serve",
            "system-sql",
            "--manifest",
            manifest.to_str().unwrap(),
            "--data-dir",
            d,
            "--migrate",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("DSR_AUTH__JWKS_FILE", &jwks)
        .env("DSR_AUTH__ISSUERS", "[\"https://idp.test\"]")
        .env(
            "DSR_AUTH__GRANTS",
            "{ \"https://idp.test\" = [\"system:describe\", \"system:read\"] }",
        )
        .env_remove("DSR_TEST_POSTGRES_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "manifest {}: tables[0].columns[1].name: no column job_titel in table contacts",
        manifest.display()
    );
    assert!(err.contains(&want), "{err}");
}

// Multi-threaded for the same reason as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_verification_under_dsr_up_gives_a_token_other_services_accept() {
    let _turn = UP.lock().await;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let port = free_ports();
    let child = up_with(&data, port, &[("DSR_SYSTEM_SQL__SEED_SUBJECTS", "20")]);
    let endpoint = format!("http://127.0.0.1:{}", port + 4);
    let challenge = stdout(&dsr(&[
        "verify",
        "start",
        "--data-dir",
        d,
        "--endpoint",
        &endpoint,
        "--email",
        "Karin.Lind@Exempel.se",
        "--language",
        "en",
    ]));
    let challenge = challenge.trim();
    let message = std::fs::read_dir(data.join("outbox"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(message).unwrap();
    assert!(text.starts_with("To: karin.lind@exempel.se\n"), "{text}");
    let i = text.find("code is ").unwrap() + 8;
    let code = &text[i..i + 6];
    let token = stdout(&dsr(&[
        "verify",
        "complete",
        "--data-dir",
        d,
        "--endpoint",
        &endpoint,
        "--challenge",
        challenge,
        "--code",
        code,
    ]));
    let token = token.trim();

    // Another service verifies it offline with the JWKS published in the data directory.
    let jwks = std::fs::read_to_string(data.join("identity-jwks.json")).unwrap();
    let validator = dsr_auth::Validator::new(
        Arc::new(dsr_auth::KeySet::from_jwks_json(&jwks).unwrap()),
        dsr_auth::ValidatorConfig {
            issuers: vec![dsr_identity::tokens::ISSUER.into()],
            audience: dsr_identity::tokens::AUDIENCE.into(),
            leeway_secs: 0,
            grants: None,
        },
    );
    let claims: dsr_identity::tokens::VerificationClaims = validator
        .decode(token, &["exp", "iss", "aud", "sub"])
        .unwrap();
    assert_eq!(claims.identities[0].value, "karin.lind@exempel.se");
    assert_eq!(claims.acr, dsr_identity::tokens::Assurance::Low);
    // The same code again is refused.
    let again = dsr(&[
        "verify",
        "complete",
        "--data-dir",
        d,
        "--endpoint",
        &endpoint,
        "--challenge",
        challenge,
        "--code",
        code,
    ]);
    assert!(!again.status.success());

    let (ok, logs) = terminate(child);
    assert!(ok, "{logs}");
    // The code is six digits, as is a log line's microsecond: times are
    // left out of the search (a code once matched one).
    let logs = without_times(&logs);
    for secret in [code, token, "karin.lind", "Karin.Lind"] {
        assert!(
            !logs.contains(secret),
            "a secret appears in the logs of dsr up: {secret}"
        );
    }
    assert!(logs.contains("verification attempt"));
}

#[test]
fn policy_show_prints_the_rules_and_a_bad_policy_stops_with_its_field() {
    let out = stdout(&dsr(&["policy", "show"]));
    assert!(out.contains("aml-kyc"), "{out}");
    assert!(out.contains("60 months after relationship_end"), "{out}");
    assert!(out.contains("17(3)(b)"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("retention.toml");
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dsr-domain/data/retention.toml"
    ))
    .unwrap()
    .replacen("anchor = \"event_date\"", "anchor = \"birthday\"", 1);
    std::fs::write(&bad, text).unwrap();
    let o = Command::new(DSR)
        .args(["policy", "show"])
        .env("DSR_RETENTION_FILE", &bad)
        .env_remove("DSR_TEST_POSTGRES_URL")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("retention_file") && err.contains(".anchor"),
        "{err}"
    );
}

#[test]
fn letters_preview_writes_a_letter_out_and_a_bad_letters_file_is_named() {
    let out = stdout(&dsr(&[
        "letters",
        "preview",
        "extended",
        "--language",
        "en",
    ]));
    assert!(
        out.starts_with("Subject: We need more time for your request")
            && out.contains("by 1 month(s)")
            && out.contains("Article 12(3)")
            && out.contains("https://www.imy.se"),
        "{out}"
    );
    let sv = stdout(&dsr(&["letters", "preview", "refused"]));
    assert!(
        sv.contains("Integritetsskyddsmyndigheten") && sv.contains("domstol"),
        "{sv}"
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("letters.toml");
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dsr-domain/data/letters.toml"
    ))
    .unwrap()
    .replace("Skälet: {reason}", "Skälet: se nedan");
    std::fs::write(&bad, text).unwrap();
    let o = dsr(&[
        "letters",
        "preview",
        "received",
        "--file",
        bad.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("letters.extended.sv: must tell {reason}"),
        "{err}"
    );
    let o = dsr(&["letters", "preview", "welcome"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no letter \"welcome\""));
}

/// `dsr incident` and `dsr complaint` under `dsr up`, as the DPO scripts
/// them: report a breach on the CRM's KYC documents, ask the systems who
/// is affected, assess it, draft the notification to IMY, record it, and
/// export the register as CSV; file a complaint and answer it. A bad
/// argument names its field and records nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_and_complaints_from_the_command_line() {
    let _turn = UP.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let port = free_ports();
    let child = up(&data, port);
    let base = port.to_string();
    let cli = |args: &[&str]| {
        Command::new(DSR)
            .args(args)
            .args(["--data-dir", d])
            .env("DSR_UP__BASE_PORT", &base)
            .env_remove("DSR_TEST_POSTGRES_URL")
            .output()
            .unwrap()
    };
    let bad = cli(&["incident", "report", "--summary", " "]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("summary"));
    let reported = stdout(&cli(&[
        "incident",
        "report",
        "--summary",
        "KYC documents exported by mistake",
        "--system",
        "crm",
        "--category",
        "aml.identity_document",
    ]));
    let id = reported
        .lines()
        .find_map(|l| l.strip_prefix("incident   "))
        .unwrap()
        .trim()
        .to_owned();
    assert!(reported.contains("hours left"), "{reported}");
    let affected = stdout(&cli(&["incident", "affected", &id]));
    assert!(
        affected.contains("556134-1248 aml.identity_document"),
        "{affected}"
    );
    stdout(&cli(&[
        "incident",
        "assess",
        &id,
        "--risk",
        "risk",
        "--reasoning",
        "Copies of passports",
        "--consequences",
        "Identity theft",
        "--measures",
        "Export recalled",
    ]));
    let draft = cli(&["incident", "draft", &id, "--language", "en"]);
    let text = stdout(&draft);
    assert!(
        text.contains("Likely consequences (Article 33(3)(c))") && text.contains("Identity theft"),
        "{text}"
    );
    assert!(
        String::from_utf8_lossy(&draft.stderr).is_empty(),
        "nothing missing"
    );
    let told = stdout(&cli(&[
        "incident",
        "notify-imy",
        &id,
        "--reference",
        "IMY-2026-77",
    ]));
    assert!(told.contains("reference IMY-2026-77"), "{told}");
    let csv = stdout(&cli(&["incident", "list", "--csv"]));
    assert!(csv.starts_with("id,discovered,summary"), "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.starts_with(&id) && l.contains(",risk,")),
        "{csv}"
    );

    let filed = stdout(&cli(&[
        "complaint",
        "file",
        "--controller",
        "556134-1248",
        "--reply-to",
        "karin.lind@exempel.se",
        "--text",
        "Marketing after my objection",
    ]));
    let cid = filed
        .lines()
        .find_map(|l| l.strip_prefix("complaint  "))
        .unwrap()
        .trim()
        .to_owned();
    assert!(stdout(&cli(&["complaint", "list", "--open"])).contains(&cid));
    let answered = stdout(&cli(&[
        "complaint",
        "answer",
        &cid,
        "--text",
        "Stopped, and we found why.",
    ]));
    assert!(answered.contains("answered"), "{answered}");
    assert!(!stdout(&cli(&["complaint", "list", "--open"])).contains(&cid));
    let (ok, logs) = terminate(child);
    assert!(ok, "{logs}");
    assert!(!logs.contains("karin.lind"), "an address in the logs");
}

/// A processor's own system joins `dsr up` with `--system`: here the
/// generic connector over the vendor's own database, trusting the mesh's
/// callers' keys from the data directory. A person's access request then
/// reads it like the reference systems; a bad `--system` stops the start
/// naming the flag and the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processors_system_joins_dsr_up_and_is_read_for_an_access_request() {
    let _turn = UP.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    // Refused: a reference system's id, a URL that is none, no operator.
    for (flag, says) in [
        ("crm=http://127.0.0.1:1", "is taken"),
        (
            "vendor-x=ftp://127.0.0.1:1,operator=print-mail",
            "http(s)://",
        ),
        ("vendor-x=http://127.0.0.1:1", "operator_recipient_id"),
    ] {
        let out = dsr(&["up", "--data-dir", d, "--system", flag]);
        assert!(!out.status.success(), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(says) && err.contains("--system"),
            "{flag}: {err}"
        );
    }

    let vendor_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let port = free_ports();
    let mut child = Command::new(DSR)
        .args([
            "up",
            "--data-dir",
            d,
            "--base-port",
            &port.to_string(),
            "--log-format",
            "json",
            "--system",
            &format!("vendor-x=http://127.0.0.1:{vendor_port},operator=print-mail"),
        ])
        .env_remove("DSR_TEST_POSTGRES_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let up_log = drain(child.stderr.take().unwrap());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        banner.push_str(&l);
        banner.push('\n');
        if l.starts_with("Stop with Ctrl-C") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    assert!(
        banner.contains("vendor-x") && banner.contains("discovery-jwks.json"),
        "{banner}"
    );
    // The client commands it suggests find it on its port.
    for cmd in ["dsr verify start", "dsr request access"] {
        assert!(
            banner.contains(&format!("DSR_UP__BASE_PORT={port} {cmd}")),
            "{cmd}: {banner}"
        );
    }

    // The vendor: the print-and-mail schema under its own id, its own
    // database, trusting the mesh's discovery, export and erasure keys.
    let vdir = dir.path().join("vendor");
    std::fs::create_dir_all(&vdir).unwrap();
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../services/dsr-system-sql/reference/print-mail.yaml"
    ))
    .unwrap()
    .replacen("  id: print-mail\n", "  id: vendor-x\n", 1);
    std::fs::write(vdir.join("vendor.yaml"), manifest).unwrap();
    let db = format!("sqlite://{}?mode=rwc", vdir.join("vendor.db").display());
    stdout(&dsr(&[
        "seed",
        "--system",
        "print-mail",
        "--subjects",
        "1000",
        "--seed",
        "1",
        "--database-url",
        &db,
    ]));
    let trusted: String = ["discovery", "export", "erasure"]
        .iter()
        .map(|s| {
            format!("[[auth.trusted]]\nissuer = \"dsr-{s}\"\njwks_file = \"{d}/{s}-jwks.json\"\n")
        })
        .collect();
    std::fs::write(
        vdir.join("vendor.toml"),
        format!("data_dir = \"{}\"\n{trusted}", vdir.display()),
    )
    .unwrap();
    let mut vendor = Command::new(DSR)
        .args([
            "serve",
            "system-sql",
            "--manifest",
            vdir.join("vendor.yaml").to_str().unwrap(),
            "--database-url",
            &db,
            "--migrate",
            "--listen",
            &format!("127.0.0.1:{vendor_port}"),
            "--config",
            vdir.join("vendor.toml").to_str().unwrap(),
        ])
        .env_remove("DSR_TEST_POSTGRES_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drained as it is written: a pipe nobody reads blocks the vendor's
    // logging, and with it the vendor, once it holds 64 KiB.
    let vendor_log = drain(vendor.stderr.take().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", vendor_port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the vendor never listened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A person the CRM links to a customer number the vendor knows.
    let person = dsr_system_sql::reference::people(1000, 1)[1].clone();
    let out = dir.path().join("answer");
    let printed = Command::new(DSR)
        .args([
            "request",
            "access",
            "--data-dir",
            d,
            "--email",
            &person.email,
            "--wait",
            "--out",
            out.to_str().unwrap(),
        ])
        .env("DSR_UP__BASE_PORT", port.to_string())
        .env_remove("DSR_TEST_POSTGRES_URL")
        .output()
        .unwrap();
    if !printed.status.success() {
        let _ = vendor.kill();
        let _ = vendor.wait();
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the request did not complete: {}\nthe last lines of dsr up's log:\n{}\nthe last lines of the vendor's log:\n{}",
            String::from_utf8_lossy(&printed.stderr),
            tail(&up_log.join().unwrap(), 40),
            tail(&vendor_log.join().unwrap(), 40)
        );
    }
    let text = stdout(&printed);
    assert!(text.contains("state      completed"), "{text}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("access.json")).unwrap()).unwrap();
    let systems: Vec<&str> = doc["systems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert!(systems.contains(&"vendor-x"), "{systems:?}");
    let _ = vendor.kill();
    let _ = vendor.wait();
    let (ok, _) = terminate(child);
    assert!(ok, "{}", tail(&up_log.join().unwrap(), 40));
}

/// A plain HTTP/1.1 GET with the survey API's key: status line and body.
fn api_get(port: u16, path: &str, key: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Api-Key: {key}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never listened"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The HTTP connector over the reference REST system (the survey
/// platform's API): it passes the conformance kit, joins `dsr up` as a
/// processor's system, an access request answers with the person's survey
/// answers and an erasure request erases them at the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survey_platforms_rest_api_passes_the_kit_and_answers_access_and_erasure() {
    let _turn = UP.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let key = "survey-test-key-0123456789";
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (api_port, connector_port) = (free(), free());
    let port = free_ports();
    let child = {
        let mut c = Command::new(DSR)
            .args([
                "up",
                "--data-dir",
                d,
                "--base-port",
                &port.to_string(),
                "--log-format",
                "json",
                "--system",
                &format!("surveys=http://127.0.0.1:{connector_port},operator=survey-platform"),
            ])
            .env_remove("DSR_TEST_POSTGRES_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
        for l in lines.by_ref() {
            if l.unwrap().starts_with("Stop with Ctrl-C") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        c
    };

    // The vendor's API, seeded from the same people as `dsr up`'s systems.
    let vdir = dir.path().join("vendor");
    std::fs::create_dir_all(&vdir).unwrap();
    let mut api = Command::new(DSR)
        .args([
            "reference-api",
            "--listen",
            &format!("127.0.0.1:{api_port}"),
            "--data",
            vdir.join("survey.json").to_str().unwrap(),
            "--page-size",
            "7",
        ])
        .env("SURVEY_API_KEY", key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(api_port, "the survey API");
    // The connector, trusting the mesh's discovery, export and erasure keys.
    let manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../services/dsr-system-sql/reference/survey-http.yaml"
    ))
    .unwrap()
    .replace("127.0.0.1:50061", &format!("127.0.0.1:{api_port}"));
    std::fs::write(vdir.join("survey-http.yaml"), manifest).unwrap();
    let trusted: String = ["discovery", "export", "erasure"]
        .iter()
        .map(|s| {
            format!("[[auth.trusted]]\nissuer = \"dsr-{s}\"\njwks_file = \"{d}/{s}-jwks.json\"\n")
        })
        .collect();
    std::fs::write(
        vdir.join("connector.toml"),
        format!("data_dir = \"{}\"\n{trusted}", vdir.display()),
    )
    .unwrap();
    let mut connector = Command::new(DSR)
        .args([
            "serve",
            "system-http",
            "--manifest",
            vdir.join("survey-http.yaml").to_str().unwrap(),
            "--migrate",
            "--listen",
            &format!("127.0.0.1:{connector_port}"),
            "--config",
            vdir.join("connector.toml").to_str().unwrap(),
        ])
        .env("SURVEY_API_KEY", key)
        .env_remove("DSR_TEST_POSTGRES_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(connector_port, "the HTTP connector");

    // People who answered a survey for Intrum Sverige AB.
    let surveyed: Vec<_> = dsr_system_sql::reference::people(1000, 1)
        .into_iter()
        .filter(|p| p.idx % 3 == 0 && p.controller == "556134-1248")
        .collect();
    let (kit_person, person) = (&surveyed[0], &surveyed[1]);

    let out = dsr(&[
        "conformance",
        &format!("http://127.0.0.1:{connector_port}"),
        "--data-dir",
        d,
        "--system-id",
        "surveys",
        "--identity",
        &format!("email:{}", kit_person.email),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(" 0 failed"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Access: the answer names the survey platform and holds the answers.
    let answer = dir.path().join("answer");
    let printed = Command::new(DSR)
        .args([
            "request",
            "access",
            "--data-dir",
            d,
            "--email",
            &person.email,
            "--wait",
            "--out",
            answer.to_str().unwrap(),
        ])
        .env("DSR_UP__BASE_PORT", port.to_string())
        .env_remove("DSR_TEST_POSTGRES_URL")
        .output()
        .unwrap();
    let text = stdout(&printed);
    assert!(text.contains("state      completed"), "{text}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(answer.join("access.json")).unwrap()).unwrap();
    let surveys = doc["systems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "surveys")
        .unwrap_or_else(|| panic!("no surveys in {doc}"));
    let body = surveys.to_string();
    assert!(
        body.contains(&person.email) && body.contains("nps-2026"),
        "{body}"
    );
    let query = format!("/v1/respondents?email={}", person.email.replace('@', "%40"));
    assert!(api_get(api_port, &query, key).contains(&person.email));

    // An objection: the survey platform does not act on objections (its
    // Describe says so), so it is not sent one; its operator gets a task.
    let objector = &surveyed[2];
    let printed = Command::new(DSR)
        .args([
            "request",
            "object",
            "--data-dir",
            d,
            "--email",
            &objector.email,
            "--direct-marketing",
            "--wait",
        ])
        .env("DSR_UP__BASE_PORT", port.to_string())
        .env_remove("DSR_TEST_POSTGRES_URL")
        .output()
        .unwrap();
    let text = stdout(&printed);
    assert!(text.contains("state      completed"), "{text}");
    let oid = text
        .lines()
        .find_map(|l| l.strip_prefix("request    "))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no request id: {text}"))
        .to_owned();
    let notes = Command::new(DSR)
        .args(["request", "notifications", &oid, "--data-dir", d])
        .env("DSR_UP__BASE_PORT", port.to_string())
        .output()
        .unwrap();
    let notes = stdout(&notes);
    assert!(
        notes
            .lines()
            .any(|l| l.starts_with("survey-platform") && l.contains("task due")),
        "{notes}"
    );

    // Erasure: gone from the API, with a verified receipt from the system.
    let printed = Command::new(DSR)
        .args([
            "request",
            "erase",
            "--data-dir",
            d,
            "--email",
            &person.email,
            "--wait",
        ])
        .env("DSR_UP__BASE_PORT", port.to_string())
        .env_remove("DSR_TEST_POSTGRES_URL")
        .output()
        .unwrap();
    let text = stdout(&printed);
    assert!(text.contains("state      completed"), "{text}");
    let after = api_get(api_port, &query, key);
    assert!(
        after.contains("\"items\":[]") && !after.contains(&person.email),
        "{after}"
    );
    let rid = text
        .lines()
        .find_map(|l| l.strip_prefix("request    "))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no request id: {text}"))
        .to_owned();
    let receipts = Command::new(DSR)
        .args(["request", "receipts", &rid, "--data-dir", d])
        .env("DSR_UP__BASE_PORT", port.to_string())
        .output()
        .unwrap();
    let receipts = stdout(&receipts);
    assert!(
        receipts
            .lines()
            .any(|l| l.contains("surveys") && l.contains("verified yes")),
        "{receipts}"
    );

    for c in [&mut connector, &mut api] {
        let _ = c.kill();
        let _ = c.wait();
    }
    let (ok, logs) = terminate(child);
    assert!(ok, "{logs}");
}

/// Runs `dsr task …` against the manual connector on `port`, minting the
/// token from `data`'s development key; returns stdout, failing on an
/// error.
fn task(data: &str, port: u16, args: &[&str]) -> String {
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut all = vec!["task"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[
        "--data-dir",
        data,
        "--endpoint",
        &endpoint,
        "--system",
        "law-firm",
    ]);
    let out = dsr(&all);
    assert!(
        out.status.success(),
        "dsr {all:?}: {}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

/// The id of the first open task of `kind` ("search", "erase"), waited for;
/// `context` says where the request stands if none comes.
fn open_task(data: &str, port: u16, kind: &str, context: &dyn Fn() -> String) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let listed = task(data, port, &["list"]);
        if let Some(line) = listed
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(kind))
        {
            return line.split_whitespace().next().unwrap().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {kind} task: {listed}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A law firm without an API joins the mesh through the manual connector:
/// an erasure request waits on it (its step log says so), the firm's
/// contact is emailed what to look for, then to keep the file restricted
/// (the person's company is still a customer), the answers given with
/// `dsr task` complete the request, and its receipt says who attested it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_without_an_api_answers_by_task_and_the_receipt_names_who_attested() {
    let _turn = UP.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let conn = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let port = free_ports();
    let child = {
        let mut c = Command::new(DSR)
            .args([
                "up",
                "--data-dir",
                d,
                "--base-port",
                &port.to_string(),
                "--log-format",
                "json",
                "--system",
                &format!("law-firm=http://127.0.0.1:{conn},operator=legal-representatives"),
            ])
            // A waiting step is asked again at the longest backoff.
            .env("DSR_ORCHESTRATOR__BACKOFF_MAX_SECS", "1")
            .env_remove("DSR_TEST_POSTGRES_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(c.stdout.take().unwrap()).lines();
        for l in lines.by_ref() {
            if l.unwrap().starts_with("Stop with Ctrl-C") {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        c
    };

    // The connector trusts the mesh's services and, for answering tasks,
    // the development key; it emails into its own outbox.
    let vdir = dir.path().join("vendor");
    std::fs::create_dir_all(&vdir).unwrap();
    let mut trusted: String = ["discovery", "export", "erasure", "dev"]
        .iter()
        .map(|s| {
            format!("[[auth.trusted]]\nissuer = \"dsr-{s}\"\njwks_file = \"{d}/{s}-jwks.json\"\n")
        })
        .collect();
    trusted.push_str("[auth.grants]\n\"dsr-dev\" = [\"tasks:read\", \"tasks:answer\"]\n");
    std::fs::write(
        vdir.join("connector.toml"),
        format!(
            "data_dir = \"{}\"\n[system_sql]\njobs_interval_secs = 1\n{trusted}",
            vdir.display()
        ),
    )
    .unwrap();
    let mut connector = Command::new(DSR)
        .args([
            "serve",
            "system-manual",
            "--manifest",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../services/dsr-system-sql/reference/law-firm-manual.yaml"
            ),
            "--migrate",
            "--listen",
            &format!("127.0.0.1:{conn}"),
            "--config",
            vdir.join("connector.toml").to_str().unwrap(),
        ])
        .env_remove("DSR_TEST_POSTGRES_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_port(conn, "the manual connector");

    // A contact of a company still a customer: the firm's file on them is
    // kept under the contract, restricted, and the firm says so.
    let person = dsr_system_sql::reference::people(1000, 1)
        .swap_remove(dsr_system_sql::reference::Demo::Ongoing.index());
    let request = Command::new(DSR)
        .args([
            "request",
            "erase",
            "--data-dir",
            d,
            "--email",
            &person.email,
            "--wait",
            "--timeout-secs",
            "240",
        ])
        .env("DSR_UP__BASE_PORT", port.to_string())
        .env_remove("DSR_TEST_POSTGRES_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // The search: a task, and an email to the firm's contact naming the
    // person's email address.
    let show = |id: &str| {
        stdout(
            &Command::new(DSR)
                .args(["request", "show", id, "--data-dir", d])
                .env("DSR_UP__BASE_PORT", port.to_string())
                .output()
                .unwrap(),
        )
    };
    let search = open_task(d, conn, "search", &|| String::new());
    let shown = task(d, conn, &["show", &search]);
    assert!(
        shown.contains(&format!("look for email: {}", person.email)),
        "{shown}"
    );
    let mail: String = std::fs::read_dir(vdir.join("outbox"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        mail.contains("To: dsr@advokatlind.example")
            && mail.contains(&format!("E-post: {}", person.email))
            && mail.contains(&search),
        "{mail}"
    );
    // The request waits visibly on the vendor.
    let list = stdout(
        &Command::new(DSR)
            .args(["request", "list", "--data-dir", d])
            .env("DSR_UP__BASE_PORT", port.to_string())
            .output()
            .unwrap(),
    );
    let id = list
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no request listed: {list}"))
        .to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let shown = show(&id);
        if shown.contains("system law-firm: AWAITING_VENDOR") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{shown}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // The firm finds one case file, then erases it.
    let records = vdir.join("found.json");
    std::fs::write(
        &records,
        serde_json::json!([{
            "store": "case-files",
            "key": "T-2026-77",
            "fields": { "name": "Anna Andersson", "email": person.email }
        }])
        .to_string(),
    )
    .unwrap();
    let answered = task(
        d,
        conn,
        &[
            "answer",
            &search,
            "--records",
            records.to_str().unwrap(),
            "--attested-by",
            "Maria Lind",
            "--statement",
            "sökte i ärenderegistret",
        ],
    );
    assert!(answered.contains("attested by Maria Lind"), "{answered}");
    let plan = || {
        stdout(
            &Command::new(DSR)
                .args(["request", "plan", &id, "--data-dir", d])
                .env("DSR_UP__BASE_PORT", port.to_string())
                .output()
                .unwrap(),
        )
    };
    let erase = open_task(d, conn, "erase", &|| {
        format!(
            "{}\n{}\n{}",
            show(&id),
            plan(),
            task(d, conn, &["list", "--all"])
        )
    });
    let shown = task(d, conn, &["show", &erase]);
    assert!(
        shown.contains("keep case-files/T-2026-77 restricted to storage: GDPR Art. 6(1)(b)"),
        "{shown}\n{}",
        plan()
    );
    task(
        d,
        conn,
        &[
            "answer",
            &erase,
            "--done",
            "0",
            "--attested-by",
            "Maria Lind",
            "--statement",
            "akten T-2026-77 spärrad i arkivet",
        ],
    );

    let out = request.wait_with_output().unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("state      completed_with_retained"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `--wait` said what it was waiting for.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.lines()
            .any(|l| l.starts_with("state: locating (step locate attempt")
                && l.ends_with("system law-firm: AWAITING_VENDOR)")),
        "{said}"
    );
    let receipts = stdout(
        &Command::new(DSR)
            .args(["request", "receipts", &id, "--data-dir", d])
            .env("DSR_UP__BASE_PORT", port.to_string())
            .output()
            .unwrap(),
    );
    assert!(
        receipts.lines().any(|l| l.contains("law-firm")
            && l.contains("verified yes")
            && l.contains("1 retained")),
        "{receipts}"
    );
    assert!(
        receipts.contains("attested by Maria Lind <dsr@advokatlind.example>")
            && receipts.contains("akten T-2026-77 spärrad i arkivet"),
        "{receipts}"
    );

    // An access request: it waits on the firm's search too, and the
    // report marks the firm's answer as attested by a named person.
    let answer_dir = dir.path().join("answer");
    let access = Command::new(DSR)
        .args([
            "request",
            "access",
            "--data-dir",
            d,
            "--email",
            &person.email,
            "--wait",
            "--timeout-secs",
            "240",
            "--out",
            answer_dir.to_str().unwrap(),
        ])
        .env("DSR_UP__BASE_PORT", port.to_string())
        .env_remove("DSR_TEST_POSTGRES_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let search = open_task(d, conn, "search", &|| String::new());
    task(
        d,
        conn,
        &[
            "answer",
            &search,
            "--records",
            records.to_str().unwrap(),
            "--attested-by",
            "Maria Lind",
        ],
    );
    let out = access.wait_with_output().unwrap();
    assert!(
        stdout(&out).contains("state      completed"),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read_to_string(answer_dir.join("access.json")).unwrap();
    assert!(
        json.contains("\"attested_by\"")
            && json.contains("\"name\": \"Maria Lind\"")
            && json.contains("T-2026-77"),
        "{json}"
    );
    let report: String = std::fs::read_dir(&answer_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "html"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(
        report.contains("intygad av Maria Lind") || report.contains("attested by Maria Lind"),
        "{report}"
    );

    let _ = connector.kill();
    let _ = connector.wait();
    let (ok, logs) = terminate(child);
    assert!(ok, "{logs}");
}

#[test]
fn a_broken_http_manifest_stops_the_connector_naming_file_field_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dsr-auth/tests/fixtures/jwks.json");
    let cfg = dir.path().join("dsr.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[[auth.trusted]]\nissuer = \"dsr-erasure\"\njwks_file = \"{}\"\n",
            dir.path().display(),
            jwks.display()
        ),
    )
    .unwrap();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../services/dsr-system-sql/reference/survey-http.yaml"
    ))
    .unwrap()
    .replacen("\"/respondents/{key}\"", "\"/respondents/{id}\"", 1);
    let manifest = dir.path().join("broken.yaml");
    std::fs::write(&manifest, text).unwrap();
    let out = Command::new(DSR)
        .args([
            "serve",
            "system-http",
            "--manifest",
            manifest.to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ])
        .env_remove("DSR_TEST_POSTGRES_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.yaml: resources[0].get.path: unknown placeholder {id}"),
        "{err}"
    );
    // A key that is not there is named too, before anything listens.
    let out = Command::new(DSR)
        .args([
            "serve",
            "system-http",
            "--manifest",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../services/dsr-system-sql/reference/survey-http.yaml"
            ),
            "--config",
            cfg.to_str().unwrap(),
            "--migrate",
        ])
        .env_remove("SURVEY_API_KEY")
        .env_remove("DSR_TEST_POSTGRES_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SURVEY_API_KEY is not set"), "{err}");
}

/// The metric names in the PromQL of `text`: every `dsr_…` word.
fn promql_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("dsr_") {
        let word: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[at + word.len()..];
        names.insert(word);
    }
    names
}

/// Under `dsr up`, every service's ops port (its port + 10) serves
/// Prometheus text with the RPC, pool and build metrics, and each metric the
/// alerts (`k8s/observability/prometheus/rules.yaml`) and the runbook's
/// PromQL name is one the services export once a request went through and a
/// sweep ran: an alert on a name nothing exports could never fire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runbooks_alerts_name_metrics_the_services_export() {
    let _turn = UP.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let port = free_ports();
    let child = up(&data, port);
    let person = dsr_system_sql::reference::people(1000, 1)[0].clone();
    let out = dir.path().join("answer");
    let run = |args: &[&str]| {
        Command::new(DSR)
            .args(args)
            .args(["--data-dir", d])
            .env("DSR_UP__BASE_PORT", port.to_string())
            .env_remove("DSR_TEST_POSTGRES_URL")
            .output()
            .unwrap()
    };
    let answered = run(&[
        "request",
        "access",
        "--email",
        &person.email,
        "--wait",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        stdout(&answered).contains("state      completed"),
        "{answered:?}"
    );
    stdout(&run(&["sweep", "--dry-run"]));

    let mut exported = std::collections::BTreeSet::new();
    for ops in port + 10..port + 20 {
        let answer = api_get(ops, "/metrics", "");
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{ops}: {head}");
        assert!(head.contains("text/plain; version=0.0.4"), "{ops}: {head}");
        assert!(body.contains("dsr_build_info{"), "{ops}: {body}");
        for line in body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let name = line.split(['{', ' ']).next().unwrap();
            exported.insert(name.to_owned());
        }
    }
    let served = exported.clone();
    // What an SRE graphs first: calls by service, method and code, and the
    // database pools.
    for name in [
        "dsr_rpc_server_duration_seconds_count",
        "dsr_rpc_server_duration_seconds_bucket",
        "dsr_db_pool_connections",
        "dsr_db_pool_max_connections",
        "dsr_requests_overdue",
        "dsr_orchestrator_step_duration_seconds_count",
    ] {
        assert!(served.contains(name), "{name} missing from /metrics");
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let rules =
        std::fs::read_to_string(format!("{root}/k8s/observability/prometheus/rules.yaml")).unwrap();
    let runbook = std::fs::read_to_string(format!("{root}/docs/runbook.md")).unwrap();
    // The runbook's PromQL: the backticked expressions with a comparison.
    let runbook_promql: String = runbook
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.contains("dsr_") && s.contains('>'))
        .collect::<Vec<_>>()
        .join("\n");
    let named = promql_names(&rules);
    assert!(named.len() >= 10, "{named:?}");
    for name in named.iter().chain(&promql_names(&runbook_promql)) {
        assert!(
            exported.contains(name),
            "{name} is in the alerts or the runbook but no service exports it; exported: {exported:?}"
        );
    }
    let (ok, logs) = terminate(child);
    assert!(ok, "{logs}");
}

/// The CLI as a script uses it: client commands find `dsr up` from its data
/// directory alone (`up.json`), read commands print JSON with
/// `--output json`, and each kind of failure has its exit code
/// (`docs/cli.md`): 2 usage, 3 not found, 5 unavailable (a rate limit
/// included, saying when to try again). A person who has had too many codes
/// is refused at Submit at once, and nothing is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_get_json_exit_codes_and_a_rate_limited_submit_is_refused_at_once() {
    let _turn = UP.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap().to_owned();
    let port = free_ports();
    let child = up(&data, port);
    // No DSR_UP__BASE_PORT: the data directory says where the mesh is.
    let run = |args: &[&str]| {
        Command::new(DSR)
            .args(args)
            .args(["--data-dir", &d])
            .env_remove("DSR_TEST_POSTGRES_URL")
            .env_remove("DSR_UP__BASE_PORT")
            .output()
            .unwrap()
    };
    let person = dsr_system_sql::reference::people(1000, 1)[3].clone();
    let submitted = run(&["request", "access", "--email", &person.email]);
    let id = stdout(&submitted).trim().to_owned();

    let listed = run(&["request", "list", "--output", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&listed)).unwrap();
    let requests = doc["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 1, "{doc}");
    assert_eq!(requests[0]["id"], id.as_str());
    assert_eq!(requests[0]["kind"], "access");
    assert!(
        requests[0]["deadline"]["due"].as_str().unwrap().len() == 10,
        "{doc}"
    );
    let shown = run(&["request", "show", &id, "--output", "json"]);
    let one: serde_json::Value = serde_json::from_str(&stdout(&shown)).unwrap();
    assert_eq!(one["id"], id.as_str());
    assert!(one["steps"].is_array(), "{one}");
    let registry = run(&["transfers", "get", "storage-us", "--output", "json"]);
    let recipient: serde_json::Value = serde_json::from_str(&stdout(&registry)).unwrap();
    assert_eq!(recipient["id"], "storage-us");

    // Exit codes.
    let code = |o: &Output| o.status.code().unwrap();
    let missing = run(&["request", "show", "00000000-0000-4000-8000-000000000000"]);
    assert_eq!(code(&missing), 3, "{missing:?}");
    let bad = run(&["request", "show", "not an id"]);
    assert_eq!(code(&bad), 2, "{bad:?}");
    let usage = run(&["request", "list", "--output", "yaml"]);
    assert_eq!(code(&usage), 2, "{usage:?}");
    let nowhere = Command::new(DSR)
        .args(["request", "list", "--data-dir", &d])
        .env("DSR_UP__BASE_PORT", "1")
        .env_remove("DSR_TEST_POSTGRES_URL")
        .output()
        .unwrap();
    assert_eq!(code(&nowhere), 5, "{nowhere:?}");
    let said = String::from_utf8_lossy(&nowhere.stderr);
    assert!(
        said.contains("cannot reach the orchestrator") && said.contains("--data-dir"),
        "{said}"
    );

    // Five codes in an hour is the limit; the sixth request is refused at
    // Submit, saying when a code could go, and no request is recorded.
    let limited = &dsr_system_sql::reference::people(1000, 1)[4].email;
    for _ in 0..5 {
        stdout(&run(&["verify", "start", "--email", limited]));
    }
    let asked = std::time::Instant::now();
    let refused = run(&["request", "access", "--email", limited, "--wait"]);
    assert!(asked.elapsed() < Duration::from_secs(30), "refused at once");
    assert_eq!(code(&refused), 5, "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("IDENTITY_RATE_LIMITED") && said.contains("try again in"),
        "{said}"
    );
    let listed = run(&["request", "list", "--output", "json"]);
    let doc: serde_json::Value = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(
        doc["requests"].as_array().unwrap().len(),
        1,
        "nothing recorded: {doc}"
    );

    let (ok, logs) = terminate(child);
    assert!(ok, "{logs}");
    assert!(
        !data.join("up.json").exists(),
        "dsr up removes its up.json when it stops"
    );
}
