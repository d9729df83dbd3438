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
const CALLERS: [(&str, &str); 6] = [
    ("orchestrator", "dsr-orchestrator"),
    ("discovery", "dsr-discovery"),
    ("export", "dsr-export"),
    ("erasure", "dsr-erasure"),
    ("portal", "dsr-portal"),
    ("console", "dsr-console"),
];

#[allow(clippy::print_stdout)]
pub(crate) fn run(args: KeysArgs) -> anyhow::Result<()> {
    let KeysCommand::Create {
        out,
        portal_jwks,
        systems,
    } = args.command;
    // Each caller's public keys in a file of its own: the services trust
    // each file for its issuer only ([[auth.trusted]] in config/dsr.toml).
    let mut trusted: Vec<(String, serde_json::Value)> = Vec::new();
    for (dir, issuer) in CALLERS {
        let path = out.join(dir).join("service.pem");
        ensure_dir(&path)?;
        let (_, jwks) = dsr_auth::TokenSigner::from_key_file(&path, None, issuer)
            .with_context(|| format!("cannot create {}", path.display()))?;
        trusted.push((
            format!("{issuer}-jwks.json"),
            serde_json::json!({ "keys": keys_of(&jwks)? }),
        ));
    }
    if let Some(p) = &portal_jwks {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        dsr_auth::KeySet::from_jwks_json(&text)
            .with_context(|| format!("{}: not a usable JWKS", p.display()))?;
        trusted.push((
            "portal-jwks.json".into(),
            serde_json::json!({ "keys": keys_of(&text)? }),
        ));
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
        ("portal", "person.key"),
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
    for (file, doc) in &trusted {
        std::fs::write(trust.join(file), serde_json::to_string_pretty(doc)?)?;
    }
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
        println!(
            "(no --portal-jwks: config/dsr.toml trusts trust/portal-jwks.json for the portals' identity provider; give it, or drop that entry)"
        );
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
    fn create_makes_every_key_once_and_a_jwks_per_issuer_that_k8s_config_trusts() {
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
        let jwks = std::fs::read_to_string(out.join("trust/dsr-erasure-jwks.json")).unwrap();
        // Run again: nothing is replaced.
        run(args()).unwrap();
        assert_eq!(
            std::fs::read(out.join("erasure/tombstone.key")).unwrap(),
            first
        );
        assert_eq!(
            std::fs::read_to_string(out.join("trust/dsr-erasure-jwks.json")).unwrap(),
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
            "portal/person.key",
            "trust/identity-jwks.json",
            "trust/dsr-orchestrator-jwks.json",
            "trust/dsr-discovery-jwks.json",
            "trust/dsr-export-jwks.json",
        ] {
            assert!(out.join(f).is_file(), "{f}");
        }
        // The shipped Kubernetes settings, pointed at these files, trust the
        // erasure key for the erasure service only and let it write to a
        // system; discovery's key cannot.
        let text = include_str!("../../../k8s/base/config/dsr.toml")
            .replace("/etc/dsr/trust", &out.join("trust").display().to_string());
        let mut cfg: crate::config::Config = toml::from_str::<toml::Value>(&text)
            .ok()
            .and_then(|over| {
                let mut v = toml::Value::try_from(crate::config::Config::default()).ok()?;
                crate::config::merge(&mut v, over);
                v.try_into().ok()
            })
            .expect("k8s/base/config/dsr.toml is a valid configuration");
        // The portals' IdP keys come from `--portal-jwks`, not given here.
        cfg.auth.trusted.retain(|t| t.issuer.starts_with("dsr-"));
        cfg.auth.grants.clear();
        let trust =
            crate::services::Trust::from_config(&cfg, &[], &dsr_auth::Grants::default()).unwrap();
        let v = trust.validator("crm");
        let mint = |who: &str, scope: &str| {
            let (signer, _) = dsr_auth::TokenSigner::from_key_file(
                &out.join(format!("{who}/service.pem")),
                None,
                &format!("dsr-{who}"),
            )
            .unwrap();
            signer
                .mint(&dsr_auth::TokenRequest {
                    subject: format!("service:dsr-{who}"),
                    audiences: vec!["crm".into()],
                    scopes: vec![scope.into()],
                    ttl: std::time::Duration::from_secs(60),
                })
                .unwrap()
        };
        assert!(v.validate(&mint("erasure", "system:write")).is_ok());
        assert_eq!(
            v.validate(&mint("discovery", "system:write")),
            Err(dsr_auth::Error::NotGranted)
        );
    }
}
