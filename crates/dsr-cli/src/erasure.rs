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
use crate::request::{connect, explain};

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
pub(crate) async fn show_plan(token: &str, endpoint: &str, id: &str) -> anyhow::Result<()> {
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
    Ok(())
}

/// Prints a request's receipts.
#[allow(clippy::print_stdout)]
pub(crate) async fn show_receipts(token: &str, endpoint: &str, id: &str) -> anyhow::Result<()> {
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
    if resp.notifications.is_empty() {
        println!("no recipients to notify (yet)");
    }
    for n in &resp.notifications {
        let how = if n.channel == pb::NotificationChannel::DataSystem as i32 {
            format!(
                "told through its system {} (receipt {})",
                n.system_id, n.receipt_id
            )
        } else if n.done_time.is_some() {
            format!("task done by {}", n.done_by)
        } else {
            format!("task due {}", date(n.due_date.as_ref()))
        };
        println!(
            "{:<24} {:<40} {:<3} {:<17} {how}",
            n.recipient_id, n.recipient_name, n.country, n.action
        );
    }
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
            cfg.up.host,
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
            cfg.up.host,
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
