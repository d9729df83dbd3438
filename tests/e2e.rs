//! End to end, over real gRPC on loopback, through the `dsr` binary:
//!
//! - under `dsr up`: an access request from the command line completes with
//!   the JSON, the HTML report and the manifest, holding every Art. 15 item
//!   and data from a system reached only through identity expansion; the
//!   portability package leaves out what the person did not provide; bad
//!   submissions are refused naming the field, and nothing is recorded;
//! - with every service its own `dsr serve` process (as on Kubernetes): a
//!   system that is down makes the request retry, visibly, until it
//!   returns; an orchestrator killed (SIGKILL) in the middle of a step
//!   resumes after restart with no step done twice; two orchestrators on one
//!   database complete 200 concurrent requests with no step done twice;
//! - erasure under `dsr up`: the plan (erase, anonymise, retain with the AML
//!   ground until the end of the relationship + 5 years, the open contract),
//!   verified receipts, a second request changing nothing, replay after a
//!   restored backup touching nothing else, a retention sweep;
//! - an objection to direct marketing holding after a re-import, a
//!   rectification, a restriction and its lift, the Art. 19 notifications;
//! - an erasure whose orchestrator and erasure service are killed (SIGKILL)
//!   while planning and while executing: every planned record reached, one
//!   receipt and one operation per system;
//! - an access request and an erasure exported to an OTLP receiver: each one
//!   trace from the portal's Submit across every service and system it
//!   reached, no identity value in any span or log line (at debug), the
//!   metrics exported.
//!
//! SQLite by default; with `DSR_TEST_POSTGRES_URL` every test runs on a
//! fresh PostgreSQL database (a schema per service), dropped at the end.
//! The file lives in the workspace's `tests/` and is compiled with the
//! `dsr-cli` package, which builds the binary it drives.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dsr_proto::common::v1 as common;
use dsr_proto::erasure::v1 as era;
use dsr_proto::erasure::v1::erasure_client::ErasureClient;
use dsr_proto::identity::v1 as idv;
use dsr_proto::identity::v1::identity_verification_client::IdentityVerificationClient;
use dsr_proto::orchestrator::v1 as pb;
use dsr_proto::orchestrator::v1::requests_client::RequestsClient;
use dsr_store::testing::{POSTGRES_ENV, TestDb};
use opentelemetry_proto::tonic as otlp;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

const DSR: &str = env!("CARGO_BIN_EXE_dsr");
const SVERIGE: &str = "556134-1248";
const FINANS: &str = "556885-5265";
/// Seeded person 0: in the CRM by email; in the legal system only by the
/// phone number the CRM links to them.
const PERSON: &str = "per.johansson0@bolaget.se";

/// The tests here start many processes: one at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every scope of the mesh's services (the multi-process test mesh signs
/// every service's calls with one key, whose issuer is granted them all).
const ALL_SCOPES: [&str; 22] = [
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
fn consecutive_ports(n: u16) -> u16 {
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

async fn postgres() -> Option<TestDb> {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) if !url.is_empty() => Some(TestDb::postgres(&url).await.unwrap()),
        _ => None,
    }
}

/// A child process whose log (stderr) is kept, for failure messages and the
/// personal-data check; stdout (the banner, with its sample commands) is
/// drained.
struct Proc {
    child: Child,
    name: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Proc {
    fn spawn(name: &str, cmd: &mut Command) -> Self {
        let mut child = cmd
            .env_remove(POSTGRES_ENV)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
        let stderr = child.stderr.take().unwrap();
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = keep.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Self {
            child,
            name: name.to_owned(),
            log,
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {}", self.name);
    }

    fn kill(mut self) -> String {
        self.signal("-KILL");
        let _ = self.child.wait();
        self.log.lock().unwrap().clone()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Stops it as Kubernetes does (SIGTERM), waits for it to exit, and
    /// returns its log.
    async fn terminate(mut self) -> String {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(45);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{} did not stop", self.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The reader thread takes the last lines after the exit.
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.log()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy()
}

/// Waits until the server on `port` answers its health check as SERVING.
async fn ready(port: u16, p: &Proc) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(ch) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            && let Ok(r) = HealthClient::new(ch)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
            && r.into_inner().status == 1
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not become ready:\n{}",
            p.name,
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn bearer<T>(token: &str, m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn email(v: &str) -> common::Identity {
    common::Identity {
        r#type: common::IdentityType::Email as i32,
        format: 0,
        value: v.into(),
        hmac_key_id: String::new(),
    }
}

fn controller(o: &str) -> Option<common::ControllerRef> {
    Some(common::ControllerRef {
        organisation_number: o.into(),
    })
}

/// Whether an outbox file is a one-time code (not a letter about a request).
fn is_code(text: &str) -> bool {
    text.contains("\nSubject: Your verification code\n")
        || text.contains("\nSubject: Din verifieringskod\n")
}

/// The newest one-time code sent to `to` in the development outbox.
fn code_in_outbox(data: &Path, to: &str, after: usize) -> Option<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("outbox"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .iter()
        .skip(after)
        .rev()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter(|t| t.starts_with(&format!("To: {to}\n")) && is_code(t))
        .find_map(|t| {
            t.split(|c: char| !c.is_ascii_digit())
                .find(|w| w.len() == 6)
                .map(str::to_owned)
        })
}

fn outbox_len(data: &Path) -> usize {
    std::fs::read_dir(data.join("outbox")).map_or(0, |d| d.count())
}

/// The one-time codes the development outbox holds.
fn codes_sent(data: &Path) -> usize {
    std::fs::read_dir(data.join("outbox")).map_or(0, |d| {
        d.flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter(|t| is_code(t))
            .count()
    })
}

/// The letter to `to` whose subject names request `id` and starts with
/// `subject`, once the outbox has it: its subject and body.
async fn wait_letter(data: &Path, to: &str, id: &str, subject: &str) -> (String, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        for e in std::fs::read_dir(data.join("outbox"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let Some(rest) = text.strip_prefix(&format!("To: {to}\nSubject: ")) else {
                continue;
            };
            let (subj, body) = rest.split_once("\n\n").unwrap_or((rest, ""));
            if subj.starts_with(subject) && subj.contains(id) {
                return (subj.to_owned(), body.to_owned());
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no letter {subject:?} for {id} in the outbox"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(
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

async fn wait_state(
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

/// (system, field name) of every field of `categories` in an access document.
fn fields_of(doc: &serde_json::Value, categories: &[&str]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for s in doc["systems"].as_array().unwrap() {
        for r in s["records"].as_array().unwrap() {
            for f in r["fields"].as_array().unwrap() {
                if categories.contains(&f["category"].as_str().unwrap()) {
                    out.insert((
                        s["id"].as_str().unwrap().to_owned(),
                        f["name"].as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    out
}

/// (system, field name) of every field in a portability package's data.json.
fn portable_fields(zip_path: &Path) -> BTreeSet<(String, String)> {
    let bytes = std::fs::read(zip_path).unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut text = String::new();
    zip.by_name("data.json")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let port: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = BTreeSet::new();
    for s in port["systems"].as_array().unwrap() {
        for r in s["records"].as_array().unwrap() {
            for (name, _) in r["fields"].as_object().unwrap() {
                out.insert((s["id"].as_str().unwrap().to_owned(), name.clone()));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Under `dsr up`.

fn dsr_up(data: &Path, base: u16, db_url: Option<&str>) -> Proc {
    dsr_up_with(data, base, db_url, None)
}

/// `dsr up`, with its clock started at `clock` when given (a rehearsal of
/// a later date).
fn dsr_up_with(data: &Path, base: u16, db_url: Option<&str>, clock: Option<&str>) -> Proc {
    let mut cmd = Command::new(DSR);
    cmd.args([
        "up",
        "--data-dir",
        data.to_str().unwrap(),
        "--base-port",
        &base.to_string(),
        "--log-format",
        "json",
    ]);
    if let Some(u) = db_url {
        cmd.env("DSR_DATABASE__URL", u);
    }
    if let Some(c) = clock {
        cmd.env("DSR_CLOCK", c);
    }
    // The systems' background jobs (suppression list, lead scoring) every
    // second rather than every 30.
    cmd.env("DSR_SYSTEM_SQL__JOBS_INTERVAL_SECS", "1");
    Proc::spawn("dsr up", &mut cmd)
}

fn cli(data: &Path, base: u16, args: &[&str]) -> std::process::Output {
    Command::new(DSR)
        .args(args)
        .args(["--data-dir", data.to_str().unwrap()])
        .env("DSR_UP__BASE_PORT", base.to_string())
        .env_remove(POSTGRES_ENV)
        .output()
        .unwrap()
}

/// The texts of a report a person reads, as translators see them: every
/// text node, leaving out the elements marked `translate="no"` (names,
/// numbers, dates, the person's own data) and the style sheet.
fn translatable_texts(html: &str) -> BTreeSet<String> {
    let mut rest = html;
    let mut kept = String::new();
    while let Some(i) = rest.find("translate=\"no\"") {
        // Back to the element's start, then past its end tag.
        let open = rest[..i].rfind('<').unwrap();
        let name: String = rest[open + 1..]
            .chars()
            .take_while(char::is_ascii_alphanumeric)
            .collect();
        kept.push_str(&rest[..open]);
        let close = format!("</{name}>");
        let end = rest[i..].find(&close).unwrap() + i + close.len();
        rest = &rest[end..];
    }
    kept.push_str(rest);
    let body = kept.split("</style>").nth(1).unwrap_or(&kept);
    body.split('<')
        .filter_map(|piece| piece.split_once('>').map(|(_, text)| text.trim()))
        .filter(|t| t.chars().any(char::is_alphabetic))
        .map(str::to_owned)
        .collect()
}

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_dsr_up_access_and_portability_answer_in_full() {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = consecutive_ports(20);
    let up = dsr_up(&data, base, pg.as_ref().map(|p| p.url.as_str()));
    ready(base + 7, &up).await;

    // Access: the JSON, the report and the manifest, with their digests.
    let out = dir.path().join("access");
    let printed = ok(&cli(
        &data,
        base,
        &[
            "request",
            "access",
            "--email",
            PERSON,
            "--wait",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(printed.contains("state      completed"), "{printed}");
    // The person is told, in Swedish, that it was received and where the
    // answer is (this mesh's privacy centre), never the data itself.
    let access_id = printed
        .lines()
        .find_map(|l| l.strip_prefix("request    "))
        .unwrap()
        .trim()
        .to_owned();
    let (_, body) = wait_letter(&data, PERSON, &access_id, "Vi har tagit emot din begäran").await;
    assert!(body.contains("Vi svarar senast"), "{body}");
    let (_, body) = wait_letter(&data, PERSON, &access_id, "Vi har besvarat din begäran").await;
    assert!(
        body.contains(&format!("http://127.0.0.1:{}/sv/fetch", base + 9)),
        "{body}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let listed: BTreeSet<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap();
            let bytes = std::fs::read(out.join(name)).unwrap();
            use sha2::Digest as _;
            assert_eq!(
                f["sha256"].as_str().unwrap(),
                hex::encode(sha2::Sha256::digest(&bytes)),
                "{name}"
            );
            name
        })
        .collect();
    assert_eq!(listed, BTreeSet::from(["access.json", "report.html"]));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("access.json")).unwrap()).unwrap();
    assert_eq!(doc["schema"], "dsr.export.access/1");
    assert_eq!(doc["controller"]["name"], "Intrum Sverige AB");
    assert_eq!(doc["policy"]["version"], "2.1");
    assert_eq!(doc["policy"]["published"], "2024-02-27");
    let systems: BTreeSet<&str> = doc["systems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    // Only the email was claimed; the legal system knows the person by the
    // phone number the CRM linked.
    assert!(
        systems.contains("crm") && systems.contains("legal"),
        "{systems:?}"
    );
    let cats = doc["categories"].as_array().unwrap();
    // (a) purposes, (b) categories, (d) retention, (g) source.
    assert!(cats.len() > 5);
    for c in cats {
        assert!(!c["purposes"].as_array().unwrap().is_empty(), "{c}");
        assert!(!c["legal_basis"].as_str().unwrap().is_empty(), "{c}");
        assert!(!c["retention"].as_str().unwrap().is_empty(), "{c}");
    }
    // Every category has a source; the document is in the person's
    // language (Swedish here).
    for c in cats {
        assert!(!c["source"].as_str().unwrap().is_empty(), "{c}");
    }
    assert!(cats.iter().any(|c| {
        c["id"] == "aml.pep_status"
            && c["retention_legal_ground"]
                .as_str()
                .unwrap()
                .contains("GDPR art. 17.3 b")
    }));
    // (c) recipients and 15(2) transfers with their safeguards.
    let recipients = doc["recipients"].as_array().unwrap();
    assert!(recipients.iter().any(|r| r["recipient_id"] == "print-mail"));
    let abroad: Vec<_> = recipients
        .iter()
        .filter(|r| r["outside_eea"] == true)
        .collect();
    assert!(!abroad.is_empty());
    for r in &abroad {
        assert!(
            r["lawful"] == true && !r["safeguard"].as_str().unwrap().is_empty(),
            "{r}"
        );
    }
    // (e) rights, (f) complaint, (h) the automated lead score.
    let rights: BTreeSet<&str> = doc["rights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["right"].as_str().unwrap())
        .collect();
    for r in [
        "rectification",
        "erasure",
        "restriction",
        "objection",
        "portability",
    ] {
        assert!(rights.contains(r), "{r}");
    }
    assert_eq!(
        doc["complaint"]["data_protection_officer"],
        "DPO@se.intrum.com"
    );
    assert!(
        doc["complaint"]["supervisory_authority"]
            .as_str()
            .unwrap()
            .contains("IMY")
    );
    let automated = doc["automated_decisions"].as_array().unwrap();
    assert!(
        automated
            .iter()
            .any(|a| a["category"] == "prospect.score" && a["logic"].as_str().unwrap().len() > 50)
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for needle in [
        "<html lang=\"sv\">",
        "Registerutdrag",
        "Intrum Sverige AB",
        "art. 15.1 h",
        "Mottagare och överföringar",
        "Integritetsskyddsmyndigheten",
        "DPO@se.intrum.com",
        PERSON,
    ] {
        assert!(html.contains(needle), "report lacks {needle}");
    }
    // Everything the person reads is Swedish, from the systems' and the
    // registry's Swedish texts; a list item keeps its commas; every
    // category has a source, the derived one saying so.
    for needle in [
        "<td>Namn</td>",
        "<li>förhindra, upptäcka och bevisa bedrägeri och penningtvätt</li>",
        "härlett av oss ur dina kontakter med oss",
        "Varje kontakt ger poäng",
        "Molnlagringsleverantör (säkerhetskopior)",
        "EU–US Data Privacy Framework, beslut om adekvat skyddsnivå",
        "Koncernens CRM-system",
    ] {
        assert!(html.contains(needle), "the Swedish report lacks {needle}");
    }
    for row in html.split("<tr>").filter(|r| r.contains("</ul></td>")) {
        let cells: Vec<&str> = row.split("<td>").collect();
        assert!(
            cells.get(5).is_some_and(|c| !c.starts_with("</td>")),
            "a category without a source: {row}"
        );
    }
    // The same answer in English: no text of one equals one of the other
    // but what is declared the same in both (translate="no").
    let en_out = dir.path().join("access-en");
    ok(&cli(
        &data,
        base,
        &[
            "request",
            "access",
            "--email",
            PERSON,
            "--language",
            "en",
            "--out",
            en_out.to_str().unwrap(),
        ],
    ));
    let en_html = std::fs::read_to_string(en_out.join("report.html")).unwrap();
    for needle in [
        "<html lang=\"en\">",
        "<li>prevent, detect and prove fraud and money laundering</li>",
        "derived by us from your interactions with us",
        "Cloud storage provider (backups)",
    ] {
        assert!(
            en_html.contains(needle),
            "the English report lacks {needle}"
        );
    }
    let (sv_texts, en_texts) = (translatable_texts(&html), translatable_texts(&en_html));
    assert!(sv_texts.len() > 40, "{sv_texts:?}");
    let shared: Vec<&String> = sv_texts.intersection(&en_texts).collect();
    assert!(
        shared.is_empty(),
        "the same text in Swedish and English: {shared:?}"
    );

    // Portability: only what the person provided, on consent or contract.
    let pout = dir.path().join("portability");
    ok(&cli(
        &data,
        base,
        &[
            "request",
            "portability",
            "--email",
            PERSON,
            "--language",
            "en",
            "--out",
            pout.to_str().unwrap(),
        ],
    ));
    let zip_bytes = std::fs::read(pout.join("portability.zip")).unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
    let mut names = Vec::new();
    for i in 0..zip.len() {
        names.push(zip.by_index(i).unwrap().name().unwrap().into_owned());
    }
    assert!(names.contains(&"data.json".to_owned()), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(".csv")), "{names:?}");
    let mut text = String::new();
    zip.by_name("data.json")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let port: serde_json::Value = serde_json::from_str(&text).unwrap();
    // The fields the access report files under PEP screening, lead score or
    // IP address are not there.
    let excluded: BTreeSet<(String, String)> = doc["systems"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            let sid = s["id"].as_str().unwrap().to_owned();
            s["records"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r["fields"].as_array().unwrap().clone())
                .filter(|f| {
                    matches!(
                        f["category"].as_str().unwrap(),
                        "aml.pep_status" | "prospect.score" | "survey.ip_address"
                    )
                })
                .map(move |f| (sid.clone(), f["name"].as_str().unwrap().to_owned()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!excluded.is_empty(), "the person has PEP and score data");
    let mut portable_count = 0;
    for s in port["systems"].as_array().unwrap() {
        let sid = s["id"].as_str().unwrap();
        for r in s["records"].as_array().unwrap() {
            for (name, _) in r["fields"].as_object().unwrap() {
                portable_count += 1;
                assert!(
                    !excluded.contains(&(sid.to_owned(), name.clone())),
                    "{sid}.{name} is not portable"
                );
            }
        }
    }
    assert!(portable_count > 0);
    assert!(
        text.contains(PERSON),
        "the contact data the person gave is there"
    );

    // Seeded person 161 answered a survey and is known to all three systems;
    // only the email is claimed: the print-and-mail vendor knows the person
    // by customer number, the legal vendor by phone, both linked by the CRM.
    // The survey's IP address is left out of the portability package.
    let p161 = &dsr_system_sql::reference::people(162, 1)[161];
    assert_eq!(p161.controller, SVERIGE);
    let (aout, pout2) = (
        dir.path().join("access-161"),
        dir.path().join("portability-161"),
    );
    for (kind, out) in [("access", &aout), ("portability", &pout2)] {
        ok(&cli(
            &data,
            base,
            &[
                "request",
                kind,
                "--email",
                &p161.email,
                "--out",
                out.to_str().unwrap(),
            ],
        ));
    }
    let doc161: serde_json::Value =
        serde_json::from_slice(&std::fs::read(aout.join("access.json")).unwrap()).unwrap();
    let systems161: BTreeSet<&str> = doc161["systems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(systems161, BTreeSet::from(["crm", "legal", "print-mail"]));
    let ip = fields_of(&doc161, &["survey.ip_address"]);
    assert!(!ip.is_empty(), "the person answered a survey");
    let portable = portable_fields(&pout2.join("portability.zip"));
    assert!(!portable.is_empty());
    assert!(portable.is_disjoint(&ip), "{portable:?}");
    assert!(portable.is_disjoint(&fields_of(&doc161, &["aml.pep_status", "prospect.score"])));

    // Bad submissions: INVALID_ARGUMENT naming the field; nothing recorded.
    let token = ok(&cli(&data, base, &["token"])).trim().to_owned();
    let mut client = RequestsClient::new(channel(base + 7).await);
    let count = |c: &mut RequestsClient<Channel>| {
        let mut c = c.clone();
        let token = token.clone();
        async move {
            c.list(bearer(
                &token,
                pb::ListRequest {
                    page: Some(common::PageRequest {
                        page_size: 500,
                        page_token: String::new(),
                    }),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .requests
            .len()
        }
    };
    let before = count(&mut client).await;
    assert_eq!(
        before, 5,
        "access in Swedish and English, portability, and 161's two"
    );
    let good = pb::SubmitRequest {
        kind: pb::Kind::Access as i32,
        controller: controller(SVERIGE),
        claimed: vec![email(PERSON)],
        verification_token: String::new(),
        language: "sv".into(),
        idempotency_key: "portal-key-0001".into(),
        ..Default::default()
    };
    let personnummer = common::Identity {
        r#type: common::IdentityType::SePersonnummer as i32,
        format: 0,
        value: "19811218-9877".into(),
        hmac_key_id: String::new(),
    };
    let cases: Vec<(pb::SubmitRequest, &str)> = vec![
        (
            pb::SubmitRequest {
                claimed: vec![personnummer],
                ..good.clone()
            },
            "claimed[0].value",
        ),
        (
            pb::SubmitRequest {
                claimed: vec![email("anna.svensson@")],
                ..good.clone()
            },
            "claimed[0].value",
        ),
        (
            pb::SubmitRequest {
                claimed: (0..21)
                    .map(|i| email(&format!("person{i}@example.se")))
                    .collect(),
                ..good.clone()
            },
            "claimed",
        ),
        (
            pb::SubmitRequest {
                controller: controller("556016-0680"),
                ..good.clone()
            },
            "controller.organisation_number",
        ),
        (
            pb::SubmitRequest {
                idempotency_key: String::new(),
                ..good.clone()
            },
            "idempotency_key",
        ),
    ];
    for (req, field) in cases {
        let st = client.submit(bearer(&token, req)).await.unwrap_err();
        assert_eq!(st.code(), tonic::Code::InvalidArgument, "{field}: {st:?}");
        let br = st.get_error_details().bad_request().cloned().unwrap();
        assert!(
            br.field_violations.iter().any(|v| v.field == field),
            "{field}: {br:?}"
        );
        assert!(!st.message().contains("9877") && !st.message().contains("anna"));
    }
    assert_eq!(count(&mut client).await, before, "nothing recorded");
    // A portal reads only the requests it submitted; a case handler (the
    // CLI's token, requests:manage) reads them all.
    let portal = |subject: &str| {
        ok(&cli(
            &data,
            base,
            &[
                "token",
                "--subject",
                subject,
                "--scope",
                "requests:submit",
                "--scope",
                "requests:read",
            ],
        ))
        .trim()
        .to_owned()
    };
    let (portal_a, portal_b) = (portal("portal-a"), portal("portal-b"));
    let mine = client
        .submit(bearer(
            &portal_a,
            pb::SubmitRequest {
                kind: pb::Kind::Access as i32,
                controller: controller(SVERIGE),
                claimed: vec![email("someone.else@example.se")],
                idempotency_key: "portal-a-0001".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
        .id;
    let get_as = |token: &str| {
        let mut c = client.clone();
        let req = bearer(token, pb::GetRequest { id: mine.clone() });
        async move { c.get(req).await.map(|_| ()).map_err(|s| s.code()) }
    };
    assert_eq!(get_as(&portal_a).await, Ok(()));
    assert_eq!(get_as(&portal_b).await, Err(tonic::Code::NotFound));
    assert_eq!(get_as(&token).await, Ok(()));
    let listed = |token: &str| {
        let mut c = client.clone();
        let req = bearer(
            token,
            pb::ListRequest {
                page: Some(common::PageRequest {
                    page_size: 500,
                    page_token: String::new(),
                }),
                ..Default::default()
            },
        );
        async move {
            c.list(req)
                .await
                .unwrap()
                .into_inner()
                .requests
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(&portal_a).await, vec![mine.clone()]);
    assert!(listed(&portal_b).await.is_empty());
    assert!(listed(&token).await.contains(&mine));
    // Due within N days: a month away is within 40 days, not within 1; 367
    // is refused, naming the field.
    for (days, found) in [(40u32, true), (1, false)] {
        let ids: Vec<String> = client
            .list(bearer(
                &token,
                pb::ListRequest {
                    due_within_days: days,
                    page: Some(common::PageRequest {
                        page_size: 500,
                        page_token: String::new(),
                    }),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .requests
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids.contains(&mine), found, "due within {days} days");
    }
    let st = client
        .list(bearer(
            &token,
            pb::ListRequest {
                due_within_days: 367,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        st.get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "due_within_days"
    );
    let watch_as = |token: &str| {
        let mut c = client.clone();
        let req = bearer(token, pb::WatchRequest { id: mine.clone() });
        async move { c.watch(req).await.map(|_| ()).map_err(|s| s.code()) }
    };
    assert_eq!(watch_as(&portal_a).await, Ok(()));
    assert_eq!(watch_as(&portal_b).await, Err(tonic::Code::NotFound));
    // The case file (identities, subject map, audit trail) is a case
    // handler's alone: not even the portal that submitted reads it.
    let file_as = |token: &str| {
        let mut c = client.clone();
        let req = bearer(token, pb::GetCaseFileRequest { id: mine.clone() });
        async move { c.get_case_file(req).await.map(|r| r.into_inner()) }
    };
    assert_eq!(
        file_as(&portal_a).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    let file = file_as(&token).await.unwrap();
    assert_eq!(
        file.claimed_identities
            .iter()
            .map(|i| i.value.as_str())
            .collect::<Vec<_>>(),
        vec!["someone.else@example.se"]
    );
    assert!(file.verified_identities.is_empty() && !file.identities_purged);
    assert_eq!(
        file.audit_entries.first().map(|e| e.action.as_str()),
        Some("submitted:access")
    );
    assert!(
        file.audit_entries
            .iter()
            .all(|e| e.hash.len() == 64 && !e.actor.is_empty() && e.time.is_some()),
        "{:?}",
        file.audit_entries
    );
    // A 3 MiB reason is refused, naming the field (listings stay readable).
    let st = client
        .cancel(bearer(
            &token,
            pb::CancelRequest {
                id: "00000000-0000-4000-8000-000000000000".into(),
                reason: "x".repeat(3 << 20),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    let br = st.get_error_details().bad_request().cloned().unwrap();
    assert!(
        br.field_violations.iter().any(|v| v.field == "reason"),
        "{br:?}"
    );

    // Idempotency, the case handler's moves, and their refusals.
    let first = client
        .submit(bearer(&token, good.clone()))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    let again = client
        .submit(bearer(&token, good.clone()))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(
        first.id, again.id,
        "same key, same payload: the same request"
    );
    let other = client
        .submit(bearer(
            &token,
            pb::SubmitRequest {
                kind: pb::Kind::Portability as i32,
                ..good.clone()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::AlreadyExists);
    let waiting = wait_state(
        &mut client,
        &token,
        &first.id,
        pb::State::Verifying,
        Duration::from_secs(30),
    )
    .await;
    let no_reason = client
        .extend(bearer(
            &token,
            pb::ExtendRequest {
                id: waiting.id.clone(),
                months: 1,
                reason: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(no_reason.code(), tonic::Code::InvalidArgument);
    let extended = client
        .extend(bearer(
            &token,
            pb::ExtendRequest {
                id: waiting.id.clone(),
                months: 2,
                reason: "many systems to search".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    let d = extended.deadline.unwrap();
    assert_eq!(d.extended_months, 2);
    assert_eq!(d.extension_reason, "many systems to search");
    assert_ne!(d.due, d.original_due);
    let more = client
        .extend(bearer(
            &token,
            pb::ExtendRequest {
                id: waiting.id.clone(),
                months: 1,
                reason: "still more".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        more.code(),
        tonic::Code::FailedPrecondition,
        "at most two months"
    );
    // Told of the extension, with its reason, at the address they gave.
    let (_, body) = wait_letter(&data, PERSON, &waiting.id, "Vi behöver längre tid").await;
    assert!(
        body.contains("med 2 månad(er)") && body.contains("many systems to search"),
        "{body}"
    );
    let cancelled = client
        .cancel(bearer(
            &token,
            pb::CancelRequest {
                id: waiting.id.clone(),
                reason: "withdrawn by the person".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(cancelled.state, pb::State::Cancelled as i32);
    assert_eq!(cancelled.cancel_reason, "withdrawn by the person");
    // A refusal tells the reason and the way to IMY and a court.
    let refused = client
        .submit(bearer(
            &token,
            pb::SubmitRequest {
                idempotency_key: "portal-key-refused".into(),
                ..good.clone()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    wait_state(
        &mut client,
        &token,
        &refused.id,
        pb::State::Verifying,
        Duration::from_secs(30),
    )
    .await;
    client
        .reject(bearer(
            &token,
            pb::RejectRequest {
                id: refused.id.clone(),
                reason: pb::RejectionReason::ManifestlyUnfoundedOrExcessive as i32,
                note: "The same request every day this week.".into(),
            },
        ))
        .await
        .unwrap();
    let (_, body) = wait_letter(&data, PERSON, &refused.id, "Besked om din begäran").await;
    for told in [
        "artikel 12.5",
        "The same request every day",
        "Integritetsskyddsmyndigheten (IMY), https://www.imy.se",
        "domstol",
    ] {
        assert!(body.contains(told), "{told:?} not in {body}");
    }
    let completed_id = {
        let list = client
            .list(bearer(
                &token,
                pb::ListRequest {
                    state: pb::State::Completed as i32,
                    kind: pb::Kind::Portability as i32,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .requests;
        assert_eq!(list.len(), 2, "the two completed portability requests");
        list[0].id.clone()
    };
    let late = client
        .cancel(bearer(
            &token,
            pb::CancelRequest {
                id: completed_id,
                reason: "too late".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(late.code(), tonic::Code::FailedPrecondition);
    let unknown = client
        .get(bearer(
            &token,
            pb::GetRequest {
                id: "00000000-0000-0000-0000-000000000000".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // The audit trail verifies.
    let mut audit = Command::new(DSR);
    audit
        .args(["audit", "verify", "--data-dir", data.to_str().unwrap()])
        .env_remove(POSTGRES_ENV);
    if let Some(p) = &pg {
        audit.env("DSR_DATABASE__URL", &p.url);
    }
    let printed = ok(&audit.output().unwrap());
    assert!(printed.contains("audit trail intact"), "{printed}");

    let log = up.kill();
    // No identity value in the mesh's logs.
    for secret in [
        PERSON,
        "+46720000003",
        "Per Johansson",
        p161.email.as_str(),
        p161.phone.as_str(),
    ] {
        assert!(!log.contains(secret), "{secret} in the logs");
    }
    if let Some(p) = pg {
        p.finish().await;
    }
}

// ---------------------------------------------------------------------------
// Every service its own process.

const SERVICES: [&str; 10] = [
    "transfer-registry",
    "crm",
    "print-mail",
    "legal",
    "identity",
    "discovery",
    "export",
    "erasure",
    "orchestrator",
    "orchestrator-2",
];

struct Mesh {
    _dir: tempfile::TempDir,
    key: PathBuf,
    data: PathBuf,
    config: PathBuf,
    ports: BTreeMap<&'static str, u16>,
    procs: BTreeMap<&'static str, Proc>,
    token: String,
    db_url: Option<String>,
    /// Set in every process's environment.
    env: Vec<(String, String)>,
}

impl Mesh {
    async fn new(db_url: Option<&str>) -> Self {
        Self::with_env(db_url, Vec::new()).await
    }

    async fn with_env(db_url: Option<&str>, env: Vec<(String, String)>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let key = dir.path().join("mesh-key.pem");
        let key_path = key.clone();
        let (signer, jwks) = dsr_auth::TokenSigner::from_key_file(&key, None, "e2e").unwrap();
        let jwks_file = dir.path().join("mesh-jwks.json");
        std::fs::write(&jwks_file, jwks).unwrap();
        let base = consecutive_ports(SERVICES.len() as u16);
        let ports: BTreeMap<&'static str, u16> = SERVICES
            .iter()
            .enumerate()
            .map(|(i, s)| (*s, base + i as u16))
            .collect();
        let url = |s: &str| format!("http://127.0.0.1:{}", ports[s]);
        let key = key.display();
        let config = format!(
            r#"data_dir = "{data}"
log_format = "json"

[auth]
issuers = ["e2e"]
jwks_file = "{jwks}"
# One key for every service of this test mesh: its issuer holds every scope.
grants = {{ e2e = [{all_scopes}] }}

[database]
url = "{db}"
migrate_on_start = true

[discovery]
timeout_ms = 1500
service_key_file = "{key}"
service_token_issuer = "e2e"
systems = [
  {{ id = "crm", endpoint = "{crm}", operator_recipient_id = "crm-vendor" }},
  {{ id = "print-mail", endpoint = "{pm}", operator_recipient_id = "print-mail" }},
  {{ id = "legal", endpoint = "{legal}", operator_recipient_id = "legal-representatives" }},
]

[export]
registry_endpoint = "{registry}"
service_key_file = "{key}"
service_token_issuer = "e2e"

[erasure]
registry_endpoint = "{registry}"
service_key_file = "{key}"
service_token_issuer = "e2e"
# No scheduled sweep: it would erase the seeded people whose retention has
# run out (Per Johansson's contact among them) under the tests' feet.
sweep_every_hours = 0

[orchestrator]
identity_endpoint = "{identity}"
discovery_endpoint = "{discovery}"
export_endpoint = "{export}"
erasure_endpoint = "{erasure}"
# Erasures for Intrum Finans wait for a case handler after planning.
approval_controllers = ["556885-5265"]
service_key_file = "{key}"
service_token_issuer = "e2e"
# Long enough for a renewal to get through 200 requests on two cores.
lease_secs = 20
poll_ms = 50
backoff_base_ms = 200
backoff_max_secs = 1
call_timeout_secs = 20
workers = 16
privacy_centre_url = "https://mina-uppgifter.bolaget.se"
"#,
            data = data.display(),
            jwks = jwks_file.display(),
            all_scopes = ALL_SCOPES
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", "),
            db = db_url.unwrap_or_default(),
            crm = url("crm"),
            pm = url("print-mail"),
            legal = url("legal"),
            registry = url("transfer-registry"),
            identity = url("identity"),
            discovery = url("discovery"),
            export = url("export"),
            erasure = url("erasure"),
        );
        let config_path = dir.path().join("dsr.toml");
        std::fs::write(&config_path, config).unwrap();
        let token = signer
            .mint(&dsr_auth::TokenRequest {
                subject: "e2e-portal".into(),
                audiences: vec!["dsr-orchestrator".into(), "dsr-identity".into()],
                scopes: vec![
                    "requests:submit".into(),
                    "requests:read".into(),
                    "requests:manage".into(),
                    "incidents:report".into(),
                    "incidents:manage".into(),
                    "identity:verify".into(),
                    "identity:attest".into(),
                ],
                ttl: Duration::from_secs(3600),
            })
            .unwrap();
        let mut mesh = Self {
            key: key_path,
            _dir: dir,
            data,
            config: config_path,
            ports,
            procs: BTreeMap::new(),
            token,
            db_url: db_url.map(str::to_owned),
            env,
        };
        for s in &SERVICES[..9] {
            mesh.start(s).await;
        }
        mesh
    }

    async fn start(&mut self, name: &'static str) {
        let port = self.ports[name];
        let mut cmd = Command::new(DSR);
        cmd.arg("serve");
        match name {
            "crm" | "print-mail" | "legal" => {
                cmd.args(["system-sql", "--reference", name]);
            }
            "orchestrator-2" => {
                cmd.arg("orchestrator")
                    .env("DSR_ORCHESTRATOR__WORKER_ID", "replica-2");
            }
            "orchestrator" => {
                cmd.arg("orchestrator")
                    .env("DSR_ORCHESTRATOR__WORKER_ID", "replica-1");
            }
            other => {
                cmd.arg(other);
            }
        }
        cmd.args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--config", self.config.to_str().unwrap()])
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let p = Proc::spawn(name, &mut cmd);
        ready(port, &p).await;
        self.procs.insert(name, p);
    }

    fn stop(&mut self, name: &'static str) -> String {
        self.procs.remove(name).unwrap().kill()
    }

    async fn requests(&self) -> RequestsClient<Channel> {
        RequestsClient::new(channel(self.ports["orchestrator"]).await)
    }

    /// A verification token for `who`, the way a portal gets one.
    async fn verification_token(&self, who: &str) -> String {
        let mut id = IdentityVerificationClient::new(channel(self.ports["identity"]).await);
        let seen = outbox_len(&self.data);
        let started = id
            .start_verification(bearer(
                &self.token,
                idv::StartVerificationRequest {
                    claimed: vec![email(who)],
                    method: idv::Method::EmailCode as i32,
                    idp_assertion: String::new(),
                    attestation: None,
                    language: "sv".into(),
                    dry_run: false,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let code = code_in_outbox(&self.data, who, seen).unwrap();
        id.complete_verification(bearer(
            &self.token,
            idv::CompleteVerificationRequest {
                challenge_id: started.challenge_id,
                code,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap()
        .jwt
    }

    /// A verification token from a case handler's attestation (no code,
    /// so no rate limit): a fresh one per request, as each verifies one.
    async fn attested_token(&self, who: &str) -> String {
        let mut id = IdentityVerificationClient::new(channel(self.ports["identity"]).await);
        id.start_verification(bearer(
            &self.token,
            idv::StartVerificationRequest {
                claimed: vec![email(who)],
                method: idv::Method::CaseHandlerAttestation as i32,
                idp_assertion: String::new(),
                attestation: Some(idv::Attestation {
                    evidence: idv::AttestationEvidence::InPerson as i32,
                    note: "e2e".into(),
                }),
                language: "sv".into(),
                dry_run: false,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap()
        .jwt
    }

    async fn submit_with_token(&self, key: &str, vt: &str) -> String {
        let mut c = self.requests().await;
        c.submit(bearer(
            &self.token,
            pb::SubmitRequest {
                kind: pb::Kind::Access as i32,
                controller: controller(SVERIGE),
                claimed: vec![],
                verification_token: vt.into(),
                language: "en".into(),
                idempotency_key: key.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
        .id
    }

    /// Submits a request of `kind` for Intrum Finans with a verification
    /// token.
    async fn submit_finans(&self, key: &str, vt: &str, kind: pb::Kind) -> String {
        let mut c = self.requests().await;
        c.submit(bearer(
            &self.token,
            pb::SubmitRequest {
                kind: kind as i32,
                controller: controller(FINANS),
                verification_token: vt.into(),
                idempotency_key: key.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
        .id
    }

    /// A service's own database (a system's, erasure's, ...).
    async fn db(&self, name: &str) -> sea_orm::DatabaseConnection {
        let file = name.to_owned();
        let (url, schema) = match &self.db_url {
            Some(u) => (u.clone(), Some(format!("dsr_{}", file.replace('-', "_")))),
            None => (
                dsr_store::sqlite_url(&self.data.join(format!("{file}.db"))),
                None,
            ),
        };
        dsr_store::connect(
            &url,
            &dsr_store::StoreConfig {
                max_connections: 1,
                schema,
                ..dsr_store::StoreConfig::default()
            },
        )
        .await
        .unwrap()
    }

    /// A client of the erasure service with `erasure:read`.
    async fn erasure(&self) -> (ErasureClient<Channel>, String) {
        let signer = dsr_auth::TokenSigner::from_key_file(&self.key, None, "e2e")
            .unwrap()
            .0;
        let token = signer
            .mint(&dsr_auth::TokenRequest {
                subject: "e2e-case-handler".into(),
                audiences: vec!["dsr-erasure".into()],
                scopes: vec!["erasure:read".into()],
                ttl: Duration::from_secs(3600),
            })
            .unwrap();
        (
            ErasureClient::new(channel(self.ports["erasure"]).await),
            token,
        )
    }

    /// The orchestrator's step log, read from its database.
    async fn step_log(&self, id: &str) -> Vec<dsr_orchestrator::queue::StepRun> {
        let (url, schema) = match &self.db_url {
            Some(u) => (u.clone(), Some("dsr_orchestrator".to_owned())),
            None => (
                dsr_store::sqlite_url(&self.data.join("orchestrator.db")),
                None,
            ),
        };
        let db = dsr_store::connect(
            &url,
            &dsr_store::StoreConfig {
                max_connections: 1,
                schema,
                ..dsr_store::StoreConfig::default()
            },
        )
        .await
        .unwrap();
        let ledger = dsr_orchestrator::ledger::Ledger::new(
            db.clone(),
            dsr_domain::deadline::HolidayCalendar::swedish(),
        );
        let log = ledger.step_log(id).await.unwrap();
        let _ = db.close().await;
        log
    }
}

fn done_once(log: &[dsr_orchestrator::queue::StepRun]) {
    for step in ["verify", "locate", "export"] {
        let done = log
            .iter()
            .filter(|r| r.step == step && r.outcome == "done")
            .count();
        assert_eq!(done, 1, "{step} done exactly once: {log:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_work_survives_a_system_down_a_killed_orchestrator_and_runs_on_two_replicas() {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let mut mesh = Mesh::new(pg.as_ref().map(|p| p.url.as_str())).await;
    let token = mesh.token.clone();
    let mut client = mesh.requests().await;

    // 0. A portal learns the controllers it may address from the mesh, with
    //    the DPO, the authority and the policy version in force.
    let group = client
        .list_controllers(bearer(&token, pb::ListControllersRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(group.controllers.len(), 4, "{group:?}");
    assert!(
        group
            .controllers
            .iter()
            .any(|c| c.organisation_number == SVERIGE && c.name == "Intrum Sverige AB"),
        "{group:?}"
    );
    assert_eq!(group.dpo_email, "DPO@se.intrum.com");
    assert_eq!(group.policy_version, "2.1");
    assert!(group.authority_names["sv"].contains("Integritetsskyddsmyndigheten"));
    assert!(group.authority_names["en"].contains("Swedish Authority"));

    // 1. The legal system is down: the request waits and retries, visibly,
    //    and completes when the system returns. (Verified with the code the
    //    person receives.)
    mesh.stop("legal");
    let seen = outbox_len(&mesh.data);
    let r = client
        .submit(bearer(
            &token,
            pb::SubmitRequest {
                kind: pb::Kind::Access as i32,
                controller: controller(SVERIGE),
                claimed: vec![email(PERSON)],
                verification_token: String::new(),
                language: "sv".into(),
                idempotency_key: "e2e-down-0001".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    let waiting = wait_state(
        &mut client,
        &token,
        &r.id,
        pb::State::Verifying,
        Duration::from_secs(30),
    )
    .await;
    assert!(!waiting.challenge_id.is_empty());
    let code = code_in_outbox(&mesh.data, PERSON, seen).expect("the person got a code");
    // A wrong code: INVALID_ARGUMENT with the reason the proto names, and
    // the request keeps waiting for the right one.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let st = client
        .verify(bearer(
            &token,
            pb::VerifyRequest {
                id: r.id.clone(),
                code: wrong.into(),
                verification_token: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    // The reason the proto documents, in the orchestrator's own domain.
    assert_eq!(
        st.get_details_error_info().map(|i| (i.reason, i.domain)),
        Some((
            "CODE_MISMATCH".to_owned(),
            "orchestrator.dsr-mesh".to_owned()
        )),
        "{st:?}"
    );
    assert_eq!(
        get(&mut client, &token, &r.id).await.state,
        pb::State::Verifying as i32
    );
    client
        .verify(bearer(
            &token,
            pb::VerifyRequest {
                id: r.id.clone(),
                code,
                verification_token: String::new(),
            },
        ))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let retrying = loop {
        let g = get(&mut client, &token, &r.id).await;
        let locate = g.steps.iter().find(|s| s.name == "locate").unwrap().clone();
        if g.retrying && locate.attempts >= 2 {
            break (g, locate);
        }
        assert!(Instant::now() < deadline, "never retried: {g:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(retrying.0.state, pb::State::Locating as i32);
    assert!(
        retrying.1.last_error.contains("system legal"),
        "{:?}",
        retrying.1
    );
    assert!(!retrying.1.last_error.contains(PERSON));
    mesh.start("legal").await;
    let done = wait_state(
        &mut client,
        &token,
        &r.id,
        pb::State::Completed,
        Duration::from_secs(60),
    )
    .await;
    assert!(done.system_ids.contains(&"legal".to_owned()), "{done:#?}");
    done_once(&mesh.step_log(&r.id).await);

    // 2. SIGKILL the orchestrator in the middle of the export step (export
    //    is paused, so the step is running when the process dies).
    let vt = mesh.verification_token(PERSON).await;
    mesh.procs["export"].signal("-STOP");
    let id = mesh.submit_with_token("e2e-kill-0001", &vt).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let g = get(&mut client, &token, &id).await;
        if g.steps
            .iter()
            .any(|s| s.name == "export" && s.status == "running")
        {
            break;
        }
        assert!(Instant::now() < deadline, "export never started: {g:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mesh.stop("orchestrator");
    mesh.procs["export"].signal("-CONT");
    mesh.start("orchestrator").await;
    let mut client = mesh.requests().await;
    let done = wait_state(
        &mut client,
        &token,
        &id,
        pb::State::Completed,
        Duration::from_secs(60),
    )
    .await;
    assert!(!done.package_id.is_empty());
    let log = mesh.step_log(&id).await;
    done_once(&log);
    let export: Vec<_> = log.iter().filter(|x| x.step == "export").collect();
    assert_eq!(export.len(), 2, "{log:#?}");
    assert_eq!(export[0].outcome, "abandoned", "the killed attempt");
    for step in ["verify", "locate"] {
        assert_eq!(
            log.iter().filter(|x| x.step == step).count(),
            1,
            "{step} ran once"
        );
    }

    // 3. Two orchestrators on one database: 200 concurrent requests, no
    //    step done twice.
    mesh.start("orchestrator-2").await;
    let mut tokens = Vec::new();
    for _ in 0..200 {
        tokens.push(mesh.attested_token(PERSON).await);
    }
    let mut tasks = Vec::new();
    for (i, vt) in tokens.into_iter().enumerate() {
        let token = token.clone();
        let port = if i % 2 == 0 {
            mesh.ports["orchestrator"]
        } else {
            mesh.ports["orchestrator-2"]
        };
        tasks.push(tokio::spawn(async move {
            let mut c = RequestsClient::new(channel(port).await);
            c.submit(bearer(
                &token,
                pb::SubmitRequest {
                    kind: pb::Kind::Access as i32,
                    controller: controller(SVERIGE),
                    claimed: vec![],
                    verification_token: vt,
                    language: "sv".into(),
                    idempotency_key: format!("e2e-pair-{i:04}"),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .request
            .unwrap()
            .id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let mut workers = BTreeSet::new();
    for id in &ids {
        wait_state(
            &mut client,
            &token,
            id,
            pb::State::Completed,
            Duration::from_secs(180),
        )
        .await;
        let log = mesh.step_log(id).await;
        done_once(&log);
        // A failed attempt (a system slow under this load) is retried and
        // shows in the log; an abandoned one would mean two workers ran the
        // step at once.
        let abandoned: Vec<_> = log.iter().filter(|x| x.outcome == "abandoned").collect();
        assert!(abandoned.is_empty(), "{abandoned:#?}");
        // Verification tokens are checked at submission ("api"); the
        // replicas ran the rest.
        workers.extend(
            log.iter()
                .filter(|x| x.worker != "api")
                .map(|x| x.worker.clone()),
        );
    }
    assert_eq!(
        workers,
        BTreeSet::from(["replica-1".to_owned(), "replica-2".to_owned()]),
        "both replicas took work"
    );

    let names: Vec<&'static str> = mesh.procs.keys().copied().collect();
    let mut logs = String::new();
    for n in names {
        logs.push_str(&mesh.stop(n));
    }
    for secret in [PERSON, "+46720000003"] {
        assert!(!logs.contains(secret), "{secret} in the logs");
    }
    drop(mesh);
    if let Some(p) = pg {
        p.finish().await;
    }
}

// ---------------------------------------------------------------------------
// Erasure under `dsr up`.

const CRM_TABLES: [&str; 8] = [
    "companies",
    "contacts",
    "kyc_documents",
    "pep_screenings",
    "event_registrations",
    "survey_responses",
    "prospects",
    "prospect_interactions",
];

/// The CRM's own database, as its operator (and a backup) sees it.
async fn crm_db(data: &Path, pg: Option<&TestDb>) -> sea_orm::DatabaseConnection {
    let (url, schema) = match pg {
        Some(p) => (p.url.clone(), Some("dsr_system_crm".to_owned())),
        None => (dsr_store::sqlite_url(&data.join("system-crm.db")), None),
    };
    dsr_store::connect(
        &url,
        &dsr_store::StoreConfig {
            schema,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

async fn rows(db: &sea_orm::DatabaseConnection, sql: &str) -> Vec<sea_orm::QueryResult> {
    use sea_orm::ConnectionTrait as _;
    db.query_all_raw(sea_orm::Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .unwrap()
}

async fn count(db: &sea_orm::DatabaseConnection, sql: &str) -> i64 {
    rows(db, &format!("SELECT COUNT(*) AS n FROM ({sql}) q"))
        .await
        .first()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap()
}

async fn table_counts(db: &sea_orm::DatabaseConnection) -> Vec<i64> {
    let mut v = Vec::new();
    for t in CRM_TABLES {
        v.push(count(db, &format!("SELECT id FROM {t}")).await);
    }
    v
}

async fn exec(db: &sea_orm::DatabaseConnection, sql: &str) {
    use sea_orm::ConnectionTrait as _;
    db.execute_unprepared(sql).await.unwrap();
}

fn date_pb(d: chrono::NaiveDate) -> common::Date {
    use chrono::Datelike as _;
    common::Date {
        year: d.year(),
        month: i32::try_from(d.month()).unwrap(),
        day: i32::try_from(d.day()).unwrap(),
    }
}

fn request_id(stdout: &str) -> String {
    stdout.lines().next().unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_dsr_up_an_erasure_erases_retains_by_law_and_is_replayed_after_a_restore() {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = consecutive_ports(20);
    let up = dsr_up(&data, base, pg.as_ref().map(|p| p.url.as_str()));
    ready(base + 7, &up).await;
    ready(base + 8, &up).await;
    let crm = crm_db(&data, pg.as_ref()).await;

    // A seeded person of Intrum Sverige whose relationship ended about three
    // years ago (more than 24, less than 60 months), with AML documents, an
    // event registration and a prospect-register entry.
    let today = chrono::Utc::now().date_naive();
    let months_ago = |m: u32| today.checked_sub_months(chrono::Months::new(m)).unwrap();
    let found = rows(
        &crm,
        &format!(
            "SELECT c.id AS id, c.email AS email, CAST(c.relationship_ended_on AS TEXT) AS ended
             FROM contacts c
             WHERE c.controller_orgnr = '{SVERIGE}'
               AND c.relationship_ended_on > '{}' AND c.relationship_ended_on < '{}'
               AND EXISTS (SELECT 1 FROM kyc_documents k WHERE k.contact_id = c.id)
               AND EXISTS (SELECT 1 FROM pep_screenings s WHERE s.contact_id = c.id)
               AND EXISTS (SELECT 1 FROM event_registrations e WHERE e.contact_id = c.id)
               AND EXISTS (SELECT 1 FROM prospects p WHERE p.email = c.email)
             ORDER BY c.id LIMIT 1",
            months_ago(54),
            months_ago(30)
        ),
    )
    .await;
    let person = found.first().expect("a seeded person ended ~3 years ago");
    let id: i64 = person.try_get("", "id").unwrap();
    let who: String = person.try_get("", "email").unwrap();
    let ended: chrono::NaiveDate = person
        .try_get::<String>("", "ended")
        .unwrap()
        .get(..10)
        .unwrap()
        .parse()
        .unwrap();
    let aml_until = ended.checked_add_months(chrono::Months::new(60)).unwrap();

    // A backup of the CRM, taken before the erasure.
    for t in CRM_TABLES {
        exec(&crm, &format!("CREATE TABLE bak_{t} AS SELECT * FROM {t}")).await;
    }
    let before_erasure = chrono::Utc::now() - chrono::Duration::seconds(2);
    let counts_before = table_counts(&crm).await;

    let printed = ok(&cli(
        &data,
        base,
        &["request", "erase", "--email", &who, "--wait"],
    ));
    let rid = request_id(&printed);
    assert!(
        printed.contains("state      completed_with_retained"),
        "{printed}"
    );

    // The plan: contact, event and prospect data erased; the AML documents
    // and PEP screening retained with the AML ground until the end + 5 years.
    let plan = ok(&cli(&data, base, &["request", "plan", &rid]));
    let line = |store: &str| -> Vec<&str> {
        plan.lines()
            .filter(|l| l.trim_start().starts_with("crm") && l.contains(&format!(" {store} ")))
            .collect()
    };
    for store in [
        "contacts",
        "event_registrations",
        "prospects",
        "prospect_interactions",
    ] {
        let ls = line(store);
        assert!(!ls.is_empty(), "{store} not in the plan:\n{plan}");
        assert!(ls.iter().all(|l| l.contains(" erase ")), "{store}:\n{plan}");
    }
    for store in ["kyc_documents", "pep_screenings"] {
        let ls = line(store);
        assert!(!ls.is_empty(), "{store} not in the plan:\n{plan}");
        for l in ls {
            assert!(l.contains("RETAIN"), "{l}");
            assert!(l.contains(&format!("until {aml_until}")), "{l}");
            assert!(l.contains("17(3)(b)") && l.contains("2017:630"), "{l}");
        }
    }
    assert!(
        plan.contains(&format!(
            "first deferred erasure on {}",
            aml_until.succ_opt().unwrap()
        )),
        "{plan}"
    );
    let shown = ok(&cli(&data, base, &["request", "show", &rid]));
    assert!(shown.contains("deferred"), "{shown}");
    // The letters to the person are on the request.
    assert!(
        shown.contains("letters to the person\n  received "),
        "{shown}"
    );

    // Gone everywhere in the CRM; the AML records kept and restricted.
    let c = |sql: String| {
        let crm = crm.clone();
        async move { count(&crm, &sql).await }
    };
    assert_eq!(
        c(format!("SELECT id FROM contacts WHERE id = {id}")).await,
        0
    );
    assert_eq!(
        c(format!(
            "SELECT id FROM event_registrations WHERE contact_id = {id}"
        ))
        .await,
        0
    );
    assert_eq!(
        c(format!("SELECT id FROM prospects WHERE email = '{who}'")).await,
        0
    );
    let kept = c(format!(
        "SELECT id FROM kyc_documents WHERE id IN (SELECT id FROM bak_kyc_documents WHERE contact_id = {id}) AND restricted_at IS NOT NULL"
    ))
    .await;
    assert!(kept >= 1, "the AML documents are kept, restricted");
    assert_eq!(
        c(format!(
            "SELECT id FROM pep_screenings WHERE id IN (SELECT id FROM bak_pep_screenings WHERE contact_id = {id}) AND restricted_at IS NULL"
        ))
        .await,
        0,
        "every retained PEP screening is restricted"
    );

    // Every receipt verifies, against the keys each system publishes.
    let receipts = ok(&cli(&data, base, &["request", "receipts", &rid]));
    let receipt_lines: Vec<&str> = receipts
        .lines()
        .filter(|l| l.contains("signed by"))
        .collect();
    assert!(receipt_lines.len() >= 2, "{receipts}");
    assert!(
        receipt_lines.iter().all(|l| l.contains("verified yes")),
        "{receipts}"
    );
    assert!(receipts.contains(" crm "), "{receipts}");

    // A second identical request changes nothing.
    let counts_after = table_counts(&crm).await;
    assert_ne!(counts_before, counts_after);
    let again = ok(&cli(
        &data,
        base,
        &["request", "erase", "--email", &who, "--wait"],
    ));
    assert!(again.contains("state      completed"), "{again}");
    assert_eq!(table_counts(&crm).await, counts_after);

    // Restore the backup: the person is back. Replaying the erasures since
    // the backup erases them again, and nothing else.
    for t in CRM_TABLES.iter().rev() {
        exec(&crm, &format!("DELETE FROM {t}")).await;
    }
    for t in CRM_TABLES {
        exec(&crm, &format!("INSERT INTO {t} SELECT * FROM bak_{t}")).await;
    }
    assert_eq!(table_counts(&crm).await, counts_before);
    assert_eq!(
        c(format!("SELECT id FROM contacts WHERE id = {id}")).await,
        1
    );
    let replayed = ok(&cli(
        &data,
        base,
        &[
            "replay-erasures",
            "--since",
            &before_erasure.to_rfc3339(),
            "--system",
            "crm",
        ],
    ));
    assert!(replayed.contains("crm"), "{replayed}");
    assert_eq!(table_counts(&crm).await, counts_after, "{replayed}");
    assert_eq!(
        c(format!("SELECT id FROM contacts WHERE id = {id}")).await,
        0
    );
    assert_eq!(
        c(format!(
            "SELECT id FROM pep_screenings WHERE id IN (SELECT id FROM bak_pep_screenings WHERE contact_id = {id}) AND restricted_at IS NULL"
        ))
        .await,
        0,
        "restricted again"
    );

    // A person whose relationship goes on: the business-contact data is
    // retained on the contract, visibly.
    let open = rows(
        &crm,
        &format!(
            "SELECT c.email AS email FROM contacts c
             WHERE c.controller_orgnr = '{SVERIGE}' AND c.relationship_ended_on IS NULL
               AND c.email IS NOT NULL ORDER BY c.id LIMIT 1"
        ),
    )
    .await;
    let open_who: String = open.first().unwrap().try_get("", "email").unwrap();
    let printed = ok(&cli(
        &data,
        base,
        &["request", "erase", "--email", &open_who, "--wait"],
    ));
    assert!(
        printed.contains("state      completed_with_retained"),
        "{printed}"
    );
    let plan = ok(&cli(
        &data,
        base,
        &["request", "plan", &request_id(&printed)],
    ));
    let contact = plan
        .lines()
        .find(|l| l.trim_start().starts_with("crm") && l.contains(" contacts "))
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(
        contact.contains("RETAIN") && contact.contains("6(1)(b)"),
        "{contact}"
    );
    assert!(contact.contains("until (open)"), "{contact}");

    // The deferred erasure is never run ahead of its day.
    let dev_token = ok(&cli(&data, base, &["token"])).trim().to_owned();
    let mut erasure = ErasureClient::new(channel(base + 8).await);
    let early = erasure
        .execute_deferred(bearer(
            &dev_token,
            era::ExecuteDeferredRequest {
                request_id: rid.clone(),
                as_of: Some(date_pb(aml_until.succ_opt().unwrap())),
                due_date: Some(date_pb(today)),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(early.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        early.get_details_bad_request().unwrap().field_violations[0].field,
        "as_of"
    );
    let deferred = erasure
        .execute_deferred(bearer(
            &dev_token,
            era::ExecuteDeferredRequest {
                request_id: rid.clone(),
                as_of: None,
                due_date: Some(date_pb(today)),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    assert!(
        deferred.systems.is_empty(),
        "nothing is due yet: {deferred:?}"
    );
    assert!(deferred.retained_count >= 2, "{deferred:?}");

    // A person whose relationship ended more than five years ago: the AML
    // period is over, the plan erases the documents, and the system agrees.
    let long_ago = rows(
        &crm,
        &format!(
            "SELECT c.email AS email, c.id AS id FROM contacts c
             WHERE c.controller_orgnr = '{SVERIGE}' AND c.relationship_ended_on < '{}'
               AND EXISTS (SELECT 1 FROM kyc_documents k WHERE k.contact_id = c.id)
             ORDER BY c.id LIMIT 1",
            months_ago(61)
        ),
    )
    .await;
    let old_who: String = long_ago.first().unwrap().try_get("", "email").unwrap();
    let old_id: i64 = long_ago.first().unwrap().try_get("", "id").unwrap();
    let printed = ok(&cli(
        &data,
        base,
        &["request", "erase", "--email", &old_who, "--wait"],
    ));
    let plan = ok(&cli(
        &data,
        base,
        &["request", "plan", &request_id(&printed)],
    ));
    assert!(
        plan.lines()
            .filter(|l| l.contains(" kyc_documents "))
            .all(|l| l.contains(" erase ")),
        "{plan}"
    );
    assert_eq!(
        c(format!(
            "SELECT id FROM kyc_documents WHERE contact_id = {old_id}"
        ))
        .await,
        0
    );

    // A legal hold on a person keeps everything over an erasure request,
    // restricted, until it is lifted.
    let held = rows(
        &crm,
        &format!(
            "SELECT c.email AS email FROM contacts c
             WHERE c.controller_orgnr = '{SVERIGE}' AND c.email IS NOT NULL
               AND c.email <> '{who}' AND c.email <> '{open_who}'
             ORDER BY c.id DESC LIMIT 1"
        ),
    )
    .await;
    let held_who: String = held.first().unwrap().try_get("", "email").unwrap();
    let placed = ok(&cli(
        &data,
        base,
        &[
            "hold",
            "place",
            "--email",
            &held_who,
            "--ground",
            "dispute 2026-T-1234: preserve evidence",
        ],
    ));
    let hold_id = placed.split_whitespace().next().unwrap().to_owned();
    assert!(
        !placed.contains(&held_who),
        "a hold shows no identity: {placed}"
    );
    let printed = ok(&cli(
        &data,
        base,
        &["request", "erase", "--email", &held_who, "--wait"],
    ));
    let plan = ok(&cli(
        &data,
        base,
        &["request", "plan", &request_id(&printed)],
    ));
    let planned: Vec<&str> = plan.lines().filter(|l| l.starts_with("  ")).collect();
    assert!(!planned.is_empty(), "{plan}");
    assert!(
        planned
            .iter()
            .all(|l| l.contains("RETAIN") && l.contains(&format!("legal hold {hold_id}"))),
        "{plan}"
    );
    assert_eq!(
        count(
            &crm,
            &format!(
                "SELECT id FROM contacts WHERE email = '{held_who}' AND restricted_at IS NOT NULL"
            )
        )
        .await,
        1
    );
    let listed = ok(&cli(&data, base, &["hold", "list"]));
    assert!(listed.contains(&hold_id), "{listed}");
    ok(&cli(&data, base, &["hold", "lift", &hold_id]));
    assert!(!ok(&cli(&data, base, &["hold", "list"])).contains(&hold_id));
    assert!(ok(&cli(&data, base, &["hold", "list", "--all"])).contains("lifted by"));

    // A retention sweep of the CRM: a dry run counts, then the sweep
    // removes exactly that, with receipts; nothing past its rule is left.
    let expired = format!(
        "SELECT id FROM contacts WHERE relationship_ended_on < '{}' AND restricted_at IS NULL",
        months_ago(24)
    );
    let held_contact =
        format!("SELECT id FROM contacts WHERE email = '{held_who}' AND restricted_at IS NOT NULL");
    let before = count(&crm, &expired).await;
    assert!(before > 0, "the seed holds contacts past their retention");
    let dry = ok(&cli(
        &data,
        base,
        &["sweep", "--system", "crm", "--dry-run"],
    ));
    assert!(dry.contains("would be removed"), "{dry}");
    assert_eq!(
        count(&crm, &expired).await,
        before,
        "a dry run changes nothing"
    );
    let swept = ok(&cli(
        &data,
        base,
        &["sweep", "--system", "crm", "--batch-size", "50"],
    ));
    assert_eq!(count(&crm, &expired).await, 0, "{swept}");
    assert_eq!(
        count(&crm, &held_contact).await,
        1,
        "a sweep never removes a restricted record"
    );
    let sweep_id = request_id(&swept);
    let removed = |out: &str| -> u64 {
        out.lines()
            .find(|l| l.trim_start().starts_with("crm"))
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|w| w.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{out}"))
    };
    assert_eq!(removed(&dry), removed(&swept), "{dry}\n{swept}");
    assert!(removed(&swept) >= u64::try_from(before).unwrap());
    let receipts = ok(&cli(&data, base, &["request", "receipts", &sweep_id]));
    assert!(
        receipts
            .lines()
            .filter(|l| l.contains("verified yes"))
            .count()
            >= 1,
        "{receipts}"
    );

    let logs = up.kill();
    for secret in [
        who.as_str(),
        open_who.as_str(),
        held_who.as_str(),
        old_who.as_str(),
    ] {
        assert!(!logs.contains(secret), "an identity in the logs");
    }
    drop(crm);
    if let Some(p) = pg {
        p.finish().await;
    }
}

/// Polls `sql` (a count) until it is `want`, for up to 30 s.
async fn eventually(db: &sea_orm::DatabaseConnection, sql: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = count(db, sql).await;
        if n == want {
            return;
        }
        assert!(Instant::now() < deadline, "{sql}: {n}, not {want}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_dsr_up_objection_rectification_and_restriction_reach_every_system() {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = consecutive_ports(20);
    let up = dsr_up(&data, base, pg.as_ref().map(|p| p.url.as_str()));
    ready(base + 7, &up).await;
    ready(base + 8, &up).await;
    let crm = crm_db(&data, pg.as_ref()).await;

    // A scored prospect who is also a contact in an open relationship.
    let found = rows(
        &crm,
        &format!(
            "SELECT p.email AS email FROM prospects p JOIN contacts c ON c.email = p.email
             WHERE p.controller_orgnr = '{SVERIGE}' AND p.lead_score IS NOT NULL
               AND c.relationship_ended_on IS NULL ORDER BY p.id LIMIT 1"
        ),
    )
    .await;
    let who: String = found.first().unwrap().try_get("", "email").unwrap();

    // Bad input is refused naming the field, and records nothing.
    let bad = cli(&data, base, &["request", "object", "--email", &who]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("purposes"),
        "{err}"
    );
    let bad = cli(
        &data,
        base,
        &["request", "rectify", "--email", &who, "--correct", "=x"],
    );
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("corrections[0].category_id"), "{err}");

    // Objection to direct marketing: the prospect entry is marked and its
    // score removed.
    let printed = ok(&cli(
        &data,
        base,
        &[
            "request",
            "object",
            "--email",
            &who,
            "--direct-marketing",
            "--wait",
        ],
    ));
    assert!(printed.contains("state      completed"), "{printed}");
    let objected = request_id(&printed);
    eventually(
        &crm,
        &format!(
            "SELECT id FROM prospects WHERE email = '{who}' AND lead_score IS NULL AND objected_purposes LIKE '%direct_marketing%'"
        ),
        1,
    )
    .await;

    // The marketing list is imported again, the email in another case, with
    // a newcomer beside it: the newcomer is scored, the person is not, and
    // their new entry carries the objection.
    let today = chrono::Utc::now().date_naive();
    exec(
        &crm,
        &format!(
            "INSERT INTO prospects (id, controller_orgnr, email, last_interaction_on) VALUES
               (9000001, '{SVERIGE}', '{}', '{today}'),
               (9000002, '{SVERIGE}', 'newcomer@example.se', '{today}')",
            who.to_uppercase()
        ),
    )
    .await;
    exec(
        &crm,
        &format!(
            "INSERT INTO prospect_interactions (id, prospect_id, kind, occurred_on, detail) VALUES
               (90000010, 9000001, 'event', '{today}', 'import'),
               (90000020, 9000002, 'event', '{today}', 'import')"
        ),
    )
    .await;
    eventually(
        &crm,
        "SELECT id FROM prospects WHERE id = 9000002 AND lead_score = 10",
        1,
    )
    .await;
    assert_eq!(
        count(
            &crm,
            "SELECT id FROM prospects WHERE id = 9000001 AND lead_score IS NULL AND objected_purposes LIKE '%direct_marketing%'"
        )
        .await,
        1,
        "the objection holds after the re-import"
    );

    // Art. 19: every recipient of the CRM's data is listed, the CRM vendor
    // told through its own system.
    let told = ok(&cli(&data, base, &["request", "notifications", &objected]));
    assert!(told.contains("crm-vendor"), "{told}");
    assert!(told.contains("told through its system crm"), "{told}");

    // A recipient of the CRM's data with no lawful transfer basis (India:
    // no adequacy decision, no safeguard recorded): listed NOT LAWFUL.
    let agent = dir.path().join("agent-in.toml");
    std::fs::write(
        &agent,
        format!(
            r#"[[recipient]]
id = "collection-agent-in"
name = {{ sv = "Inkassoombud (Indien)", en = "Debt-collection agent (India)" }}
role = "agent"
country = "IN"
controllers = ["{SVERIGE}"]
categories = ["contact.name", "contact.job_title"]
systems = ["crm"]
dpa_reference = "AGENCY-IN-2026-01"
purpose = {{ sv = "driver in fordringar från gäldenärer i Indien", en = "collects claims from debtors in India" }}
"#
        ),
    )
    .unwrap();
    ok(&cli(
        &data,
        base,
        &["transfers", "put", "--file", agent.to_str().unwrap()],
    ));
    let listed = ok(&cli(&data, base, &["transfers", "list"]));
    let entry = listed
        .split("collection-agent-in")
        .nth(1)
        .expect("listed")
        .split("\n")
        .take(6)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        entry.contains("transfer: NOT LAWFUL") && entry.contains("x "),
        "{listed}"
    );
    let shown = ok(&cli(&data, base, &["transfers", "get", "print-mail"]));
    assert!(shown.contains("transfer: lawful"), "{shown}");

    // Rectification reaches the CRM, with a verified receipt; the corrected
    // data does not go to the recipient with no lawful transfer: the
    // request and its notifications say why.
    let printed = ok(&cli(
        &data,
        base,
        &[
            "request",
            "rectify",
            "--email",
            &who,
            "--correct",
            "contact.job_title=Chief Credit Officer",
            "--wait",
        ],
    ));
    assert!(printed.contains("state      completed"), "{printed}");
    assert_eq!(
        count(
            &crm,
            &format!(
                "SELECT id FROM contacts WHERE email = '{who}' AND job_title = 'Chief Credit Officer'"
            )
        )
        .await,
        1
    );
    let receipts = ok(&cli(
        &data,
        base,
        &["request", "receipts", &request_id(&printed)],
    ));
    assert!(
        receipts.contains("rectify") && receipts.contains("verified yes"),
        "{receipts}"
    );
    assert!(
        printed.contains("! not sent to collection-agent-in")
            && printed.contains("no lawful transfer: refused"),
        "{printed}"
    );
    let told = ok(&cli(
        &data,
        base,
        &["request", "notifications", &request_id(&printed)],
    ));
    let line = told
        .lines()
        .find(|l| l.starts_with("collection-agent-in"))
        .unwrap_or_else(|| panic!("{told}"));
    assert!(
        line.contains("NOT SENT: no lawful transfer (refused)"),
        "{told}"
    );
    assert!(
        told.contains("told through its system crm"),
        "the lawful recipients are told: {told}"
    );

    // Restriction, then its lift once the person was told.
    let printed = ok(&cli(
        &data,
        base,
        &[
            "request",
            "restrict",
            "--email",
            &who,
            "--ground",
            "accuracy-contested",
            "--wait",
        ],
    ));
    assert!(printed.contains("state      completed"), "{printed}");
    let restricted =
        format!("SELECT id FROM contacts WHERE email = '{who}' AND restricted_at IS NOT NULL");
    assert_eq!(count(&crm, &restricted).await, 1);
    let told_at = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let printed = ok(&cli(
        &data,
        base,
        &[
            "request",
            "restrict",
            "--email",
            &who,
            "--lift",
            "--person-informed-at",
            &told_at,
            "--wait",
        ],
    ));
    assert!(printed.contains("state      completed"), "{printed}");
    assert_eq!(count(&crm, &restricted).await, 0);

    // Art. 18(2): a restricted prospect is stored, not processed. The CRM's
    // scoring job scores a newcomer but not the restricted person (their
    // score cleared, as when the model is run again); once lifted, they
    // are scored again.
    let found = rows(
        &crm,
        &format!(
            "SELECT email FROM prospects WHERE controller_orgnr = '{SVERIGE}'
               AND lead_score IS NOT NULL AND lower(email) <> lower('{who}')
               AND objected_purposes IS NULL ORDER BY id LIMIT 1"
        ),
    )
    .await;
    let scored: String = found.first().unwrap().try_get("", "email").unwrap();
    let printed = ok(&cli(
        &data,
        base,
        &[
            "request",
            "restrict",
            "--email",
            &scored,
            "--ground",
            "unlawful-processing",
            "--wait",
        ],
    ));
    assert!(printed.contains("state      completed"), "{printed}");
    exec(
        &crm,
        &format!(
            "UPDATE prospects SET lead_score = NULL, score_factors = NULL WHERE email = '{scored}'"
        ),
    )
    .await;
    exec(
        &crm,
        &format!(
            "INSERT INTO prospects (id, controller_orgnr, email, last_interaction_on) VALUES
               (9000003, '{SVERIGE}', 'second.newcomer@example.se', '{today}')"
        ),
    )
    .await;
    eventually(
        &crm,
        "SELECT id FROM prospects WHERE id = 9000003 AND lead_score IS NOT NULL",
        1,
    )
    .await;
    assert_eq!(
        count(
            &crm,
            &format!(
                "SELECT id FROM prospects WHERE email = '{scored}' AND lead_score IS NOT NULL"
            )
        )
        .await,
        0,
        "a restricted prospect is not scored"
    );
    let told_at = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    ok(&cli(
        &data,
        base,
        &[
            "request",
            "restrict",
            "--email",
            &scored,
            "--lift",
            "--person-informed-at",
            &told_at,
            "--wait",
        ],
    ));
    eventually(
        &crm,
        &format!("SELECT id FROM prospects WHERE email = '{scored}' AND lead_score IS NOT NULL"),
        1,
    )
    .await;

    let logs = up.kill();
    assert!(!logs.contains(who.as_str()), "an identity in the logs");
    assert!(!logs.contains(scored.as_str()), "an identity in the logs");
    drop(crm);
    if let Some(p) = pg {
        p.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_killed_at_each_step_erases_everything_once() {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let mut mesh = Mesh::new(pg.as_ref().map(|p| p.url.as_str())).await;
    let token = mesh.token.clone();

    // A person of Intrum Finans in the CRM and, by phone, at the legal
    // representatives.
    let legal = mesh.db("system-legal").await;
    let phone: String = rows(
        &legal,
        &format!(
            "SELECT phone FROM parties WHERE controller_orgnr = '{FINANS}' ORDER BY id LIMIT 1"
        ),
    )
    .await
    .first()
    .unwrap()
    .try_get("", "phone")
    .unwrap();
    let crm = mesh.db("system-crm").await;
    let who: String = rows(
        &crm,
        &format!(
            "SELECT email FROM contacts WHERE phone = '{phone}' AND controller_orgnr = '{FINANS}'"
        ),
    )
    .await
    .first()
    .unwrap()
    .try_get("", "email")
    .unwrap();
    let vt = mesh.verification_token(&who).await;

    // 1. Killed while planning: erasure is paused, so the plan step is
    //    running when the orchestrator and erasure die.
    mesh.procs["erasure"].signal("-STOP");
    let id = mesh
        .submit_finans("e2e-erase-kill-1", &vt, pb::Kind::Erasure)
        .await;
    let mut client = mesh.requests().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let g = get(&mut client, &token, &id).await;
        if g.steps
            .iter()
            .any(|s| s.name == "plan" && s.status == "running")
        {
            break;
        }
        assert!(Instant::now() < deadline, "plan never started: {g:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mesh.stop("orchestrator");
    mesh.stop("erasure");
    mesh.start("erasure").await;
    mesh.start("orchestrator").await;
    let mut client = mesh.requests().await;
    wait_state(
        &mut client,
        &token,
        &id,
        pb::State::AwaitingApproval,
        Duration::from_secs(60),
    )
    .await;

    // 2. Killed while executing: every system after the CRM is paused, the
    //    CRM has answered, the others have not.
    let (mut erasure, era_token) = mesh.erasure().await;
    let plan = erasure
        .get_plan(bearer(
            &era_token,
            era::GetPlanRequest {
                request_id: id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    let systems: BTreeSet<String> = plan.records.iter().map(|r| r.system_id.clone()).collect();
    assert!(
        systems.contains("crm") && systems.contains("legal"),
        "{systems:?}"
    );
    let paused: Vec<&'static str> = ["legal", "print-mail"]
        .into_iter()
        .filter(|s| systems.contains(*s))
        .collect();
    for s in &paused {
        mesh.procs[*s].signal("-STOP");
    }
    client
        .approve(bearer(
            &token,
            pb::ApproveRequest {
                id: id.clone(),
                note: String::new(),
            },
        ))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let receipts = erasure
            .list_receipts(bearer(
                &era_token,
                era::ListReceiptsRequest {
                    request_id: id.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .receipts;
        if receipts.iter().any(|r| r.system_id == "crm") {
            break;
        }
        assert!(Instant::now() < deadline, "the CRM never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The next system's Erase is on its way (or waiting in its socket).
    tokio::time::sleep(Duration::from_millis(300)).await;
    mesh.stop("orchestrator");
    mesh.stop("erasure");
    for s in &paused {
        mesh.procs[*s].signal("-CONT");
    }
    mesh.start("erasure").await;
    mesh.start("orchestrator").await;
    let mut client = mesh.requests().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let done = loop {
        let g = get(&mut client, &token, &id).await;
        // The legal vendor keeps its party record on its own ground
        // (Art. 17(3)(e)) where the plan erases it: a difference a case
        // handler reviews, never a completion.
        if g.state == pb::State::Completed as i32
            || g.state == pb::State::CompletedWithRetained as i32
            || g.state == pb::State::AwaitingReview as i32
        {
            assert!(
                g.discrepancies
                    .iter()
                    .all(|d| d.system_id == "legal" && d.observed == "retained"),
                "{g:#?}"
            );
            break g;
        }
        assert!(Instant::now() < deadline, "never completed: {g:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Each step done once; the plan and execute steps each lost an attempt.
    let log = mesh.step_log(&id).await;
    for step in ["verify", "locate", "plan", "execute"] {
        assert_eq!(
            log.iter()
                .filter(|x| x.step == step && x.outcome == "done")
                .count(),
            1,
            "{step}: {log:#?}"
        );
    }
    for step in ["plan", "execute"] {
        assert!(
            log.iter()
                .any(|x| x.step == step && x.outcome == "abandoned"),
            "{step} was killed: {log:#?}"
        );
    }

    // One verified receipt per system, matching every planned record: none
    // skipped; and one operation per system under its key: none erased twice.
    let (mut erasure, _) = mesh.erasure().await;
    let receipts = erasure
        .list_receipts(bearer(
            &era_token,
            era::ListReceiptsRequest {
                request_id: id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .receipts;
    let mut per_system: BTreeMap<String, usize> = BTreeMap::new();
    for r in &receipts {
        assert!(r.verified, "{r:?}");
        assert_eq!(r.phase, "erase");
        *per_system.entry(r.system_id.clone()).or_default() += 1;
        let matched: u64 = r
            .receipt
            .as_ref()
            .unwrap()
            .stores
            .iter()
            .map(|s| s.matched)
            .sum();
        let planned = plan
            .records
            .iter()
            .filter(|p| p.system_id == r.system_id)
            .count() as u64;
        assert_eq!(
            matched, planned,
            "{}: every planned record reached",
            r.system_id
        );
    }
    assert_eq!(
        per_system.keys().cloned().collect::<BTreeSet<_>>(),
        systems,
        "a receipt from every system"
    );
    assert!(per_system.values().all(|n| *n == 1), "{per_system:?}");
    for system in &systems {
        let db = mesh.db(&format!("system-{system}")).await;
        assert_eq!(
            count(
                &db,
                &format!("SELECT key FROM dsr_idempotency WHERE key = 'erase.{id}.{system}'")
            )
            .await,
            1,
            "{system}: one erasure under its key"
        );
        assert_eq!(
            count(&db, "SELECT id FROM dsr_operation WHERE kind = 'erase'").await,
            1,
            "{system}: one erase operation"
        );
        let _ = db.close().await;
    }
    assert_eq!(
        count(&crm, &format!("SELECT id FROM contacts WHERE phone = '{phone}' AND controller_orgnr = '{FINANS}' AND restricted_at IS NULL")).await,
        0,
        "the contact is erased, or retained and restricted"
    );
    assert!(done.record_count > 0 || done.retained_count > 0);
    drop((crm, legal));
    let names: Vec<&'static str> = mesh.procs.keys().copied().collect();
    let logs: Vec<String> = names.into_iter().map(|n| mesh.stop(n)).collect();
    for l in &logs {
        assert!(
            !l.contains(&who) && !l.contains(&phone),
            "an identity in the logs"
        );
    }
    if let Some(p) = pg {
        p.finish().await;
    }
}

// ---------------------------------------------------------------------------
// Telemetry: one trace per request across the mesh, no identity in spans or
// logs.

/// What an OTLP receiver got: each span with its service.
#[derive(Clone, Default)]
struct Collector {
    spans: std::sync::Arc<std::sync::Mutex<Vec<SeenSpan>>>,
    metrics: std::sync::Arc<std::sync::Mutex<Vec<SeenMetric>>>,
}

#[derive(Clone, Debug)]
struct SeenSpan {
    service: String,
    trace_id: String,
    name: String,
    /// The OTLP span kind (2 server, 3 client).
    kind: i32,
    attributes: BTreeMap<String, String>,
    /// Everything the span carries (name, attributes, events), for the
    /// check that no identity value is among it.
    text: String,
}

#[derive(Clone, Debug)]
struct SeenMetric {
    service: String,
    name: String,
    attributes: Vec<BTreeMap<String, String>>,
}

fn any_value(v: &Option<otlp::common::v1::AnyValue>) -> String {
    use otlp::common::v1::any_value::Value;
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[otlp::common::v1::KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), any_value(&kv.value)))
        .collect()
}

fn service_of(r: Option<&otlp::resource::v1::Resource>) -> String {
    r.map(|r| attributes(&r.attributes))
        .and_then(|a| a.get("service.name").cloned())
        .unwrap_or_default()
}

#[tonic::async_trait]
impl otlp::collector::trace::v1::trace_service_server::TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<otlp::collector::trace::v1::ExportTraceServiceRequest>,
    ) -> Result<
        tonic::Response<otlp::collector::trace::v1::ExportTraceServiceResponse>,
        tonic::Status,
    > {
        let mut seen = self.spans.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = service_of(rs.resource.as_ref());
            for ss in rs.scope_spans {
                for s in ss.spans {
                    seen.push(SeenSpan {
                        service: service.clone(),
                        trace_id: hex::encode(&s.trace_id),
                        name: s.name.clone(),
                        kind: s.kind,
                        attributes: attributes(&s.attributes),
                        text: format!("{s:?}"),
                    });
                }
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

#[tonic::async_trait]
impl otlp::collector::metrics::v1::metrics_service_server::MetricsService for Collector {
    async fn export(
        &self,
        req: tonic::Request<otlp::collector::metrics::v1::ExportMetricsServiceRequest>,
    ) -> Result<
        tonic::Response<otlp::collector::metrics::v1::ExportMetricsServiceResponse>,
        tonic::Status,
    > {
        use otlp::metrics::v1::metric::Data;
        let mut seen = self.metrics.lock().unwrap();
        for rm in req.into_inner().resource_metrics {
            let service = service_of(rm.resource.as_ref());
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let attrs = match &m.data {
                        Some(Data::Gauge(g)) => g
                            .data_points
                            .iter()
                            .map(|p| attributes(&p.attributes))
                            .collect(),
                        Some(Data::Sum(s)) => s
                            .data_points
                            .iter()
                            .map(|p| attributes(&p.attributes))
                            .collect(),
                        Some(Data::Histogram(h)) => h
                            .data_points
                            .iter()
                            .map(|p| attributes(&p.attributes))
                            .collect(),
                        _ => Vec::new(),
                    };
                    seen.push(SeenMetric {
                        service: service.clone(),
                        name: m.name.clone(),
                        attributes: attrs,
                    });
                }
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

impl Collector {
    /// Serves OTLP/gRPC on a free port; returns its endpoint.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = self.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(
                    otlp::collector::trace::v1::trace_service_server::TraceServiceServer::new(
                        me.clone(),
                    ),
                )
                .add_service(
                    otlp::collector::metrics::v1::metrics_service_server::MetricsServiceServer::new(
                        me,
                    ),
                )
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        format!("http://{addr}")
    }
}

/// Waits for a write request of `id` to finish (with or without retained
/// records).
async fn wait_finished(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_one_trace_across_the_mesh_with_no_identity_in_spans_or_logs() {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let mut mesh = Mesh::with_env(
        pg.as_ref().map(|p| p.url.as_str()),
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
            // Everything at debug: the identity values must stay out of
            // every line, not only of those at info.
            (
                "RUST_LOG".into(),
                "debug,h2=info,hyper=info,tower=info,sqlx=info,sea_orm=info".into(),
            ),
        ],
    )
    .await;
    let token = mesh.token.clone();

    // The person's identity values, as seeded.
    let crm = mesh.db("system-crm").await;
    let row = rows(
        &crm,
        &format!(
            "SELECT full_name, email, phone, personnummer, customer_number, address FROM contacts \
             WHERE email = '{PERSON}' AND controller_orgnr = '{SVERIGE}'"
        ),
    )
    .await;
    let row = row.first().expect("the seeded person");
    let mut identity_values: Vec<String> = [
        "full_name",
        "email",
        "phone",
        "personnummer",
        "customer_number",
        "address",
    ]
    .iter()
    .filter_map(|c| row.try_get::<Option<String>>("", c).ok().flatten())
    .filter(|v| v.len() >= 6)
    .collect();
    // The phone also as typed (07…), the personnummer without its dash.
    let variants: Vec<String> = identity_values
        .iter()
        .filter_map(|v| {
            if let Some(rest) = v.strip_prefix("+46") {
                Some(format!("0{rest}"))
            } else if v.contains('-') && v.replace('-', "").bytes().all(|b| b.is_ascii_digit()) {
                Some(v.replace('-', ""))
            } else {
                None
            }
        })
        .collect();
    identity_values.extend(variants);
    assert!(identity_values.len() >= 3, "{identity_values:?}");

    // An access request and an erasure, from a portal's call.
    let vt = mesh.verification_token(PERSON).await;
    let access = mesh.submit_with_token("trace-access", &vt).await;
    let mut client = mesh.requests().await;
    wait_state(
        &mut client,
        &token,
        &access,
        pb::State::Completed,
        Duration::from_secs(90),
    )
    .await;
    let erasure = client
        .submit(bearer(
            &token,
            pb::SubmitRequest {
                kind: pb::Kind::Erasure as i32,
                controller: controller(SVERIGE),
                verification_token: mesh.attested_token(PERSON).await,
                idempotency_key: "trace-erasure".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
        .id;
    wait_finished(&mut client, &token, &erasure).await;

    // Every process stops as on Kubernetes (SIGTERM) and flushes its spans.
    let mut logs = String::new();
    for name in SERVICES {
        if let Some(p) = mesh.procs.remove(name) {
            logs.push_str(&p.terminate().await);
        }
    }
    let spans = collector.spans.lock().unwrap().clone();
    let metrics = collector.metrics.lock().unwrap().clone();

    for (id, kind, must) in [
        (
            &access,
            "access",
            &[
                "dsr-orchestrator",
                "dsr-discovery",
                "dsr-export",
                "dsr-transfer-registry",
                "dsr-system-crm",
                "dsr-system-print-mail",
                "dsr-system-legal",
            ][..],
        ),
        (
            &erasure,
            "erasure",
            &[
                "dsr-orchestrator",
                "dsr-discovery",
                "dsr-erasure",
                "dsr-system-crm",
                "dsr-system-legal",
            ][..],
        ),
    ] {
        // The orchestrator's work on the request names it and its kind...
        let work: Vec<&SeenSpan> = spans
            .iter()
            .filter(|s| s.attributes.get("dsr.request.id") == Some(id))
            .collect();
        assert!(!work.is_empty(), "no span names request {id}");
        let trace = work[0].trace_id.clone();
        assert!(
            work.iter().all(|s| s.trace_id == trace),
            "the spans naming {id} are in several traces: {work:#?}"
        );
        assert!(
            work.iter()
                .any(|s| s.attributes.get("dsr.request.kind").map(String::as_str) == Some(kind)),
            "{work:#?}"
        );
        // ... in the trace of the portal's Submit call...
        assert!(
            spans.iter().any(|s| s.trace_id == trace
                && s.service == "dsr-orchestrator"
                && s.attributes.get("rpc.method").map(String::as_str) == Some("Submit")),
            "Submit is not in the trace of {id}"
        );
        // ... which every service the request reached has spans in: the
        // RPCs they served, and the calls they made.
        let in_trace: BTreeSet<&str> = spans
            .iter()
            .filter(|s| s.trace_id == trace)
            .map(|s| s.service.as_str())
            .collect();
        for service in must {
            assert!(
                in_trace.contains(service),
                "{service} has no span in the trace of {kind} {id}: {in_trace:?}"
            );
        }
        let steps: BTreeSet<&str> = spans
            .iter()
            .filter(|s| s.trace_id == trace && s.attributes.contains_key("step"))
            .map(|s| s.name.as_str())
            .collect();
        assert!(steps.contains("step locate"), "{steps:?}");
        assert!(
            spans.iter().any(|s| s.trace_id == trace
                && s.kind == 3
                && s.attributes.get("peer").map(String::as_str) == Some("crm")),
            "no client span of a call to the CRM in the trace of {id}"
        );
    }

    // No identity value in any span of any trace, nor in any log line.
    for v in &identity_values {
        for s in &spans {
            assert!(
                !s.text.contains(v.as_str()),
                "an identity value is in a span of {}: {}",
                s.service,
                s.name
            );
        }
        assert!(
            !logs.contains(v.as_str()),
            "an identity value is in the logs"
        );
    }
    assert!(logs.contains("step done"), "the logs were not captured");

    // The metrics arrived too: per-system latency and errors, requests by
    // kind and state.
    let names: BTreeSet<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
    for name in [
        "dsr.client.call.duration",
        "dsr.requests.overdue",
        "dsr.orchestrator.step.duration",
    ] {
        assert!(names.contains(name), "{name} not exported: {names:?}");
    }
    assert!(
        metrics.iter().any(|m| m.name == "dsr.client.call.duration"
            && m.service == "dsr-erasure"
            && m.attributes
                .iter()
                .any(|a| a.get("peer").map(String::as_str) == Some("crm"))),
        "erasure's calls to the CRM are not measured"
    );
}

/// The state line of `dsr request show`, polled until it reads `want`.
async fn wait_shown(data: &Path, base: u16, id: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let shown = ok(&cli(data, base, &["request", "show", id]));
        if shown
            .lines()
            .any(|l| l.starts_with("state") && l.split_whitespace().nth(1) == Some(want))
        {
            return shown;
        }
        assert!(Instant::now() < deadline, "never {want}:\n{shown}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_erasure_erases_on_its_date_and_a_restriction_or_a_difference_waits_for_a_handler()
 {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = consecutive_ports(20);
    let up = dsr_up(&data, base, pg.as_ref().map(|p| p.url.as_str()));
    ready(base + 7, &up).await;
    ready(base + 8, &up).await;
    let crm = crm_db(&data, pg.as_ref()).await;

    // Two seeded people whose relationship ended about three years ago:
    // their AML documents and PEP screenings are kept for five years.
    let today = chrono::Utc::now().date_naive();
    let months_ago = |m: u32| today.checked_sub_months(chrono::Months::new(m)).unwrap();
    let people = rows(
        &crm,
        &format!(
            "SELECT c.id AS id, c.email AS email, CAST(c.relationship_ended_on AS TEXT) AS ended
             FROM contacts c
             WHERE c.controller_orgnr = '{SVERIGE}' AND c.email IS NOT NULL
               AND c.relationship_ended_on > '{}' AND c.relationship_ended_on < '{}'
               AND EXISTS (SELECT 1 FROM kyc_documents k WHERE k.contact_id = c.id)
             ORDER BY c.id LIMIT 2",
            months_ago(54),
            months_ago(30)
        ),
    )
    .await;
    assert_eq!(people.len(), 2, "two seeded people ended ~3 years ago");
    let person = |i: usize| {
        let r = &people[i];
        let id: i64 = r.try_get("", "id").unwrap();
        let email: String = r.try_get("", "email").unwrap();
        let ended: chrono::NaiveDate = r
            .try_get::<String>("", "ended")
            .unwrap()
            .get(..10)
            .unwrap()
            .parse()
            .unwrap();
        (
            id,
            email,
            ended.checked_add_months(chrono::Months::new(60)).unwrap(),
        )
    };
    let (a_id, a_email, a_until) = person(0);
    let (b_id, b_email, b_until) = person(1);
    let aml_rows = |id: i64| {
        format!(
            "SELECT id FROM kyc_documents WHERE contact_id = {id}
             UNION ALL SELECT id FROM pep_screenings WHERE contact_id = {id}"
        )
    };
    let a_kyc: Vec<i64> = rows(
        &crm,
        &format!("SELECT id FROM kyc_documents WHERE contact_id = {a_id}"),
    )
    .await
    .iter()
    .map(|r| r.try_get("", "id").unwrap())
    .collect();
    let b_kyc: Vec<i64> = rows(
        &crm,
        &format!("SELECT id FROM kyc_documents WHERE contact_id = {b_id}"),
    )
    .await
    .iter()
    .map(|r| r.try_get("", "id").unwrap())
    .collect();
    assert!(count(&crm, &aml_rows(a_id)).await >= 1);
    let kyc_left = |ids: &[i64]| {
        format!(
            "SELECT id FROM kyc_documents WHERE id IN ({})",
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    };

    // A: erased, the AML records retained until their date.
    let printed = ok(&cli(
        &data,
        base,
        &["request", "erase", "--email", &a_email, "--wait"],
    ));
    let a_req = request_id(&printed);
    assert!(
        printed.contains("state      completed_with_retained"),
        "{printed}"
    );
    assert_eq!(count(&crm, &kyc_left(&a_kyc)).await, a_kyc.len() as i64);

    // B restricted their data first (Art. 18(1)(c)), then asked for
    // erasure: the CRM keeps what the restriction covers and says so in its
    // receipt; the plan erased it; the request waits for a case handler,
    // showing the difference, and the audit trail names each one.
    let printed = ok(&cli(
        &data,
        base,
        &[
            "request",
            "restrict",
            "--email",
            &b_email,
            "--ground",
            "needed-for-legal-claims",
            "--wait",
        ],
    ));
    assert!(printed.contains("state      completed"), "{printed}");
    let out = cli(
        &data,
        base,
        &["request", "erase", "--email", &b_email, "--wait"],
    );
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !out.status.success(),
        "a request awaiting review is not done"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("awaits a case handler"),
        "{out:?}"
    );
    let b_req = request_id(&printed);
    assert!(printed.contains("state      awaiting_review"), "{printed}");
    let shown = ok(&cli(&data, base, &["request", "show", &b_req]));
    assert!(
        shown.lines().any(|l| l.starts_with("! crm contacts")
            && l.contains("expected removed, the receipt says retained (restricted: request)")),
        "{shown}"
    );
    let plan = ok(&cli(&data, base, &["request", "plan", &b_req]));
    assert!(
        plan.contains("discrepancies: the receipts differ from this plan"),
        "{plan}"
    );
    assert_eq!(
        count(&crm, &format!("SELECT id FROM contacts WHERE id = {b_id}")).await,
        1,
        "the restriction kept the contact"
    );
    // The handler accepts the outcome as the receipts show it.
    ok(&cli(&data, base, &["request", "approve", &b_req]));
    wait_shown(&data, base, &b_req, "completed_with_retained").await;
    let logs = up.kill();

    // The clock moves past both retention dates; the mesh starts again on
    // the same data and the deferred erasures run by themselves.
    let later = a_until.max(b_until) + chrono::Days::new(2);
    let later = later.to_string();
    let up = dsr_up_with(
        &data,
        base,
        pg.as_ref().map(|p| p.url.as_str()),
        Some(&later),
    );
    ready(base + 7, &up).await;
    ready(base + 8, &up).await;

    // A: the KYC documents and PEP screenings are erased, the receipt
    // counts them, nothing is retained.
    let shown = wait_shown(&data, base, &a_req, "completed").await;
    assert!(shown.contains("; 0 retained"), "{shown}");
    assert_eq!(count(&crm, &kyc_left(&a_kyc)).await, 0, "{shown}");
    let receipts = ok(&cli(&data, base, &["request", "receipts", &a_req]));
    assert!(receipts.contains("deferred:"), "{receipts}");

    // B: the restriction keeps the AML records past their date; the
    // deferred erasure's receipt says why, and the request waits again.
    let shown = wait_shown(&data, base, &b_req, "awaiting_review").await;
    assert!(
        shown.lines().any(|l| l.starts_with("! crm kyc_documents")
            && l.contains("deferred:")
            && l.contains("(restricted: request)")),
        "{shown}"
    );
    assert_eq!(count(&crm, &kyc_left(&b_kyc)).await, b_kyc.len() as i64);

    let logs = logs + &up.kill();
    for secret in [a_email.as_str(), b_email.as_str()] {
        assert!(!logs.contains(secret), "an identity in the logs");
    }
    drop(crm);
    if let Some(p) = pg {
        p.finish().await;
    }
}

/// The README's demo people, under `dsr up` started on a date years from
/// now (the seed is dated relative to the clock): the one whose
/// relationship ended 400 days ago keeps the AML records, retained until
/// five years after the end; the one whose relationship ended six years
/// ago is erased in full; the one in an ongoing relationship keeps what
/// the contract needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_people_tell_the_readmes_stories_whatever_the_date() {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = consecutive_ports(20);
    let day = chrono::NaiveDate::from_ymd_opt(2029, 2, 28).unwrap();
    let up = dsr_up_with(
        &data,
        base,
        pg.as_ref().map(|p| p.url.as_str()),
        Some("2029-02-28T09:00:00Z"),
    );
    ready(base + 7, &up).await;
    ready(base + 8, &up).await;
    let emails: Vec<String> = dsr_system_sql::reference::Demo::ALL
        .iter()
        .map(|d| d.email(1000, 1).unwrap())
        .collect();
    let erase = |who: &str| {
        let printed = ok(&cli(
            &data,
            base,
            &["request", "erase", "--email", who, "--wait"],
        ));
        let plan = ok(&cli(
            &data,
            base,
            &["request", "plan", &request_id(&printed)],
        ));
        (printed, plan)
    };

    let (printed, plan) = erase(&emails[0]);
    assert!(
        printed.contains("state      completed_with_retained"),
        "{printed}"
    );
    let aml_until = day - chrono::Duration::days(400) + chrono::Months::new(60);
    for store in ["kyc_documents", "pep_screenings"] {
        let line = plan.lines().find(|l| l.contains(store)).unwrap();
        assert!(
            line.contains("RETAIN") && line.contains(&format!("until {aml_until}")),
            "{plan}"
        );
    }
    assert!(
        plan.lines()
            .any(|l| l.contains(" contacts ") && l.contains("erase")),
        "{plan}"
    );

    let (printed, plan) = erase(&emails[1]);
    assert!(printed.contains("state      completed\n"), "{printed}");
    assert!(
        plan.contains("0 retained") && plan.contains("kyc_documents"),
        "{plan}"
    );

    let (printed, plan) = erase(&emails[2]);
    assert!(
        printed.contains("state      completed_with_retained"),
        "{printed}"
    );
    let contact = plan.lines().find(|l| l.contains(" contacts ")).unwrap();
    assert!(
        contact.contains("RETAIN") && contact.contains("Art. 6(1)(b)"),
        "{plan}"
    );

    let logs = up.kill();
    for e in &emails {
        assert!(!logs.contains(e.as_str()), "an identity in the logs");
    }
    if let Some(p) = pg {
        p.finish().await;
    }
}

/// An erasure, configured to need substantial assurance, submitted with an
/// email code's token (low): no code is sent, the request waits in
/// VERIFYING saying what it needs, `Verify` with the weak token is refused
/// (ASSURANCE_TOO_LOW), and a case handler's attestation moves it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_that_needs_stronger_verification_waits_for_it() {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let mesh = Mesh::with_env(
        pg.as_ref().map(|p| p.url.as_str()),
        vec![(
            "DSR_ORCHESTRATOR__MIN_ASSURANCE".into(),
            "{ erasure = \"substantial\" }".into(),
        )],
    )
    .await;
    let token = mesh.token.clone();
    let weak = mesh.verification_token(PERSON).await;
    let codes = codes_sent(&mesh.data);
    let mut client = mesh.requests().await;
    let id = client
        .submit(bearer(
            &token,
            pb::SubmitRequest {
                kind: pb::Kind::Erasure as i32,
                controller: controller(SVERIGE),
                claimed: vec![email(PERSON)],
                verification_token: weak.clone(),
                idempotency_key: "e2e-assurance-0001".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
        .id;
    let waiting = wait_state(
        &mut client,
        &token,
        &id,
        pb::State::Verifying,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(waiting.required_assurance, "substantial");
    assert_eq!(codes_sent(&mesh.data), codes, "no code is sent");
    // The person is told how to prove who they are (in Swedish, the
    // request's language).
    let (_, body) = wait_letter(&mesh.data, PERSON, &id, "Vi behöver veta att det är du").await;
    assert!(body.contains("BankID"), "{body}");
    let st = client
        .verify(bearer(
            &token,
            pb::VerifyRequest {
                id: id.clone(),
                code: String::new(),
                verification_token: weak,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::FailedPrecondition, "{st:?}");
    assert_eq!(
        st.get_error_details().error_info().unwrap().reason,
        "ASSURANCE_TOO_LOW"
    );
    assert_eq!(
        get(&mut client, &token, &id).await.state,
        pb::State::Verifying as i32
    );
    // Submitted with the weak token alone (no claimed identities, as a
    // portal does): the token still names the person, so a stronger proof
    // of somebody else does not move the request on.
    let weak_alone = mesh.verification_token(PERSON).await;
    let alone = client
        .submit(bearer(
            &token,
            pb::SubmitRequest {
                kind: pb::Kind::Erasure as i32,
                controller: controller(SVERIGE),
                verification_token: weak_alone,
                idempotency_key: "e2e-assurance-0002".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
        .id;
    wait_state(
        &mut client,
        &token,
        &alone,
        pb::State::Verifying,
        Duration::from_secs(30),
    )
    .await;
    let someone_else = mesh.attested_token("someone.else@example.se").await;
    let st = client
        .verify(bearer(
            &token,
            pb::VerifyRequest {
                id: alone.clone(),
                code: String::new(),
                verification_token: someone_else,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::PermissionDenied, "{st:?}");
    assert_eq!(
        st.get_error_details().error_info().unwrap().reason,
        "VERIFICATION_NOT_THE_PERSON"
    );
    assert_eq!(
        get(&mut client, &token, &alone).await.state,
        pb::State::Verifying as i32
    );
    // A case handler identifies the person: the erasure goes on.
    let strong = mesh.attested_token(PERSON).await;
    client
        .verify(bearer(
            &token,
            pb::VerifyRequest {
                id: id.clone(),
                code: String::new(),
                verification_token: strong,
            },
        ))
        .await
        .unwrap();
    assert_ne!(
        get(&mut client, &token, &id).await.state,
        pb::State::Verifying as i32
    );
    drop(mesh);
    if let Some(p) = pg {
        p.finish().await;
    }
}

/// Art. 12 and 18(3) as the person reads them: a request's life writes
/// each letter once, in the request's language, to the verified address in
/// the outbox (received with its due date, extended with its months and
/// reason, completed with where to fetch the answer, never the data); a
/// refusal tells the reason and the way to the DPO, IMY and a court; each
/// letter is recorded on the request; no identity reaches the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_person_is_told_of_each_step_in_their_language() {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let mut mesh = Mesh::new(pg.as_ref().map(|p| p.url.as_str())).await;
    let token = mesh.token.clone();
    let mut client = mesh.requests().await;

    // In English, answered at once: received, then completed.
    let vt = mesh.verification_token(PERSON).await;
    let a = mesh.submit_with_token("e2e-letters-0001", &vt).await;
    let done = wait_state(
        &mut client,
        &token,
        &a,
        pb::State::Completed,
        Duration::from_secs(60),
    )
    .await;
    let due = done.deadline.unwrap().due.unwrap();
    let due = format!("{:04}-{:02}-{:02}", due.year, due.month, due.day);
    let (_, body) = wait_letter(&mesh.data, PERSON, &a, "We have received your request").await;
    assert!(body.contains(&format!("We will answer by {due}")), "{body}");
    assert!(body.contains("access to your data") && body.contains("Intrum Sverige AB"));
    let (_, body) = wait_letter(&mesh.data, PERSON, &a, "We have answered your request").await;
    assert!(
        body.contains("https://mina-uppgifter.bolaget.se/en/fetch"),
        "{body}"
    );
    assert!(!body.contains("Per Johansson"), "never the data itself");

    // In Swedish, for a controller whose answers a case handler approves:
    // the extension is told with its months and reason.
    let b = mesh
        .submit_finans(
            "e2e-letters-0002",
            &mesh.attested_token(PERSON).await,
            pb::Kind::Access,
        )
        .await;
    wait_state(
        &mut client,
        &token,
        &b,
        pb::State::AwaitingApproval,
        Duration::from_secs(60),
    )
    .await;
    wait_letter(&mesh.data, PERSON, &b, "Vi har tagit emot din begäran").await;
    let extended = client
        .extend(bearer(
            &token,
            pb::ExtendRequest {
                id: b.clone(),
                months: 1,
                reason: "Uppgifter hos våra ombud utomlands behöver sammanställas.".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    let due = extended.deadline.unwrap().due.unwrap();
    let due = format!("{:04}-{:02}-{:02}", due.year, due.month, due.day);
    let (_, body) = wait_letter(&mesh.data, PERSON, &b, "Vi behöver längre tid").await;
    assert!(body.contains("med 1 månad(er)") && body.contains(&format!("senast {due}")));
    assert!(
        body.contains("ombud utomlands") && body.contains("artikel 12.3"),
        "{body}"
    );
    client
        .approve(bearer(
            &token,
            pb::ApproveRequest {
                id: b.clone(),
                note: String::new(),
            },
        ))
        .await
        .unwrap();
    wait_letter(&mesh.data, PERSON, &b, "Vi har besvarat din begäran").await;

    // Refused: the reason, the handler's explanation, the DPO, IMY and a
    // court.
    let c = mesh
        .submit_finans(
            "e2e-letters-0003",
            &mesh.attested_token(PERSON).await,
            pb::Kind::Access,
        )
        .await;
    wait_state(
        &mut client,
        &token,
        &c,
        pb::State::AwaitingApproval,
        Duration::from_secs(60),
    )
    .await;
    client
        .reject(bearer(
            &token,
            pb::RejectRequest {
                id: c.clone(),
                reason: pb::RejectionReason::ManifestlyUnfoundedOrExcessive as i32,
                note: "Tredje likadana begäran denna vecka.".into(),
            },
        ))
        .await
        .unwrap();
    let (_, body) = wait_letter(&mesh.data, PERSON, &c, "Besked om din begäran").await;
    for told in [
        "uppenbart ogrundad eller orimlig (artikel 12.5)",
        "Tredje likadana begäran",
        "DPO@se.intrum.com",
        "Integritetsskyddsmyndigheten (IMY), https://www.imy.se",
        "domstol",
    ] {
        assert!(body.contains(told), "{told:?} not in {body}");
    }

    // Each letter is on its request: what, when, by which channel.
    let letters = get(&mut client, &token, &a).await.letters;
    let seen: Vec<(i32, i32, &str)> = letters
        .iter()
        .map(|l| (l.kind, l.status, l.channel.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                pb::LetterKind::Received as i32,
                pb::LetterStatus::Sent as i32,
                "email (verified)"
            ),
            (
                pb::LetterKind::Completed as i32,
                pb::LetterStatus::Sent as i32,
                "email (verified)"
            ),
        ]
    );
    assert!(letters.iter().all(|l| l.send_time.is_some()));

    let log = mesh.stop("orchestrator") + &mesh.stop("identity");
    assert!(!log.contains(PERSON), "an identity in the logs");
    drop(mesh);
    if let Some(p) = pg {
        p.finish().await;
    }
}

/// A personal-data breach on the CRM's KYC documents (Art. 33-34): the
/// systems say who is affected, per controller, as the CRM's own tables
/// count it; the 72 hours run from discovery; the notification to IMY is
/// drafted with every Art. 33(3) item (what is still missing said); at high
/// risk each affected person with an address gets a notice in their
/// language; the register lists it. Then a complaint reaches the DPO's
/// queue and its answer is sent with the way to IMY. No identity in the
/// logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_is_counted_from_the_systems_notified_and_registered_and_a_complaint_answered() {
    use dsr_proto::incident::v1 as inc;
    use dsr_proto::incident::v1::complaints_client::ComplaintsClient;
    use dsr_proto::incident::v1::incidents_client::IncidentsClient;
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let mut mesh = Mesh::new(pg.as_ref().map(|p| p.url.as_str())).await;
    let token = mesh.token.clone();
    let mut incidents = IncidentsClient::new(channel(mesh.ports["orchestrator"]).await);
    let now = chrono::Utc::now();
    let ts = |t: chrono::DateTime<chrono::Utc>| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    };
    // Bad input names its field and records nothing.
    let st = incidents
        .report(bearer(
            &token,
            inc::ReportRequest {
                summary: String::new(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::InvalidArgument);
    let fields: Vec<String> = st
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|f| f.field.clone())
        .collect();
    assert!(
        fields.contains(&"summary".to_owned()) && fields.contains(&"discovered_time".to_owned())
    );

    let reported = incidents
        .report(bearer(
            &token,
            inc::ReportRequest {
                summary: "En kopia av KYC-dokument i CRM-systemet lästes av en obehörig användare."
                    .into(),
                start_time: Some(ts(now - chrono::Duration::hours(30))),
                discovered_time: Some(ts(now - chrono::Duration::hours(2))),
                system_ids: vec!["crm".into()],
                category_ids: vec!["aml.identity_document".into()],
                approximate_people: 150,
                containment: "Användarens behörighet spärrades.".into(),
                source: inc::Source::Staff as i32,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    let id = reported.id.clone();
    // The 72 hours run from discovery.
    assert!(
        (69..=70).contains(&reported.hours_left),
        "{}",
        reported.hours_left
    );
    assert!(!reported.authority_overdue);
    assert_eq!(
        reported.authority_due_time.unwrap().seconds,
        (now - chrono::Duration::hours(2) + chrono::Duration::hours(72)).timestamp()
    );

    // Who is affected, as the CRM's own tables count it.
    let found = incidents
        .find_affected(bearer(&token, inc::FindAffectedRequest { id: id.clone() }))
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    let affected = found.affected.unwrap();
    assert!(affected.failed_systems.is_empty(), "{affected:?}");
    assert_eq!(affected.systems_answered, vec!["crm".to_owned()]);
    let crm = mesh.db("system-crm").await;
    let counted = rows(
        &crm,
        "SELECT c.controller_orgnr, COUNT(DISTINCT c.id), COUNT(k.id) FROM contacts c \
         JOIN kyc_documents k ON k.contact_id = c.id GROUP BY c.controller_orgnr ORDER BY 1",
    )
    .await;
    let want: Vec<(String, u64, u64)> = counted
        .iter()
        .map(|r| {
            (
                r.try_get_by_index::<String>(0).unwrap(),
                r.try_get_by_index::<i64>(1).unwrap() as u64,
                r.try_get_by_index::<i64>(2).unwrap() as u64,
            )
        })
        .collect();
    let got: Vec<(String, u64, u64)> = affected
        .counts
        .iter()
        .map(|c| {
            (
                c.controller.clone().unwrap().organisation_number,
                c.people,
                c.records,
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(want.len() >= 2, "more than one controller: {want:?}");
    let people: u64 = want.iter().map(|w| w.1).sum();
    assert_eq!(affected.people, people);
    assert_eq!(affected.reachable, people, "every contact has an address");

    // The draft names what is still missing, in Swedish; then complete.
    let draft = incidents
        .draft_notification(bearer(
            &token,
            inc::DraftNotificationRequest {
                id: id.clone(),
                language: "sv".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        draft.missing.contains(&"consequences".to_owned()),
        "{:?}",
        draft.missing
    );
    let assessed = incidents
        .assess(bearer(
            &token,
            inc::AssessRequest {
                id: id.clone(),
                risk: inc::Risk::High as i32,
                reasoning: "Passuppgifter kan användas för identitetsstöld.".into(),
                consequences: "Risk för identitetsstöld och bedrägeri i ditt namn.".into(),
                measures: "Åtkomsten är spärrad; byt gärna ut din identitetshandling.".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(assessed.risk, inc::Risk::High as i32);
    for (lang, heads) in [
        (
            "sv",
            [
                "Vad som har hänt (artikel 33.3 a)",
                "Dataskyddsombud, kontaktuppgifter (artikel 33.3 b)",
                "Sannolika konsekvenser (artikel 33.3 c)",
                "Vidtagna och föreslagna åtgärder (artikel 33.3 d)",
            ],
        ),
        (
            "en",
            [
                "The nature of the breach (Article 33(3)(a))",
                "Data protection officer, contact details (Article 33(3)(b))",
                "Likely consequences (Article 33(3)(c))",
                "Measures taken or proposed (Article 33(3)(d))",
            ],
        ),
    ] {
        let d = incidents
            .draft_notification(bearer(
                &token,
                inc::DraftNotificationRequest {
                    id: id.clone(),
                    language: lang.into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(d.missing.is_empty(), "{lang}: {:?}", d.missing);
        for h in heads {
            assert!(d.text.contains(h), "{lang}: {h:?} not in\n{}", d.text);
        }
        assert!(d.text.contains("DPO@se.intrum.com"));
        assert!(d.text.contains("Risk för identitetsstöld"));
        let unit = if lang == "sv" {
            ("personer", "poster")
        } else {
            ("people", "records")
        };
        assert!(d.text.contains(&format!(
            "aml.identity_document: {} {}, {} {}",
            want[0].1, unit.0, want[0].2, unit.1
        )));
        assert!(d.text.contains(&people.to_string()));
    }

    // High risk: a notice to each, in their language.
    let notified = incidents
        .notify_people(bearer(&token, inc::NotifyPeopleRequest { id: id.clone() }))
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(notified.notices.unwrap().queued, people);
    let again = incidents
        .notify_people(bearer(&token, inc::NotifyPeopleRequest { id: id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    let one = rows(
        &crm,
        "SELECT c.email, c.language FROM contacts c JOIN kyc_documents k ON k.contact_id = c.id \
         ORDER BY c.id LIMIT 1",
    )
    .await;
    let (email_of_one, language) = (
        one[0].try_get_by_index::<String>(0).unwrap(),
        one[0].try_get_by_index::<String>(1).unwrap(),
    );
    let subject = if language == "en" {
        "Important information about your personal data"
    } else {
        "Viktig information om dina personuppgifter"
    };
    let (_, body) = wait_letter(&mesh.data, &email_of_one.to_lowercase(), "", subject).await;
    assert!(
        body.contains("KYC-dokument") && body.contains("Risk för identitetsstöld"),
        "{body}"
    );
    assert!(
        body.contains(&id) && body.contains("DPO@se.intrum.com"),
        "{body}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let i = incidents
            .get(bearer(&token, inc::GetRequest { id: id.clone() }))
            .await
            .unwrap()
            .into_inner()
            .incident
            .unwrap();
        let n = i.notices.unwrap();
        if n.sent == people {
            assert_eq!(n.failed, 0);
            break;
        }
        assert!(Instant::now() < deadline, "notices not all sent: {n:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The authority told within the 72 hours; the register lists it.
    incidents
        .record_authority_notified(bearer(
            &token,
            inc::RecordAuthorityNotifiedRequest {
                id: id.clone(),
                notified_time: Some(ts(chrono::Utc::now())),
                authority_reference: "IMY-2026-1234".into(),
                late_reason: String::new(),
            },
        ))
        .await
        .unwrap();
    let register = incidents
        .list(bearer(&token, inc::ListRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .incidents;
    let listed = register
        .iter()
        .find(|i| i.id == id)
        .expect("in the register");
    assert_eq!(listed.authority_reference, "IMY-2026-1234");
    assert!(!listed.authority_overdue);

    // A complaint reaches the DPO's queue and its answer is sent.
    let mut complaints = ComplaintsClient::new(channel(mesh.ports["orchestrator"]).await);
    let filed = complaints
        .file(bearer(
            &token,
            inc::FileRequest {
                controller: controller(SVERIGE),
                text: "Jag fick reklam fast jag har invänt.".into(),
                reply_to: Some(email(PERSON)),
                language: "en".into(),
                request_ids: vec![],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .complaint
        .unwrap();
    let due = filed.answer_due_time.unwrap().seconds - filed.file_time.unwrap().seconds;
    assert_eq!(due, 30 * 24 * 3600);
    let queue = complaints
        .list_complaints(bearer(
            &token,
            inc::ListComplaintsRequest {
                open_only: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .complaints;
    assert!(queue.iter().any(|c| c.id == filed.id && !c.overdue));
    complaints
        .answer(bearer(
            &token,
            inc::AnswerRequest {
                id: filed.id.clone(),
                answer: "We have stopped all marketing to you and checked why it happened.".into(),
            },
        ))
        .await
        .unwrap();
    let (_, body) = wait_letter(&mesh.data, PERSON, &filed.id, "Answer to your complaint").await;
    assert!(body.contains("stopped all marketing") && body.contains("https://www.imy.se"));
    let open = complaints
        .list_complaints(bearer(
            &token,
            inc::ListComplaintsRequest {
                open_only: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .complaints;
    assert!(
        !open.iter().any(|c| c.id == filed.id),
        "answered: off the open queue"
    );

    let log = mesh.stop("orchestrator") + &mesh.stop("identity") + &mesh.stop("discovery");
    for secret in [PERSON, email_of_one.as_str()] {
        assert!(!log.contains(secret), "an identity in the logs");
    }
    drop(mesh);
    if let Some(p) = pg {
        p.finish().await;
    }
}

/// The mesh's own SQLite databases (not the data systems' `system-*.db`)
/// whose bytes, free pages and write-ahead log included, hold `needle`.
fn mesh_files_holding(data: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(data).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("system-") || !name.contains(".db") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            found.push(name);
        }
    }
    found
}

/// Under `dsr up`, a person's access request and another's erasure are
/// answered; the mesh's databases hold their identities while needed. Run
/// again with the clock past the identities' retention (30 days after the
/// answer): no identity value of either person (email, phone,
/// personnummer, customer number) remains in any of the mesh's own
/// databases, bytes on disk included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_identity_remains_in_the_meshs_databases_once_its_retention_passed() {
    let _turn = TURN.lock().await;
    // The files are read: SQLite, whatever the environment names.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = consecutive_ports(20);
    let up = dsr_up(&data, base, None);
    ready(base + 7, &up).await;
    ready(base + 8, &up).await;

    let people = dsr_system_sql::reference::people(1000, 1);
    let reader = people.iter().find(|p| p.email == PERSON).unwrap();
    let erased_email = dsr_system_sql::reference::Demo::ALL[1]
        .email(1000, 1)
        .unwrap();
    let erased = people.iter().find(|p| p.email == erased_email).unwrap();
    let out = dir.path().join("access");
    let printed = ok(&cli(
        &data,
        base,
        &[
            "request",
            "access",
            "--email",
            &reader.email,
            "--wait",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(printed.contains("state      completed"), "{printed}");
    let printed = ok(&cli(
        &data,
        base,
        &["request", "erase", "--email", &erased.email, "--wait"],
    ));
    assert!(printed.contains("state      completed"), "{printed}");
    let logs = up.kill();

    let mut values = Vec::new();
    for p in [reader, erased] {
        values.push(p.email.clone());
        values.push(p.phone.clone());
        values.push(p.customer_number.clone());
        values.extend(p.personnummer.clone());
    }
    // While the requests are recent, the ledger still holds them (so the
    // check below can fail).
    assert!(
        !mesh_files_holding(&data, &reader.email).is_empty(),
        "the ledger holds the identities of a recent request"
    );

    // Forty days on: the purges run as the services start.
    let later = (chrono::Utc::now() + chrono::Duration::days(40)).to_rfc3339();
    let up = dsr_up_with(&data, base, None, Some(&later));
    ready(base + 7, &up).await;
    ready(base + 8, &up).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut left = Vec::new();
        for v in &values {
            left.extend(
                mesh_files_holding(&data, v)
                    .into_iter()
                    .map(|f| format!("{f}: a value of the person's")),
            );
        }
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "identities still at rest: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let logs = logs + &up.kill();
    // Checked again after a clean stop (checkpointed, WAL gone).
    for v in &values {
        assert_eq!(mesh_files_holding(&data, v), Vec::<String>::new());
        assert!(!logs.contains(v.as_str()), "an identity in the logs");
    }
}

/// The chaos run: forty erasures in flight while the CRM is killed
/// (SIGKILL) four times and the erasure service twice, each started again a
/// moment later. Every request ends answered (completed, or waiting for a
/// case handler over a difference a system reported, never stuck), every
/// person's contact is gone from the CRM or retained and restricted, and
/// each system holds one erase operation and gave one receipt per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_erasures_survive_a_crm_and_an_erasure_service_killed_again_and_again() {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let mut mesh = Mesh::new(pg.as_ref().map(|p| p.url.as_str())).await;
    let token = mesh.token.clone();
    let crm = mesh.db("system-crm").await;
    let emails: Vec<String> = rows(
        &crm,
        &format!(
            "SELECT email FROM contacts WHERE controller_orgnr = '{SVERIGE}' AND email IS NOT NULL
             AND email <> '{PERSON}' ORDER BY id LIMIT 40 OFFSET 50"
        ),
    )
    .await
    .iter()
    .map(|r| r.try_get("", "email").unwrap())
    .collect();
    assert_eq!(emails.len(), 40);
    let mut tokens = Vec::new();
    for e in &emails {
        tokens.push(mesh.attested_token(e).await);
    }
    let mut client = mesh.requests().await;
    let mut ids = Vec::new();
    for (i, vt) in tokens.iter().enumerate() {
        let r = client
            .submit(bearer(
                &token,
                pb::SubmitRequest {
                    kind: pb::Kind::Erasure as i32,
                    controller: controller(SVERIGE),
                    verification_token: vt.clone(),
                    idempotency_key: format!("e2e-chaos-{i:04}"),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .request
            .unwrap();
        ids.push(r.id);
    }

    // The chaos, while the requests run (checked: some are still open
    // once it is over, so the kills fell on work in flight).
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        mesh.stop("crm");
        if round % 2 == 1 {
            mesh.stop("erasure");
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        mesh.start("crm").await;
        if round % 2 == 1 {
            mesh.start("erasure").await;
        }
    }

    // Every request answered.
    let mut client = mesh.requests().await;
    let deadline = Instant::now() + Duration::from_secs(240);
    let answered = [
        pb::State::Completed as i32,
        pb::State::CompletedWithRetained as i32,
        pb::State::AwaitingReview as i32,
    ];
    let mut open = 0;
    for id in &ids {
        open += usize::from(!answered.contains(&get(&mut client, &token, id).await.state));
    }
    assert!(open > 0, "every erasure finished before the chaos ended");
    let mut done = Vec::new();
    for id in &ids {
        let r = loop {
            let r = get(&mut client, &token, id).await;
            if answered.contains(&r.state) {
                break r;
            }
            assert!(Instant::now() < deadline, "stuck: {r:#?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // A difference is a system keeping a record on its own ground,
        // never a write lost to a kill.
        assert!(
            r.discrepancies.iter().all(|d| d.observed == "retained"),
            "{r:#?}"
        );
        done.push(r);
    }

    // One receipt per system per request, one operation under each key.
    let (mut erasure, era_token) = mesh.erasure().await;
    let mut systems_of = BTreeMap::new();
    for id in &ids {
        let plan = erasure
            .get_plan(bearer(
                &era_token,
                era::GetPlanRequest {
                    request_id: id.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .plan
            .unwrap();
        let systems: BTreeSet<String> = plan.records.iter().map(|r| r.system_id.clone()).collect();
        assert!(systems.contains("crm"), "{plan:#?}");
        let receipts = erasure
            .list_receipts(bearer(
                &era_token,
                era::ListReceiptsRequest {
                    request_id: id.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .receipts;
        let mut per_system: BTreeMap<String, usize> = BTreeMap::new();
        for r in receipts.iter().filter(|r| r.phase == "erase") {
            assert!(r.verified, "{r:?}");
            *per_system.entry(r.system_id.clone()).or_default() += 1;
        }
        assert_eq!(
            per_system.keys().cloned().collect::<BTreeSet<_>>(),
            systems,
            "{id}: a receipt from every planned system"
        );
        assert!(per_system.values().all(|n| *n == 1), "{id}: {per_system:?}");
        systems_of.insert(id.clone(), systems);
    }
    for system in ["crm", "print-mail", "legal"] {
        let db = mesh.db(&format!("system-{system}")).await;
        for (id, systems) in &systems_of {
            let want = i64::from(systems.contains(system));
            assert_eq!(
                count(
                    &db,
                    &format!("SELECT key FROM dsr_idempotency WHERE key = 'erase.{id}.{system}'")
                )
                .await,
                want,
                "{system}: one erasure under the key of {id}"
            );
        }
        let _ = db.close().await;
    }
    let crm = mesh.db("system-crm").await;
    for e in &emails {
        assert_eq!(
            count(
                &crm,
                &format!(
                    "SELECT id FROM contacts WHERE email = '{e}' AND controller_orgnr = '{SVERIGE}' AND restricted_at IS NULL"
                )
            )
            .await,
            0,
            "the contact is erased, or retained and restricted"
        );
    }
    drop(crm);
    let names: Vec<&'static str> = mesh.procs.keys().copied().collect();
    let logs: Vec<String> = names.into_iter().map(|n| mesh.stop(n)).collect();
    for l in &logs {
        for e in &emails {
            assert!(!l.contains(e.as_str()), "an identity in the logs");
        }
    }
    if let Some(p) = pg {
        p.finish().await;
    }
}
