//! The data directory's development material: the signing key that local
//! tools mint tokens with, its JWKS, and the redaction key.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Issuer of development tokens.
pub(crate) const DEV_ISSUER: &str = "dsr-dev";

const KEY_FILE: &str = "dev-signing-key.pem";
const JWKS_FILE: &str = "dev-jwks.json";
const META_FILE: &str = "dev-signing-key.json";
const REDACTION_FILE: &str = "redaction.key";

#[derive(Serialize, Deserialize)]
struct Meta {
    kid: String,
    issuer: String,
}

/// The development signing key of a data directory.
#[derive(Debug)]
pub(crate) struct DevKey {
    pub(crate) kid: String,
    pub(crate) private_pem: String,
    pub(crate) jwks_path: PathBuf,
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    dsr_auth::write_private(path, contents.as_bytes())
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Creates the development key in `dir` unless it exists; returns it.
pub(crate) fn ensure_dev_key(dir: &Path) -> anyhow::Result<DevKey> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    if !dir.join(KEY_FILE).exists() {
        let kid = format!("dev-{}", &uuid_like()[..8]);
        let pair = dsr_auth::generate_ed25519(&kid)?;
        write_private(&dir.join(KEY_FILE), &pair.private_pem)?;
        std::fs::write(dir.join(JWKS_FILE), &pair.jwks_json)?;
        std::fs::write(
            dir.join(META_FILE),
            serde_json::to_string_pretty(&Meta {
                kid,
                issuer: DEV_ISSUER.into(),
            })?,
        )?;
    }
    load_dev_key(dir)
}

/// Loads the development key of `dir`.
pub(crate) fn load_dev_key(dir: &Path) -> anyhow::Result<DevKey> {
    let meta_path = dir.join(META_FILE);
    let meta: Meta =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).with_context(|| {
            format!(
                "no development key in {} (run `dsr up` once to create it)",
                dir.display()
            )
        })?)
        .with_context(|| format!("{} is not valid", meta_path.display()))?;
    let private_pem = std::fs::read_to_string(dir.join(KEY_FILE))
        .with_context(|| format!("cannot read {}", dir.join(KEY_FILE).display()))?;
    Ok(DevKey {
        kid: meta.kid,
        private_pem,
        jwks_path: dir.join(JWKS_FILE),
    })
}

/// The services of the mesh that call others, each with its own key under
/// `dsr up`.
pub(crate) const SERVICES_THAT_CALL: [&str; 6] = [
    "discovery",
    "export",
    "erasure",
    "orchestrator",
    "portal",
    "console",
];

/// The key file and issuer `dsr up` gives service `name` (`keys/<name>-
/// service.pem`, created once, issuer `dsr-<name>`); its JWKS is written to
/// `<name>-jwks.json` for the others to trust.
pub(crate) fn service_key(dir: &Path, name: &str) -> anyhow::Result<(String, String)> {
    let issuer = format!("dsr-{name}");
    let key_file = dir.join(format!("keys/{name}-service.pem"));
    let (_, jwks) = dsr_auth::TokenSigner::from_key_file(&key_file, None, &issuer)?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(format!("{name}-jwks.json")), jwks)?;
    Ok((key_file.display().to_string(), issuer))
}

/// `given` when set, else a development token minted with the data
/// directory's key for `subject`, `audiences` and `scopes`.
pub(crate) fn token_or_mint(
    dir: &Path,
    given: Option<String>,
    subject: &str,
    audiences: Vec<String>,
    scopes: Vec<String>,
    ttl: std::time::Duration,
) -> anyhow::Result<String> {
    if let Some(t) = given {
        return Ok(t);
    }
    let key = load_dev_key(dir).context("no --token given")?;
    Ok(
        dsr_auth::TokenSigner::from_ed25519_pem(&key.private_pem, &key.kid, DEV_ISSUER)?.mint(
            &dsr_auth::TokenRequest {
                subject: subject.to_owned(),
                audiences,
                scopes,
                ttl,
            },
        )?,
    )
}

/// The redaction key: from `file` (64 hex digits) when given, else kept in
/// the data directory (created once), so hashes in logs stay comparable
/// across restarts.
pub(crate) fn redaction_key(file: &str, dir: &Path) -> anyhow::Result<[u8; 32]> {
    secret_key(file, &dir.join(REDACTION_FILE))
}

/// A 32-byte secret kept as 64 hex digits: from `file` when given (it must
/// exist), else from `default`, created with a random key the first time.
pub(crate) fn secret_key(file: &str, default: &Path) -> anyhow::Result<[u8; 32]> {
    let path = if file.is_empty() {
        default.to_path_buf()
    } else {
        PathBuf::from(file)
    };
    if file.is_empty() && !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        write_private(&path, &format!("{}\n", uuid_like()))?;
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let bytes = hex_decode(text.trim())
        .with_context(|| format!("{} must hold 64 hex digits", path.display()))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{} must hold 64 hex digits", path.display()))
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// 64 random hex digits.
fn uuid_like() -> String {
    let a = uuid::Uuid::new_v4().simple().to_string();
    let b = uuid::Uuid::new_v4().simple().to_string();
    format!("{a}{b}")
}
