//! `dsr request …`: the portal's side of the orchestrator from the command
//! line. Under `dsr up` it acts as a portal with the development token, and
//! reads the person's one-time code from the development outbox (in
//! production the person types it).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use dsr_proto::common::v1 as common;
use dsr_proto::export::v1 as exp;
use dsr_proto::export::v1::export_client::ExportClient;
use dsr_proto::orchestrator::v1 as pb;
use dsr_proto::orchestrator::v1::requests_client::RequestsClient;
use dsr_proto::orchestrator::v1::submit_request::Order;
use sha2::Digest as _;
use tonic::transport::Channel;

use crate::config::Config;
use crate::dev;
use crate::exit::{Exit, fail};

/// How a read command prints what it read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Lines for a person.
    #[default]
    Text,
    /// One JSON document on standard output, for scripts (`| jq`): the
    /// proto's field names, enums as lower-case names without their
    /// prefix, dates as YYYY-MM-DD, times as RFC 3339.
    Json,
}

/// Prints `value` as one JSON document.
#[allow(clippy::print_stdout)]
pub(crate) fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A protobuf timestamp as RFC 3339, or null.
pub(crate) fn time_json(t: Option<&prost_types::Timestamp>) -> serde_json::Value {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map_or(serde_json::Value::Null, |t| t.to_rfc3339().into())
}

/// A date as YYYY-MM-DD, or null.
pub(crate) fn date_json(d: Option<&common::Date>) -> serde_json::Value {
    d.map_or(serde_json::Value::Null, |d| {
        format!("{:04}-{:02}-{:02}", d.year, d.month, d.day).into()
    })
}

/// An enum value's name without its prefix, lower case ("completed").
pub(crate) fn enum_name(name: Option<&str>, prefix: &str) -> String {
    name.map(|n| n.trim_start_matches(prefix).to_lowercase())
        .unwrap_or_default()
}

/// A request as JSON (`--output json`).
fn request_json(r: &pb::DataSubjectRequest) -> serde_json::Value {
    use serde_json::json;
    let d = r.deadline.clone().unwrap_or_default();
    json!({
        "id": r.id,
        "kind": enum_name(pb::Kind::try_from(r.kind).ok().map(|k| k.as_str_name()), "KIND_"),
        "state": state_name(r.state),
        "controller": r.controller.as_ref().map(|c| c.organisation_number.clone()),
        "language": r.language,
        "deadline": {
            "received_on": date_json(d.received_on.as_ref()),
            "original_due": date_json(d.original_due.as_ref()),
            "due": date_json(d.due.as_ref()),
            "extended_months": d.extended_months,
            "extension_reason": d.extension_reason,
            "overdue": d.overdue,
        },
        "submit_time": time_json(r.submit_time.as_ref()),
        "update_time": time_json(r.update_time.as_ref()),
        "awaiting_code": !r.challenge_id.is_empty(),
        "retrying": r.retrying,
        "required_assurance": r.required_assurance,
        "package_id": r.package_id,
        "record_count": r.record_count,
        "retained_count": r.retained_count,
        "system_ids": r.system_ids,
        "rejection_reason": enum_name(
            pb::RejectionReason::try_from(r.rejection_reason).ok().map(|x| x.as_str_name()),
            "REJECTION_REASON_",
        ),
        "rejection_note": r.rejection_note,
        "cancel_reason": r.cancel_reason,
        "steps": r.steps.iter().map(|s| json!({
            "name": s.name,
            "status": step_state(s),
            "attempts": s.attempts,
            "last_error": s.last_error,
            "next_attempt_at": time_json(s.next_attempt_at.as_ref()),
            "done_at": time_json(s.done_at.as_ref()),
        })).collect::<Vec<_>>(),
        "discrepancies": r.discrepancies.iter().map(|x| json!({
            "system_id": x.system_id,
            "store": x.store,
            "key": x.key,
            "phase": x.phase,
            "expected": x.expected,
            "observed": x.observed,
            "restriction_reason": x.restriction_reason,
            "legal_ground": x.legal_ground,
            "retain_until": date_json(x.retain_until.as_ref()),
            "receipt_id": x.receipt_id,
        })).collect::<Vec<_>>(),
        "withheld_disclosures": r.withheld_disclosures.iter().map(|w| json!({
            "recipient_id": w.recipient_id,
            "recipient_name": w.recipient_name,
            "country": w.country,
            "action": w.action,
            "verdict": w.verdict,
            "reasons": w.reasons,
            "notification_id": w.notification_id,
        })).collect::<Vec<_>>(),
        "letters": r.letters.iter().map(|l| json!({
            "kind": enum_name(pb::LetterKind::try_from(l.kind).ok().map(|k| k.as_str_name()), "LETTER_KIND_"),
            "key": l.key,
            "status": enum_name(pb::LetterStatus::try_from(l.status).ok().map(|k| k.as_str_name()), "LETTER_STATUS_"),
            "channel": l.channel,
            "queue_time": time_json(l.queue_time.as_ref()),
            "send_time": time_json(l.send_time.as_ref()),
            "attempts": l.attempts,
            "last_error": l.last_error,
        })).collect::<Vec<_>>(),
    })
}

/// Arguments of `dsr request`.
#[derive(Debug, Args)]
pub(crate) struct RequestArgs {
    /// How read commands (show, list, plan, receipts, notifications) print:
    /// text, or json for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// The orchestrator (default: `dsr up`'s, base port + 7).
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// Export, for downloads (default: `dsr up`'s, base port + 6).
    #[arg(long, global = true)]
    export_endpoint: Option<String>,
    /// Erasure, for plans and receipts (default: `dsr up`'s, base port + 8).
    #[arg(long, global = true)]
    erasure_endpoint: Option<String>,
    /// Bearer token (default: minted from the data directory's development key).
    #[arg(long, env = "DSR_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: RequestCommand,
}

#[derive(Debug, Args)]
struct NewRequest {
    /// The person's email address.
    #[arg(long)]
    email: Option<String>,
    /// The person's phone number.
    #[arg(long)]
    phone: Option<String>,
    /// The person's personnummer.
    #[arg(long)]
    personnummer: Option<String>,
    /// The controller (organisationsnummer); default Intrum Sverige AB.
    #[arg(long, default_value = "556134-1248")]
    controller: String,
    /// Language of the answer: sv or en.
    #[arg(long, default_value = "sv")]
    language: String,
    /// Idempotency key (default: a new one).
    #[arg(long)]
    key: Option<String>,
    /// A verification token the portal already holds (skips the code).
    #[arg(long)]
    verification_token: Option<String>,
    /// The one-time code the person received (default: read from the
    /// development outbox, else asked for).
    #[arg(long)]
    code: Option<String>,
    /// Wait until the request ends.
    #[arg(long)]
    wait: bool,
    /// Download the package into this directory (implies --wait).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Give up waiting after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StateArg {
    Submitted,
    Verifying,
    Locating,
    AwaitingApproval,
    Exporting,
    Planning,
    Executing,
    Completed,
    CompletedWithRetained,
    AwaitingReview,
    Rejected,
    Cancelled,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum KindArg {
    Access,
    Portability,
    Erasure,
    Rectification,
    Restriction,
    Objection,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GroundArg {
    AccuracyContested,
    UnlawfulProcessing,
    NeededForLegalClaims,
    ObjectionPending,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RejectArg {
    IdentityInsufficient,
    ManifestlyUnfoundedOrExcessive,
    NoData,
    Other,
}

#[derive(Debug, Subcommand)]
enum RequestCommand {
    /// Submit an access request (Art. 15).
    Access(NewRequest),
    /// Submit a portability request (Art. 20).
    Portability(NewRequest),
    /// Submit an erasure request (Art. 17).
    Erase(NewRequest),
    /// Submit a rectification request (Art. 16).
    Rectify {
        #[command(flatten)]
        n: NewRequest,
        /// A correction, `category=value` (e.g. contact.phone=+46701234567);
        /// repeatable.
        #[arg(long = "correct", required = true)]
        corrections: Vec<String>,
    },
    /// Submit a restriction request (Art. 18), or lift one.
    Restrict {
        #[command(flatten)]
        n: NewRequest,
        /// Why (Art. 18(1)); not with --lift.
        #[arg(long, required_unless_present = "lift")]
        ground: Option<GroundArg>,
        /// Lift the restriction instead: the mesh tells the person first
        /// (its restriction-lifted letter, Art. 18(3)) unless
        /// --person-informed-at says they were told already.
        #[arg(long, conflicts_with = "ground")]
        lift: bool,
        /// With --lift: when the person was told (RFC 3339; Art. 18(3)).
        #[arg(long)]
        person_informed_at: Option<String>,
    },
    /// Submit an objection (Art. 21).
    Object {
        #[command(flatten)]
        n: NewRequest,
        /// A purpose objected to, as the systems name it; repeatable.
        #[arg(long = "purpose")]
        purposes: Vec<String>,
        /// Object to direct marketing (and profiling for it).
        #[arg(long)]
        direct_marketing: bool,
    },
    /// Show the Art. 19 notifications of a request: who the data went to
    /// and how each is told.
    Notifications {
        /// The request id.
        id: String,
    },
    /// Record that a notification task was done (the recipient was told).
    NotificationDone {
        /// The notification's id (`dsr request notifications`).
        id: String,
    },
    /// Approve a notification held because the transfer to its recipient
    /// is not lawful (`erasure.unlawful_transfers = "review"`): it becomes
    /// a task.
    ApproveNotification {
        /// The notification's id (`dsr request notifications`).
        id: String,
        /// What the transfer rests on, e.g. "Art. 49(1)(e): legal claim".
        #[arg(long)]
        note: String,
    },
    /// Show an erasure request's plan: per record, erase, anonymise or
    /// retain with the legal ground and the date.
    Plan {
        /// The request id.
        id: String,
    },
    /// Show an erasure request's receipts, each verified again against the
    /// signing system's published keys.
    Receipts {
        /// The request id.
        id: String,
    },
    /// Pass the person's one-time code for a request waiting in VERIFYING.
    Verify {
        /// The request id.
        id: String,
        /// The code.
        #[arg(long)]
        code: String,
    },
    /// Show one request, with its deadline and step log.
    Show {
        /// The request id.
        id: String,
    },
    /// List requests, newest first.
    List {
        /// Only in this state.
        #[arg(long)]
        state: Option<StateArg>,
        /// Only of this kind.
        #[arg(long)]
        kind: Option<KindArg>,
        /// Only for this controller.
        #[arg(long)]
        controller: Option<String>,
        /// Only overdue requests.
        #[arg(long)]
        overdue: bool,
        /// Only open requests due within this many days (overdue ones too).
        #[arg(long, default_value_t = 0)]
        due_within_days: u32,
        /// Requests per page.
        #[arg(long, default_value_t = 50)]
        page_size: u32,
        /// Continue from a previous page.
        #[arg(long)]
        page_token: Option<String>,
    },
    /// Follow a request until it ends.
    Watch {
        /// The request id.
        id: String,
    },
    /// Extend the deadline (Art. 12(3)).
    Extend {
        /// The request id.
        id: String,
        /// 1 or 2.
        #[arg(long)]
        months: u32,
        /// The reason, as told to the person.
        #[arg(long)]
        reason: String,
    },
    /// Cancel a request that has not begun irreversible work.
    Cancel {
        /// The request id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
    /// Approve a request awaiting approval.
    Approve {
        /// The request id.
        id: String,
    },
    /// Reject a request.
    Reject {
        /// The request id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: RejectArg,
        /// An explanation (required for `other`).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Download a completed request's package.
    Download {
        /// The request id.
        id: String,
        /// Into this directory.
        #[arg(long)]
        out: PathBuf,
    },
}

pub(crate) use crate::exit::explain;

struct Portal {
    token: String,
    requests: RequestsClient<Channel>,
    export_endpoint: String,
    erasure_endpoint: String,
}

impl Portal {
    fn req<T>(&self, m: T) -> anyhow::Result<tonic::Request<T>> {
        let mut r = tonic::Request::new(m);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {}", self.token).parse()?);
        Ok(r)
    }

    async fn get(&mut self, id: &str) -> anyhow::Result<pb::DataSubjectRequest> {
        let r = self.req(pb::GetRequest { id: id.to_owned() })?;
        self.requests
            .get(r)
            .await
            .map_err(|s| explain(&s))?
            .into_inner()
            .request
            .context("empty answer")
    }
}

/// A connection to `endpoint` (TLS for `https://`, with `client.tls_*`).
pub(crate) async fn connect(endpoint: &str, what: &str) -> anyhow::Result<Channel> {
    let ep = dsr_mesh_client::client::endpoint(endpoint)
        .map_err(|e| fail(Exit::Usage, format!("{what}: {e}")))?;
    ep.connect().await.map_err(|e| {
        fail(
            Exit::Unavailable,
            format!(
                "cannot reach {what} at {endpoint} ({e}): is the mesh running there? \
                 Under `dsr up`, give the same --data-dir (its up.json says where it listens) \
                 or DSR_UP__BASE_PORT; else --endpoint"
            ),
        )
    })
}

fn state_name(s: i32) -> String {
    pb::State::try_from(s)
        .map(|x| x.as_str_name().trim_start_matches("STATE_").to_lowercase())
        .unwrap_or_else(|_| "?".into())
}

fn date(d: Option<&common::Date>) -> String {
    d.map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day))
        .unwrap_or_default()
}

#[allow(clippy::print_stdout)]
fn print_request(r: &pb::DataSubjectRequest) {
    let kind = pb::Kind::try_from(r.kind)
        .map(|k| k.as_str_name().trim_start_matches("KIND_").to_lowercase())
        .unwrap_or_default();
    println!("request    {}", r.id);
    println!("kind       {kind}");
    println!("state      {}", state_name(r.state));
    if let Some(c) = &r.controller {
        println!("controller {}", c.organisation_number);
    }
    if let Some(d) = &r.deadline {
        println!(
            "received   {}   due {}{}{}",
            date(d.received_on.as_ref()),
            date(d.due.as_ref()),
            if d.extended_months > 0 {
                format!(
                    " (extended {} months: {})",
                    d.extended_months, d.extension_reason
                )
            } else {
                String::new()
            },
            if d.overdue { "   OVERDUE" } else { "" }
        );
    }
    if !r.package_id.is_empty() {
        println!(
            "package    {} ({} records from {})",
            r.package_id,
            r.record_count,
            r.system_ids.join(", ")
        );
    }
    if !r.rejection_note.is_empty() || r.rejection_reason != 0 {
        println!(
            "rejected   {} {}",
            pb::RejectionReason::try_from(r.rejection_reason)
                .map(|x| x.as_str_name())
                .unwrap_or("?"),
            r.rejection_note
        );
    }
    if !r.cancel_reason.is_empty() {
        println!("cancelled  {}", r.cancel_reason);
    }
    if r.kind == pb::Kind::Erasure as i32 && !r.system_ids.is_empty() {
        println!(
            "erased     {} records at {}; {} retained",
            r.record_count,
            r.system_ids.join(", "),
            r.retained_count
        );
    }
    if !r.discrepancies.is_empty() {
        println!(
            "discrepancies {} (what the systems did differs from the plan{})",
            r.discrepancies.len(),
            if r.state == pb::State::AwaitingReview as i32 {
                "; a case handler reviews them, then `dsr request approve`"
            } else {
                ""
            }
        );
        for d in &r.discrepancies {
            let mut line = format!(
                "! {} {} {} [{}] expected {}, the receipt says {}",
                d.system_id, d.store, d.key, d.phase, d.expected, d.observed
            );
            if !d.restriction_reason.is_empty() {
                line.push_str(&format!(" (restricted: {})", d.restriction_reason));
            }
            if d.retain_until.is_some() {
                line.push_str(&format!(" until {}", date(d.retain_until.as_ref())));
            }
            if !d.legal_ground.is_empty() {
                line.push_str(&format!("  {}", d.legal_ground));
            }
            println!("{line}");
        }
    }
    for w in &r.withheld_disclosures {
        println!(
            "! not sent to {} ({}, {}): {} ({}{})",
            w.recipient_id,
            w.recipient_name,
            w.country,
            w.action,
            if w.verdict == "refused" {
                "no lawful transfer: refused"
            } else {
                "no lawful transfer: awaits approval, `dsr request approve-notification "
            },
            if w.verdict == "refused" {
                String::new()
            } else {
                format!("{} --note …`", w.notification_id)
            }
        );
        for reason in &w.reasons {
            println!("    x {reason}");
        }
    }
    println!("steps");
    for s in &r.steps {
        let mut line = format!(
            "  {:<8} {:<14} attempts {}",
            s.name,
            step_state(s),
            s.attempts
        );
        if !s.last_error.is_empty() {
            line.push_str(&format!("  last error: {}", s.last_error));
        }
        println!("{line}");
    }
    if !r.letters.is_empty() {
        println!("letters to the person");
        for l in &r.letters {
            let status = pb::LetterStatus::try_from(l.status)
                .map(|s| {
                    s.as_str_name()
                        .trim_start_matches("LETTER_STATUS_")
                        .to_lowercase()
                })
                .unwrap_or_default();
            let mut line = format!("  {:<20} {:<13}", l.key, status);
            if let Some(t) = l.send_time {
                line.push_str(&format!(
                    " {} by {}",
                    chrono::DateTime::from_timestamp(t.seconds, 0)
                        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                        .unwrap_or_default(),
                    l.channel
                ));
            }
            if !l.last_error.is_empty() {
                line.push_str(&format!(
                    " (attempts {}, last error: {}{})",
                    l.attempts,
                    l.last_error,
                    if status == "pending" {
                        ""
                    } else {
                        "; tell the person another way"
                    }
                ));
            }
            println!("{line}");
        }
    }
}

/// The newest code sent to `to` in the development outbox after `since`.
pub(crate) fn code_from_outbox(
    dir: &Path,
    to: &str,
    since: std::time::SystemTime,
) -> Option<String> {
    let mut newest: Option<(std::time::SystemTime, String)> = None;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let modified = e.metadata().ok()?.modified().ok()?;
        if modified < since {
            continue;
        }
        let text = std::fs::read_to_string(e.path()).ok()?;
        // A code, not a letter about a request.
        if !text.starts_with(&format!("To: {to}\n"))
            || !(text.contains("\nSubject: Your verification code\n")
                || text.contains("\nSubject: Din verifieringskod\n"))
        {
            continue;
        }
        let code: String = text
            .split(|c: char| !c.is_ascii_digit())
            .find(|w| w.len() == 6)?
            .to_owned();
        if newest.as_ref().is_none_or(|(t, _)| modified > *t) {
            newest = Some((modified, code));
        }
    }
    newest.map(|(_, c)| c)
}

/// Runs `dsr request`.
#[allow(clippy::print_stdout)]
pub(crate) async fn run(cfg: &Config, args: RequestArgs) -> anyhow::Result<()> {
    let base = |offset: u16| {
        format!(
            "http://{}:{}",
            cfg.up.connect_host(),
            cfg.up.base_port.saturating_add(offset)
        )
    };
    let output = args.output;
    let endpoint = args.endpoint.unwrap_or_else(|| base(7));
    let token = dev::token_or_mint(
        &cfg.data_dir,
        args.token,
        "dsr-cli",
        vec![
            dsr_orchestrator::SERVICE_NAME.into(),
            dsr_export::SERVICE_NAME.into(),
            dsr_erasure::SERVICE_NAME.into(),
        ],
        vec![
            dsr_orchestrator::grpc::SCOPE_SUBMIT.into(),
            dsr_orchestrator::grpc::SCOPE_READ.into(),
            dsr_orchestrator::grpc::SCOPE_MANAGE.into(),
            dsr_export::grpc::SCOPE_READ.into(),
            dsr_erasure::grpc::SCOPE_READ.into(),
            dsr_erasure::grpc::SCOPE_HOLDS.into(),
        ],
        Duration::from_secs(3600),
    )?;
    let mut p = Portal {
        token,
        requests: RequestsClient::new(connect(&endpoint, "the orchestrator").await?),
        export_endpoint: args.export_endpoint.unwrap_or_else(|| base(6)),
        erasure_endpoint: args.erasure_endpoint.unwrap_or_else(|| base(8)),
    };
    match args.command {
        RequestCommand::Access(n) => submit(cfg, &mut p, pb::Kind::Access, n).await,
        RequestCommand::Portability(n) => submit(cfg, &mut p, pb::Kind::Portability, n).await,
        RequestCommand::Erase(n) => submit(cfg, &mut p, pb::Kind::Erasure, n).await,
        RequestCommand::Rectify { n, corrections } => {
            let mut r = pb::RectificationOrder::default();
            for c in corrections {
                let (category, value) = c
                    .split_once('=')
                    .with_context(|| format!("--correct {c:?}: category=value"))?;
                r.corrections.push(pb::Correction {
                    category_id: category.trim().to_owned(),
                    value: value.to_owned(),
                });
            }
            let order = pb::SubmitRequest {
                order: Some(Order::Rectification(r)),
                ..Default::default()
            };
            submit_with(cfg, &mut p, order, pb::Kind::Rectification, n).await
        }
        RequestCommand::Restrict {
            n,
            ground,
            lift,
            person_informed_at,
        } => {
            let person_informed_time = person_informed_at
                .map(|t| {
                    chrono::DateTime::parse_from_rfc3339(&t)
                        .with_context(|| format!("--person-informed-at {t:?}: an RFC 3339 time"))
                })
                .transpose()?
                .map(|t| prost_types::Timestamp {
                    seconds: t.timestamp(),
                    nanos: 0,
                });
            let ground = ground.map_or(pb::RestrictionGround::Unspecified, |g| match g {
                GroundArg::AccuracyContested => pb::RestrictionGround::AccuracyContested,
                GroundArg::UnlawfulProcessing => pb::RestrictionGround::UnlawfulProcessing,
                GroundArg::NeededForLegalClaims => pb::RestrictionGround::NeededForLegalClaims,
                GroundArg::ObjectionPending => pb::RestrictionGround::ObjectionPending,
            });
            let order = pb::SubmitRequest {
                order: Some(Order::Restriction(pb::RestrictionOrder {
                    ground: ground as i32,
                    lift,
                    person_informed_time,
                })),
                ..Default::default()
            };
            submit_with(cfg, &mut p, order, pb::Kind::Restriction, n).await
        }
        RequestCommand::Object {
            n,
            purposes,
            direct_marketing,
        } => {
            let order = pb::SubmitRequest {
                order: Some(Order::Objection(pb::ObjectionOrder {
                    purposes,
                    direct_marketing,
                })),
                ..Default::default()
            };
            submit_with(cfg, &mut p, order, pb::Kind::Objection, n).await
        }
        RequestCommand::Notifications { id } => {
            crate::erasure::show_notifications(&p.token, &p.erasure_endpoint, &id, output).await
        }
        RequestCommand::NotificationDone { id } => {
            crate::erasure::settle_notification(&p.token, &p.erasure_endpoint, &id, None).await
        }
        RequestCommand::ApproveNotification { id, note } => {
            crate::erasure::settle_notification(&p.token, &p.erasure_endpoint, &id, Some(note))
                .await
        }
        RequestCommand::Plan { id } => {
            crate::erasure::show_plan(&p.token, &p.erasure_endpoint, &id, output).await
        }
        RequestCommand::Receipts { id } => {
            crate::erasure::show_receipts(&p.token, &p.erasure_endpoint, &id, output).await
        }
        RequestCommand::Verify { id, code } => {
            let r = p.req(pb::VerifyRequest {
                id,
                code,
                verification_token: String::new(),
            })?;
            let r = p
                .requests
                .verify(r)
                .await
                .map_err(|s| explain(&s))?
                .into_inner();
            print_request(&r.request.context("empty answer")?);
            Ok(())
        }
        RequestCommand::Show { id } => {
            let r = p.get(&id).await?;
            match output {
                Output::Json => print_json(&request_json(&r))?,
                Output::Text => print_request(&r),
            }
            Ok(())
        }
        RequestCommand::List {
            state,
            kind,
            controller,
            overdue,
            due_within_days,
            page_size,
            page_token,
        } => {
            let r = p.req(pb::ListRequest {
                due_within_days,
                page: Some(common::PageRequest {
                    page_size,
                    page_token: page_token.unwrap_or_default(),
                }),
                state: state.map_or(0, |s| {
                    (match s {
                        StateArg::Submitted => pb::State::Submitted,
                        StateArg::Verifying => pb::State::Verifying,
                        StateArg::Locating => pb::State::Locating,
                        StateArg::AwaitingApproval => pb::State::AwaitingApproval,
                        StateArg::Exporting => pb::State::Exporting,
                        StateArg::Planning => pb::State::Planning,
                        StateArg::Executing => pb::State::Executing,
                        StateArg::Completed => pb::State::Completed,
                        StateArg::CompletedWithRetained => pb::State::CompletedWithRetained,
                        StateArg::AwaitingReview => pb::State::AwaitingReview,
                        StateArg::Rejected => pb::State::Rejected,
                        StateArg::Cancelled => pb::State::Cancelled,
                    }) as i32
                }),
                kind: match kind {
                    None => 0,
                    Some(KindArg::Access) => pb::Kind::Access as i32,
                    Some(KindArg::Portability) => pb::Kind::Portability as i32,
                    Some(KindArg::Erasure) => pb::Kind::Erasure as i32,
                    Some(KindArg::Rectification) => pb::Kind::Rectification as i32,
                    Some(KindArg::Restriction) => pb::Kind::Restriction as i32,
                    Some(KindArg::Objection) => pb::Kind::Objection as i32,
                },
                controller: controller.map(|c| common::ControllerRef {
                    organisation_number: c,
                }),
                overdue,
            })?;
            let r = p
                .requests
                .list(r)
                .await
                .map_err(|s| explain(&s))?
                .into_inner();
            if output == Output::Json {
                return print_json(&serde_json::json!({
                    "requests": r.requests.iter().map(request_json).collect::<Vec<_>>(),
                    "next_page_token": r.page.map(|pg| pg.next_page_token).unwrap_or_default(),
                }));
            }
            for x in &r.requests {
                println!(
                    "{}  {:<12} {:<18} due {}{}",
                    x.id,
                    pb::Kind::try_from(x.kind)
                        .map(|k| k.as_str_name().trim_start_matches("KIND_").to_lowercase())
                        .unwrap_or_default(),
                    state_name(x.state),
                    date(x.deadline.as_ref().and_then(|d| d.due.as_ref())),
                    if x.deadline.as_ref().is_some_and(|d| d.overdue) {
                        "  OVERDUE"
                    } else {
                        ""
                    }
                );
            }
            if let Some(next) = r.page.filter(|pg| !pg.next_page_token.is_empty()) {
                println!("next page: --page-token {}", next.next_page_token);
            }
            Ok(())
        }
        RequestCommand::Watch { id } => {
            let r = p.req(pb::WatchRequest { id })?;
            let mut stream = p
                .requests
                .watch(r)
                .await
                .map_err(|s| explain(&s))?
                .into_inner();
            while let Some(m) = stream.message().await.map_err(|s| explain(&s))? {
                if let Some(r) = m.request {
                    let current = r.steps.iter().find(|s| {
                        !matches!(s.state(), pb::StepState::Done | pb::StepState::Pending)
                    });
                    println!(
                        "{}  {}{}",
                        chrono::Utc::now().format("%H:%M:%S"),
                        state_name(r.state),
                        current
                            .map(|s| format!(
                                "  ({} {}{})",
                                s.name,
                                step_state(s),
                                if s.last_error.is_empty() {
                                    String::new()
                                } else {
                                    format!(": {}", s.last_error)
                                }
                            ))
                            .unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        RequestCommand::Extend { id, months, reason } => {
            let r = p.req(pb::ExtendRequest { id, months, reason })?;
            let r = p
                .requests
                .extend(r)
                .await
                .map_err(|s| explain(&s))?
                .into_inner();
            print_request(&r.request.context("empty answer")?);
            Ok(())
        }
        RequestCommand::Cancel { id, reason } => {
            let r = p.req(pb::CancelRequest { id, reason })?;
            let r = p
                .requests
                .cancel(r)
                .await
                .map_err(|s| explain(&s))?
                .into_inner();
            print_request(&r.request.context("empty answer")?);
            Ok(())
        }
        RequestCommand::Approve { id } => {
            let r = p.req(pb::ApproveRequest {
                id,
                note: String::new(),
            })?;
            let r = p
                .requests
                .approve(r)
                .await
                .map_err(|s| explain(&s))?
                .into_inner();
            print_request(&r.request.context("empty answer")?);
            Ok(())
        }
        RequestCommand::Reject { id, reason, note } => {
            let reason = match reason {
                RejectArg::IdentityInsufficient => pb::RejectionReason::IdentityInsufficient,
                RejectArg::ManifestlyUnfoundedOrExcessive => {
                    pb::RejectionReason::ManifestlyUnfoundedOrExcessive
                }
                RejectArg::NoData => pb::RejectionReason::NoData,
                RejectArg::Other => pb::RejectionReason::Other,
            };
            let r = p.req(pb::RejectRequest {
                id,
                reason: reason as i32,
                note,
            })?;
            let r = p
                .requests
                .reject(r)
                .await
                .map_err(|s| explain(&s))?
                .into_inner();
            print_request(&r.request.context("empty answer")?);
            Ok(())
        }
        RequestCommand::Download { id, out } => {
            let r = p.get(&id).await?;
            download(&p, &r, &out).await
        }
    }
}

fn identity(t: common::IdentityType, v: &str) -> common::Identity {
    common::Identity {
        r#type: t as i32,
        format: common::IdentityFormat::Raw as i32,
        value: v.to_owned(),
        hmac_key_id: String::new(),
    }
}

#[allow(clippy::print_stdout)]
async fn submit(cfg: &Config, p: &mut Portal, kind: pb::Kind, n: NewRequest) -> anyhow::Result<()> {
    submit_with(cfg, p, pb::SubmitRequest::default(), kind, n).await
}

/// Submits `n` as a request of `kind`, with the write fields of `order`.
#[allow(clippy::print_stdout)]
async fn submit_with(
    cfg: &Config,
    p: &mut Portal,
    order: pb::SubmitRequest,
    kind: pb::Kind,
    n: NewRequest,
) -> anyhow::Result<()> {
    let mut claimed = Vec::new();
    if let Some(e) = &n.email {
        claimed.push(identity(common::IdentityType::Email, e));
    }
    if let Some(ph) = &n.phone {
        claimed.push(identity(common::IdentityType::Phone, ph));
    }
    if let Some(pn) = &n.personnummer {
        claimed.push(identity(common::IdentityType::SePersonnummer, pn));
    }
    let started = std::time::SystemTime::now() - Duration::from_secs(1);
    let r = p.req(pb::SubmitRequest {
        kind: kind as i32,
        controller: Some(common::ControllerRef {
            organisation_number: n.controller.clone(),
        }),
        claimed,
        verification_token: n.verification_token.clone().unwrap_or_default(),
        language: n.language.clone(),
        idempotency_key: n
            .key
            .clone()
            .unwrap_or_else(|| format!("cli-{}", uuid::Uuid::new_v4().simple())),
        ..order
    })?;
    let mut r = p
        .requests
        .submit(r)
        .await
        .map_err(|s| explain(&s))?
        .into_inner()
        .request
        .context("empty answer")?;
    println!("{}", r.id);
    eprintln!("submitted: {}", state_name(r.state));
    if !n.wait && n.out.is_none() {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(n.timeout_secs);
    let mut verified = false;
    let mut shown = String::new();
    loop {
        let state = pb::State::try_from(r.state).unwrap_or(pb::State::Unspecified);
        if matches!(
            state,
            pb::State::Completed
                | pb::State::CompletedWithRetained
                | pb::State::AwaitingReview
                | pb::State::Rejected
                | pb::State::Cancelled
        ) {
            break;
        }
        if state == pb::State::Verifying && !verified && !r.challenge_id.is_empty() {
            let code = match &n.code {
                Some(c) => c.clone(),
                None => wait_for_code(cfg, &n, started, deadline).await?,
            };
            let v = p.req(pb::VerifyRequest {
                id: r.id.clone(),
                code,
                verification_token: String::new(),
            })?;
            r = p
                .requests
                .verify(v)
                .await
                .map_err(|s| explain(&s))?
                .into_inner()
                .request
                .context("empty answer")?;
            verified = true;
            eprintln!("verified: {}", state_name(r.state));
            continue;
        }
        if Instant::now() > deadline {
            print_request(&r);
            return Err(fail(
                Exit::TimedOut,
                format!(
                    "gave up waiting after {} s (the request goes on: `dsr request show {}`)",
                    n.timeout_secs, r.id
                ),
            ));
        }
        let now = progress(&r);
        if now != shown {
            eprintln!("{now}");
            shown = now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The orchestrator restarting or a moment's network trouble is
        // waited out, said once, until the deadline.
        match p.get(&r.id).await {
            Ok(next) => r = next,
            Err(e) => {
                let now = format!("cannot reach the orchestrator ({e}); trying again");
                if now != shown {
                    eprintln!("{now}");
                    shown = now;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    print_request(&r);
    if r.state == pb::State::AwaitingReview as i32 {
        return Err(fail(
            Exit::Refused,
            format!(
                "the request awaits a case handler: {}",
                if r.discrepancies.is_empty() {
                    "a disclosure with no lawful transfer awaits approval (above)"
                } else {
                    "what the systems did differs from the plan (the discrepancies above)"
                }
            ),
        ));
    }
    if r.state != pb::State::Completed as i32 && r.state != pb::State::CompletedWithRetained as i32
    {
        return Err(fail(
            Exit::Refused,
            format!("the request ended {}", state_name(r.state)),
        ));
    }
    if let Some(out) = &n.out {
        download(p, &r, out).await?;
    }
    Ok(())
}

/// Where a request stands, in a line for `--wait`: its state and, when a
/// step is being retried or waits (on a vendor, on a system), why.
fn progress(r: &pb::DataSubjectRequest) -> String {
    let mut line = format!("state: {}", state_name(r.state));
    if let Some(s) = r
        .steps
        .iter()
        .find(|s| s.state() != pb::StepState::Done && !s.last_error.is_empty())
    {
        line.push_str(&format!(
            " (step {} attempt {}: {})",
            s.name, s.attempts, s.last_error
        ));
    }
    line
}

async fn wait_for_code(
    cfg: &Config,
    n: &NewRequest,
    since: std::time::SystemTime,
    deadline: Instant,
) -> anyhow::Result<String> {
    let outbox = cfg.data_dir.join("outbox");
    let to = n
        .email
        .as_deref()
        .map(|e| {
            dsr_domain::identity::Identity::parse(dsr_domain::identity::IdentityType::Email, e)
                .map(|i| i.value().to_owned())
        })
        .or_else(|| {
            n.phone.as_deref().map(|ph| {
                dsr_domain::identity::Identity::parse(dsr_domain::identity::IdentityType::Phone, ph)
                    .map(|i| i.value().to_owned())
            })
        })
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .context("give --email or --phone to receive a code, or --verification-token")?;
    while Instant::now() < deadline {
        if let Some(code) = code_from_outbox(&outbox, &to, since) {
            eprintln!("code read from the development outbox {}", outbox.display());
            return Ok(code);
        }
        if since.elapsed().unwrap_or_default() > Duration::from_secs(15) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "no code found in {} (not under `dsr up`?): pass the person's code with --code, or later with `dsr request verify <id> --code …`",
        outbox.display()
    )
}

#[allow(clippy::print_stdout)]
async fn download(p: &Portal, r: &pb::DataSubjectRequest, out: &Path) -> anyhow::Result<()> {
    if r.package_id.is_empty() {
        bail!("the request has no package (state {})", state_name(r.state));
    }
    let mut client = ExportClient::new(connect(&p.export_endpoint, "export").await?)
        .max_decoding_message_size(16 * 1024 * 1024);
    let pkg = client
        .get_package(p.req(exp::GetPackageRequest {
            package_id: r.package_id.clone(),
        })?)
        .await
        .map_err(|s| explain(&s))?
        .into_inner()
        .package
        .context("empty answer")?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for f in &pkg.files {
        let mut stream = client
            .download(p.req(exp::DownloadRequest {
                package_id: pkg.id.clone(),
                file_name: f.name.clone(),
            })?)
            .await
            .map_err(|s| explain(&s))?
            .into_inner();
        let mut bytes = Vec::with_capacity(usize::try_from(f.size).unwrap_or(0));
        while let Some(chunk) = stream.message().await.map_err(|s| explain(&s))? {
            if chunk.offset != bytes.len() as u64 {
                bail!("{}: chunk out of order", f.name);
            }
            bytes.extend_from_slice(&chunk.chunk);
        }
        let digest = hex::encode(sha2::Sha256::digest(&bytes));
        if digest != f.sha256 {
            bail!("{}: SHA-256 does not match the package's manifest", f.name);
        }
        std::fs::write(out.join(&f.name), &bytes)
            .with_context(|| format!("cannot write {}", out.join(&f.name).display()))?;
        println!(
            "  {:<18} {:>9} bytes  sha256 {}",
            f.name,
            bytes.len(),
            &f.sha256[..16]
        );
    }
    println!(
        "package {} written to {} (expires {})",
        pkg.id,
        out.display(),
        pkg.expire_time
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
            .map(|t| t.to_rfc3339())
            .unwrap_or_default()
    );
    Ok(())
}

/// A step's state as the CLI prints it: "pending", "running",
/// "waiting_retry", "done" or "failed".
fn step_state(s: &pb::Step) -> String {
    s.state()
        .as_str_name()
        .trim_start_matches("STEP_STATE_")
        .to_ascii_lowercase()
}
