//! `dsr keys create`: every key a deployment of the mesh needs, made once,
//! laid out as the Kubernetes Secrets and the trust ConfigMap expect them
//! (k8s/README.md).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub(crate) struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create the keys that are missing under a directory (existing ones are
    /// kept) and write the public JWKS the services trust.
    Create {
        /// Where: one folder per Secret (`orchestrator/`, `discovery/`, …,
        /// `shared/`) and `trust/` for the ConfigMap.
        #[arg(long)]
        out: PathBuf,
        /// The portals' identity provider's JWKS, added to the trusted keys.
        #[arg(long)]
        portal_jwks: Option<PathBuf>,
        /// Data systems served by the generic connector (a receipt key each).
        #[arg(long = "system", default_value = "crm")]
        systems: Vec<String>,
    },
}

/// The services that call others with service tokens, and their issuers.
const CALLERS: [(&str, &str); 4] = [
    ("orchestrator", "dsr-orchestrator"),
    ("discovery", "dsr-discovery"),
    ("export", "dsr-export"),
    ("erasure", "dsr-erasure"),
];

#[allow(clippy::print_stdout)]
pub(crate) fn run(args: KeysArgs) -> anyhow::Result<()> {
    let KeysCommand::Create {
        out,
        portal_jwks,
        systems,
    } = args.command;
    let mut trusted: Vec<serde_json::Value> = Vec::new();
    for (dir, issuer) in CALLERS {
        let path = out.join(dir).join("service.pem");
        ensure_dir(&path)?;
        let (_, jwks) = dsr_auth::TokenSigner::from_key_file(&path, None, issuer)
            .with_context(|| format!("cannot create {}", path.display()))?;
        trusted.extend(keys_of(&jwks)?);
    }
    if let Some(p) = &portal_jwks {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        dsr_auth::KeySet::from_jwks_json(&text)
            .with_context(|| format!("{}: not a usable JWKS", p.display()))?;
        trusted.extend(keys_of(&text)?);
    }
    let signing = out.join("identity").join("signing.pem");
    ensure_dir(&signing)?;
    let issuer = dsr_identity::tokens::TokenIssuer::load_or_create(
        &signing,
        chrono::Duration::seconds(900),
    )?;
    for (dir, file) in [
        ("identity", "hmac.key"),
        ("export", "master.key"),
        ("erasure", "tombstone.key"),
        ("shared", "redaction.key"),
    ] {
        let path = out.join(dir).join(file);
        ensure_dir(&path)?;
        crate::dev::secret_key("", &path)?;
    }
    for system in &systems {
        let path = out.join(format!("system-{system}")).join("receipt.pem");
        ensure_dir(&path)?;
        dsr_connector::signing::ReceiptSigner::load_or_create(&path)?;
    }
    let trust = out.join("trust");
    std::fs::create_dir_all(&trust)?;
    std::fs::write(
        trust.join("jwks.json"),
        serde_json::to_string_pretty(&serde_json::json!({ "keys": trusted }))?,
    )?;
    std::fs::write(trust.join("identity-jwks.json"), issuer.jwks())?;
    println!(
        "keys under {}; create the Secrets and the ConfigMap with:",
        out.display()
    );
    let o = out.display();
    for (dir, _) in CALLERS {
        println!("  kubectl create secret generic dsr-{dir}-keys --from-file={o}/{dir}");
    }
    println!("  kubectl create secret generic dsr-identity-keys --from-file={o}/identity");
    for system in &systems {
        println!(
            "  kubectl create secret generic dsr-system-{system}-keys --from-file={o}/system-{system}"
        );
    }
    println!("  kubectl create secret generic dsr-shared-keys --from-file={o}/shared");
    println!("  kubectl create configmap dsr-trust --from-file={o}/trust");
    if portal_jwks.is_none() {
        println!("(no --portal-jwks: the portals' identity provider is not trusted yet)");
    }
    println!(
        "Keep {o} with the database backups: the tombstone key matches erased people to replay."
    );
    Ok(())
}

fn ensure_dir(file: &Path) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(())
}

fn keys_of(jwks: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let doc: serde_json::Value = serde_json::from_str(jwks)?;
    Ok(doc
        .get("keys")
        .and_then(|k| k.as_array())
        .cloned()
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_makes_every_key_once_and_a_jwks_that_verifies_service_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().to_path_buf();
        let args = || KeysArgs {
            command: KeysCommand::Create {
                out: out.clone(),
                portal_jwks: None,
                systems: vec!["crm".into()],
            },
        };
        run(args()).unwrap();
        let first = std::fs::read(out.join("erasure/tombstone.key")).unwrap();
        let jwks = std::fs::read_to_string(out.join("trust/jwks.json")).unwrap();
        // Run again: nothing is replaced.
        run(args()).unwrap();
        assert_eq!(
            std::fs::read(out.join("erasure/tombstone.key")).unwrap(),
            first
        );
        assert_eq!(
            std::fs::read_to_string(out.join("trust/jwks.json")).unwrap(),
            jwks
        );
        for f in [
            "orchestrator/service.pem",
            "discovery/service.pem",
            "export/service.pem",
            "export/master.key",
            "identity/signing.pem",
            "identity/hmac.key",
            "system-crm/receipt.pem",
            "shared/redaction.key",
            "trust/identity-jwks.json",
        ] {
            assert!(out.join(f).is_file(), "{f}");
        }
        // The trusted set verifies a token the erasure key signs.
        let keys = dsr_auth::KeySet::from_jwks_json(&jwks).unwrap();
        assert_eq!(keys.len(), 4);
        let (signer, _) = dsr_auth::TokenSigner::from_key_file(
            &out.join("erasure/service.pem"),
            None,
            "dsr-erasure",
        )
        .unwrap();
        let token = signer
            .mint(&dsr_auth::TokenRequest {
                subject: "service:dsr-erasure".into(),
                audiences: vec!["crm".into()],
                scopes: vec!["system:write".into()],
                ttl: std::time::Duration::from_secs(60),
            })
            .unwrap();
        let v = dsr_auth::Validator::new(
            std::sync::Arc::new(keys),
            dsr_auth::ValidatorConfig {
                issuers: vec!["dsr-erasure".into()],
                audience: "crm".into(),
                leeway_secs: 30,
            },
        );
        assert!(v.validate(&token).is_ok());
    }
}
