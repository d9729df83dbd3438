//! `dsr verify start|complete`: a one-time-code verification from the
//! command line (local use: under `dsr up` the code lands in the outbox).

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use dsr_proto::common::v1 as common;
use dsr_proto::identity::v1 as pb;
use dsr_proto::identity::v1::identity_verification_client::IdentityVerificationClient;
use tonic::transport::Channel;

use crate::config::Config;
use crate::dev;

/// Arguments of `dsr verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The identity service (default: `dsr up`'s, base port + 4).
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// Bearer token (default: minted from the data directory's development key).
    #[arg(long, env = "DSR_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: VerifyCommand,
}

#[derive(Debug, Subcommand)]
enum VerifyCommand {
    /// Send a code to an email address or phone number.
    Start {
        /// The email address.
        #[arg(long, conflicts_with = "phone", required_unless_present = "phone")]
        email: Option<String>,
        /// The phone number.
        #[arg(long)]
        phone: Option<String>,
        /// Language of the message: sv or en.
        #[arg(long, default_value = "sv")]
        language: String,
    },
    /// Complete a challenge with the code; prints the verification token.
    Complete {
        /// The challenge id from `start`.
        #[arg(long)]
        challenge: String,
        /// The code.
        #[arg(long)]
        code: String,
    },
}

/// Runs `dsr verify`.
#[allow(clippy::print_stdout)]
pub(crate) async fn run(cfg: &Config, args: VerifyArgs) -> anyhow::Result<()> {
    let endpoint = args.endpoint.unwrap_or_else(|| {
        format!(
            "http://{}:{}",
            cfg.up.connect_host(),
            cfg.up.base_port.saturating_add(4)
        )
    });
    let token = dev::token_or_mint(
        &cfg.data_dir,
        args.token,
        "dsr-cli",
        vec![dsr_identity::SERVICE_NAME.into()],
        vec![dsr_identity::grpc::SCOPE_VERIFY.into()],
        Duration::from_secs(300),
    )?;
    let channel = Channel::from_shared(endpoint.clone())
        .context("invalid --endpoint")?
        .connect()
        .await
        .with_context(|| format!("cannot reach the identity service at {endpoint}"))?;
    let mut client = IdentityVerificationClient::new(channel);
    fn req<T>(token: &str, m: T) -> anyhow::Result<tonic::Request<T>> {
        let mut r = tonic::Request::new(m);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        Ok(r)
    }
    match args.command {
        VerifyCommand::Start {
            email,
            phone,
            language,
        } => {
            let (kind, method, value) = match (email, phone) {
                (Some(e), _) => (common::IdentityType::Email, pb::Method::EmailCode, e),
                (None, Some(p)) => (common::IdentityType::Phone, pb::Method::SmsCode, p),
                (None, None) => anyhow::bail!("give --email or --phone"),
            };
            let resp = client
                .start_verification(req(
                    &token,
                    pb::StartVerificationRequest {
                        claimed: vec![common::Identity {
                            r#type: kind as i32,
                            format: common::IdentityFormat::Raw as i32,
                            value,
                            hmac_key_id: String::new(),
                        }],
                        method: method as i32,
                        idp_assertion: String::new(),
                        attestation: None,
                        language,
                        dry_run: false,
                    },
                )?)
                .await
                .map_err(|s| crate::exit::explain(&s))?
                .into_inner();
            println!("{}", resp.challenge_id);
            eprintln!(
                "challenge started; the code was sent (under `dsr up`: {}/outbox)",
                cfg.data_dir.display()
            );
        }
        VerifyCommand::Complete { challenge, code } => {
            let resp = client
                .complete_verification(req(
                    &token,
                    pb::CompleteVerificationRequest {
                        challenge_id: challenge,
                        code,
                    },
                )?)
                .await
                .map_err(|s| crate::exit::explain(&s))?
                .into_inner();
            let t = resp.token.context("empty answer")?;
            println!("{}", t.jwt);
            eprintln!(
                "verified: assurance {}",
                pb::Assurance::try_from(t.assurance).map_or("?", |a| a.as_str_name())
            );
        }
    }
    Ok(())
}
