//! `dsr incident …` and `dsr complaint …`: the register of personal-data
//! breaches and the DPO's complaints, over gRPC (dsr.incident.v1).

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use dsr_proto::common::v1 as common;
use dsr_proto::incident::v1 as pb;
use dsr_proto::incident::v1::complaints_client::ComplaintsClient;
use dsr_proto::incident::v1::incidents_client::IncidentsClient;
use tonic::transport::Channel;

use crate::config::Config;
use crate::dev;
use crate::request::connect;
use crate::transfers::explain;

/// Arguments of `dsr incident`.
#[derive(Debug, Args)]
pub(crate) struct IncidentArgs {
    /// The orchestrator (default: `dsr up`'s, base port + 7).
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// Bearer token (default: minted from the data directory's development key).
    #[arg(long, env = "DSR_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: IncidentCommand,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RiskArg {
    None,
    Risk,
    High,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ExceptionArg {
    /// Art. 34(3)(a): unintelligible to anyone not authorised.
    Unintelligible,
    /// Art. 34(3)(b): the high risk is no longer likely.
    RiskNoLongerLikely,
    /// Art. 34(3)(c): a public communication instead.
    PublicCommunication,
}

#[derive(Debug, Subcommand)]
enum IncidentCommand {
    /// Record a personal-data breach; the 72 hours run from --discovered.
    Report {
        /// What happened (no more personal data than the case needs).
        #[arg(long)]
        summary: String,
        /// When the company became aware (RFC 3339; default: now).
        #[arg(long)]
        discovered: Option<String>,
        /// When it started, if known (RFC 3339).
        #[arg(long)]
        started: Option<String>,
        /// A system concerned (repeatable).
        #[arg(long = "system")]
        systems: Vec<String>,
        /// A category of data concerned (repeatable), e.g. aml.identity_document.
        #[arg(long = "category")]
        categories: Vec<String>,
        /// Roughly how many people.
        #[arg(long, default_value_t = 0)]
        approximate_people: u64,
        /// What was done to contain it.
        #[arg(long, default_value = "")]
        containment: String,
    },
    /// The register (Art. 33(5)): every incident, newest first.
    List {
        /// Only those not closed.
        #[arg(long)]
        open: bool,
        /// As CSV (for the register's export).
        #[arg(long)]
        csv: bool,
    },
    /// One incident.
    Show {
        /// Its id.
        id: String,
    },
    /// Ask the systems who is affected.
    Affected {
        /// Its id.
        id: String,
    },
    /// Record the risk assessment.
    Assess {
        /// Its id.
        id: String,
        /// The risk.
        #[arg(long, value_enum)]
        risk: RiskArg,
        /// Why.
        #[arg(long)]
        reasoning: String,
        /// The likely consequences (required unless --risk none).
        #[arg(long, default_value = "")]
        consequences: String,
        /// The measures taken or proposed (required unless --risk none).
        #[arg(long, default_value = "")]
        measures: String,
    },
    /// The notification to the supervisory authority (Art. 33(3)), as text.
    Draft {
        /// Its id.
        id: String,
        /// sv or en.
        #[arg(long, default_value = "sv")]
        language: String,
    },
    /// Record that IMY was notified (send `dsr incident draft` through its
    /// e-service first); past the 72 hours with the reasons.
    #[command(name = "notify-imy", visible_alias = "notified")]
    NotifyImy {
        /// Its id.
        id: String,
        /// When (RFC 3339; default: now).
        #[arg(long)]
        at: Option<String>,
        /// The authority's reference.
        #[arg(long, default_value = "")]
        reference: String,
        /// Why later than 72 hours (required then).
        #[arg(long, default_value = "")]
        late_reason: String,
    },
    /// Send each affected person a notice (Art. 34; high risk only).
    NotifyPeople {
        /// Its id.
        id: String,
    },
    /// Record an Art. 34(3) exception instead of notices.
    Exception {
        /// Its id.
        id: String,
        /// Which.
        #[arg(long, value_enum)]
        exception: ExceptionArg,
        /// Why it applies.
        #[arg(long)]
        explanation: String,
    },
    /// Close with the remedial action taken.
    Close {
        /// Its id.
        id: String,
        /// The remedial action.
        #[arg(long)]
        remedial_action: String,
    },
}

/// Arguments of `dsr complaint`.
#[derive(Debug, Args)]
pub(crate) struct ComplaintArgs {
    /// The orchestrator (default: `dsr up`'s, base port + 7).
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// Bearer token (default: minted from the data directory's development key).
    #[arg(long, env = "DSR_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: ComplaintCommand,
}

#[derive(Debug, Subcommand)]
enum ComplaintCommand {
    /// File a complaint on a person's behalf.
    File {
        /// The controller (organisationsnummer).
        #[arg(long)]
        controller: String,
        /// What the person complains about.
        #[arg(long)]
        text: String,
        /// Where the answer goes: the person's email address.
        #[arg(long)]
        reply_to: String,
        /// sv or en.
        #[arg(long, default_value = "sv")]
        language: String,
        /// A request it concerns (repeatable).
        #[arg(long = "request")]
        requests: Vec<String>,
    },
    /// The DPO's queue.
    List {
        /// Only those not answered.
        #[arg(long)]
        open: bool,
    },
    /// One complaint.
    Show {
        /// Its id.
        id: String,
    },
    /// Answer: the answer is sent to the person with the way to IMY.
    Answer {
        /// Its id.
        id: String,
        /// The answer, as the person will read it.
        #[arg(long)]
        text: String,
    },
}

fn time(arg: Option<&str>, name: &str) -> anyhow::Result<prost_types::Timestamp> {
    let t = match arg {
        None => chrono::Utc::now(),
        Some(s) => chrono::DateTime::parse_from_rfc3339(s)
            .with_context(|| format!("--{name} {s:?}: an RFC 3339 time"))?
            .with_timezone(&chrono::Utc),
    };
    Ok(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    })
}

fn when(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "-".into())
}

fn word(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_lowercase()
}

struct Conn {
    token: String,
    channel: Channel,
}

impl Conn {
    async fn new(
        cfg: &Config,
        endpoint: Option<String>,
        token: Option<String>,
    ) -> anyhow::Result<Self> {
        let endpoint = endpoint.unwrap_or_else(|| {
            format!(
                "http://{}:{}",
                cfg.up.connect_host(),
                cfg.up.base_port.saturating_add(7)
            )
        });
        let token = dev::token_or_mint(
            &cfg.data_dir,
            token,
            "dsr-cli",
            vec![dsr_orchestrator::SERVICE_NAME.into()],
            vec![
                dsr_orchestrator::grpc::SCOPE_SUBMIT.into(),
                dsr_orchestrator::grpc::SCOPE_MANAGE.into(),
                dsr_orchestrator::grpc::incidents::SCOPE_REPORT.into(),
                dsr_orchestrator::grpc::incidents::SCOPE_MANAGE.into(),
            ],
            Duration::from_secs(3600),
        )?;
        Ok(Self {
            token,
            channel: connect(&endpoint, "the orchestrator").await?,
        })
    }

    fn req<T>(&self, msg: T) -> anyhow::Result<tonic::Request<T>> {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {}", self.token).parse()?);
        r.set_timeout(Duration::from_secs(300));
        Ok(r)
    }
}

#[allow(clippy::print_stdout)]
fn print_incident(i: &pb::Incident) {
    println!("incident   {}", i.id);
    println!("summary    {}", i.summary);
    println!("started    {}", when(i.start_time.as_ref()));
    println!("discovered {}", when(i.discovered_time.as_ref()));
    let due = when(i.authority_due_time.as_ref());
    if i.authority_notified_time.is_some() {
        println!(
            "authority  notified {}{}",
            when(i.authority_notified_time.as_ref()),
            if i.authority_reference.is_empty() {
                String::new()
            } else {
                format!(" (reference {})", i.authority_reference)
            }
        );
        if !i.late_reason.is_empty() {
            println!("late       {}", i.late_reason);
        }
    } else if i.authority_overdue {
        println!(
            "authority  OVERDUE: due {due}, {} hours ago (Art. 33(1))",
            -i.hours_left
        );
    } else {
        println!("authority  due {due} ({} hours left)", i.hours_left);
    }
    println!("systems    {}", i.system_ids.join(", "));
    println!("categories {}", i.category_ids.join(", "));
    let risk = pb::Risk::try_from(i.risk)
        .map(|r| word(r.as_str_name(), "RISK_"))
        .unwrap_or_default();
    println!(
        "risk       {}{}",
        if risk == "unspecified" {
            "not assessed"
        } else {
            &risk
        },
        if i.risk_reasoning.is_empty() {
            String::new()
        } else {
            format!(": {}", i.risk_reasoning)
        }
    );
    match &i.affected {
        None => println!(
            "affected   not asked yet (`dsr incident affected {}`)",
            i.id
        ),
        Some(a) => {
            println!(
                "affected   {} people, {} records, {} reachable (asked {})",
                a.people,
                a.records,
                a.reachable,
                when(a.found_time.as_ref())
            );
            for c in &a.counts {
                println!(
                    "  {} {:<28} {:>6} people {:>7} records",
                    c.controller
                        .as_ref()
                        .map(|c| c.organisation_number.as_str())
                        .unwrap_or(""),
                    c.category_id,
                    c.people,
                    c.records
                );
            }
            for f in &a.failed_systems {
                println!("  ! not answered: {f}");
            }
        }
    }
    if let Some(n) = &i.notices {
        println!(
            "notices    {} queued, {} sent, {} failed (from {})",
            n.queued,
            n.sent,
            n.failed,
            when(n.start_time.as_ref())
        );
    }
    if i.notice_exception != 0 {
        println!(
            "exception  {}: {}",
            pb::NoticeException::try_from(i.notice_exception)
                .map(|e| word(e.as_str_name(), "NOTICE_EXCEPTION_"))
                .unwrap_or_default(),
            i.notice_exception_explanation
        );
    }
    if i.close_time.is_some() {
        println!(
            "closed     {}: {}",
            when(i.close_time.as_ref()),
            i.remedial_action
        );
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Runs `dsr incident`.
#[allow(clippy::print_stdout)]
pub(crate) async fn run_incident(cfg: &Config, args: IncidentArgs) -> anyhow::Result<()> {
    let conn = Conn::new(cfg, args.endpoint, args.token).await?;
    let mut c = IncidentsClient::new(conn.channel.clone());
    let shown = match args.command {
        IncidentCommand::Report {
            summary,
            discovered,
            started,
            systems,
            categories,
            approximate_people,
            containment,
        } => {
            c.report(
                conn.req(pb::ReportRequest {
                    summary,
                    start_time: started
                        .as_deref()
                        .map(|s| time(Some(s), "started"))
                        .transpose()?,
                    discovered_time: Some(time(discovered.as_deref(), "discovered")?),
                    system_ids: systems,
                    category_ids: categories,
                    approximate_people,
                    containment,
                    source: pb::Source::Staff as i32,
                })?,
            )
            .await
            .map_err(explain)?
            .into_inner()
            .incident
        }
        IncidentCommand::List { open, csv } => {
            let mut token = String::new();
            if csv {
                println!(
                    "id,discovered,summary,categories,people,records,risk,authority_notified,late_reason,notices_sent,exception,remedial_action,closed"
                );
            }
            loop {
                let page = c
                    .list(conn.req(pb::ListRequest {
                        open_only: open,
                        page_size: 200,
                        page_token: token.clone(),
                    })?)
                    .await
                    .map_err(explain)?
                    .into_inner();
                for i in &page.incidents {
                    let risk = pb::Risk::try_from(i.risk)
                        .map(|r| word(r.as_str_name(), "RISK_"))
                        .unwrap_or_default();
                    let (people, records) = i
                        .affected
                        .as_ref()
                        .map_or((i.approximate_people, 0), |a| (a.people, a.records));
                    if csv {
                        println!(
                            "{},{},{},{},{},{},{},{},{},{},{},{},{}",
                            i.id,
                            when(i.discovered_time.as_ref()),
                            csv_field(&i.summary),
                            csv_field(&i.category_ids.join(" ")),
                            people,
                            records,
                            risk,
                            when(i.authority_notified_time.as_ref()),
                            csv_field(&i.late_reason),
                            i.notices.as_ref().map_or(0, |n| n.sent),
                            csv_field(&i.notice_exception_explanation),
                            csv_field(&i.remedial_action),
                            when(i.close_time.as_ref()),
                        );
                    } else {
                        println!(
                            "{}  {}  {:<11} {:>6} people  {}  {}",
                            i.id,
                            when(i.discovered_time.as_ref()),
                            risk,
                            people,
                            if i.authority_overdue {
                                "AUTHORITY OVERDUE".to_owned()
                            } else if i.authority_notified_time.is_some() {
                                "notified".to_owned()
                            } else {
                                format!("{}h left", i.hours_left)
                            },
                            i.summary.chars().take(50).collect::<String>()
                        );
                    }
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            None
        }
        IncidentCommand::Show { id } => {
            c.get(conn.req(pb::GetRequest { id })?)
                .await
                .map_err(explain)?
                .into_inner()
                .incident
        }
        IncidentCommand::Affected { id } => {
            c.find_affected(conn.req(pb::FindAffectedRequest { id })?)
                .await
                .map_err(explain)?
                .into_inner()
                .incident
        }
        IncidentCommand::Assess {
            id,
            risk,
            reasoning,
            consequences,
            measures,
        } => {
            c.assess(conn.req(pb::AssessRequest {
                id,
                risk: match risk {
                    RiskArg::None => pb::Risk::None,
                    RiskArg::Risk => pb::Risk::Risk,
                    RiskArg::High => pb::Risk::High,
                } as i32,
                reasoning,
                consequences,
                measures,
            })?)
            .await
            .map_err(explain)?
            .into_inner()
            .incident
        }
        IncidentCommand::Draft { id, language } => {
            let d = c
                .draft_notification(conn.req(pb::DraftNotificationRequest { id, language })?)
                .await
                .map_err(explain)?
                .into_inner();
            print!("{}", d.text);
            if !d.missing.is_empty() {
                eprintln!("still missing: {}", d.missing.join(", "));
            }
            None
        }
        IncidentCommand::NotifyImy {
            id,
            at,
            reference,
            late_reason,
        } => {
            c.record_authority_notified(conn.req(pb::RecordAuthorityNotifiedRequest {
                id,
                notified_time: Some(time(at.as_deref(), "at")?),
                authority_reference: reference,
                late_reason,
            })?)
            .await
            .map_err(explain)?
            .into_inner()
            .incident
        }
        IncidentCommand::NotifyPeople { id } => {
            c.notify_people(conn.req(pb::NotifyPeopleRequest { id })?)
                .await
                .map_err(explain)?
                .into_inner()
                .incident
        }
        IncidentCommand::Exception {
            id,
            exception,
            explanation,
        } => {
            c.record_notice_exception(conn.req(pb::RecordNoticeExceptionRequest {
                id,
                exception: match exception {
                    ExceptionArg::Unintelligible => pb::NoticeException::Unintelligible,
                    ExceptionArg::RiskNoLongerLikely => pb::NoticeException::RiskNoLongerLikely,
                    ExceptionArg::PublicCommunication => pb::NoticeException::PublicCommunication,
                } as i32,
                explanation,
            })?)
            .await
            .map_err(explain)?
            .into_inner()
            .incident
        }
        IncidentCommand::Close {
            id,
            remedial_action,
        } => {
            c.close(conn.req(pb::CloseRequest {
                id,
                remedial_action,
            })?)
            .await
            .map_err(explain)?
            .into_inner()
            .incident
        }
    };
    if let Some(i) = shown {
        print_incident(&i);
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
fn print_complaint(c: &pb::Complaint) {
    println!("complaint  {}", c.id);
    println!(
        "controller {}",
        c.controller
            .as_ref()
            .map(|c| c.organisation_number.as_str())
            .unwrap_or("")
    );
    println!("filed      {}", when(c.file_time.as_ref()));
    println!(
        "answer by  {}{}",
        when(c.answer_due_time.as_ref()),
        if c.overdue { "  OVERDUE" } else { "" }
    );
    if !c.request_ids.is_empty() {
        println!("requests   {}", c.request_ids.join(", "));
    }
    println!("text       {}", c.text);
    if c.answer_time.is_some() {
        println!(
            "answered   {} by {} (letter {})",
            when(c.answer_time.as_ref()),
            c.answered_by,
            c.letter_status
        );
        println!("answer     {}", c.answer);
    }
}

/// Runs `dsr complaint`.
#[allow(clippy::print_stdout)]
pub(crate) async fn run_complaint(cfg: &Config, args: ComplaintArgs) -> anyhow::Result<()> {
    let conn = Conn::new(cfg, args.endpoint, args.token).await?;
    let mut c = ComplaintsClient::new(conn.channel.clone());
    let shown = match args.command {
        ComplaintCommand::File {
            controller,
            text,
            reply_to,
            language,
            requests,
        } => {
            c.file(conn.req(pb::FileRequest {
                controller: Some(common::ControllerRef {
                    organisation_number: controller,
                }),
                text,
                reply_to: Some(common::Identity {
                    r#type: common::IdentityType::Email as i32,
                    format: common::IdentityFormat::Raw as i32,
                    value: reply_to,
                    hmac_key_id: String::new(),
                }),
                language,
                request_ids: requests,
            })?)
            .await
            .map_err(explain)?
            .into_inner()
            .complaint
        }
        ComplaintCommand::List { open } => {
            let page = c
                .list_complaints(conn.req(pb::ListComplaintsRequest {
                    open_only: open,
                    page_size: 500,
                    page_token: String::new(),
                })?)
                .await
                .map_err(explain)?
                .into_inner();
            for x in &page.complaints {
                println!(
                    "{}  filed {}  {}  {}",
                    x.id,
                    when(x.file_time.as_ref()),
                    if x.answer_time.is_some() {
                        format!("answered {}", when(x.answer_time.as_ref()))
                    } else if x.overdue {
                        format!("OVERDUE since {}", when(x.answer_due_time.as_ref()))
                    } else {
                        format!("answer by {}", when(x.answer_due_time.as_ref()))
                    },
                    x.text.chars().take(50).collect::<String>()
                );
            }
            None
        }
        ComplaintCommand::Show { id } => {
            c.get_complaint(conn.req(pb::GetComplaintRequest { id })?)
                .await
                .map_err(explain)?
                .into_inner()
                .complaint
        }
        ComplaintCommand::Answer { id, text } => {
            c.answer(conn.req(pb::AnswerRequest { id, answer: text })?)
                .await
                .map_err(explain)?
                .into_inner()
                .complaint
        }
    };
    if let Some(x) = shown {
        print_complaint(&x);
    }
    Ok(())
}
