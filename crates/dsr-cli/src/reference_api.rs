//! `dsr reference-api`: the reference REST system (a customer-survey
//! platform) that the HTTP connector's reference manifest
//! (`services/dsr-system-sql/reference/survey-http.yaml`) describes. A
//! vendor's API for tests and demonstrations, not part of the mesh.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use dsr_system_sql::http::reference_api::{self, Data, Settings};

/// Arguments of `dsr reference-api`.
#[derive(Debug, Args)]
pub(crate) struct ReferenceApiArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:50061")]
    listen: String,
    /// The file the data is kept in (created, and seeded, when missing;
    /// default: `<data dir>/survey-api.json`).
    #[arg(long)]
    data: Option<PathBuf>,
    /// People the synthetic data is drawn from (every third of Intrum
    /// Sverige AB's took a survey).
    #[arg(long, default_value_t = 1000)]
    subjects: usize,
    /// The generator's seed (the same people as `dsr seed` with this seed).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Items per page of a list.
    #[arg(long, default_value_t = 50)]
    page_size: usize,
    /// The API key every call must carry in `X-Api-Key`.
    #[arg(long, env = "SURVEY_API_KEY", hide_env_values = true)]
    api_key: String,
}

/// Serves the API until interrupted.
#[allow(clippy::print_stdout)]
pub(crate) async fn run(cfg: &crate::config::Config, args: ReferenceApiArgs) -> anyhow::Result<()> {
    if args.api_key.trim().len() < 16 {
        anyhow::bail!("--api-key (SURVEY_API_KEY): at least 16 characters");
    }
    let file = args
        .data
        .unwrap_or_else(|| cfg.data_dir.join("survey-api.json"));
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let settings = Settings {
        api_key: args.api_key,
        page_size: args.page_size.clamp(1, 1000),
        file: Some(file.clone()),
    };
    let data = reference_api::load(&settings, || Data::seeded(args.subjects, args.seed))
        .with_context(|| format!("cannot read {}", file.display()))?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!(
        "survey platform API on http://{}/v1 ({} respondents, data in {})",
        listener.local_addr()?,
        data.respondents.len(),
        file.display()
    );
    let app = reference_api::router(data, settings);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
