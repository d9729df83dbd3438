//! `dsr task`: the tasks of a manual system (a vendor without an API) —
//! list them, show one, and record the vendor's answer with who attests it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use dsr_proto::manual::v1 as pb;
use dsr_proto::manual::v1::manual_tasks_client::ManualTasksClient;
use dsr_system_sql::manual::api::{SCOPE_ANSWER, SCOPE_READ};
use tonic::transport::Channel;

use crate::config::Config;
use crate::dev;
use crate::transfers::explain;

/// `dsr task`.
#[derive(Debug, Args)]
pub(crate) struct TaskArgs {
    /// The manual connector's address, e.g. http://127.0.0.1:50071.
    #[arg(long, env = "DSR_ENDPOINT", global = true)]
    endpoint: Option<String>,
    /// The manual system's id (the audience of the minted token).
    #[arg(long, global = true)]
    system: Option<String>,
    /// Bearer token (default: minted from the data directory's development key).
    #[arg(long, env = "DSR_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: TaskCommand,
}

#[derive(Debug, Subcommand)]
enum TaskCommand {
    /// The open tasks (or every task), newest first.
    List {
        /// Every task, answered ones too.
        #[arg(long)]
        all: bool,
        /// Only the tasks of this request.
        #[arg(long)]
        request: Option<String>,
    },
    /// One task: what it asks, and its answer once given.
    Show {
        /// The task's id.
        id: String,
    },
    /// Record the vendor's answer.
    ///
    /// A search: `--records FILE` (a JSON list of {"store", "key",
    /// "fields": {name: value}}) or `--not-found`. A write: `--done N` and,
    /// for an erasure, `--kept STORE/KEY=GROUND` for each record kept.
    Answer {
        /// The task's id.
        id: String,
        /// Who at the vendor attests the answer.
        #[arg(long)]
        attested_by: String,
        /// How to reach them (default: the manifest's contact).
        #[arg(long, default_value = "")]
        contact: String,
        /// What they state, in their words.
        #[arg(long, default_value = "")]
        statement: String,
        /// A search's records found, as a JSON file.
        #[arg(long, conflicts_with_all = ["not_found", "done"])]
        records: Option<PathBuf>,
        /// A search found nothing.
        #[arg(long, conflicts_with = "done")]
        not_found: bool,
        /// A write: how many records were acted on.
        #[arg(long)]
        done: Option<u64>,
        /// An erasure: a record kept, as STORE/KEY=GROUND (repeatable).
        #[arg(long = "kept")]
        kept: Vec<String>,
    },
}

#[derive(serde::Deserialize)]
struct FileRecord {
    store: String,
    key: String,
    #[serde(default)]
    fields: std::collections::BTreeMap<String, String>,
}

fn kept(spec: &str) -> anyhow::Result<pb::KeptRecord> {
    let (record, ground) = spec
        .split_once('=')
        .context("--kept: STORE/KEY=GROUND, e.g. cases/C-17=ongoing court case (Art. 17(3)(e))")?;
    let (store, key) = record.split_once('/').context("--kept: STORE/KEY=GROUND")?;
    Ok(pb::KeptRecord {
        store: store.to_owned(),
        key: key.to_owned(),
        legal_ground: ground.to_owned(),
    })
}

fn kind(k: i32) -> &'static str {
    match pb::TaskKind::try_from(k) {
        Ok(pb::TaskKind::Locate) => "search",
        Ok(pb::TaskKind::Erase) => "erase",
        Ok(pb::TaskKind::Rectify) => "rectify",
        Ok(pb::TaskKind::Restrict) => "restrict",
        Ok(pb::TaskKind::LiftRestriction) => "lift restriction",
        Ok(pb::TaskKind::Unspecified) | Err(_) => "?",
    }
}

fn when(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map_or_else(
            || "-".into(),
            |d| d.format("%Y-%m-%d %H:%M UTC").to_string(),
        )
}

#[allow(clippy::print_stdout)]
fn print_task(t: &pb::Task) {
    let state = if t.state == pb::TaskState::Answered as i32 {
        "answered"
    } else {
        "open"
    };
    println!(
        "Task {}: {} at {} ({state})",
        t.id,
        kind(t.kind),
        t.system_id
    );
    println!(
        "  request {} for controller {}",
        t.request_id,
        t.controller
            .as_ref()
            .map_or("", |c| c.organisation_number.as_str())
    );
    println!("  due {}", when(t.due_at.as_ref()));
    if t.reminders_sent > 0 {
        println!("  reminders sent: {}", t.reminders_sent);
    }
    if t.escalated_at.is_some() {
        println!("  escalated {}", when(t.escalated_at.as_ref()));
    }
    for i in &t.identities {
        let kind = dsr_connector::grpc::identity_type_from_pb(i.r#type)
            .map_or("identity", dsr_domain::identity::IdentityType::as_str);
        println!("  look for {kind}: {}", i.value);
    }
    for r in &t.records {
        let fields: Vec<String> = r
            .fields
            .iter()
            .map(|f| format!("{}={}", f.name, f.value))
            .collect();
        println!("  record {}/{} {}", r.store, r.key, fields.join(" "));
    }
    for k in &t.keep {
        println!(
            "  keep {}/{} restricted to storage: {}",
            k.store, k.key, k.legal_ground
        );
    }
    if t.not_found {
        println!("  nothing found");
    }
    for k in &t.kept {
        println!("  kept {}/{}: {}", k.store, k.key, k.legal_ground);
    }
    if let Some(a) = &t.attestation {
        println!(
            "  attested by {} <{}> {}{}",
            a.name,
            a.contact,
            when(a.attested_at.as_ref()),
            if a.statement.is_empty() {
                String::new()
            } else {
                format!(": \"{}\"", a.statement)
            }
        );
        if t.kind != pb::TaskKind::Locate as i32 {
            println!("  done: {}", t.done);
        }
    }
}

fn authed<T>(m: T, auth: &dyn Fn(&mut tonic::metadata::MetadataMap)) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    auth(r.metadata_mut());
    r.set_timeout(Duration::from_secs(30));
    r
}

/// Runs `dsr task`.
#[allow(clippy::print_stdout)]
pub(crate) async fn run(cfg: &Config, args: TaskArgs) -> anyhow::Result<()> {
    let endpoint = args
        .endpoint
        .context("give the manual connector's address: --endpoint (or DSR_ENDPOINT)")?;
    let token = match args.token {
        Some(t) => t,
        None => {
            let system = args.system.context(
                "give the manual system's id with --system (the token's audience), or --token",
            )?;
            dev::token_or_mint(
                &cfg.data_dir,
                None,
                "dsr-cli",
                vec![system],
                vec![SCOPE_READ.into(), SCOPE_ANSWER.into()],
                Duration::from_secs(300),
            )?
        }
    };
    let channel: Channel = crate::request::connect(&endpoint, "the manual connector").await?;
    let mut client = ManualTasksClient::new(channel);
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let req = |r: &mut tonic::metadata::MetadataMap| {
        r.insert("authorization", bearer.clone());
    };
    match args.command {
        TaskCommand::List { all, request } => {
            let tasks = client
                .list_tasks(authed(
                    pb::ListTasksRequest {
                        state: if all {
                            pb::TaskState::All
                        } else {
                            pb::TaskState::Open
                        } as i32,
                        request_id: request.unwrap_or_default(),
                    },
                    &req,
                ))
                .await
                .map_err(explain)?
                .into_inner()
                .tasks;
            if tasks.is_empty() {
                println!("No tasks.");
            }
            for t in &tasks {
                println!(
                    "{}  {:<16} {:<8} due {}  request {}",
                    t.id,
                    kind(t.kind),
                    if t.state == pb::TaskState::Answered as i32 {
                        "answered"
                    } else {
                        "open"
                    },
                    when(t.due_at.as_ref()),
                    t.request_id
                );
            }
        }
        TaskCommand::Show { id } => {
            let t = client
                .get_task(authed(pb::GetTaskRequest { id }, &req))
                .await
                .map_err(explain)?
                .into_inner()
                .task
                .unwrap_or_default();
            print_task(&t);
        }
        TaskCommand::Answer {
            id,
            attested_by,
            contact,
            statement,
            records,
            not_found,
            done,
            kept: kept_specs,
        } => {
            let found = match records {
                None => vec![],
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    let list: Vec<FileRecord> = serde_json::from_str(&text).with_context(|| {
                        format!(
                            "{}: a JSON list of {{\"store\", \"key\", \"fields\": {{name: value}}}}",
                            path.display()
                        )
                    })?;
                    list.into_iter()
                        .map(|r| pb::TaskRecord {
                            store: r.store,
                            key: r.key,
                            fields: r
                                .fields
                                .into_iter()
                                .map(|(name, value)| pb::TaskField { name, value })
                                .collect(),
                        })
                        .collect()
                }
            };
            let kept = kept_specs
                .iter()
                .map(|s| kept(s))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let t = client
                .answer_task(authed(
                    pb::AnswerTaskRequest {
                        id,
                        found,
                        not_found,
                        done: done.unwrap_or(0),
                        kept,
                        attested_by,
                        contact,
                        statement,
                    },
                    &req,
                ))
                .await
                .map_err(explain)?
                .into_inner()
                .task
                .unwrap_or_default();
            print_task(&t);
        }
    }
    Ok(())
}
