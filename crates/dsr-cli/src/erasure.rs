//! `dsr request plan|receipts` and `dsr replay-erasures`: the erasure
//! service from the command line (a case handler's and an operator's view).

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use dsr_proto::erasure::v1 as pb;
use dsr_proto::erasure::v1::erasure_client::ErasureClient;
use dsr_proto::system::v1 as sys;
use prost::Message as _;
use tonic::transport::Channel;

use crate::config::Config;
use crate::dev;
use crate::request::{Output, connect, date_json, enum_name, explain, print_json, time_json};
use serde_json::json;

fn req<T>(token: &str, m: T) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(r)
}

async fn client(endpoint: &str) -> anyhow::Result<ErasureClient<Channel>> {
    Ok(ErasureClient::new(connect(endpoint, "erasure").await?)
        .max_decoding_message_size(64 * 1024 * 1024))
}

fn date(d: Option<&dsr_proto::common::v1::Date>) -> String {
    d.map(|d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day))
        .unwrap_or_default()
}

fn action(a: i32) -> &'static str {
    match pb::PlanAction::try_from(a) {
        Ok(pb::PlanAction::Erase) => "erase",
        Ok(pb::PlanAction::Anonymise) => "anonymise",
        Ok(pb::PlanAction::Retain) => "RETAIN",
        Ok(pb::PlanAction::Unspecified) | Err(_) => "?",
    }
}

/// Prints a request's plan.
#[allow(clippy::print_stdout)]
pub(crate) async fn show_plan(
    token: &str,
    endpoint: &str,
    id: &str,
    output: Output,
) -> anyhow::Result<()> {
    let plan = client(endpoint)
        .await?
        .get_plan(req(
            token,
            pb::GetPlanRequest {
                request_id: id.to_owned(),
            },
        )?)
        .await
        .map_err(|s| explain(&s))?
        .into_inner()
        .plan
        .context("empty answer")?;
    if output == Output::Json {
        return print_json(&plan_json(&plan));
    }
    println!(
        "plan of {} (retention policy {}): {} to erase, {} to anonymise, {} retained",
        plan.request_id,
        plan.policy_version,
        plan.erase_count,
        plan.anonymise_count,
        plan.retain_count
    );
    for r in &plan.records {
        let rec = r.record.clone().unwrap_or_default();
        let mut line = format!(
            "  {:<10} {:<22} {:<8} {:<9}",
            r.system_id,
            rec.store,
            rec.key,
            action(r.action)
        );
        if r.action == pb::PlanAction::Retain as i32 {
            let until = date(r.retain_until.as_ref());
            line.push_str(&format!(
                " until {}  {}",
                if until.is_empty() {
                    "(open)".to_owned()
                } else {
                    until
                },
                r.legal_ground
            ));
        }
        println!("{line}");
    }
    if plan.next_deferred_on.is_some() {
        println!(
            "first deferred erasure on {}",
            date(plan.next_deferred_on.as_ref())
        );
    }
    if !plan.discrepancies.is_empty() {
        println!(
            "{} discrepancies: the receipts differ from this plan",
            plan.discrepancies.len()
        );
        for d in &plan.discrepancies {
            let rec = d.record.clone().unwrap_or_default();
            let observed = sys::RecordResult::try_from(d.observed)
                .map(|x| {
                    x.as_str_name()
                        .trim_start_matches("RECORD_RESULT_")
                        .to_lowercase()
                })
                .unwrap_or_default();
            let expected = pb::Expectation::try_from(d.expected)
                .map(|x| {
                    x.as_str_name()
                        .trim_start_matches("EXPECTATION_")
                        .to_lowercase()
                })
                .unwrap_or_default();
            let reason = sys::RestrictionReason::try_from(d.restriction_reason)
                .ok()
                .filter(|r| *r != sys::RestrictionReason::Unspecified)
                .map(|x| {
                    format!(
                        " (restricted: {})",
                        x.as_str_name()
                            .trim_start_matches("RESTRICTION_REASON_")
                            .to_lowercase()
                    )
                })
                .unwrap_or_default();
            println!(
                "! {} {} {} [{}] expected {expected}, the receipt says {}{reason}  {}",
                d.system_id,
                rec.store,
                rec.key,
                d.phase,
                if observed == "unspecified" {
                    "nothing"
                } else {
                    observed.as_str()
                },
                d.legal_ground
            );
        }
    }
    Ok(())
}

/// Prints a request's receipts.
#[allow(clippy::print_stdout)]
pub(crate) async fn show_receipts(
    token: &str,
    endpoint: &str,
    id: &str,
    output: Output,
) -> anyhow::Result<()> {
    let resp = client(endpoint)
        .await?
        .list_receipts(req(
            token,
            pb::ListReceiptsRequest {
                request_id: id.to_owned(),
            },
        )?)
        .await
        .map_err(|s| explain(&s))?
        .into_inner();
    if output == Output::Json {
        return print_json(&json!({
            "receipts": resp.receipts.iter().map(receipt_json).collect::<Vec<_>>(),
        }));
    }
    if resp.receipts.is_empty() {
        println!("no receipts yet");
    }
    for r in &resp.receipts {
        let content = r
            .signed
            .as_ref()
            .and_then(|s| sys::Receipt::decode(s.payload.as_slice()).ok())
            .unwrap_or_default();
        let affected: u64 = content.stores.iter().map(|s| s.affected).sum();
        let refused: u64 = content.stores.iter().map(|s| s.refused).sum();
        println!(
            "{}  {:<10} {:<22} signed by {}  verified {}  {} changed, {} refused, {} retained",
            r.received_at
                .as_ref()
                .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default(),
            r.system_id,
            r.phase,
            r.signed.as_ref().map(|s| s.key_id.as_str()).unwrap_or(""),
            if r.verified { "yes" } else { "NO" },
            affected,
            refused,
            content.retained.len()
        );
        if let Some(a) = &content.attestation {
            // Done by hand at a vendor without an API: the connector signed
            // for a person's word, not the vendor's system for its own work.
            println!(
                "    attested by {} <{}> on {}{}",
                a.name,
                a.contact,
                a.attested_at
                    .as_ref()
                    .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default(),
                if a.statement.is_empty() {
                    String::new()
                } else {
                    format!(": \"{}\"", a.statement)
                }
            );
        }
        for s in &content.stores {
            println!(
                "    {:<24} matched {:>4}  changed {:>4}  refused {:>4}",
                s.store, s.matched, s.affected, s.refused
            );
        }
    }
    Ok(())
}

/// Prints a request's Art. 19 notifications.
#[allow(clippy::print_stdout)]
pub(crate) async fn show_notifications(
    token: &str,
    endpoint: &str,
    id: &str,
    output: Output,
) -> anyhow::Result<()> {
    let resp = client(endpoint)
        .await?
        .list_notifications(req(
            token,
            pb::ListNotificationsRequest {
                request_id: id.to_owned(),
            },
        )?)
        .await
        .map_err(|s| explain(&s))?
        .into_inner();
    if output == Output::Json {
        return print_json(&json!({
            "notifications": resp.notifications.iter().map(notification_json).collect::<Vec<_>>(),
        }));
    }
    if resp.notifications.is_empty() {
        println!("no recipients to notify (yet)");
    }
    for n in &resp.notifications {
        print_notification(n);
    }
    Ok(())
}

/// A plan as JSON (`--output json`).
fn plan_json(plan: &pb::Plan) -> serde_json::Value {
    let record = |r: Option<&sys::RecordRef>| {
        let r = r.cloned().unwrap_or_default();
        json!({ "store": r.store, "key": r.key })
    };
    json!({
        "request_id": plan.request_id,
        "policy_version": plan.policy_version,
        "erase_count": plan.erase_count,
        "anonymise_count": plan.anonymise_count,
        "retain_count": plan.retain_count,
        "next_deferred_on": date_json(plan.next_deferred_on.as_ref()),
        "records": plan.records.iter().map(|r| json!({
            "system_id": r.system_id,
            "record": record(r.record.as_ref()),
            "action": enum_name(pb::PlanAction::try_from(r.action).ok().map(|a| a.as_str_name()), "PLAN_ACTION_"),
            "retain_until": date_json(r.retain_until.as_ref()),
            "legal_ground": r.legal_ground,
        })).collect::<Vec<_>>(),
        "discrepancies": plan.discrepancies.iter().map(|d| json!({
            "system_id": d.system_id,
            "record": record(d.record.as_ref()),
            "phase": d.phase,
            "expected": enum_name(pb::Expectation::try_from(d.expected).ok().map(|x| x.as_str_name()), "EXPECTATION_"),
            "observed": enum_name(sys::RecordResult::try_from(d.observed).ok().map(|x| x.as_str_name()), "RECORD_RESULT_"),
            "restriction_reason": enum_name(sys::RestrictionReason::try_from(d.restriction_reason).ok().map(|x| x.as_str_name()), "RESTRICTION_REASON_"),
            "legal_ground": d.legal_ground,
        })).collect::<Vec<_>>(),
    })
}

/// A receipt as JSON (`--output json`), its signed content decoded.
fn receipt_json(r: &pb::StoredReceipt) -> serde_json::Value {
    let content = r
        .signed
        .as_ref()
        .and_then(|s| sys::Receipt::decode(s.payload.as_slice()).ok())
        .unwrap_or_default();
    json!({
        "system_id": r.system_id,
        "phase": r.phase,
        "received_at": time_json(r.received_at.as_ref()),
        "key_id": r.signed.as_ref().map(|s| s.key_id.clone()).unwrap_or_default(),
        "verified": r.verified,
        "stores": content.stores.iter().map(|s| json!({
            "store": s.store,
            "matched": s.matched,
            "affected": s.affected,
            "refused": s.refused,
        })).collect::<Vec<_>>(),
        "retained": content.retained.len(),
        "attestation": content.attestation.as_ref().map(|a| json!({
            "name": a.name,
            "contact": a.contact,
            "attested_at": time_json(a.attested_at.as_ref()),
            "statement": a.statement,
        })),
    })
}

/// An Art. 19 notification as JSON (`--output json`).
fn notification_json(n: &pb::Notification) -> serde_json::Value {
    json!({
        "id": n.id,
        "recipient_id": n.recipient_id,
        "recipient_name": n.recipient_name,
        "country": n.country,
        "action": n.action,
        "channel": enum_name(pb::NotificationChannel::try_from(n.channel).ok().map(|x| x.as_str_name()), "NOTIFICATION_CHANNEL_"),
        "system_id": n.system_id,
        "receipt_id": n.receipt_id,
        "due_date": date_json(n.due_date.as_ref()),
        "done_time": time_json(n.done_time.as_ref()),
        "done_by": n.done_by,
        "transfer": enum_name(pb::NotificationTransfer::try_from(n.transfer).ok().map(|x| x.as_str_name()), "NOTIFICATION_TRANSFER_"),
        "transfer_reasons": n.transfer_reasons,
        "approved_by": n.approved_by,
        "approval_note": n.approval_note,
    })
}

#[allow(clippy::print_stdout)]
fn print_notification(n: &pb::Notification) {
    let transfer = pb::NotificationTransfer::try_from(n.transfer)
        .unwrap_or(pb::NotificationTransfer::Unspecified);
    let how = if transfer == pb::NotificationTransfer::Refused {
        "NOT SENT: no lawful transfer (refused)".to_owned()
    } else if transfer == pb::NotificationTransfer::AwaitingApproval {
        format!(
            "NOT SENT: no lawful transfer; awaits a case handler's approval (`dsr request approve-notification {}`)",
            n.id
        )
    } else if n.channel == pb::NotificationChannel::DataSystem as i32 {
        format!(
            "told through its system {} (receipt {})",
            n.system_id, n.receipt_id
        )
    } else if n.done_time.is_some() {
        format!("task done by {}", n.done_by)
    } else {
        format!("task due {} (id {})", date(n.due_date.as_ref()), n.id)
    };
    println!(
        "{:<24} {:<40} {:<3} {:<17} {how}",
        n.recipient_id, n.recipient_name, n.country, n.action
    );
    for r in &n.transfer_reasons {
        println!("{:<24}   x {r}", "");
    }
    if transfer == pb::NotificationTransfer::Approved {
        println!(
            "{:<24}   approved by {}: {}",
            "", n.approved_by, n.approval_note
        );
    }
}

/// Records a notification task done, or a case handler's approval of one
/// held for want of a lawful transfer (`note` set), and prints it.
pub(crate) async fn settle_notification(
    token: &str,
    endpoint: &str,
    id: &str,
    approve_note: Option<String>,
) -> anyhow::Result<()> {
    let mut c = client(endpoint).await?;
    let n = match approve_note {
        Some(note) => {
            c.approve_notification(req(
                token,
                pb::ApproveNotificationRequest {
                    id: id.to_owned(),
                    note,
                },
            )?)
            .await
            .map_err(|s| explain(&s))?
            .into_inner()
            .notification
        }
        None => {
            c.complete_notification(req(
                token,
                pb::CompleteNotificationRequest { id: id.to_owned() },
            )?)
            .await
            .map_err(|s| explain(&s))?
            .into_inner()
            .notification
        }
    };
    print_notification(&n.context("empty answer")?);
    Ok(())
}

/// Arguments of `dsr replay-erasures`.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// Replay the erasures completed at or after this moment: when the
    /// restored backup was taken (RFC 3339, e.g. 2026-11-30T02:00:00Z).
    #[arg(long)]
    since: String,
    /// Only on this system (repeatable): the restored ones.
    #[arg(long = "system")]
    systems: Vec<String>,
    /// Count what would be replayed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// The erasure service (default: `dsr up`'s, base port + 8).
    #[arg(long)]
    endpoint: Option<String>,
    /// Bearer token with `erasure:replay` (default: minted from the data
    /// directory's development key).
    #[arg(long, env = "DSR_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Runs `dsr replay-erasures`.
#[allow(clippy::print_stdout)]
pub(crate) async fn replay(cfg: &Config, a: ReplayArgs) -> anyhow::Result<()> {
    let since = chrono::DateTime::parse_from_rfc3339(&a.since)
        .with_context(|| format!("--since {:?} is not an RFC 3339 time", a.since))?
        .with_timezone(&chrono::Utc);
    let endpoint = a.endpoint.unwrap_or_else(|| {
        format!(
            "http://{}:{}",
            cfg.up.connect_host(),
            cfg.up.base_port.saturating_add(8)
        )
    });
    let token = dev::token_or_mint(
        &cfg.data_dir,
        a.token,
        "dsr-cli",
        vec![dsr_erasure::SERVICE_NAME.into()],
        vec![dsr_erasure::grpc::SCOPE_REPLAY.into()],
        Duration::from_secs(600),
    )?;
    let r = client(&endpoint)
        .await?
        .replay_erasures(req(
            &token,
            pb::ReplayErasuresRequest {
                since: Some(prost_types::Timestamp {
                    seconds: since.timestamp(),
                    nanos: i32::try_from(since.timestamp_subsec_nanos()).unwrap_or(0),
                }),
                system_ids: a.systems,
                dry_run: a.dry_run,
            },
        )?)
        .await
        .map_err(|s| explain(&s))?
        .into_inner();
    println!(
        "replay {}{}: {} erasures since {}",
        r.replay_id,
        if a.dry_run { " (dry run)" } else { "" },
        r.tombstones,
        since.to_rfc3339()
    );
    let mut failed = false;
    for s in &r.systems {
        println!(
            "  {:<12} {} erasures replayed, {} records erased again, {} restricted again{}",
            s.system_id,
            s.erasures,
            s.erased_again,
            s.restricted_again,
            if s.error.is_empty() {
                String::new()
            } else {
                failed = true;
                format!("  FAILED: {}", s.error)
            }
        );
    }
    if failed {
        anyhow::bail!("some systems failed; run the replay again");
    }
    Ok(())
}

/// Arguments of `dsr sweep`.
#[derive(Debug, Args)]
pub(crate) struct SweepArgs {
    /// Only this system (repeatable); default every system.
    #[arg(long = "system")]
    systems: Vec<String>,
    /// Count what would be removed; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Records per transaction at the systems (default: erasure.sweep_batch_size).
    #[arg(long)]
    batch_size: Option<u32>,
    /// Start it and print its id; do not follow it.
    #[arg(long)]
    no_wait: bool,
    /// The erasure service (default: `dsr up`'s, base port + 8).
    #[arg(long)]
    endpoint: Option<String>,
    /// Bearer token with `erasure:sweep` (default: minted from the data
    /// directory's development key).
    #[arg(long, env = "DSR_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Runs `dsr sweep`: starts a retention sweep and follows its progress.
#[allow(clippy::print_stdout)]
pub(crate) async fn sweep(cfg: &Config, a: SweepArgs) -> anyhow::Result<()> {
    let endpoint = a.endpoint.unwrap_or_else(|| {
        format!(
            "http://{}:{}",
            cfg.up.connect_host(),
            cfg.up.base_port.saturating_add(8)
        )
    });
    let token = dev::token_or_mint(
        &cfg.data_dir,
        a.token,
        "dsr-cli",
        vec![dsr_erasure::SERVICE_NAME.into()],
        vec![dsr_erasure::grpc::SCOPE_SWEEP.into()],
        Duration::from_secs(6 * 3600),
    )?;
    let mut c = client(&endpoint).await?;
    let started = c
        .start_sweep(req(
            &token,
            pb::StartSweepRequest {
                system_ids: a.systems,
                dry_run: a.dry_run,
                batch_size: a.batch_size.unwrap_or(cfg.erasure.sweep_batch_size),
            },
        )?)
        .await
        .map_err(|s| explain(&s))?
        .into_inner()
        .sweep
        .context("empty answer")?;
    println!("{}", started.id);
    if a.no_wait {
        return Ok(());
    }
    let t0 = std::time::Instant::now();
    let mut last = String::new();
    let done = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = c
            .get_sweep(req(
                &token,
                pb::GetSweepRequest {
                    id: started.id.clone(),
                },
            )?)
            .await
            .map_err(|s| explain(&s))?
            .into_inner()
            .sweep
            .context("empty answer")?;
        let line = s
            .systems
            .iter()
            .map(|x| format!("{} {} records", x.system_id, x.done))
            .collect::<Vec<_>>()
            .join(", ");
        if line != last {
            eprintln!("{:>6.1} s  {line}", t0.elapsed().as_secs_f64());
            last = line;
        }
        if s.end_time.is_some() {
            break s;
        }
    };
    let mut failed = false;
    for x in &done.systems {
        let state = pb::SweepState::try_from(x.state).unwrap_or(pb::SweepState::Unspecified);
        println!(
            "  {:<12} {:<7} {} records handled, {} {}{}",
            x.system_id,
            state
                .as_str_name()
                .trim_start_matches("SWEEP_STATE_")
                .to_lowercase(),
            x.done,
            x.removed,
            if done.dry_run {
                "would be removed"
            } else {
                "removed"
            },
            if x.error.is_empty() {
                String::new()
            } else {
                failed = true;
                format!("  FAILED: {}", x.error)
            }
        );
    }
    if failed {
        anyhow::bail!("some systems failed; run the sweep again");
    }
    Ok(())
}

/// Arguments of `dsr hold`.
#[derive(Debug, Args)]
pub(crate) struct HoldArgs {
    /// The erasure service (default: `dsr up`'s, base port + 8).
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// Bearer token with `erasure:holds` (default: minted from the data
    /// directory's development key).
    #[arg(long, env = "DSR_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: HoldCommand,
}

#[derive(Debug, clap::Subcommand)]
enum HoldCommand {
    /// Place a legal hold on a person (one identity) or one record.
    Place {
        /// The person's email address.
        #[arg(long, group = "target")]
        email: Option<String>,
        /// The person's phone number.
        #[arg(long, group = "target")]
        phone: Option<String>,
        /// The person's personnummer.
        #[arg(long, group = "target")]
        personnummer: Option<String>,
        /// One record: `system:store:key`.
        #[arg(long, group = "target")]
        record: Option<String>,
        /// Why (no personal data), e.g. "dispute 2026-T-1234".
        #[arg(long)]
        ground: String,
        /// The last day it holds (YYYY-MM-DD); default until lifted.
        #[arg(long)]
        until: Option<chrono::NaiveDate>,
        /// The controller (organisationsnummer); default Intrum Sverige AB.
        #[arg(long, default_value = "556134-1248")]
        controller: String,
    },
    /// Lift a hold.
    Lift {
        /// The hold's id.
        id: String,
    },
    /// List the standing holds.
    List {
        /// Lifted ones too.
        #[arg(long)]
        all: bool,
    },
}

fn print_hold(h: &pb::Hold) {
    #[allow(clippy::print_stdout)]
    {
        let what = h.record.as_ref().map_or_else(
            || "a person".to_owned(),
            |r| {
                let rec = r.record.clone().unwrap_or_default();
                format!("{}:{}:{}", r.system_id, rec.store, rec.key)
            },
        );
        let until = date(h.until.as_ref());
        println!(
            "{}  {:<24} until {:<10}  {}{}",
            h.id,
            what,
            if until.is_empty() {
                "lifted".to_owned()
            } else {
                until
            },
            h.ground,
            if h.lifted_at.is_some() {
                format!("  (lifted by {})", h.lifted_by)
            } else {
                String::new()
            }
        );
    }
}

/// Runs `dsr hold`.
pub(crate) async fn hold(cfg: &Config, a: HoldArgs) -> anyhow::Result<()> {
    use dsr_proto::common::v1 as common;
    let endpoint = a.endpoint.unwrap_or_else(|| {
        format!(
            "http://{}:{}",
            cfg.up.connect_host(),
            cfg.up.base_port.saturating_add(8)
        )
    });
    let token = dev::token_or_mint(
        &cfg.data_dir,
        a.token,
        "dsr-cli",
        vec![dsr_erasure::SERVICE_NAME.into()],
        vec![dsr_erasure::grpc::SCOPE_HOLDS.into()],
        Duration::from_secs(600),
    )?;
    let mut c = client(&endpoint).await?;
    match a.command {
        HoldCommand::Place {
            email,
            phone,
            personnummer,
            record,
            ground,
            until,
            controller,
        } => {
            let identity = |t: common::IdentityType, v: String| {
                pb::hold_target::Target::Identity(common::Identity {
                    r#type: t as i32,
                    format: common::IdentityFormat::Raw as i32,
                    value: v,
                    hmac_key_id: String::new(),
                })
            };
            let target = if let Some(e) = email {
                identity(common::IdentityType::Email, e)
            } else if let Some(p) = phone {
                identity(common::IdentityType::Phone, p)
            } else if let Some(p) = personnummer {
                identity(common::IdentityType::SePersonnummer, p)
            } else if let Some(r) = record {
                let mut parts = r.splitn(3, ':');
                let (Some(system), Some(store), Some(key)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    anyhow::bail!("--record {r:?}: system:store:key");
                };
                pb::hold_target::Target::Record(pb::SystemRecord {
                    system_id: system.to_owned(),
                    record: Some(sys::RecordRef {
                        store: store.to_owned(),
                        key: key.to_owned(),
                    }),
                })
            } else {
                anyhow::bail!("give --email, --phone, --personnummer or --record");
            };
            let h = c
                .place_hold(req(
                    &token,
                    pb::PlaceHoldRequest {
                        target: Some(pb::HoldTarget {
                            target: Some(target),
                        }),
                        ground,
                        until: until.map(dsr_connector::grpc::date_to_pb),
                        controller: Some(common::ControllerRef {
                            organisation_number: controller,
                        }),
                    },
                )?)
                .await
                .map_err(|s| explain(&s))?
                .into_inner()
                .hold
                .context("empty answer")?;
            print_hold(&h);
        }
        HoldCommand::Lift { id } => {
            let h = c
                .lift_hold(req(&token, pb::LiftHoldRequest { id })?)
                .await
                .map_err(|s| explain(&s))?
                .into_inner()
                .hold
                .context("empty answer")?;
            print_hold(&h);
        }
        HoldCommand::List { all } => {
            let r = c
                .list_holds(req(
                    &token,
                    pb::ListHoldsRequest {
                        include_lifted: all,
                    },
                )?)
                .await
                .map_err(|s| explain(&s))?
                .into_inner();
            for h in &r.holds {
                print_hold(h);
            }
        }
    }
    Ok(())
}
