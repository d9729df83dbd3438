//! `dsr`: one binary for every DSR Mesh service and its tools.
//!
//! - `dsr up`: the embedded mesh: every service on its own loopback port,
//!   SQLite files and development keys in the data directory, the reference
//!   data seeded.
//! - `dsr serve <service>`: one service, as on Kubernetes.
//! - `dsr migrate`, `dsr token`, `dsr transfers …`: operations and local use.
#![forbid(unsafe_code)]

mod bench;
mod config;
mod conformance;
mod dev;
mod erasure;
mod exit;
mod incident;
mod keys;
mod portal;
mod reference_api;
mod request;
mod services;
mod task;
mod transfers;
mod up;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, Overrides};
use crate::services::{Instance, Schema, ServiceKind, Trust};

#[derive(Debug, Parser)]
#[command(name = "dsr", version, about = "DSR Mesh: data-subject-rights engine")]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "DSR_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (SQLite files, development keys).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Log filter, e.g. "info" or "info,dsr_server=debug".
    #[arg(long, global = true)]
    log: Option<String>,
    /// Log format: auto, pretty or json.
    #[arg(long, global = true)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service on loopback ports with SQLite and development keys.
    Up(UpArgs),
    /// Run one service.
    Serve(ServeArgs),
    /// Apply database migrations.
    Migrate(MigrateArgs),
    /// Mint a development token from the data directory's key (local use only).
    Token(TokenArgs),
    /// Work with the transfer registry.
    Transfers(transfers::TransfersArgs),
    /// Create a reference system's schema and fill it with synthetic people.
    Seed(SeedArgs),
    /// Check a DataSystem implementation against the contract.
    Conformance(conformance::ConformanceArgs),
    /// Measure Locate latency and Access memory on the reference systems.
    Bench(bench::BenchArgs),
    /// Verify a person with a one-time code (local use).
    Verify(verify::VerifyArgs),
    /// Submit and follow data-subject requests (the portal's side).
    Request(Box<request::RequestArgs>),
    /// The tasks of a vendor without an API: list, show, answer.
    Task(task::TaskArgs),
    /// Check the orchestrator's hash-chained audit trail.
    Audit(AuditArgs),
    /// Show the retention policy in force (validated).
    Policy(PolicyArgs),
    /// The letters the mesh writes to a person (templates, validated).
    Letters(LettersArgs),
    /// The register of personal-data breaches (Art. 33-34): report, who is
    /// affected, the 72 hours, the notification to IMY, notices.
    Incident(incident::IncidentArgs),
    /// Complaints to the DPO: file, the queue, answer.
    Complaint(incident::ComplaintArgs),
    /// After a database restore: erase again what the erasures since the
    /// backup had erased (from their tombstones), and nothing else.
    ReplayErasures(erasure::ReplayArgs),
    /// Run a retention sweep now: every system removes what has passed its
    /// retention rule.
    Sweep(erasure::SweepArgs),
    /// Place, lift and list legal holds (they keep records over erasure).
    Hold(erasure::HoldArgs),
    /// Create the keys of a deployment (service tokens, verification
    /// tokens, receipts, tombstones, packages, redaction) and the JWKS the
    /// services trust.
    Keys(keys::KeysArgs),
    /// Serve the reference REST system (a customer-survey platform's API)
    /// that the HTTP connector's reference manifest reaches.
    ReferenceApi(reference_api::ReferenceApiArgs),
}

#[derive(Debug, Args)]
struct LettersArgs {
    #[command(subcommand)]
    command: LettersCommand,
}

#[derive(Debug, Subcommand)]
enum LettersCommand {
    /// Write one letter out with sample data: received, identity_needed,
    /// extended, completed, refused or restriction_lifted.
    Preview {
        /// The letter.
        letter: String,
        /// sv or en.
        #[arg(long, default_value = "sv")]
        language: String,
        /// A letters file to check and use (default: the shipped letters).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Args)]
struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Print every rule: activity, categories, period, ground.
    Show,
}

#[derive(Debug, Args)]
struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify every event's hash and link; exit 1 at the first break.
    Verify {
        /// Database URL (sqlite://… or postgres://…); default: the
        /// configured orchestrator database.
        #[arg(long)]
        database_url: Option<String>,
    },
}

#[derive(Debug, Args)]
struct SeedArgs {
    /// Which reference system: crm, print-mail or legal.
    #[arg(long)]
    system: String,
    /// How many people.
    #[arg(long, default_value_t = 1000)]
    subjects: usize,
    /// The generator's seed: the same seed gives the same data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Extra letters for the first print-mail recipient (benchmarks).
    #[arg(long, default_value_t = 0)]
    extra_letters: usize,
    /// Database URL (sqlite://… or postgres://…).
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Debug, Args)]
struct UpArgs {
    /// First port; each service takes the next one.
    #[arg(long)]
    base_port: Option<u16>,
    /// A processor's own system to add to the mesh (repeatable), e.g.
    /// `--system vendor-x=http://127.0.0.1:7000,operator=print-mail`: its
    /// id (as its Describe says), its gRPC endpoint and its operator's id
    /// in the transfer registry.
    #[arg(long = "system", value_name = "ID=URL,operator=RECIPIENT")]
    systems: Vec<String>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Which service.
    service: ServiceKind,
    /// Address to listen on, e.g. 0.0.0.0:50051.
    #[arg(long)]
    listen: Option<String>,
    /// Database URL (sqlite://… or postgres://…).
    #[arg(long)]
    database_url: Option<String>,
    /// Apply pending migrations before serving.
    #[arg(long)]
    migrate: bool,
    /// system-sql: the manifest to serve; system-http: its HTTP manifest.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// system-sql: a reference system to serve (crm, print-mail, legal).
    #[arg(long)]
    reference: Option<String>,
}

#[derive(Debug, Args)]
struct MigrateArgs {
    /// Services to migrate (default: all).
    services: Vec<ServiceKind>,
    /// Database URL (sqlite://… or postgres://…).
    #[arg(long)]
    database_url: Option<String>,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Scopes (default: every scope of every service).
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Audiences (default: every service).
    #[arg(long = "audience")]
    audiences: Vec<String>,
    /// Subject.
    #[arg(long, default_value = "dev-portal")]
    subject: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl_secs: u64,
}

fn flags(cli: &Cli) -> Overrides {
    use toml::Value as V;
    let mut f: Overrides = Vec::new();
    if let Some(d) = &cli.data_dir {
        f.push(("data_dir", V::String(d.display().to_string())));
    }
    if let Some(l) = &cli.log {
        f.push(("log", V::String(l.clone())));
    }
    if let Some(l) = &cli.log_format {
        f.push(("log_format", V::String(l.clone())));
    }
    match &cli.command {
        Command::Up(a) => {
            if let Some(p) = a.base_port {
                f.push(("up.base_port", V::Integer(i64::from(p))));
            }
            if !a.systems.is_empty() {
                let tables = a.systems.iter().map(|s| {
                    // "id=URL,operator=R": what is missing is said at start.
                    let (head, operator) = s.split_once(",operator=").unwrap_or((s, ""));
                    let (id, url) = head.split_once('=').unwrap_or((head, ""));
                    let mut t = toml::map::Map::new();
                    t.insert("id".into(), V::String(id.trim().to_owned()));
                    t.insert("endpoint".into(), V::String(url.trim().to_owned()));
                    t.insert(
                        "operator_recipient_id".into(),
                        V::String(operator.trim().to_owned()),
                    );
                    V::Table(t)
                });
                f.push(("up.systems", V::Array(tables.collect())));
            }
        }
        Command::Serve(a) => {
            if let Some(l) = &a.listen {
                f.push(("server.listen", V::String(l.clone())));
            }
            if let Some(u) = &a.database_url {
                f.push(("database.url", V::String(u.clone())));
            }
            if a.migrate {
                f.push(("database.migrate_on_start", V::Boolean(true)));
            }
            if let Some(m) = &a.manifest {
                f.push(("system_sql.manifest", V::String(m.display().to_string())));
            }
            if let Some(r) = &a.reference {
                f.push(("system_sql.reference", V::String(r.clone())));
            }
        }
        Command::Seed(a) => {
            if let Some(u) = &a.database_url {
                f.push(("database.url", V::String(u.clone())));
            }
        }
        Command::Migrate(a) => {
            if let Some(u) = &a.database_url {
                f.push(("database.url", V::String(u.clone())));
            }
        }
        Command::Audit(AuditArgs {
            command: AuditCommand::Verify { database_url },
        }) => {
            if let Some(u) = database_url {
                f.push(("database.url", V::String(u.clone())));
            }
        }
        Command::Token(_)
        | Command::Transfers(_)
        | Command::Conformance(_)
        | Command::Bench(_)
        | Command::Verify(_)
        | Command::Request(_)
        | Command::Task(_)
        | Command::ReplayErasures(_)
        | Command::Sweep(_)
        | Command::Hold(_)
        | Command::Keys(_)
        | Command::ReferenceApi(_)
        | Command::Letters(_)
        | Command::Incident(_)
        | Command::Complaint(_)
        | Command::Policy(_) => {}
    }
    f
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(cli.config.as_deref(), std::env::vars(), flags(&cli)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dsr: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dsr: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli, cfg));
    runtime.shutdown_timeout(Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dsr: {e:#}");
            exit::code(&e)
        }
    }
}

fn telemetry(cfg: &Config, service: &str) -> anyhow::Result<dsr_telemetry::TelemetryGuard> {
    let mut t = dsr_telemetry::TelemetryConfig::from_env(service);
    t.filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cfg.log.clone());
    t.log_format = dsr_telemetry::LogFormat::parse(&cfg.log_format).unwrap_or_default();
    if !cfg.otlp_endpoint.is_empty() {
        t.otlp_endpoint = Some(cfg.otlp_endpoint.clone());
    }
    let key = dev::redaction_key(&cfg.redaction_key_file, &cfg.data_dir)?;
    dsr_telemetry::set_redaction_key(key);
    Ok(dsr_telemetry::init(&t)?)
}

async fn run(cli: Cli, cfg: Config) -> anyhow::Result<()> {
    if let Some(tls) = cfg.client_tls()? {
        dsr_mesh_client::client::set_client_tls(tls);
    }
    // Client commands find a running `dsr up` of the same data directory
    // by the ports it wrote down, unless told otherwise.
    let cfg = match cli.command {
        Command::Transfers(_)
        | Command::Verify(_)
        | Command::Request(_)
        | Command::Task(_)
        | Command::Incident(_)
        | Command::Complaint(_)
        | Command::ReplayErasures(_)
        | Command::Sweep(_)
        | Command::Hold(_) => cfg.with_up_context(std::env::var_os("DSR_UP__BASE_PORT").is_some()),
        Command::Up(_)
        | Command::Serve(_)
        | Command::Migrate(_)
        | Command::Bench(_)
        | Command::Token(_)
        | Command::Seed(_)
        | Command::Conformance(_)
        | Command::Keys(_)
        | Command::ReferenceApi(_)
        | Command::Audit(_)
        | Command::Policy(_)
        | Command::Letters(_) => cfg,
    };
    match cli.command {
        Command::Up(_) => {
            let guard = telemetry(&cfg, "dsr")?;
            let res = up::run(&cfg).await;
            tokio::task::spawn_blocking(move || guard.shutdown()).await?;
            res
        }
        Command::Serve(args) => {
            // The instance's name: a connector is its system's
            // (dsr-system-crm), so each system is a service of its own in
            // the traces.
            let name = services::Instance::from_config(args.service, &cfg)
                .map_or_else(|_| args.service.name().to_owned(), |i| i.name.clone());
            let guard = telemetry(&cfg, &format!("dsr-{name}"))?;
            let res = serve(&cfg, args.service).await;
            tokio::task::spawn_blocking(move || guard.shutdown()).await?;
            res
        }
        Command::Migrate(args) => {
            let guard = telemetry(&cfg, "dsr-migrate")?;
            let res = migrate(&cfg, &args.services).await;
            tokio::task::spawn_blocking(move || guard.shutdown()).await?;
            res
        }
        Command::Token(args) => token(&cfg, args),
        Command::Transfers(args) => transfers::run(&cfg, args).await,
        Command::Incident(args) => incident::run_incident(&cfg, args).await,
        Command::Complaint(args) => incident::run_complaint(&cfg, args).await,
        Command::Seed(args) => seed(&cfg, args).await,
        Command::Conformance(args) => conformance::run(&cfg, args).await,
        Command::Bench(args) => {
            // The services a benchmark starts log as they would in production.
            let guard = telemetry(&cfg, "dsr-bench")?;
            let res = bench::run(&cfg, args).await;
            tokio::task::spawn_blocking(move || guard.shutdown()).await?;
            res
        }
        Command::Verify(args) => verify::run(&cfg, args).await,
        Command::Request(args) => request::run(&cfg, *args).await,
        Command::Task(args) => task::run(&cfg, args).await,
        Command::ReplayErasures(args) => erasure::replay(&cfg, args).await,
        Command::Sweep(args) => erasure::sweep(&cfg, args).await,
        Command::Hold(args) => erasure::hold(&cfg, args).await,
        Command::Keys(args) => keys::run(args),
        Command::ReferenceApi(args) => reference_api::run(&cfg, args).await,
        Command::Audit(AuditArgs {
            command: AuditCommand::Verify { .. },
        }) => audit_verify(&cfg).await,
        Command::Policy(PolicyArgs {
            command: PolicyCommand::Show,
        }) => policy_show(&cfg),
        Command::Letters(LettersArgs {
            command:
                LettersCommand::Preview {
                    letter,
                    language,
                    file,
                },
        }) => letters_preview(&cfg, &letter, &language, file.as_deref()),
    }
}

/// A letter written out with sample values, as a person would read it.
#[allow(clippy::print_stdout)]
fn letters_preview(
    cfg: &Config,
    letter: &str,
    language: &str,
    file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use dsr_domain::letters::{LetterKind, Letters};
    use dsr_domain::text::Lang;
    let letters = match file {
        None => Letters::shipped(),
        Some(f) => {
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            Letters::from_toml(&text).with_context(|| format!("{}", f.display()))?
        }
    };
    let kind = LetterKind::parse(letter).with_context(|| {
        format!(
            "no letter {letter:?}: one of {}",
            LetterKind::ALL.map(LetterKind::as_str).join(", ")
        )
    })?;
    let lang = Lang::parse(language).context("--language: sv or en")?;
    let group = services::group(cfg)?;
    let sv = lang == Lang::Sv;
    let values = std::collections::BTreeMap::from([
        (
            "reference",
            "7d9c1f2e-41b5-4a7e-9f0c-2b6e8d3a5c10".to_owned(),
        ),
        (
            "company",
            group
                .controllers
                .first()
                .map(|c| c.name.clone())
                .unwrap_or_default(),
        ),
        (
            "kind",
            letters
                .kind(dsr_domain::request::Kind::Access, lang)
                .to_owned(),
        ),
        ("received", "2026-12-02".to_owned()),
        ("due", "2027-01-04".to_owned()),
        ("months", "1".to_owned()),
        (
            "reason",
            if kind == LetterKind::Refused {
                letters.reason("no_data", lang).to_owned()
            } else if sv {
                "Uppgifter hos våra ombud utomlands behöver sammanställas.".to_owned()
            } else {
                "Records held by our agents abroad must be gathered.".to_owned()
            },
        ),
        (
            "fetch",
            format!("https://privacy.example.se/{}/status", lang.code()),
        ),
        ("dpo", group.dpo_email.clone()),
        (
            "authority",
            if sv {
                group.authority.name_sv.clone()
            } else {
                group.authority.name_en.clone()
            },
        ),
        ("authority_url", group.authority.url.clone()),
        ("lift_on", "2027-01-10".to_owned()),
    ]);
    let w = letters.write(kind, lang, &values);
    println!("Subject: {}\n\n{}", w.subject, w.body);
    Ok(())
}

#[allow(clippy::print_stdout)]
fn policy_show(cfg: &Config) -> anyhow::Result<()> {
    let p = cfg.retention_policy()?;
    println!(
        "Retention policy (privacy policy {}; {}):",
        p.policy_version,
        if cfg.retention_file.is_empty() {
            "the seed policy"
        } else {
            cfg.retention_file.as_str()
        }
    );
    for r in &p.rules {
        println!();
        println!("{}  {}", r.id, r.activity.en);
        println!("{:<4}sv: {}", "", r.activity.sv);
        println!("  categories  {}", r.categories.join(", "));
        println!(
            "  keep        {} months after {}, then {}",
            r.months,
            r.anchor,
            r.at_end.as_str()
        );
        if !r.ground_while_anchor_open.is_empty() {
            println!("  until then  {}", r.ground_while_anchor_open.en);
        }
        if r.set_by_law() {
            println!(
                "  by law      {} (kept over an erasure request)",
                r.legal_ground.en
            );
        }
        if !r.restrict_to.is_empty() {
            println!("  used only   for {}", r.restrict_to.en);
        }
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn audit_verify(cfg: &Config) -> anyhow::Result<()> {
    let inst = Instance::orchestrator();
    let db = inst.connect(cfg).await?;
    let pending = inst.kind.pending(&db).await?;
    if pending > 0 {
        anyhow::bail!("the orchestrator database has {pending} pending migrations");
    }
    let ledger =
        dsr_orchestrator::ledger::Ledger::new(db, dsr_domain::deadline::HolidayCalendar::swedish());
    let n = ledger.verify_audit().await?;
    println!("audit trail intact: {n} events, every hash and link verified");
    Ok(())
}

async fn serve(cfg: &Config, kind: ServiceKind) -> anyhow::Result<()> {
    if kind == ServiceKind::Portal {
        let router = portal::router(cfg)?;
        let signal = dsr_server::shutdown_signal();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signal.await;
            let _ = stop_tx.send(true);
        });
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let drain = std::time::Duration::from_secs(cfg.server.drain_delay_secs);
        // The probes ask gRPC health on their port, as for every service:
        // NOT_SERVING from SIGTERM on, while the pages still answer for
        // the drain delay.
        if let Some(addr) = cfg.server_config(kind).health_listen {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on the health port {addr}"))?;
            tokio::spawn(dsr_server::serve_health(l, "dsr-portal", drain, stopped()));
        }
        let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
        tracing::info!(addr = %cfg.server.listen, "privacy centre serving");
        let until = stopped();
        return portal::serve(listener, router, async move {
            until.await;
            tokio::time::sleep(drain).await;
        })
        .await;
    }
    let trust = Trust::from_config(cfg, &[], &dsr_auth::Grants::default())?;
    trust.keep_keys_fresh().await;
    let schema = if cfg.database.migrate_on_start {
        Schema::Migrate
    } else {
        Schema::Require
    };
    let inst = Instance::from_config(kind, cfg)?;
    let set = services::prepare(&inst, cfg, &trust, schema).await?;
    // Handlers first: a SIGTERM as soon as the port answers still drains.
    let stop = dsr_server::shutdown_signal();
    let listener = tokio::net::TcpListener::bind(&cfg.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.server.listen))?;
    dsr_server::serve(listener, set, &cfg.server_config(kind), stop).await?;
    Ok(())
}

async fn migrate(cfg: &Config, kinds: &[ServiceKind]) -> anyhow::Result<()> {
    // Without a list: the registry, and the data system when one is configured.
    let instances: Vec<Instance> = if kinds.is_empty() {
        let mut v = vec![Instance::registry()];
        v.extend(Instance::from_config(ServiceKind::SystemSql, cfg).ok());
        v
    } else {
        kinds
            .iter()
            .map(|k| Instance::from_config(*k, cfg))
            .collect::<anyhow::Result<_>>()?
    };
    for inst in instances {
        if matches!(inst.kind, ServiceKind::Discovery | ServiceKind::Portal) {
            continue;
        }
        let db = inst.connect(cfg).await?;
        let applied = inst
            .kind
            .migrate(&db)
            .await
            .with_context(|| format!("{}: migration failed", inst.name))?;
        tracing::info!(service = %inst.name, applied, "migrated");
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
async fn seed(cfg: &Config, args: SeedArgs) -> anyhow::Result<()> {
    let r = dsr_system_sql::reference::Reference::parse(&args.system).with_context(|| {
        format!(
            "unknown reference system {:?}: crm, print-mail or legal",
            args.system
        )
    })?;
    let inst = Instance::reference(r);
    let db = inst.connect(cfg).await?;
    inst.kind.migrate(&db).await?;
    r.create_schema(&db).await?;
    let rows = r
        .seed(
            &db,
            args.subjects,
            args.seed,
            args.extra_letters,
            crate::services::clock(cfg).today(),
        )
        .await
        .with_context(|| {
            format!(
                "{}: cannot seed (a database that already holds data is not seeded twice)",
                r.id()
            )
        })?;
    for (table, n) in rows {
        println!("{table:<24} {n}");
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
fn token(cfg: &Config, args: TokenArgs) -> anyhow::Result<()> {
    let key = dev::load_dev_key(&cfg.data_dir)?;
    let signer =
        dsr_auth::TokenSigner::from_ed25519_pem(&key.private_pem, &key.kid, dev::DEV_ISSUER)?;
    let scopes = if args.scopes.is_empty() {
        services::people_scopes()
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    } else {
        args.scopes
    };
    let audiences = if args.audiences.is_empty() {
        services::all_audiences()
    } else {
        args.audiences
    };
    let token = signer.mint(&dsr_auth::TokenRequest {
        subject: args.subject,
        audiences,
        scopes,
        ttl: Duration::from_secs(args.ttl_secs),
    })?;
    println!("{token}");
    Ok(())
}
