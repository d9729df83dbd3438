//! `dsr transfers …`: the transfer registry from the command line, over gRPC.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use dsr_domain::transfer::CountryTables;
use dsr_proto::common::v1 as common;
use dsr_proto::transfer::v1 as pb;
use dsr_proto::transfer::v1::transfer_registry_client::TransferRegistryClient;
use dsr_transfer_registry::{SERVICE_NAME, grpc, seed};
use tonic::transport::Channel;

use crate::config::Config;
use crate::dev;
use crate::request::{Output, date_json, enum_name, print_json, time_json};
use serde_json::json;

/// Arguments of `dsr transfers`.
#[derive(Debug, Args)]
pub(crate) struct TransfersArgs {
    /// How read commands (list, get, check, countries, reviews) print: text,
    /// or json for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// The registry's address (default: `dsr up`'s, on its base port).
    #[arg(long, env = "DSR_ENDPOINT", global = true)]
    endpoint: Option<String>,
    /// Bearer token (default: minted from the data directory's development key).
    #[arg(long, env = "DSR_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: TransfersCommand,
}

#[derive(Debug, Subcommand)]
enum TransfersCommand {
    /// List recipients.
    List {
        /// Only in this country (ISO 3166-1 alpha-2).
        #[arg(long)]
        country: Option<String>,
        /// Only serving this controller (organisationsnummer).
        #[arg(long)]
        controller: Option<String>,
        /// Only receiving from this system (repeatable).
        #[arg(long = "system")]
        systems: Vec<String>,
        /// Only receiving this category (repeatable).
        #[arg(long = "category")]
        categories: Vec<String>,
    },
    /// Show one recipient.
    Get {
        /// Recipient id.
        id: String,
    },
    /// Check whether sending categories to a recipient is lawful.
    Check {
        /// Recipient id.
        id: String,
        /// Category (repeatable, at least one).
        #[arg(long = "category", required = true)]
        categories: Vec<String>,
        /// Sending controller (organisationsnummer).
        #[arg(long)]
        controller: Option<String>,
    },
    /// List EEA members and adequate countries.
    Countries,
    /// List safeguard reviews due.
    Reviews {
        /// Days ahead.
        #[arg(long, default_value_t = 30)]
        within_days: u32,
    },
    /// Create or update the recipients in a TOML file ([[recipient]] tables, as in the seed).
    Put {
        /// The file.
        #[arg(long)]
        file: PathBuf,
    },
    /// Delete a recipient.
    Delete {
        /// Recipient id.
        id: String,
    },
}

struct Client {
    inner: TransferRegistryClient<Channel>,
    token: String,
}

impl Client {
    fn req<T>(&self, msg: T) -> anyhow::Result<tonic::Request<T>> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {}", self.token).parse()?);
        r.set_timeout(Duration::from_secs(30));
        Ok(r)
    }
}

pub(crate) fn explain(status: tonic::Status) -> anyhow::Error {
    crate::exit::explain(&status)
}

fn controller(org: Option<String>) -> Option<common::ControllerRef> {
    org.map(|organisation_number| common::ControllerRef {
        organisation_number,
    })
}

fn date(d: Option<&common::Date>) -> String {
    d.map_or_else(
        || "-".to_owned(),
        |d| format!("{:04}-{:02}-{:02}", d.year, d.month, d.day),
    )
}

fn safeguard(r: &pb::Recipient) -> String {
    use pb::safeguard::Mechanism as M;
    match r.safeguard.as_ref().and_then(|s| s.mechanism.as_ref()) {
        None => "-".into(),
        Some(M::Scc(s)) => format!(
            "SCC module {} signed {}",
            s.module,
            date(s.signed_on.as_ref())
        ),
        Some(M::Bcr(b)) => format!("BCR {}", b.approval_reference),
        Some(M::Derogation(d)) => format!("Art. 49 derogation ({})", d.ground),
        Some(M::Dpf(d)) => format!(
            "DPF {} review by {}",
            if d.active {
                "certified"
            } else {
                "not certified"
            },
            date(d.review_by.as_ref())
        ),
    }
}

#[allow(clippy::print_stdout)]
fn print_recipient(r: &pb::Recipient) {
    let role = pb::RecipientRole::try_from(r.role).map_or("?", |x| x.as_str_name());
    println!("{:<24} {:<2} {:<38} {}", r.id, r.country, role, r.name);
    println!("{:<27} sv: {}", "", r.name_sv);
    println!("{:<27} safeguard: {}", "", safeguard(r));
    if let Some(a) = &r.standing {
        let basis = pb::TransferBasis::try_from(a.basis).map_or("?", |b| b.as_str_name());
        println!(
            "{:<27} transfer: {} ({basis})",
            "",
            if a.lawful { "lawful" } else { "NOT LAWFUL" }
        );
        for reason in a.reasons.iter().filter(|r| r.blocking) {
            println!("{:<27}   x {}: {}", "", reason.code, reason.message);
        }
    }
}

/// An assessment as JSON.
fn assessment_json(a: &pb::TransferAssessment) -> serde_json::Value {
    json!({
        "lawful": a.lawful,
        "basis": enum_name(pb::TransferBasis::try_from(a.basis).ok().map(|b| b.as_str_name()), "TRANSFER_BASIS_"),
        "country": a.country,
        "decision_reference": a.decision_reference,
        "safeguard_summary": a.safeguard_summary,
        "safeguard_summary_sv": a.safeguard_summary_sv,
        "reasons": a.reasons.iter().map(|r| json!({
            "code": r.code, "message": r.message, "blocking": r.blocking,
        })).collect::<Vec<_>>(),
    })
}

/// A recipient as JSON.
fn recipient_json(r: &pb::Recipient) -> serde_json::Value {
    json!({
        "id": r.id,
        "name": r.name,
        "name_sv": r.name_sv,
        "role": enum_name(pb::RecipientRole::try_from(r.role).ok().map(|x| x.as_str_name()), "RECIPIENT_ROLE_"),
        "country": r.country,
        "controllers": r.controllers.iter().map(|c| c.organisation_number.clone()).collect::<Vec<_>>(),
        "category_ids": r.category_ids,
        "system_ids": r.system_ids,
        "dpa_reference": r.dpa_reference,
        "safeguard": safeguard(r),
        "purpose": r.purpose,
        "purpose_sv": r.purpose_sv,
        "revision": r.revision,
        "create_time": time_json(r.create_time.as_ref()),
        "update_time": time_json(r.update_time.as_ref()),
        "standing": r.standing.as_ref().map(assessment_json),
    })
}

/// Runs a `dsr transfers` subcommand.
#[allow(clippy::print_stdout)]
pub(crate) async fn run(cfg: &Config, args: TransfersArgs) -> anyhow::Result<()> {
    let token = dev::token_or_mint(
        &cfg.data_dir,
        args.token,
        "dsr-cli",
        vec![SERVICE_NAME.into()],
        vec![grpc::SCOPE_READ.into(), grpc::SCOPE_WRITE.into()],
        Duration::from_secs(300),
    )?;
    let output = args.output;
    let endpoint = args
        .endpoint
        .unwrap_or_else(|| format!("http://{}:{}", cfg.up.connect_host(), cfg.up.base_port));
    let channel = crate::request::connect(&endpoint, "the transfer registry").await?;
    let mut c = Client {
        inner: TransferRegistryClient::new(channel),
        token,
    };
    match args.command {
        TransfersCommand::List {
            country,
            controller: ctrl,
            systems,
            categories,
        } => {
            let mut page_token = String::new();
            let mut all = Vec::new();
            loop {
                let resp = c
                    .inner
                    .list_recipients(c.req(pb::ListRecipientsRequest {
                        page: Some(common::PageRequest {
                            page_size: 100,
                            page_token: page_token.clone(),
                        }),
                        controller: controller(ctrl.clone()),
                        system_ids: systems.clone(),
                        category_ids: categories.clone(),
                        country: country.clone().unwrap_or_default(),
                    })?)
                    .await
                    .map_err(explain)?
                    .into_inner();
                if output == Output::Json {
                    all.extend(resp.recipients.iter().map(recipient_json));
                } else {
                    resp.recipients.iter().for_each(print_recipient);
                }
                page_token = resp.page.map(|p| p.next_page_token).unwrap_or_default();
                if page_token.is_empty() {
                    break;
                }
            }
            if output == Output::Json {
                print_json(&json!({ "recipients": all }))?;
            }
        }
        TransfersCommand::Get { id } => {
            let r = c
                .inner
                .get_recipient(c.req(pb::GetRecipientRequest { id })?)
                .await
                .map_err(explain)?
                .into_inner();
            let r = r.recipient.context("empty answer")?;
            if output == Output::Json {
                return print_json(&recipient_json(&r));
            }
            print_recipient(&r);
            println!(
                "{:<27} controllers: {}",
                "",
                r.controllers
                    .iter()
                    .map(|c| c.organisation_number.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!("{:<27} categories: {}", "", r.category_ids.join(", "));
            println!("{:<27} systems: {}", "", r.system_ids.join(", "));
            println!(
                "{:<27} agreement: {}  revision: {}",
                "", r.dpa_reference, r.revision
            );
        }
        TransfersCommand::Check {
            id,
            categories,
            controller: ctrl,
        } => {
            let a = c
                .inner
                .check_transfer(c.req(pb::CheckTransferRequest {
                    recipient_id: id,
                    category_ids: categories,
                    controller: controller(ctrl),
                    at: None,
                })?)
                .await
                .map_err(explain)?
                .into_inner()
                .assessment
                .context("empty answer")?;
            if output == Output::Json {
                return print_json(&assessment_json(&a));
            }
            let basis = pb::TransferBasis::try_from(a.basis).map_or("?", |b| b.as_str_name());
            println!(
                "{} ({basis}, {})",
                if a.lawful { "LAWFUL" } else { "NOT LAWFUL" },
                a.country
            );
            println!("  {}", a.safeguard_summary);
            for r in &a.reasons {
                println!(
                    "  {} {}: {}",
                    if r.blocking { "x" } else { "-" },
                    r.code,
                    r.message
                );
            }
        }
        TransfersCommand::Countries => {
            let list = c
                .inner
                .list_countries(c.req(pb::ListCountriesRequest {})?)
                .await
                .map_err(explain)?
                .into_inner();
            if output == Output::Json {
                return print_json(&json!({
                    "countries": list.countries.iter().map(|k| json!({
                        "code": k.code,
                        "name": k.name,
                        "status": enum_name(pb::CountryStatus::try_from(k.status).ok().map(|x| x.as_str_name()), "COUNTRY_STATUS_"),
                        "decision_reference": k.decision_reference,
                        "decision_date": date_json(k.decision_date.as_ref()),
                        "valid_until": date_json(k.valid_until.as_ref()),
                        "scope": k.scope,
                    })).collect::<Vec<_>>(),
                }));
            }
            for k in list.countries {
                let status = pb::CountryStatus::try_from(k.status).map_or("?", |s| s.as_str_name());
                println!(
                    "{} {:<28} {:<22} {} {}",
                    k.code, k.name, status, k.decision_reference, k.scope
                );
            }
        }
        TransfersCommand::Reviews { within_days } => {
            let list = c
                .inner
                .list_reviews_due(c.req(pb::ListReviewsDueRequest { within_days })?)
                .await
                .map_err(explain)?
                .into_inner();
            if output == Output::Json {
                return print_json(&json!({
                    "reviews": list.reviews.iter().map(|r| json!({
                        "recipient_id": r.recipient_id,
                        "recipient_name": r.recipient_name,
                        "basis": enum_name(pb::TransferBasis::try_from(r.basis).ok().map(|b| b.as_str_name()), "TRANSFER_BASIS_"),
                        "review_by": date_json(r.review_by.as_ref()),
                        "overdue": r.overdue,
                    })).collect::<Vec<_>>(),
                }));
            }
            if list.reviews.is_empty() {
                println!("no reviews due within {within_days} days");
            }
            for r in list.reviews {
                let basis = pb::TransferBasis::try_from(r.basis).map_or("?", |b| b.as_str_name());
                println!(
                    "{} {:<24} {basis}{}",
                    date(r.review_by.as_ref()),
                    r.recipient_id,
                    if r.overdue { "  OVERDUE" } else { "" }
                );
            }
        }
        TransfersCommand::Put { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let parsed: seed::SeedFile = toml::from_str(&text)
                .with_context(|| format!("{} is not valid", file.display()))?;
            let tables = CountryTables::shipped();
            if parsed.recipients.is_empty() {
                bail!("{} has no [[recipient]] tables", file.display());
            }
            for (i, spec) in parsed.recipients.into_iter().enumerate() {
                let domain = spec
                    .build(&tables, &format!("recipient[{i}]"))
                    .map_err(|v| {
                        anyhow::anyhow!(
                            v.iter()
                                .map(|x| format!("{}: {}", x.field, x.description))
                                .collect::<Vec<_>>()
                                .join("; ")
                        )
                    })?;
                let recipient = grpc::recipient_to_pb(&domain);
                let exists = c
                    .inner
                    .get_recipient(c.req(pb::GetRecipientRequest {
                        id: domain.id.clone(),
                    })?)
                    .await
                    .is_ok();
                let stored = if exists {
                    c.inner
                        .update_recipient(c.req(pb::UpdateRecipientRequest {
                            recipient: Some(recipient),
                            expected_revision: 0,
                        })?)
                        .await
                        .map_err(explain)?
                        .into_inner()
                        .recipient
                } else {
                    c.inner
                        .create_recipient(c.req(pb::CreateRecipientRequest {
                            recipient: Some(recipient),
                        })?)
                        .await
                        .map_err(explain)?
                        .into_inner()
                        .recipient
                };
                let stored = stored.context("empty answer")?;
                println!(
                    "{} {} (revision {})",
                    if exists { "updated" } else { "created" },
                    stored.id,
                    stored.revision
                );
            }
        }
        TransfersCommand::Delete { id } => {
            c.inner
                .delete_recipient(c.req(pb::DeleteRecipientRequest {
                    id: id.clone(),
                    expected_revision: 0,
                })?)
                .await
                .map_err(explain)?;
            println!("deleted {id}");
        }
    }
    Ok(())
}
