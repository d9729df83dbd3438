//! Configuration: defaults, then a TOML file, then `DSR_`-prefixed
//! environment variables, then command-line flags; validated before anything
//! starts. A nested key is written with `__` in the environment:
//! `DSR_DATABASE__URL`, `DSR_SERVER__CONCURRENCY_LIMIT`. Values are read as
//! TOML when they parse (`30`, `true`, `["a","b"]`) and as strings otherwise.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Where SQLite files, development keys and outboxes live.
    pub data_dir: PathBuf,
    /// Log filter (`RUST_LOG` syntax).
    pub log: String,
    /// auto, pretty or json.
    pub log_format: String,
    /// OTLP/gRPC endpoint for traces; empty for none. Defaults to
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub otlp_endpoint: String,
    /// A file holding the 32-byte redaction key (hex); empty: a key is kept in
    /// the data directory.
    pub redaction_key_file: String,
    pub server: ServerSection,
    pub client: ClientSection,
    pub auth: AuthSection,
    pub database: DatabaseSection,
    pub up: UpSection,
    pub transfer_registry: TransferRegistrySection,
    pub system_sql: SystemSqlSection,
    pub identity: IdentitySection,
    pub discovery: DiscoverySection,
    pub orchestrator: OrchestratorSection,
    pub export: ExportSection,
    pub erasure: ErasureSection,
    pub portal: PortalSection,
    /// The controller group (controllers, DPO, authority, policy version),
    /// TOML as crates/dsr-domain/data/group.toml; empty: the shipped one.
    pub group_file: String,
    /// The retention policy in TOML (format:
    /// crates/dsr-domain/data/retention.toml); empty: the seed policy's.
    pub retention_file: String,
    /// The time the rules run at (deadlines, retention dates, deferred
    /// erasures, sweeps, expiries): empty for the machine's time, or an
    /// RFC 3339 time or a date at which the clock starts and runs on (a
    /// rehearsal of a later date; never in production).
    pub clock: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrchestratorSection {
    /// The identity service, e.g. "http://identity:50051".
    pub identity_endpoint: String,
    /// Discovery.
    pub discovery_endpoint: String,
    /// Export.
    pub export_endpoint: String,
    /// Erasure.
    pub erasure_endpoint: String,
    /// The identity service's JWKS (verification tokens); empty:
    /// `<data_dir>/identity-jwks.json`.
    pub identity_jwks_file: String,
    /// The Ed25519 key (PKCS#8 PEM) for the orchestrator's service tokens
    /// (created when missing); the other services must trust it.
    pub service_key_file: String,
    /// The issuer of those tokens.
    pub service_token_issuer: String,
    /// This replica's id in leases and the step log; empty: host name and
    /// process id.
    pub worker_id: String,
    /// Requests one replica works on at once; 0 runs no worker (API only).
    pub workers: usize,
    /// How long a claim holds without renewal, seconds.
    pub lease_secs: u64,
    /// How often an idle worker looks for work, milliseconds.
    pub poll_ms: u64,
    /// How long the letter sender waits, once a letter is queued, for the
    /// letters of the next moment to go in one batch, milliseconds (0: at
    /// once; at most 10 000).
    pub letter_linger_ms: u64,
    /// First retry delay, milliseconds (doubling, with jitter).
    pub backoff_base_ms: u64,
    /// Longest retry delay, seconds.
    pub backoff_max_secs: u64,
    /// Attempts of one step before it waits for a case handler.
    pub max_attempts: u32,
    /// Deadline of each call to another service, seconds.
    pub call_timeout_secs: u64,
    /// Controllers (organisationsnummer) whose requests a case handler
    /// approves before the answer is built.
    pub approval_controllers: Vec<String>,
    /// How strongly the person must be verified, per kind of request
    /// (`[orchestrator.min_assurance]`, e.g. `erasure = "substantial"`):
    /// `low` (a code by email or SMS, the default), `substantial` (BankID
    /// through the IdP, or a case handler's attestation), `high`,
    /// `attested`. A kind needing more than `low` gets no code: it waits
    /// for a stronger verification token.
    pub min_assurance: BTreeMap<String, String>,
    /// Open Watch streams at most, in all (RESOURCE_EXHAUSTED past it); 0
    /// (the default) means half of `server.concurrency_limit`.
    pub max_watch_streams: usize,
    /// Open Watch streams at most for one caller (token issuer and subject).
    pub max_watch_streams_per_caller: usize,
    /// Days a request answered for good (completed, rejected, cancelled)
    /// keeps the person's identities before they are purged (the request,
    /// its counts and audit trail stay).
    pub identity_retention_days: u32,
    /// The letters to the person (received, identity needed, extended,
    /// completed, refused, restriction lifted) as a TOML file of sv/en
    /// templates (`dsr letters preview --file` shows one); empty: the
    /// shipped letters. Checked at start.
    pub letters_file: String,
    /// The privacy centre's public address, where a letter sends the person
    /// to fetch an answer (e.g. "https://privacy.example.se"). Required
    /// when the orchestrator runs a worker; `dsr up` sets its own.
    pub privacy_centre_url: String,
    /// Days the DPO has to answer a complaint (its response target; the
    /// queue shows it overdue after).
    pub complaint_response_days: u32,
    /// Days a request may wait in VERIFYING for the person to prove who
    /// they are; then it is refused for identity (Art. 12(6)), the person
    /// is told, and it no longer counts towards the deadline (1 to 60).
    pub verification_expiry_days: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExportSection {
    /// The transfer registry, e.g. "http://transfer-registry:50051". The
    /// data systems are those of `discovery.systems`.
    pub registry_endpoint: String,
    /// The registry's token audience.
    pub registry_audience: String,
    /// Where sealed packages are kept; empty: `<data_dir>/packages`.
    pub package_dir: String,
    /// How long a package is kept before it is deleted, days.
    pub package_ttl_days: u32,
    /// The 32-byte master key (64 hex digits) wrapping package keys; empty:
    /// kept in the data directory, created once.
    pub master_key_file: String,
    /// The Ed25519 key for export's service tokens (created when missing).
    pub service_key_file: String,
    /// The issuer of those tokens.
    pub service_token_issuer: String,
}

/// The privacy centre (`dsr serve portal`, a web service on `server.listen`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct PortalSection {
    /// The orchestrator, e.g. "http://orchestrator:50051".
    pub orchestrator_endpoint: String,
    /// Identity verification.
    pub identity_endpoint: String,
    /// Export.
    pub export_endpoint: String,
    /// Erasure, for the console's Art. 19 tasks, receipts, holds and
    /// sweeps; empty: none shown.
    pub erasure_endpoint: String,
    /// The transfer registry, for the console's recipients; empty: none.
    pub registry_endpoint: String,
    /// The Ed25519 key for the portal's tokens (created when missing).
    pub service_key_file: String,
    /// The issuer of those tokens.
    pub service_token_issuer: String,
    /// The texts, TOML as services/dsr-portal/data/texts.toml; empty: the
    /// shipped ones.
    pub texts_file: String,
    /// Minutes a browser session lives after its last use.
    pub session_ttl_mins: u32,
    /// Open sessions at most (the oldest goes first).
    pub max_sessions: usize,
    /// Mark the session cookie Secure (the portal is behind HTTPS).
    pub secure_cookie: bool,
    /// The 32-byte key (64 hex digits) a person's requests are filed under
    /// (a keyed hash of the address they proved), so that they find them
    /// again later (`/{lang}/fetch`); every replica needs the same one.
    /// Empty: kept in the data directory, created once.
    pub person_key_file: String,
    /// Offer a one-time code by SMS besides email (the identity service
    /// sends it: `identity.sms_gateway_domain`, or the outbox under `dsr up`).
    pub sms_codes: bool,
    /// Serve the case handlers' console with a development sign-in (a
    /// handler's id typed in, tokens signed with the data directory's
    /// development key). `dsr up` turns it on; never in production.
    pub console_dev_login: bool,
    /// The console's sign-in through the company's identity provider
    /// (OpenID Connect); an empty issuer: none.
    pub console_oidc: OidcSection,
    /// The console's Ed25519 key, signing each of its calls as the signed-in
    /// handler (created when missing).
    pub console_key_file: String,
    /// The issuer of those tokens (the services grant it case handlers'
    /// scopes only).
    pub console_token_issuer: String,
    /// BankID (or another strong identification) for the person through
    /// the company's identity provider; an empty issuer: not offered. The
    /// identity service must trust the same provider (`identity.idp_*`,
    /// audience this client's id).
    pub person_oidc: OidcSection,
}

/// An OpenID Connect client of the company's identity provider.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct OidcSection {
    /// The issuer URL (discovery at `{issuer}/.well-known/openid-configuration`);
    /// empty: not used.
    pub issuer: String,
    /// The client's id at the provider.
    pub client_id: String,
    /// A file holding the client's secret.
    pub client_secret_file: String,
    /// The callback URL registered at the provider: the portal's public
    /// address + `/console/oidc/callback` (console) or
    /// `/oidc/person/callback` (person).
    pub redirect_url: String,
    /// Scopes asked for besides `openid`.
    pub scopes: Vec<String>,
    /// `acr_values` asked for (e.g. the provider's BankID level).
    pub acr_values: String,
    /// Console: the ID token's claim listing the handler's roles or groups
    /// (a dotted path reads into objects, e.g. "realm_access.roles").
    pub roles_claim: String,
    /// Console: the claim naming the handler in the audit trail.
    pub handler_claim: String,
    /// Console: the scopes each role gives; a handler whose roles give
    /// none is not let in.
    pub role_scopes: std::collections::BTreeMap<String, Vec<String>>,
}

impl OidcSection {
    /// Checks a configured client (an empty issuer: not used).
    fn validate(&self, name: &str) -> anyhow::Result<()> {
        if self.issuer.is_empty() {
            return Ok(());
        }
        for (field, v) in [
            ("issuer", &self.issuer),
            ("redirect_url", &self.redirect_url),
        ] {
            if !(v.starts_with("https://") || v.starts_with("http://")) {
                bail!("invalid configuration: {name}.{field} must be an http(s) URL");
            }
        }
        for (field, v) in [
            ("client_id", &self.client_id),
            ("client_secret_file", &self.client_secret_file),
        ] {
            if v.is_empty() {
                bail!("invalid configuration: {name}.{field} is required with {name}.issuer");
            }
        }
        if name == "portal.console_oidc" {
            if self.role_scopes.is_empty() {
                bail!(
                    "invalid configuration: {name}.role_scopes must give at least one role scopes"
                );
            }
            for (role, scopes) in &self.role_scopes {
                if let Some(s) = scopes
                    .iter()
                    .find(|s| !dsr_portal::console::CASE_HANDLER_SCOPES.contains(&s.as_str()))
                {
                    bail!(
                        "invalid configuration: {name}.role_scopes.{role}: {s} is not a case handler's scope (one of {})",
                        dsr_portal::console::CASE_HANDLER_SCOPES.join(", ")
                    );
                }
            }
        }
        Ok(())
    }

    /// The client's settings, its secret read from its file.
    pub(crate) fn settings(&self) -> anyhow::Result<dsr_portal::oidc::Settings> {
        let secret = std::fs::read_to_string(&self.client_secret_file)
            .with_context(|| format!("cannot read {}", self.client_secret_file))?;
        Ok(dsr_portal::oidc::Settings {
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            client_secret: secret.trim().to_owned(),
            redirect_url: self.redirect_url.clone(),
            scopes: self.scopes.clone(),
            acr_values: self.acr_values.clone(),
        })
    }
}

impl Default for OidcSection {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            client_id: String::new(),
            client_secret_file: String::new(),
            redirect_url: String::new(),
            scopes: Vec::new(),
            acr_values: String::new(),
            roles_claim: "roles".into(),
            handler_claim: "preferred_username".into(),
            role_scopes: std::collections::BTreeMap::from([(
                "dsr-case-handler".to_owned(),
                dsr_portal::console::CASE_HANDLER_SCOPES
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
            )]),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ErasureSection {
    /// The transfer registry, for the recipients to notify (Art. 19), e.g.
    /// "http://transfer-registry:50051".
    pub registry_endpoint: String,
    /// The registry's token audience.
    pub registry_audience: String,
    /// The 32-byte key (64 hex digits) of the keyed hashes that tombstones
    /// and person holds keep instead of identities; empty: kept in the data
    /// directory, created once. Keep it with the database backups: without
    /// it, a tombstone no longer matches its person.
    pub tombstone_key_file: String,
    /// The Ed25519 key for erasure's service tokens (created when missing);
    /// the data systems must trust it. The data systems are those of
    /// `discovery.systems`.
    pub service_key_file: String,
    /// The issuer of those tokens.
    pub service_token_issuer: String,
    /// How often the retention sweep runs by itself, hours (0: never; `dsr
    /// up` leaves it off, its seeded data keeps expired records to show).
    pub sweep_every_hours: u64,
    /// Records removed per table and transaction at the systems during a
    /// sweep, about (1 to 10 000).
    pub sweep_batch_size: u32,
    /// An Art. 19 notification or a correction to a recipient the transfer
    /// registry finds no lawful transfer to: "refuse" (nothing is sent, the
    /// request says why) or "review" (held until a case handler approves
    /// it, the request waits for review).
    pub unlawful_transfers: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiscoverySection {
    /// The data systems (`[[discovery.systems]]` with id, endpoint,
    /// operator_recipient_id); `dsr up` registers the reference systems.
    pub systems: Vec<DiscoverySystem>,
    /// How long to wait for one system's answer, milliseconds.
    pub timeout_ms: u64,
    /// How often to Describe every system again, seconds.
    pub refresh_secs: u64,
    /// The Ed25519 key (PKCS#8 PEM) discovery signs its service tokens with
    /// (created when missing); the systems must trust its public key and
    /// issuer. Empty under `dsr up`: the development key.
    pub service_key_file: String,
    /// The issuer of those tokens.
    pub service_token_issuer: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiscoverySystem {
    pub id: String,
    pub endpoint: String,
    #[serde(default)]
    pub operator_recipient_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdentitySection {
    /// How long a one-time code works, seconds.
    pub code_ttl_secs: u64,
    /// Wrong codes before a challenge locks.
    pub max_attempts: u32,
    /// Codes per identity per hour.
    pub codes_per_hour: u64,
    /// Lifetime of verification tokens, seconds.
    pub token_ttl_secs: u64,
    /// Where codes are written when no SMTP relay is set; empty:
    /// `<data_dir>/outbox`.
    pub outbox_dir: String,
    /// SMTP relay (`smtps://user:pass@host:465`, or `smtp://…:587?tls=required`
    /// for STARTTLS); set in production.
    pub smtp_url: String,
    /// Sender address of code messages.
    pub smtp_from: String,
    /// The relay's email-to-SMS gateway domain, for codes by SMS.
    pub sms_gateway_domain: String,
    /// The company identity provider's JWKS; empty: assertions are refused.
    pub idp_jwks_file: String,
    /// The identity provider's issuer.
    pub idp_issuer: String,
    /// The audience the identity provider issues assertions for.
    pub idp_audience: String,
    /// The key verification tokens are signed with (created when missing);
    /// empty: `<data_dir>/keys/identity-signing.pem`.
    pub signing_key_file: String,
    /// Where the public JWKS is written at start; empty:
    /// `<data_dir>/identity-jwks.json`.
    pub jwks_out: String,
    /// 64 hex digits keying the hashes of codes and identities (created when
    /// missing); empty: `<data_dir>/keys/identity-hmac.key`.
    pub hmac_key_file: String,
    /// The message with a one-time code, in Swedish and English (as
    /// `services/dsr-identity/data/code-message.toml`); empty: the shipped one.
    pub code_message_file: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct SystemSqlSection {
    /// The manifest `dsr serve system-sql` serves.
    pub manifest: String,
    /// Or a reference system: crm, print-mail or legal (its schema is created
    /// and seeded when empty).
    pub reference: String,
    /// The receipt signing key (PKCS#8 PEM, created if missing); empty:
    /// `<data_dir>/keys/<system>-receipt.pem`.
    pub signing_key_file: String,
    /// People seeded into an empty reference system.
    pub seed_subjects: usize,
    /// The generator's seed.
    pub seed: u64,
    /// How often the system's background jobs run, seconds (0: never):
    /// objections applied to records that arrived after them (the
    /// suppression list), and for the reference CRM the lead scoring of new
    /// prospects.
    pub jobs_interval_secs: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerSection {
    /// Address `dsr serve` listens on.
    pub listen: String,
    pub request_timeout_secs: u64,
    pub concurrency_limit: usize,
    pub shutdown_grace_secs: u64,
    pub drain_delay_secs: u64,
    /// PEM certificate chain; TLS is on when set.
    pub tls_cert: String,
    /// PEM private key.
    pub tls_key: String,
    /// PEM CA for client certificates; mutual TLS when set.
    pub tls_client_ca: String,
    /// A second, plaintext address serving only the gRPC health service
    /// (for the kubelet's probes, which cannot speak TLS); empty: none.
    pub health_listen: String,
    /// The services that also speak gRPC-Web, for browsers (names as
    /// `dsr serve` takes them).
    pub grpc_web_services: Vec<String>,
    /// Origins (`scheme://host[:port]`) whose pages may call those
    /// services from a browser (CORS); empty: no cross-origin page may.
    pub grpc_web_origins: Vec<String>,
}

/// How this process calls the others over `https://` endpoints.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientSection {
    /// PEM CA the servers' certificates must chain to; required for any
    /// `https://` endpoint.
    pub tls_ca: String,
    /// PEM certificate chain presented to servers that ask (mutual TLS).
    pub tls_cert: String,
    /// Its PEM private key.
    pub tls_key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthSection {
    /// Accepted token issuers whose keys are in `jwks_file`/`jwks`; with
    /// more than one, those keys cannot be told apart by issuer: give each
    /// issuer its own in `trusted` instead.
    pub issuers: Vec<String>,
    /// A JWKS file with the verification keys of `issuers`.
    pub jwks_file: String,
    /// A JWKS document inline.
    pub jwks: String,
    /// Clock skew tolerated, seconds.
    pub leeway_secs: u64,
    /// Trusted issuers, each with its own keys (`[[auth.trusted]]` with
    /// `issuer` and `jwks_file` or `jwks`): a token verifies only with a
    /// key of its own `iss`.
    pub trusted: Vec<TrustedIssuer>,
    /// The authorisation policy: per issuer, the scopes its tokens may
    /// carry (`[auth.grants]`, e.g. `"https://login.bolaget.se" =
    /// ["requests:submit", "requests:read"]`). The mesh's own services
    /// (dsr-orchestrator, dsr-discovery, dsr-export, dsr-erasure) have
    /// built-in grants, which an entry here replaces. Every accepted issuer
    /// needs one.
    pub grants: BTreeMap<String, Vec<String>>,
    /// How often the keys of issuers trusted by `jwks_uri` are fetched
    /// again, seconds. A token signed with a key id not yet known brings
    /// the next fetch forward (at most once every 30 s).
    pub jwks_refresh_secs: u64,
}

/// One trusted issuer and its keys.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrustedIssuer {
    /// The `iss` of its tokens.
    pub issuer: String,
    /// A JWKS file with its keys.
    #[serde(default)]
    pub jwks_file: String,
    /// Or the JWKS document inline.
    #[serde(default)]
    pub jwks: String,
    /// Or where the issuer publishes its keys (an identity provider's
    /// `jwks_uri`, `https://…`): fetched at start and again every
    /// `auth.jwks_refresh_secs`, the last good keys kept while it does not
    /// answer.
    #[serde(default)]
    pub jwks_uri: String,
    /// The claims its tokens' scopes are read from: `scope` (the default),
    /// `scp` (Entra ID: a string; Okta: a list), `roles` (Entra ID's
    /// application roles). The grants still bound what they may carry.
    #[serde(default)]
    pub scope_claims: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct DatabaseSection {
    /// `sqlite://…` or `postgres://…`; empty: a SQLite file per service in the
    /// data directory.
    pub url: String,
    pub max_connections: u32,
    /// Connections each pool opens at start and keeps while idle (at most
    /// `max_connections`); beyond them it grows under load.
    pub min_connections: u32,
    /// A pooled connection idle at least this many seconds is checked with
    /// a ping before use; 0: every time (a round trip more per statement).
    pub ping_idle_secs: u64,
    /// Apply pending migrations when `dsr serve` starts (`dsr up` always does).
    pub migrate_on_start: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpSection {
    /// First port; each service takes the next.
    pub base_port: u16,
    /// Loopback address the services bind.
    pub host: String,
    /// Processors' own systems (implementing `dsr.system.v1`) that `dsr up`
    /// adds to discovery, export and erasure beside the reference systems:
    /// `[[up.systems]]` with `id`, `endpoint` and `operator_recipient_id`
    /// (the operator in the transfer registry), or `--system
    /// id=URL,operator=RECIPIENT`.
    #[serde(default)]
    pub systems: Vec<DiscoverySystem>,
}

impl UpSection {
    /// Where `dsr up`'s services are called: the address they bind, or
    /// loopback when they bind every interface (`0.0.0.0` in a pod).
    pub(crate) fn connect_host(&self) -> String {
        match self.host.parse::<std::net::IpAddr>() {
            Ok(ip) if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".into(),
            Ok(ip) if ip.is_unspecified() => "[::1]".into(),
            Ok(std::net::IpAddr::V6(ip)) => format!("[{ip}]"),
            _ => self.host.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct TransferRegistrySection {
    /// Seed file; empty: the shipped seed. Seeds only an empty registry.
    pub seed_file: String,
    /// Seed at start.
    pub seed: bool,
    /// Country tables (EEA, adequacy); empty: the shipped tables.
    pub countries_file: String,
    /// Window of the "reviews due" metric, days.
    pub review_window_days: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./dsr-data"),
            log: "info".into(),
            log_format: "auto".into(),
            otlp_endpoint: String::new(),
            redaction_key_file: String::new(),
            server: ServerSection {
                listen: "127.0.0.1:50051".into(),
                request_timeout_secs: 30,
                concurrency_limit: 256,
                shutdown_grace_secs: 30,
                drain_delay_secs: 0,
                tls_cert: String::new(),
                tls_key: String::new(),
                tls_client_ca: String::new(),
                health_listen: String::new(),
                grpc_web_services: vec!["orchestrator".into(), "identity".into(), "export".into()],
                grpc_web_origins: Vec::new(),
            },
            client: ClientSection {
                tls_ca: String::new(),
                tls_cert: String::new(),
                tls_key: String::new(),
            },
            auth: AuthSection {
                issuers: vec![],
                jwks_file: String::new(),
                jwks: String::new(),
                leeway_secs: 30,
                trusted: vec![],
                grants: BTreeMap::new(),
                jwks_refresh_secs: 300,
            },
            database: DatabaseSection {
                url: String::new(),
                max_connections: 10,
                min_connections: 2,
                ping_idle_secs: 30,
                migrate_on_start: false,
            },
            up: UpSection {
                base_port: 50051,
                host: "127.0.0.1".into(),
                systems: Vec::new(),
            },
            transfer_registry: TransferRegistrySection {
                seed_file: String::new(),
                seed: true,
                countries_file: String::new(),
                review_window_days: 30,
            },
            discovery: DiscoverySection {
                systems: Vec::new(),
                timeout_ms: 2000,
                refresh_secs: 60,
                service_key_file: String::new(),
                service_token_issuer: "dsr-discovery".into(),
            },
            identity: IdentitySection {
                code_ttl_secs: 600,
                max_attempts: 5,
                codes_per_hour: 5,
                token_ttl_secs: 900,
                outbox_dir: String::new(),
                smtp_url: String::new(),
                smtp_from: String::new(),
                sms_gateway_domain: String::new(),
                idp_jwks_file: String::new(),
                idp_issuer: String::new(),
                idp_audience: "dsr-identity".into(),
                signing_key_file: String::new(),
                jwks_out: String::new(),
                hmac_key_file: String::new(),
                code_message_file: String::new(),
            },
            orchestrator: OrchestratorSection {
                identity_endpoint: String::new(),
                discovery_endpoint: String::new(),
                export_endpoint: String::new(),
                erasure_endpoint: String::new(),
                identity_jwks_file: String::new(),
                service_key_file: String::new(),
                service_token_issuer: "dsr-orchestrator".into(),
                worker_id: String::new(),
                workers: 16,
                lease_secs: 30,
                poll_ms: 500,
                letter_linger_ms: 200,
                backoff_base_ms: 1000,
                backoff_max_secs: 300,
                max_attempts: 50,
                call_timeout_secs: 60,
                approval_controllers: Vec::new(),
                min_assurance: BTreeMap::new(),
                max_watch_streams: 0,
                max_watch_streams_per_caller: 16,
                identity_retention_days: 30,
                letters_file: String::new(),
                privacy_centre_url: String::new(),
                complaint_response_days: 30,
                verification_expiry_days: 14,
            },
            export: ExportSection {
                registry_endpoint: String::new(),
                registry_audience: "dsr-transfer-registry".into(),
                package_dir: String::new(),
                package_ttl_days: 30,
                master_key_file: String::new(),
                service_key_file: String::new(),
                service_token_issuer: "dsr-export".into(),
            },
            portal: PortalSection {
                orchestrator_endpoint: String::new(),
                identity_endpoint: String::new(),
                export_endpoint: String::new(),
                erasure_endpoint: String::new(),
                registry_endpoint: String::new(),
                service_key_file: String::new(),
                service_token_issuer: dsr_portal::ISSUER.into(),
                texts_file: String::new(),
                session_ttl_mins: 30,
                max_sessions: 10_000,
                secure_cookie: false,
                person_key_file: String::new(),
                sms_codes: true,
                console_dev_login: false,
                console_oidc: OidcSection::default(),
                console_key_file: String::new(),
                console_token_issuer: "dsr-console".into(),
                person_oidc: OidcSection::default(),
            },
            erasure: ErasureSection {
                registry_endpoint: String::new(),
                registry_audience: "dsr-transfer-registry".into(),
                tombstone_key_file: String::new(),
                service_key_file: String::new(),
                service_token_issuer: "dsr-erasure".into(),
                sweep_every_hours: 24,
                sweep_batch_size: 1000,
                unlawful_transfers: "refuse".into(),
            },
            group_file: String::new(),
            retention_file: String::new(),
            clock: String::new(),
            system_sql: SystemSqlSection {
                manifest: String::new(),
                reference: String::new(),
                signing_key_file: String::new(),
                seed_subjects: 1000,
                seed: 1,
                jobs_interval_secs: 30,
            },
        }
    }
}

/// Flags given on the command line, as (dotted key, value) pairs.
pub(crate) type Overrides = Vec<(&'static str, toml::Value)>;

pub(crate) fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

fn set_path(root: &mut toml::Value, path: &[&str], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = root;
    for key in parents {
        if !cur.is_table() {
            *cur = toml::Value::Table(toml::map::Map::new());
        }
        let toml::Value::Table(table) = cur else {
            return;
        };
        cur = table
            .entry((*key).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::map::Map::new()));
    }
    if !cur.is_table() {
        *cur = toml::Value::Table(toml::map::Map::new());
    }
    if let toml::Value::Table(table) = cur {
        table.insert((*last).to_owned(), value);
    }
}

fn env_value(raw: &str, default: Option<&toml::Value>) -> toml::Value {
    // A string setting takes the text as it is; others parse as TOML.
    if matches!(default, Some(toml::Value::String(_))) {
        return toml::Value::String(raw.to_owned());
    }
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn lookup<'a>(root: &'a toml::Value, path: &[&str]) -> Option<&'a toml::Value> {
    path.iter().try_fold(root, |cur, k| cur.get(k))
}

/// What `dsr up` writes in its data directory while it runs
/// (`up.json`), so that client commands given the same `--data-dir` find
/// its services whatever its base port.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct UpContext {
    /// The first port; each service takes the next.
    pub base_port: u16,
    /// Where the services are called.
    pub host: String,
}

/// The file of [`UpContext`] in a data directory.
pub(crate) fn up_context_file(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("up.json")
}

impl Config {
    /// The same configuration with the base port and host of a `dsr up`
    /// running on its data directory (`up.json`), unless the base port was
    /// chosen here (`explicit`, or a value other than the default).
    #[must_use]
    pub(crate) fn with_up_context(mut self, explicit: bool) -> Self {
        if explicit || self.up.base_port != Self::default().up.base_port {
            return self;
        }
        let read = std::fs::read(up_context_file(&self.data_dir))
            .ok()
            .and_then(|b| serde_json::from_slice::<UpContext>(&b).ok());
        if let Some(up) = read {
            self.up.base_port = up.base_port;
            if let Ok(ip) = up
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
            {
                self.up.host = ip.to_string();
            }
        }
        self
    }

    /// Open Watch streams at most: the setting, or half of the server's
    /// places when it is 0, so that streams leave room for other calls.
    pub(crate) fn watch_streams(&self) -> usize {
        match self.orchestrator.max_watch_streams {
            0 => (self.server.concurrency_limit / 2).max(1),
            n => n,
        }
    }

    /// Layers defaults, the file (if any), the environment and `flags`.
    pub(crate) fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: Overrides,
    ) -> anyhow::Result<Self> {
        let mut value = toml::Value::try_from(Config::default()).context("serialising defaults")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let over: toml::Value = toml::from_str(&text)
                .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
            merge(&mut value, over);
        }
        let defaults = toml::Value::try_from(Config::default())?;
        for (key, raw) in env {
            let Some(rest) = key.strip_prefix("DSR_") else {
                continue;
            };
            // Variables that are not settings: the config path, tokens, test hooks.
            if matches!(rest, "CONFIG" | "TOKEN" | "ENDPOINT") || rest.starts_with("TEST_") {
                continue;
            }
            let lower = rest.to_ascii_lowercase();
            let path: Vec<&str> = lower.split("__").collect();
            if lookup(&defaults, &path).is_none() {
                bail!(
                    "unknown setting in environment variable {key} (nested keys use __, e.g. DSR_DATABASE__URL)"
                );
            }
            let v = env_value(&raw, lookup(&defaults, &path));
            set_path(&mut value, &path, v);
        }
        for (key, v) in flags {
            let path: Vec<&str> = key.split('.').collect();
            set_path(&mut value, &path, v);
        }
        let cfg: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            anyhow::anyhow!(
                "invalid configuration: {path}: {}",
                e.into_inner().message().trim()
            )
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if dsr_telemetry::LogFormat::parse(&self.log_format).is_none() {
            bail!("invalid configuration: log_format must be auto, pretty or json");
        }
        if self.server.listen.parse::<SocketAddr>().is_err() {
            bail!("invalid configuration: server.listen must be host:port, e.g. 0.0.0.0:50051");
        }
        if self.server.request_timeout_secs == 0 {
            bail!("invalid configuration: server.request_timeout_secs must be at least 1");
        }
        if self.server.concurrency_limit == 0 {
            bail!("invalid configuration: server.concurrency_limit must be at least 1");
        }
        if !self.server.health_listen.is_empty()
            && self.server.health_listen.parse::<SocketAddr>().is_err()
        {
            bail!(
                "invalid configuration: server.health_listen must be host:port, e.g. 0.0.0.0:8081, or empty"
            );
        }
        for (i, s) in self.server.grpc_web_services.iter().enumerate() {
            let kind = crate::services::ServiceKind::from_name(s);
            if kind.is_none_or(|k| k == crate::services::ServiceKind::Portal) {
                bail!(
                    "invalid configuration: server.grpc_web_services[{i}]: {s:?} is not a gRPC service (orchestrator, identity, export, erasure, discovery, transfer-registry, system-sql)"
                );
            }
        }
        if let Err(e) = dsr_server::cors_layer(&dsr_server::GrpcWeb {
            allowed_origins: self.server.grpc_web_origins.clone(),
        }) {
            bail!("invalid configuration: server.grpc_web_origins: {e}");
        }
        if self.client.tls_cert.is_empty() != self.client.tls_key.is_empty() {
            bail!("invalid configuration: client.tls_cert and client.tls_key go together");
        }
        if !self.client.tls_cert.is_empty() && self.client.tls_ca.is_empty() {
            bail!("invalid configuration: client.tls_cert needs client.tls_ca");
        }
        if self.server.tls_cert.is_empty() != self.server.tls_key.is_empty() {
            bail!("invalid configuration: server.tls_cert and server.tls_key go together");
        }
        if !self.server.tls_client_ca.is_empty() && self.server.tls_cert.is_empty() {
            bail!(
                "invalid configuration: server.tls_client_ca needs server.tls_cert and server.tls_key"
            );
        }
        for (name, path) in [
            ("server.tls_cert", &self.server.tls_cert),
            ("server.tls_key", &self.server.tls_key),
            ("server.tls_client_ca", &self.server.tls_client_ca),
            ("client.tls_ca", &self.client.tls_ca),
            ("client.tls_cert", &self.client.tls_cert),
            ("client.tls_key", &self.client.tls_key),
            ("auth.jwks_file", &self.auth.jwks_file),
            (
                "transfer_registry.seed_file",
                &self.transfer_registry.seed_file,
            ),
            (
                "transfer_registry.countries_file",
                &self.transfer_registry.countries_file,
            ),
            ("redaction_key_file", &self.redaction_key_file),
            ("system_sql.manifest", &self.system_sql.manifest),
            ("identity.idp_jwks_file", &self.identity.idp_jwks_file),
            ("group_file", &self.group_file),
            ("retention_file", &self.retention_file),
            (
                "orchestrator.identity_jwks_file",
                &self.orchestrator.identity_jwks_file,
            ),
            (
                "portal.console_oidc.client_secret_file",
                &self.portal.console_oidc.client_secret_file,
            ),
            (
                "portal.person_oidc.client_secret_file",
                &self.portal.person_oidc.client_secret_file,
            ),
        ] {
            if !path.is_empty() && !Path::new(path).is_file() {
                bail!("invalid configuration: {name}: no such file {path}");
            }
        }
        for (i, t) in self.auth.trusted.iter().enumerate() {
            if !t.jwks_file.is_empty() && !Path::new(&t.jwks_file).is_file() {
                bail!(
                    "invalid configuration: auth.trusted[{i}].jwks_file: no such file {}",
                    t.jwks_file
                );
            }
        }
        if !self.database.url.is_empty() {
            dsr_store::backend_of(&self.database.url)
                .context("invalid configuration: database.url")?;
        }
        if self.database.max_connections == 0 {
            bail!("invalid configuration: database.max_connections must be at least 1");
        }
        if self.database.min_connections > self.database.max_connections {
            bail!(
                "invalid configuration: database.min_connections ({}) must not exceed database.max_connections ({})",
                self.database.min_connections,
                self.database.max_connections
            );
        }
        for (name, o) in [
            ("portal.console_oidc", &self.portal.console_oidc),
            ("portal.person_oidc", &self.portal.person_oidc),
        ] {
            o.validate(name)?;
        }
        if self.portal.console_dev_login && !self.portal.console_oidc.issuer.is_empty() {
            bail!(
                "invalid configuration: portal.console_dev_login and portal.console_oidc are exclusive: \
                 handlers sign in through the identity provider, or (development only) by name"
            );
        }
        if self.up.host.parse::<std::net::IpAddr>().is_err() {
            bail!("invalid configuration: up.host must be an IP address");
        }
        if self.auth.issuers.iter().any(|i| i.trim().is_empty()) {
            bail!("invalid configuration: auth.issuers has an empty entry");
        }
        if !self.system_sql.reference.is_empty()
            && dsr_system_sql::reference::Reference::parse(&self.system_sql.reference).is_none()
        {
            bail!("invalid configuration: system_sql.reference must be crm, print-mail or legal");
        }
        if !self.system_sql.manifest.is_empty() && !self.system_sql.reference.is_empty() {
            bail!(
                "invalid configuration: set system_sql.manifest or system_sql.reference, not both"
            );
        }
        let id = &self.identity;
        if id.code_ttl_secs == 0 || id.code_ttl_secs > 3600 {
            bail!("invalid configuration: identity.code_ttl_secs must be 1 to 3600");
        }
        if id.max_attempts == 0 || id.codes_per_hour == 0 {
            bail!(
                "invalid configuration: identity.max_attempts and identity.codes_per_hour must be at least 1"
            );
        }
        if id.token_ttl_secs == 0 || id.token_ttl_secs > 86_400 {
            bail!("invalid configuration: identity.token_ttl_secs must be 1 to 86400");
        }
        if !id.smtp_url.is_empty() && id.smtp_from.is_empty() {
            bail!("invalid configuration: identity.smtp_from is required with identity.smtp_url");
        }
        if !id.idp_jwks_file.is_empty() && id.idp_issuer.is_empty() {
            bail!(
                "invalid configuration: identity.idp_issuer is required with identity.idp_jwks_file"
            );
        }
        if self.discovery.timeout_ms == 0 || self.discovery.refresh_secs == 0 {
            bail!(
                "invalid configuration: discovery.timeout_ms and discovery.refresh_secs must be at least 1"
            );
        }
        for (i, s) in self.discovery.systems.iter().enumerate() {
            if !dsr_domain::transfer::valid_slug(&s.id) {
                bail!(
                    "invalid configuration: discovery.systems[{i}].id must be 2-64 lower-case letters, digits and -"
                );
            }
            if !(s.endpoint.starts_with("http://") || s.endpoint.starts_with("https://")) {
                bail!(
                    "invalid configuration: discovery.systems[{i}].endpoint must start with http:// or https://"
                );
            }
        }
        let o = &self.orchestrator;
        for (name, url) in [
            ("orchestrator.identity_endpoint", &o.identity_endpoint),
            ("orchestrator.discovery_endpoint", &o.discovery_endpoint),
            ("orchestrator.export_endpoint", &o.export_endpoint),
            ("orchestrator.erasure_endpoint", &o.erasure_endpoint),
            ("export.registry_endpoint", &self.export.registry_endpoint),
            ("erasure.registry_endpoint", &self.erasure.registry_endpoint),
        ] {
            if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
                bail!("invalid configuration: {name} must start with http:// or https://");
            }
        }
        if o.lease_secs < 3 || o.poll_ms == 0 || o.backoff_base_ms == 0 || o.call_timeout_secs == 0
        {
            bail!(
                "invalid configuration: orchestrator.lease_secs must be at least 3, and poll_ms, backoff_base_ms and call_timeout_secs at least 1"
            );
        }
        if o.max_attempts == 0 {
            bail!("invalid configuration: orchestrator.max_attempts must be at least 1");
        }
        if o.letter_linger_ms > 10_000 {
            bail!("invalid configuration: orchestrator.letter_linger_ms must be 0 to 10000");
        }
        if !(1..=60).contains(&o.verification_expiry_days) {
            bail!("invalid configuration: orchestrator.verification_expiry_days must be 1 to 60");
        }
        if u128::from(o.backoff_base_ms) > u128::from(o.backoff_max_secs) * 1000 {
            bail!(
                "invalid configuration: orchestrator.backoff_base_ms must not exceed backoff_max_secs"
            );
        }
        if o.max_watch_streams_per_caller == 0 {
            bail!(
                "invalid configuration: orchestrator.max_watch_streams_per_caller must be at least 1"
            );
        }
        // A stream holds one of the server's places for its whole life:
        // streams alone must leave room for the other calls.
        if o.max_watch_streams != 0 && o.max_watch_streams >= self.server.concurrency_limit {
            bail!(
                "invalid configuration: orchestrator.max_watch_streams ({}) must be below server.concurrency_limit ({}), so that open streams leave room for other calls",
                o.max_watch_streams,
                self.server.concurrency_limit
            );
        }
        if let Err(e) = dsr_orchestrator::intake::AssurancePolicy::parse(&o.min_assurance) {
            bail!("invalid configuration: orchestrator.min_assurance.{e}");
        }
        for (i, c) in o.approval_controllers.iter().enumerate() {
            if dsr_domain::identity::Organisationsnummer::parse(c).is_err() {
                bail!(
                    "invalid configuration: orchestrator.approval_controllers[{i}] is not an organisationsnummer"
                );
            }
        }
        self.retention_policy()?;
        dsr_domain::clock::Clock::parse(&self.clock)
            .map_err(|e| anyhow::anyhow!("invalid configuration: clock: {e}"))?;
        if dsr_erasure::model::UnlawfulTransfers::parse(&self.erasure.unlawful_transfers).is_none()
        {
            bail!("invalid configuration: erasure.unlawful_transfers must be refuse or review");
        }
        if !(1..=10_000).contains(&self.erasure.sweep_batch_size) {
            bail!("invalid configuration: erasure.sweep_batch_size must be 1 to 10000");
        }
        if self.export.package_ttl_days == 0 || self.export.package_ttl_days > 365 {
            bail!("invalid configuration: export.package_ttl_days must be 1 to 365");
        }
        if self.transfer_registry.review_window_days > 3650 {
            bail!(
                "invalid configuration: transfer_registry.review_window_days must be at most 3650"
            );
        }
        Ok(())
    }

    /// The retention policy: the configured file, else the seed policy's.
    pub(crate) fn retention_policy(
        &self,
    ) -> anyhow::Result<dsr_domain::retention::RetentionPolicy> {
        if self.retention_file.is_empty() {
            return Ok(dsr_domain::retention::RetentionPolicy::shipped());
        }
        let text = std::fs::read_to_string(&self.retention_file)
            .with_context(|| format!("cannot read retention_file {}", self.retention_file))?;
        dsr_domain::retention::RetentionPolicy::from_toml(&text).map_err(|e| {
            anyhow::anyhow!(
                "invalid configuration: retention_file {}: {e}",
                self.retention_file
            )
        })
    }

    /// The TLS settings, when TLS is on.
    pub(crate) fn tls(&self) -> Option<dsr_server::TlsConfig> {
        (!self.server.tls_cert.is_empty()).then(|| dsr_server::TlsConfig {
            cert: PathBuf::from(&self.server.tls_cert),
            key: PathBuf::from(&self.server.tls_key),
            client_ca: (!self.server.tls_client_ca.is_empty())
                .then(|| PathBuf::from(&self.server.tls_client_ca)),
        })
    }

    /// The server runtime settings of `kind`.
    pub(crate) fn server_config(
        &self,
        kind: crate::services::ServiceKind,
    ) -> dsr_server::ServerConfig {
        use std::time::Duration;
        let web = self
            .server
            .grpc_web_services
            .iter()
            .any(|s| s == kind.name());
        dsr_server::ServerConfig {
            grpc_web: web.then(|| dsr_server::GrpcWeb {
                allowed_origins: self.server.grpc_web_origins.clone(),
            }),
            request_timeout: Duration::from_secs(self.server.request_timeout_secs),
            concurrency_limit: self.server.concurrency_limit,
            shutdown_grace: Duration::from_secs(self.server.shutdown_grace_secs),
            drain_delay: Duration::from_secs(self.server.drain_delay_secs),
            tls: self.tls(),
            health_listen: self.server.health_listen.parse().ok(),
        }
    }

    /// The TLS settings of calls to `https://` endpoints, when a CA is set.
    pub(crate) fn client_tls(&self) -> anyhow::Result<Option<tonic::transport::ClientTlsConfig>> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        if self.client.tls_ca.is_empty() {
            return Ok(None);
        }
        let read = |what: &str, path: &str| {
            std::fs::read(path).with_context(|| format!("cannot read {what} {path}"))
        };
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(
            "client.tls_ca",
            &self.client.tls_ca,
        )?));
        if !self.client.tls_cert.is_empty() {
            tls = tls.identity(Identity::from_pem(
                read("client.tls_cert", &self.client.tls_cert)?,
                read("client.tls_key", &self.client.tls_key)?,
            ));
        }
        Ok(Some(tls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn layers_apply_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dsr.toml");
        std::fs::write(
            &file,
            "log = \"debug\"\n[server]\nconcurrency_limit = 10\nrequest_timeout_secs = 5\n",
        )
        .unwrap();
        let cfg = Config::load(
            Some(&file),
            env(&[
                ("DSR_SERVER__CONCURRENCY_LIMIT", "20"),
                ("DSR_DATA_DIR", "/tmp/x"),
                ("DSR_TEST_POSTGRES_URL", "ignored"),
                ("PATH", "/bin"),
            ]),
            vec![("server.concurrency_limit", toml::Value::Integer(30))],
        )
        .unwrap();
        assert_eq!(cfg.log, "debug"); // file
        assert_eq!(cfg.server.request_timeout_secs, 5); // file
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/x")); // env
        assert_eq!(cfg.server.concurrency_limit, 30); // flag beats env beats file
        assert_eq!(cfg.server.shutdown_grace_secs, 30); // default
    }

    #[test]
    fn bad_settings_are_named() {
        let err = Config::load(None, env(&[("DSR_DATABSE__URL", "x")]), vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("DSR_DATABSE__URL"), "{err}");
        let err = Config::load(
            None,
            env(&[("DSR_SERVER__CONCURRENCY_LIMIT", "lots")]),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("concurrency_limit"), "{err}");
        let err =
            Config::load(None, env(&[("DSR_DATABASE__URL", "oracle://h/db")]), vec![]).unwrap_err();
        assert!(format!("{err:#}").contains("database.url"), "{err:#}");
        let err = Config::load(
            None,
            env(&[
                ("DSR_DATABASE__MIN_CONNECTIONS", "12"),
                ("DSR_DATABASE__MAX_CONNECTIONS", "4"),
            ]),
            vec![],
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains(
                "database.min_connections (12) must not exceed database.max_connections (4)"
            ),
            "{err:#}"
        );
        let fixed = Config::load(
            None,
            env(&[
                ("DSR_DATABASE__MIN_CONNECTIONS", "4"),
                ("DSR_DATABASE__MAX_CONNECTIONS", "4"),
            ]),
            vec![],
        )
        .unwrap();
        assert_eq!(fixed.database.min_connections, 4);
        let err = Config::load(
            None,
            vec![],
            vec![("server.listen", toml::Value::String("nowhere".into()))],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.listen"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dsr.toml");
        std::fs::write(&file, "[server]\nlisten_port = 1\n").unwrap();
        let err = Config::load(Some(&file), vec![], vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn string_settings_keep_their_text() {
        let cfg = Config::load(
            None,
            env(&[
                ("DSR_LOG", "info,dsr_server=debug"),
                ("DSR_AUTH__ISSUERS", "[\"a\", \"b\"]"),
            ]),
            vec![],
        )
        .unwrap();
        assert_eq!(cfg.log, "info,dsr_server=debug");
        assert_eq!(cfg.auth.issuers, ["a", "b"]);
    }

    #[test]
    fn a_letter_linger_past_ten_seconds_is_refused() {
        let load = |v: &'static str| {
            Config::load(
                None,
                env(&[("DSR_ORCHESTRATOR__LETTER_LINGER_MS", v)]),
                vec![],
            )
        };
        let err = load("10001").unwrap_err().to_string();
        assert!(
            err.contains("orchestrator.letter_linger_ms must be 0 to 10000"),
            "{err}"
        );
        assert_eq!(load("0").unwrap().orchestrator.letter_linger_ms, 0);
        assert_eq!(
            Config::load(None, env(&[]), vec![])
                .unwrap()
                .orchestrator
                .letter_linger_ms,
            200
        );
    }

    #[test]
    fn watch_streams_must_leave_room_for_other_calls() {
        let err = Config::load(
            None,
            env(&[
                ("DSR_SERVER__CONCURRENCY_LIMIT", "100"),
                ("DSR_ORCHESTRATOR__MAX_WATCH_STREAMS", "100"),
            ]),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(
                "orchestrator.max_watch_streams (100) must be below server.concurrency_limit (100)"
            ),
            "{err}"
        );
        let set = |limit: &'static str, watch: &'static str| {
            Config::load(
                None,
                env(&[
                    ("DSR_SERVER__CONCURRENCY_LIMIT", limit),
                    ("DSR_ORCHESTRATOR__MAX_WATCH_STREAMS", watch),
                ]),
                vec![],
            )
            .unwrap()
            .watch_streams()
        };
        assert_eq!(set("100", "99"), 99);
        // Unset: half the server's places, whatever the limit.
        assert_eq!(set("30", "0"), 15);
        assert_eq!(set("256", "0"), 128);
    }

    #[test]
    fn grpc_web_settings_name_what_is_wrong() {
        let err = |k: &'static str, v: &'static str| {
            Config::load(None, env(&[(k, v)]), vec![])
                .unwrap_err()
                .to_string()
        };
        let e = err("DSR_SERVER__GRPC_WEB_ORIGINS", "[\"*\"]");
        assert!(
            e.contains("server.grpc_web_origins") && e.contains("\"*\""),
            "{e}"
        );
        let e = err("DSR_SERVER__GRPC_WEB_SERVICES", "[\"portal\"]");
        assert!(e.contains("server.grpc_web_services[0]"), "{e}");
        let cfg = Config::load(
            None,
            env(&[(
                "DSR_SERVER__GRPC_WEB_ORIGINS",
                "[\"https://portal.example.se\"]",
            )]),
            vec![],
        )
        .unwrap();
        let web = cfg
            .server_config(crate::services::ServiceKind::Orchestrator)
            .grpc_web
            .unwrap();
        assert_eq!(web.allowed_origins, ["https://portal.example.se"]);
        assert!(
            cfg.server_config(crate::services::ServiceKind::Erasure)
                .grpc_web
                .is_none(),
            "erasure is not for browsers"
        );
    }

    #[test]
    fn a_console_identity_provider_is_checked_at_start() {
        let secret = tempfile::NamedTempFile::new().unwrap();
        let path = secret.path().display().to_string();
        let load = |extra: &[(&'static str, String)]| {
            let mut vars = vec![
                (
                    "DSR_PORTAL__CONSOLE_OIDC__ISSUER",
                    "https://login.example.se/staff".to_owned(),
                ),
                (
                    "DSR_PORTAL__CONSOLE_OIDC__CLIENT_ID",
                    "dsr-console".to_owned(),
                ),
                ("DSR_PORTAL__CONSOLE_OIDC__CLIENT_SECRET_FILE", path.clone()),
                (
                    "DSR_PORTAL__CONSOLE_OIDC__REDIRECT_URL",
                    "https://privacy.example.se/console/oidc/callback".to_owned(),
                ),
            ];
            vars.extend(extra.iter().cloned());
            Config::load(
                None,
                vars.into_iter().map(|(k, v)| (k.to_owned(), v)),
                vec![],
            )
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
        };
        load(&[]).unwrap();
        let e = load(&[(
            "DSR_PORTAL__CONSOLE_OIDC__ROLE_SCOPES",
            "{ staff = [\"system:write\"] }".to_owned(),
        )])
        .unwrap_err();
        assert!(
            e.contains("role_scopes.staff") && e.contains("system:write"),
            "{e}"
        );
        let e = load(&[("DSR_PORTAL__CONSOLE_OIDC__CLIENT_ID", String::new())]).unwrap_err();
        assert!(e.contains("portal.console_oidc.client_id"), "{e}");
        let e = load(&[("DSR_PORTAL__CONSOLE_DEV_LOGIN", "true".to_owned())]).unwrap_err();
        assert!(e.contains("exclusive"), "{e}");
        let e = load(&[(
            "DSR_PORTAL__CONSOLE_OIDC__CLIENT_SECRET_FILE",
            "/no/such/secret".to_owned(),
        )])
        .unwrap_err();
        assert!(e.contains("no such file"), "{e}");
    }

    #[test]
    fn the_kubernetes_settings_load_and_bad_tls_pairs_are_named() {
        // The base's file with the system registry from its ConfigMap, as
        // the Deployments pass it (DSR_DISCOVERY__SYSTEMS).
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../k8s");
        let systems = std::fs::read_to_string(root.join("base/config/systems.toml")).unwrap();
        let cfg = Config::load(
            Some(&root.join("base/config/dsr.toml")),
            env(&[("DSR_DISCOVERY__SYSTEMS", systems.as_str())]),
            vec![],
        );
        // Everything parses; the files are mounted in a pod, not here: the
        // first missing one is named.
        let err = format!("{:#}", cfg.unwrap_err());
        assert!(err.contains("no such file"), "{err}");
        let text = std::fs::read_to_string(root.join("base/config/dsr.toml")).unwrap();
        let parsed: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(
            parsed["server"]["health_listen"].as_str(),
            Some("0.0.0.0:8081")
        );
        let systems: toml::Value = toml::from_str(&format!("v = {systems}")).unwrap();
        assert_eq!(systems["v"][0]["id"].as_str(), Some("crm"));

        let err = Config::load(
            None,
            env(&[("DSR_SERVER__HEALTH_LISTEN", "probe-port")]),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.health_listen"), "{err}");
        let err = Config::load(None, env(&[("DSR_CLIENT__TLS_CERT", "/x.pem")]), vec![])
            .unwrap_err()
            .to_string();
        assert!(err.contains("client.tls_cert and client.tls_key"), "{err}");
        let err = Config::load(
            None,
            env(&[("DSR_CLIENT__TLS_CA", "/no/such/ca.pem")]),
            vec![],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("client.tls_ca"), "{err}");
    }

    #[test]
    fn up_is_called_on_loopback_when_it_binds_every_interface() {
        let mut up = Config::default().up;
        assert_eq!(up.connect_host(), "127.0.0.1");
        up.host = "0.0.0.0".into();
        assert_eq!(up.connect_host(), "127.0.0.1");
        up.host = "10.1.2.3".into();
        assert_eq!(up.connect_host(), "10.1.2.3");
        up.host = "::".into();
        assert_eq!(up.connect_host(), "[::1]");
    }
}
