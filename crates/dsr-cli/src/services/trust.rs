//! Whom the services trust: the issuers of the tokens they accept, each
//! with its keys (a file, inline, or fetched and refreshed) and its grant.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use dsr_auth::{Grants, KeySet, Validator, ValidatorConfig};
use dsr_transfer_registry as transfer;

use super::*;
use crate::config::Config;

/// Verification keys and issuers for incoming tokens, and the
/// authorisation policy.
#[derive(Clone, Debug)]
pub(crate) struct Trust {
    /// Every key, the fetched ones included: what validators use.
    pub(crate) keys: dsr_auth::SharedKeys,
    pub(crate) issuers: Vec<String>,
    pub(crate) leeway_secs: u64,
    pub(crate) grants: Arc<Grants>,
    /// The keys from files and inline documents.
    fixed: Arc<KeySet>,
    /// Issuers whose keys are fetched: (where, its `jwks_uri`, issuer).
    remote: Vec<(String, String, String)>,
    refresh: Duration,
}

/// What the mesh's own services' tokens may carry: each only the scopes it
/// needs for the calls it makes. Nothing else may hold `system:write`.
pub(crate) fn mesh_grants() -> Grants {
    use dsr_system_sql::grpc as sys;
    Grants::default()
        .grant(
            "dsr-orchestrator",
            [
                dsr_identity::grpc::SCOPE_VERIFY,
                dsr_identity::grpc::SCOPE_NOTIFY,
                dsr_discovery::grpc::SCOPE_LOCATE,
                dsr_export::grpc::SCOPE_BUILD,
                dsr_erasure::grpc::SCOPE_EXECUTE,
            ],
        )
        .grant("dsr-discovery", [sys::SCOPE_DESCRIBE, sys::SCOPE_READ])
        // The privacy centre acts for one person per session: a portal's
        // scopes, never a case handler's.
        .grant(
            dsr_portal::ISSUER,
            [
                dsr_orchestrator::grpc::SCOPE_SUBMIT,
                dsr_orchestrator::grpc::SCOPE_READ,
                dsr_orchestrator::grpc::incidents::SCOPE_REPORT,
                dsr_identity::grpc::SCOPE_VERIFY,
                dsr_export::grpc::SCOPE_READ,
            ],
        )
        // The console acts for the signed-in case handler: a case handler's
        // scopes (each token carries only those the handler's roles give),
        // never a data system's.
        .grant(
            "dsr-console",
            dsr_portal::console::CASE_HANDLER_SCOPES.iter().copied(),
        )
        .grant(
            "dsr-export",
            [
                sys::SCOPE_DESCRIBE,
                sys::SCOPE_READ,
                transfer::grpc::SCOPE_READ,
            ],
        )
        .grant(
            "dsr-erasure",
            [
                sys::SCOPE_DESCRIBE,
                sys::SCOPE_READ,
                sys::SCOPE_WRITE,
                transfer::grpc::SCOPE_READ,
            ],
        )
}

/// The scopes a person's or a case handler's token may carry (portals and
/// the CLI): everything but the data systems' own, which only the mesh's
/// services hold, and sending letters, which only the orchestrator does (the
/// identity service is no relay for anyone's mail).
pub(crate) fn people_scopes() -> Vec<&'static str> {
    ALL_SCOPES
        .iter()
        .copied()
        .filter(|s| !s.starts_with("system:") && *s != dsr_identity::grpc::SCOPE_NOTIFY)
        .collect()
}

impl Trust {
    /// The configured keys, each bound to its issuer (`auth.trusted`, or
    /// `auth.jwks_file`/`jwks` for a single `auth.issuers` entry), plus
    /// `extra` (JWKS file, issuer) pairs, under the mesh's grants, the
    /// configured ones and `extra_grants`.
    pub(crate) fn from_config(
        cfg: &Config,
        extra: &[(&Path, &str)],
        extra_grants: &Grants,
    ) -> anyhow::Result<Self> {
        let mut keys = KeySet::default();
        let mut issuers: Vec<String> = Vec::new();
        let mut docs: Vec<(String, String, String)> = Vec::new();
        let mut legacy: Vec<(String, String)> = Vec::new();
        if !cfg.auth.jwks_file.is_empty() {
            let text = std::fs::read_to_string(&cfg.auth.jwks_file)
                .with_context(|| format!("cannot read auth.jwks_file {}", cfg.auth.jwks_file))?;
            legacy.push((format!("auth.jwks_file {}", cfg.auth.jwks_file), text));
        }
        if !cfg.auth.jwks.is_empty() {
            legacy.push(("auth.jwks".into(), cfg.auth.jwks.clone()));
        }
        match (legacy.is_empty(), cfg.auth.issuers.as_slice()) {
            (true, _) => issuers.extend(cfg.auth.issuers.iter().cloned()),
            (false, [one]) => {
                docs.extend(legacy.into_iter().map(|(w, t)| (w, t, one.clone())));
                issuers.push(one.clone());
            }
            (false, []) => bail!("invalid configuration: auth.issuers is empty"),
            (false, _) => bail!(
                "invalid configuration: auth.jwks_file/auth.jwks hold the keys of several auth.issuers, so one issuer's key could sign for another: give each issuer its own keys in [[auth.trusted]] (issuer, jwks_file)"
            ),
        }
        let mut scope_claims = Vec::new();
        let mut remote = Vec::new();
        for (i, t) in cfg.auth.trusted.iter().enumerate() {
            if t.issuer.trim().is_empty() {
                bail!("invalid configuration: auth.trusted[{i}].issuer is empty");
            }
            match (
                t.jwks_file.is_empty(),
                t.jwks.is_empty(),
                t.jwks_uri.is_empty(),
            ) {
                (false, true, true) => {
                    let text = std::fs::read_to_string(&t.jwks_file).with_context(|| {
                        format!("cannot read auth.trusted[{i}].jwks_file {}", t.jwks_file)
                    })?;
                    docs.push((format!("auth.trusted[{i}]"), text, t.issuer.clone()));
                }
                (true, false, true) => {
                    docs.push((
                        format!("auth.trusted[{i}]"),
                        t.jwks.clone(),
                        t.issuer.clone(),
                    ));
                }
                (true, true, false) => {
                    let ok = reqwest::Url::parse(&t.jwks_uri)
                        .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.has_host());
                    if !ok {
                        bail!(
                            "invalid configuration: auth.trusted[{i}].jwks_uri must be an https:// URL, e.g. https://login.bolaget.se/.well-known/jwks.json"
                        );
                    }
                    remote.push((
                        format!("auth.trusted[{i}].jwks_uri"),
                        t.jwks_uri.clone(),
                        t.issuer.clone(),
                    ));
                }
                _ => bail!(
                    "invalid configuration: auth.trusted[{i}] needs exactly one of jwks_file, jwks or jwks_uri"
                ),
            }
            issuers.push(t.issuer.clone());
            let mut read = Vec::new();
            for (j, c) in t.scope_claims.iter().enumerate() {
                read.push(dsr_auth::ScopeClaim::parse(c).with_context(|| {
                    format!(
                        "invalid configuration: auth.trusted[{i}].scope_claims[{j}]: {c:?} is none of scope, scp, roles"
                    )
                })?);
            }
            if !read.is_empty() {
                scope_claims.push((t.issuer.clone(), read));
            }
        }
        for (path, issuer) in extra {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            docs.push((path.display().to_string(), text, (*issuer).to_owned()));
            issuers.push((*issuer).to_owned());
        }
        for (what, text, issuer) in docs {
            let set = KeySet::from_jwks_json(&text)
                .with_context(|| format!("invalid configuration: {what}"))?
                .bound_to(&issuer);
            keys.merge(set)
                .with_context(|| format!("invalid configuration: {what}"))?;
        }
        if keys.is_empty() && remote.is_empty() {
            bail!(
                "invalid configuration: no token verification keys (set auth.trusted, or auth.jwks_file with one auth.issuers entry)"
            );
        }
        if cfg.auth.jwks_refresh_secs == 0 {
            bail!("invalid configuration: auth.jwks_refresh_secs must be at least 1");
        }
        if issuers.is_empty() {
            bail!("invalid configuration: auth.issuers is empty");
        }
        issuers.sort();
        issuers.dedup();
        let mut configured = extra_grants.clone();
        for (issuer, scopes) in &cfg.auth.grants {
            if let Some(s) = scopes.iter().find(|s| !ALL_SCOPES.contains(&s.as_str())) {
                bail!("invalid configuration: auth.grants.\"{issuer}\": unknown scope {s}");
            }
            configured = configured.grant(issuer, scopes.iter().cloned());
        }
        // A configured grant replaces the built-in one.
        let builtin = mesh_grants();
        let mut grants = Grants::default();
        for issuer in builtin.issuers().chain(configured.issuers()) {
            let scopes = configured.of(issuer).or(builtin.of(issuer));
            grants = grants.grant(issuer, scopes.into_iter().flatten().cloned());
        }
        for (issuer, read) in scope_claims {
            grants = grants.scopes_in(&issuer, read);
        }
        if let Some(missing) = issuers.iter().find(|i| grants.of(i).is_none()) {
            bail!(
                "invalid configuration: auth.grants has no entry for issuer {missing}: list the scopes its tokens may carry"
            );
        }
        let fixed = Arc::new(keys);
        Ok(Self {
            keys: dsr_auth::SharedKeys::new(fixed.clone()),
            issuers,
            leeway_secs: cfg.auth.leeway_secs,
            grants: Arc::new(grants),
            fixed,
            remote,
            refresh: Duration::from_secs(cfg.auth.jwks_refresh_secs),
        })
    }

    /// Fetches the keys of the issuers trusted by `jwks_uri` now, then keeps
    /// them fresh in the background: again every `auth.jwks_refresh_secs`,
    /// sooner (at most every 30 s) after a token named a key id not yet
    /// known, every 30 s while a fetch fails; the last good keys of each
    /// issuer are kept meanwhile. Nothing to do without such issuers.
    pub(crate) async fn keep_keys_fresh(&self) {
        if self.remote.is_empty() {
            return;
        }
        let mut fetcher = KeyFetcher {
            keys: self.keys.clone(),
            fixed: self.fixed.clone(),
            remote: self.remote.clone(),
            fetched: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        };
        let refresh = self.refresh;
        let mut ok = fetcher.fetch().await;
        tokio::spawn(async move {
            const SOONEST: Duration = Duration::from_secs(30);
            let tick = refresh.min(Duration::from_secs(5));
            let mut last = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(tick).await;
                let since = last.elapsed();
                let due =
                    since >= refresh || (since >= SOONEST && (!ok || fetcher.keys.take_missed()));
                if due {
                    ok = fetcher.fetch().await;
                    last = tokio::time::Instant::now();
                }
            }
        });
    }

    pub(crate) fn validator(&self, audience: &str) -> Arc<Validator> {
        Arc::new(Validator::with_shared_keys(
            self.keys.clone(),
            ValidatorConfig {
                issuers: self.issuers.clone(),
                audience: audience.to_owned(),
                leeway_secs: self.leeway_secs,
                grants: Some(self.grants.clone()),
            },
        ))
    }
}

/// Fetches the keys of issuers trusted by `jwks_uri` and puts them, with
/// the fixed ones, into the keys validators share.
struct KeyFetcher {
    keys: dsr_auth::SharedKeys,
    fixed: Arc<KeySet>,
    /// (where, uri, issuer), as in [`Trust`].
    remote: Vec<(String, String, String)>,
    /// The last good keys of each remote issuer, in `remote`'s order.
    fetched: Vec<Option<KeySet>>,
    http: reqwest::Client,
}

impl KeyFetcher {
    /// One round: `true` when every issuer's keys were fetched.
    async fn fetch(&mut self) -> bool {
        self.fetched.resize_with(self.remote.len(), || None);
        let mut all = true;
        for (i, (what, uri, issuer)) in self.remote.iter().enumerate() {
            match fetch_jwks(&self.http, uri).await {
                Ok(set) => self.fetched[i] = Some(set.bound_to(issuer)),
                Err(e) => {
                    all = false;
                    tracing::warn!(at = %what, issuer = %issuer, error = %e, "cannot fetch an issuer's keys; keeping the last ones");
                }
            }
        }
        let mut keys = (*self.fixed).clone();
        for set in self.fetched.iter().flatten() {
            if let Err(e) = keys.merge(set.clone()) {
                tracing::warn!(error = %e, "fetched keys clash with configured ones; not used");
                return false;
            }
        }
        self.keys.replace(keys);
        all
    }
}

/// The JWKS document at `uri`.
async fn fetch_jwks(http: &reqwest::Client, uri: &str) -> anyhow::Result<KeySet> {
    let answer = http.get(uri).send().await?.error_for_status()?;
    let text = answer.text().await?;
    Ok(KeySet::from_jwks_json(&text)?)
}
