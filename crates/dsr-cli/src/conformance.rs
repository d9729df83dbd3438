//! `dsr conformance <endpoint> --identity <type:value>`: checks a DataSystem
//! implementation over gRPC against the contract. It reads, restricts and
//! finally erases the given person: point it at a test person.
//!
//! The kit mints its own tokens, as the erasure service would, with a key
//! the system trusts (under `dsr up`, the key `dsr up` gave the erasure
//! service; otherwise a `dsr keys create` folder, `--keys`): correctly scoped ones
//! for the system's id as audience, and the ones a system must refuse
//! (none, a key it does not know, another audience, expired, a scope too
//! few). Writes are followed to their end (WatchOperation, then
//! GetOperation), so a system that finishes them later passes; rights the
//! system does not list in `Describe.supported_rights` are checked to answer
//! UNIMPLEMENTED instead of being exercised.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use dsr_domain::identity::{Identity, IdentityType};
use dsr_proto::common::v1 as common;
use dsr_proto::system::v1 as pb;
use dsr_proto::system::v1::data_system_client::DataSystemClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::config::Config;
use crate::{dev, services};

const SCOPE_DESCRIBE: &str = dsr_system_sql::grpc::SCOPE_DESCRIBE;
const SCOPE_READ: &str = dsr_system_sql::grpc::SCOPE_READ;
const SCOPE_WRITE: &str = dsr_system_sql::grpc::SCOPE_WRITE;

/// Arguments of `dsr conformance`.
#[derive(Debug, Args)]
pub(crate) struct ConformanceArgs {
    /// The system's address, e.g. http://127.0.0.1:50052.
    endpoint: String,
    /// A test person known to the system, as type:value (email, phone,
    /// personnummer, organisationsnummer, customer_id). The person is erased.
    #[arg(long)]
    identity: String,
    /// The controller the person belongs to (default: the first of Describe's
    /// controllers under which the person is found).
    #[arg(long)]
    controller: Option<String>,
    /// The system's id: the audience of the tokens the kit mints (default:
    /// the id Describe gives to a token for the mesh's own audiences, which
    /// a processor's system refuses: then give it).
    #[arg(long)]
    system_id: Option<String>,
    /// A folder made by `dsr keys create --out DIR`, whose
    /// `trust/dsr-{discovery,export,erasure}-jwks.json` the system trusts:
    /// the kit signs as the erasure service with `erasure/service.pem`,
    /// tries a reader's write with `discovery/service.pem` and a portal's
    /// call with `portal/service.pem` (default: the keys `dsr up` gave the
    /// services in the data directory, `keys/<service>-service.pem`).
    #[arg(long)]
    keys: Option<PathBuf>,
    /// A token the system trusts, from a service that may read but not
    /// write (discovery or export), asking for `system:write`: the system
    /// must refuse its writes with PERMISSION_DENIED (default under `dsr up`:
    /// minted with discovery's key).
    #[arg(long, env = "DSR_READER_TOKEN", hide_env_values = true)]
    reader_token: Option<String>,
    /// A token from a portal's issuer, asking for the system's scopes: the
    /// system must refuse it (PERMISSION_DENIED, or UNAUTHENTICATED when it
    /// does not trust the issuer at all; default under `dsr up`: minted with
    /// the development key).
    #[arg(long, env = "DSR_PORTAL_TOKEN", hide_env_values = true)]
    portal_token: Option<String>,
    /// How long a write may take to finish before the kit gives up on it.
    #[arg(long, default_value = "120")]
    operation_timeout_secs: u64,
}

fn all_scopes() -> Vec<String> {
    [SCOPE_DESCRIBE, SCOPE_READ, SCOPE_WRITE]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// Where the kit's keys are: a `dsr keys create` folder, or `dsr up`'s.
#[derive(Clone, Debug)]
enum Keys {
    Created(PathBuf),
    Up(PathBuf),
}

impl Keys {
    fn of(cfg: &Config, args: &ConformanceArgs) -> Self {
        match &args.keys {
            Some(dir) => Self::Created(dir.clone()),
            None => Self::Up(cfg.data_dir.clone()),
        }
    }

    /// The key file of service `name`, and its issuer.
    fn service(&self, name: &str) -> (PathBuf, String) {
        let file = match self {
            Self::Created(dir) => dir.join(name).join("service.pem"),
            Self::Up(dir) => dir.join(format!("keys/{name}-service.pem")),
        };
        (file, format!("dsr-{name}"))
    }

    /// A token of service `name` for `audience` with every system scope,
    /// when its key is there.
    fn token_of(&self, name: &str, audience: &str) -> Option<String> {
        let (file, issuer) = self.service(name);
        if !file.exists() {
            return None;
        }
        let (signer, _) = dsr_auth::TokenSigner::from_key_file(&file, None, &issuer).ok()?;
        signer
            .mint(&dsr_auth::TokenRequest {
                subject: format!("service:{issuer}"),
                audiences: vec![audience.to_owned()],
                scopes: all_scopes(),
                ttl: Duration::from_secs(600),
            })
            .ok()
    }
}

/// Tokens signed by keys the system trusts, for issuers that must not
/// write to it (the reader) or reach it at all (the portal): the keys the
/// mesh gave those services, never a key made up here (a refusal of an
/// unknown key would prove nothing about the policy).
fn outsider_tokens(
    cfg: &Config,
    args: &ConformanceArgs,
    audience: &str,
) -> (Option<String>, Option<String>) {
    let keys = Keys::of(cfg, args);
    let reader = args
        .reader_token
        .clone()
        .or_else(|| keys.token_of("discovery", audience));
    let portal = args.portal_token.clone().or_else(|| match &keys {
        Keys::Created(_) => keys.token_of("portal", audience),
        Keys::Up(dir) => dev::load_dev_key(dir).ok().and_then(|_| {
            dev::token_or_mint(
                dir,
                None,
                "conformance-portal",
                vec![audience.to_owned()],
                all_scopes(),
                Duration::from_secs(600),
            )
            .ok()
        }),
    });
    (reader, portal)
}

/// The kit's tokens: the trusted key's, and one made up here.
struct Minter {
    trusted: dsr_auth::TokenSigner,
    unknown: dsr_auth::TokenSigner,
}

impl Minter {
    fn load(cfg: &Config, args: &ConformanceArgs) -> anyhow::Result<Self> {
        let (path, issuer) = Keys::of(cfg, args).service("erasure");
        if !path.exists() {
            bail!(
                "no signing key at {}: pass --keys with a `dsr keys create` folder whose \
                 trust/dsr-erasure-jwks.json the system trusts, or run `dsr up` once to \
                 create the mesh's keys",
                path.display()
            );
        }
        let (trusted, _) = dsr_auth::TokenSigner::from_key_file(&path, None, &issuer)
            .with_context(|| format!("cannot read the key {}", path.display()))?;
        // The same key id and issuer over a key nobody trusts: only the
        // signature tells the two apart.
        let made_up = dsr_auth::generate_ed25519(trusted.kid())?;
        let unknown = dsr_auth::TokenSigner::from_ed25519_pem(
            &made_up.private_pem,
            trusted.kid(),
            trusted.issuer(),
        )?;
        Ok(Self { trusted, unknown })
    }

    /// A token for `audience` with `scopes`, valid from `from` for `ttl`
    /// seconds (relative to now; negative for the past).
    fn claims(&self, audience: &str, scopes: &[&str], from: i64, ttl: i64) -> dsr_auth::Claims {
        let now = i64::try_from(dsr_auth::now_secs()).unwrap_or(i64::MAX);
        let at = |d: i64| u64::try_from(now + d).unwrap_or(0);
        dsr_auth::Claims {
            sub: format!("service:{}", self.trusted.issuer()),
            iss: self.trusted.issuer().to_owned(),
            aud: dsr_auth::Audience::One(audience.to_owned()),
            exp: at(from + ttl),
            nbf: Some(at(from)),
            iat: Some(at(from)),
            scope: scopes.join(" "),
            scp: None,
            roles: None,
            jti: Some(uuid::Uuid::new_v4().to_string()),
        }
    }

    fn token(&self, audience: &str, scopes: &[&str]) -> anyhow::Result<String> {
        Ok(self.trusted.sign(&self.claims(audience, scopes, -5, 600))?)
    }
}

fn parse_identity(s: &str) -> anyhow::Result<Identity> {
    let (t, v) = s.split_once(':').context("--identity must be type:value")?;
    let kind = match t {
        "email" => IdentityType::Email,
        "phone" => IdentityType::Phone,
        "personnummer" => IdentityType::Personnummer,
        "organisationsnummer" => IdentityType::Organisationsnummer,
        "customer_id" => IdentityType::CustomerId,
        other => bail!("unknown identity type {other:?}"),
    };
    Ok(Identity::parse(kind, v)?)
}

fn type_to_pb(t: IdentityType) -> common::IdentityType {
    match t {
        IdentityType::Email => common::IdentityType::Email,
        IdentityType::Phone => common::IdentityType::Phone,
        IdentityType::Personnummer => common::IdentityType::SePersonnummer,
        IdentityType::Organisationsnummer => common::IdentityType::SeOrganisationsnummer,
        IdentityType::CustomerId => common::IdentityType::CustomerId,
    }
}

fn id_pb(t: IdentityType, value: &str) -> common::Identity {
    common::Identity {
        r#type: type_to_pb(t) as i32,
        format: common::IdentityFormat::Raw as i32,
        value: value.to_owned(),
        hmac_key_id: String::new(),
    }
}

/// A value of `t` that no system should know.
fn unknown_value(t: IdentityType) -> String {
    let n = uuid::Uuid::new_v4().as_u128();
    match t {
        IdentityType::Email => format!("conformance-{:x}@example.invalid", n & 0xffff_ffff),
        IdentityType::Phone => format!("+4670{:07}", n % 10_000_000),
        IdentityType::CustomerId => format!("CONFORMANCE-{:x}", n & 0xffff_ffff),
        IdentityType::Personnummer => {
            let nine = format!("000101{:03}", n % 1000);
            let sum: u32 = nine
                .bytes()
                .enumerate()
                .map(|(i, b)| {
                    let p = u32::from(b - b'0') * if i % 2 == 0 { 2 } else { 1 };
                    if p > 9 { p - 9 } else { p }
                })
                .sum();
            format!("19{nine}{}", (10 - sum % 10) % 10)
        }
        IdentityType::Organisationsnummer => "556036-0793".to_owned(),
    }
}

/// One check's outcome: passed (what was seen), failed (what to fix), or
/// not run (why).
enum Outcome {
    Pass(String),
    Fail(String),
    Skip(String),
}

impl From<Result<String, String>> for Outcome {
    fn from(r: Result<String, String>) -> Self {
        match r {
            Ok(s) => Self::Pass(s),
            Err(s) => Self::Fail(s),
        }
    }
}

fn status_text(s: &Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

fn expect_code(r: Result<impl Sized, Status>, code: Code, fix: &str) -> Result<String, String> {
    expect_codes(r, &[code], fix)
}

fn expect_codes(
    r: Result<impl Sized, Status>,
    codes: &[Code],
    fix: &str,
) -> Result<String, String> {
    match r {
        Err(s) if codes.contains(&s.code()) => Ok(format!("{:?}", s.code())),
        Err(s) => Err(format!("expected {codes:?}, got {:?}: {fix}", s.code())),
        Ok(_) => Err(format!("expected {codes:?}, the call succeeded: {fix}")),
    }
}

/// The kit's state against one system.
struct Kit {
    inner: DataSystemClient<Channel>,
    minter: Minter,
    token: String,
    system_id: String,
    run: String,
    n: u32,
    operation_timeout: Duration,
    checks: Vec<(String, Outcome)>,
}

impl Kit {
    fn check(&mut self, name: &str, r: impl Into<Outcome>) {
        self.checks.push((name.to_owned(), r.into()));
    }

    fn with_token<T>(m: T, token: Option<&str>) -> anyhow::Result<tonic::Request<T>> {
        let mut r = tonic::Request::new(m);
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse()?);
        }
        r.set_timeout(Duration::from_secs(60));
        Ok(r)
    }

    fn req<T>(&self, m: T) -> anyhow::Result<tonic::Request<T>> {
        Self::with_token(m, Some(&self.token))
    }

    fn header(&mut self, controller: &str) -> pb::Instruction {
        self.n += 1;
        self.header_with_key(controller, format!("conformance-{}-{}", self.run, self.n))
    }

    fn header_with_key(&self, controller: &str, key: String) -> pb::Instruction {
        let now = chrono::Utc::now();
        let due = now.date_naive() + chrono::Days::new(30);
        pb::Instruction {
            request_id: format!("conformance-{}", self.run),
            controller: Some(common::ControllerRef {
                organisation_number: controller.to_owned(),
            }),
            system_id: self.system_id.clone(),
            due_date: Some(dsr_connector::grpc::date_to_pb(due)),
            issued_at: Some(dsr_connector::grpc::timestamp(
                now - chrono::Duration::seconds(5),
            )),
            expires_at: Some(dsr_connector::grpc::timestamp(
                now + chrono::Duration::minutes(10),
            )),
            idempotency_key: key,
        }
    }

    async fn locate_as(
        &mut self,
        token: Option<&str>,
        instruction: pb::Instruction,
        identity: common::Identity,
    ) -> anyhow::Result<Result<pb::LocateResponse, Status>> {
        let req = Self::with_token(
            pb::LocateRequest {
                instruction: Some(instruction),
                identities: vec![identity],
            },
            token,
        )?;
        Ok(self
            .inner
            .locate(req)
            .await
            .map(tonic::Response::into_inner))
    }

    async fn locate(
        &mut self,
        instruction: pb::Instruction,
        identity: common::Identity,
    ) -> anyhow::Result<Result<pb::LocateResponse, Status>> {
        let token = self.token.clone();
        self.locate_as(Some(&token), instruction, identity).await
    }

    /// Follows an operation to its end: WatchOperation, and GetOperation
    /// when the watch ends early; the contract allows a write to finish
    /// after its call returned.
    async fn settle(&mut self, op: Option<pb::Operation>) -> Result<pb::Operation, String> {
        let mut op = op.ok_or(
            "the write answered no operation: return Operation (pending, running or ended)",
        )?;
        let final_state = |o: &pb::Operation| {
            o.state == pb::OperationState::Succeeded as i32
                || o.state == pb::OperationState::Failed as i32
        };
        let deadline = tokio::time::Instant::now() + self.operation_timeout;
        while !final_state(&op) {
            if op.id.is_empty() {
                return Err("an unfinished operation without an id cannot be followed".into());
            }
            let req = self
                .req(pb::WatchOperationRequest { id: op.id.clone() })
                .map_err(|e| e.to_string())?;
            let watched = tokio::time::timeout_at(deadline, async {
                let mut stream = self.inner.watch_operation(req).await?.into_inner();
                let mut last = None;
                while let Some(m) = stream.message().await? {
                    if let Some(o) = m.operation {
                        let done = final_state(&o);
                        last = Some(o);
                        if done {
                            break;
                        }
                    }
                }
                Ok::<_, Status>(last)
            })
            .await;
            match watched {
                Err(_) => {
                    return Err(format!(
                        "operation {} did not end within {:?} (still {:?}): finish writes, or \
                         raise --operation-timeout-secs",
                        op.id,
                        self.operation_timeout,
                        pb::OperationState::try_from(op.state).unwrap_or_default()
                    ));
                }
                Ok(Err(s)) => {
                    return Err(format!(
                        "WatchOperation: {}: stream the operation's states until it ends",
                        status_text(&s)
                    ));
                }
                Ok(Ok(Some(o))) if final_state(&o) => op = o,
                Ok(Ok(_)) => {
                    // The watch ended before the operation: ask for it.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let req = self
                        .req(pb::GetOperationRequest { id: op.id.clone() })
                        .map_err(|e| e.to_string())?;
                    op = self
                        .inner
                        .get_operation(req)
                        .await
                        .map_err(|s| format!("GetOperation: {}", status_text(&s)))?
                        .into_inner()
                        .operation
                        .ok_or("GetOperation answered no operation")?;
                }
            }
        }
        if op.state == pb::OperationState::Failed as i32 {
            return Err(format!("the operation failed: {}", op.error));
        }
        if op.receipt.is_none() {
            return Err("the operation succeeded without a receipt: set Operation.receipt".into());
        }
        Ok(op)
    }
}

/// Whether Describe lists `right`.
fn supports(d: &pb::DescribeResponse, right: pb::Right) -> bool {
    d.supported_rights.contains(&(right as i32))
}

/// The digest rule of `Receipt.instruction_digest`: SHA-256 of the request
/// message as sent, with the instruction's `issued_at` and `expires_at`
/// cleared (a retry re-issues the window, not the instruction).
fn instruction_digest<M: prost::Message + Clone>(
    m: &M,
    instruction: impl FnOnce(&mut M) -> Option<&mut pb::Instruction>,
) -> Vec<u8> {
    let mut m = m.clone();
    if let Some(i) = instruction(&mut m) {
        i.issued_at = None;
        i.expires_at = None;
    }
    dsr_connector::grpc::digest_bytes(&m.encode_to_vec())
}

const SIGNING_FIX: &str = "sign \"dsr.system.v1.Receipt\\n\" followed by the payload bytes with \
     Ed25519, with the key Describe lists under the receipt's key_id";

/// Verifies a receipt against Describe's keys and what was asked.
fn check_receipt(
    signed: &pb::SignedReceipt,
    d: &pb::DescribeResponse,
    asked: &Asked<'_>,
) -> Result<pb::Receipt, String> {
    let key = d
        .signing_keys
        .iter()
        .find(|k| k.key_id == signed.key_id)
        .ok_or_else(|| {
            format!(
                "the receipt names key {:?}, which Describe does not list: publish it in \
                 signing_keys",
                signed.key_id
            )
        })?;
    let r = dsr_connector::grpc::verify_receipt(signed, &d.signing_keys)
        .map_err(|e| format!("{e}: {SIGNING_FIX}"))?;
    let completed = r.completed_at.as_ref().map(|t| t.seconds);
    if let (Some(end), Some(done)) = (key.not_after.as_ref(), completed)
        && done > end.seconds
    {
        return Err(format!(
            "signed with key {} after its not_after: sign with a current key",
            key.key_id
        ));
    }
    let mut problems = Vec::new();
    if r.system_id != asked.system_id {
        problems.push(format!(
            "system_id {:?} is not {:?}",
            r.system_id, asked.system_id
        ));
    }
    if r.request_id != asked.request_id {
        problems.push("request_id is not the instruction's".to_owned());
    }
    if r.idempotency_key != asked.key {
        problems.push("idempotency_key is not the instruction's".to_owned());
    }
    if r.controller
        .as_ref()
        .map(|c| c.organisation_number.as_str())
        != Some(asked.controller)
    {
        problems.push("controller is not the instruction's".to_owned());
    }
    if r.action != asked.action as i32 {
        problems.push(format!("action is not {:?}", asked.action));
    }
    if r.instruction_digest != asked.digest {
        problems.push(
            "instruction_digest is not SHA-256 of the request as sent with the instruction's \
             issued_at and expires_at cleared (see Receipt.instruction_digest in proto/)"
                .to_owned(),
        );
    }
    if r.records.len() != asked.records {
        problems.push(format!(
            "reports {} records of {} asked about: list every record once in `records`",
            r.records.len(),
            asked.records
        ));
    }
    if problems.is_empty() {
        Ok(r)
    } else {
        Err(format!("the receipt's {}", problems.join("; ")))
    }
}

/// What a write asked, for checking its receipt.
struct Asked<'a> {
    system_id: &'a str,
    request_id: &'a str,
    key: &'a str,
    controller: &'a str,
    action: pb::ReceiptAction,
    digest: Vec<u8>,
    records: usize,
}

fn describe_coherent(d: &pb::DescribeResponse) -> Result<String, String> {
    let mut problems = Vec::new();
    if d.system_id.is_empty() {
        problems.push("no system_id".to_owned());
    }
    if d.controllers.is_empty() {
        problems.push("no controllers".to_owned());
    }
    if d.accepted_identities.is_empty() {
        problems.push("accepts no identity".to_owned());
    }
    if d.categories.is_empty() {
        problems.push("declares no category".to_owned());
    }
    for c in &d.categories {
        let id = c.category.as_ref().map(|x| x.id.as_str()).unwrap_or("?");
        if c.purposes.is_empty() || c.legal_basis == 0 {
            problems.push(format!("category {id} lacks a purpose or legal basis"));
        }
        if c.retention
            .as_ref()
            .is_none_or(|r| r.description.is_empty())
        {
            problems.push(format!("category {id} lacks a retention rule"));
        }
        if c.automated_decision && c.automated_decision_logic.trim().is_empty() {
            problems.push(format!(
                "category {id} feeds an automated decision without its logic"
            ));
        }
    }
    if !d
        .signing_keys
        .iter()
        .any(|k| k.algorithm == "Ed25519" && k.public_key.len() == 32 && !k.key_id.is_empty())
    {
        problems.push("no Ed25519 signing key".to_owned());
    }
    if problems.is_empty() {
        Ok(format!(
            "{}: {} categories, {} keys",
            d.system_id,
            d.categories.len(),
            d.signing_keys.len()
        ))
    } else {
        Err(problems.join("; "))
    }
}

/// Every text a person reads, in Swedish and English: the system's name
/// and each category's name, purposes, retention and source (and the
/// logic of an automated decision), not the same words in both.
fn describe_translated(d: &pb::DescribeResponse) -> Result<String, String> {
    let mut problems = Vec::new();
    for l in ["sv", "en"] {
        if d.display_names.get(l).is_none_or(|n| n.trim().is_empty()) {
            problems.push(format!("no display_names[{l}]"));
        }
    }
    for c in &d.categories {
        let id = c.category.as_ref().map(|x| x.id.as_str()).unwrap_or("?");
        let (Some(sv), Some(en)) = (c.texts.get("sv"), c.texts.get("en")) else {
            problems.push(format!("category {id}: texts lack sv or en"));
            continue;
        };
        for (l, t) in [("sv", sv), ("en", en)] {
            if t.display_name.trim().is_empty()
                || t.purposes.is_empty()
                || t.retention_description.trim().is_empty()
                || t.source.trim().is_empty()
                || (c.automated_decision && t.automated_decision_logic.trim().is_empty())
            {
                problems.push(format!("category {id}: texts[{l}] incomplete"));
            }
        }
        if sv.purposes == en.purposes || sv.retention_description == en.retention_description {
            problems.push(format!("category {id}: sv and en are the same words"));
        }
    }
    if problems.is_empty() {
        Ok(format!("{} categories in sv and en", d.categories.len()))
    } else {
        Err(problems.join("; "))
    }
}

/// Runs every check and prints a table; fails when any check fails.
#[allow(clippy::print_stdout, clippy::too_many_lines)]
pub(crate) async fn run(cfg: &Config, args: ConformanceArgs) -> anyhow::Result<()> {
    let person = parse_identity(&args.identity)?;
    let minter = Minter::load(cfg, &args)?;
    let channel = Channel::from_shared(args.endpoint.clone())
        .context("invalid endpoint")?
        .connect()
        .await
        .with_context(|| format!("cannot reach {}", args.endpoint))?;
    let mut inner = DataSystemClient::new(channel);
    let system_id = match &args.system_id {
        Some(id) => id.clone(),
        None => {
            let t = minter.trusted.mint(&dsr_auth::TokenRequest {
                subject: format!("service:{}", minter.trusted.issuer()),
                audiences: services::all_audiences(),
                scopes: vec![SCOPE_DESCRIBE.to_owned()],
                ttl: Duration::from_secs(120),
            })?;
            match inner
                .describe(Kit::with_token(pb::DescribeRequest {}, Some(&t))?)
                .await
            {
                Ok(d) => d.into_inner().system_id,
                Err(s) => bail!(
                    "Describe with a token for the mesh's own systems: {}: give --system-id, \
                     the system's id that its tokens' audience must be",
                    status_text(&s)
                ),
            }
        }
    };
    let token = minter.token(&system_id, &[SCOPE_DESCRIBE, SCOPE_READ, SCOPE_WRITE])?;
    let mut k = Kit {
        inner,
        minter,
        token,
        system_id: system_id.clone(),
        run: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
        n: 0,
        operation_timeout: Duration::from_secs(args.operation_timeout_secs.max(1)),
        checks: Vec::new(),
    };

    let describe = match k.inner.describe(k.req(pb::DescribeRequest {})?).await {
        Ok(d) => d.into_inner(),
        Err(s) => bail!(
            "Describe with the kit's token (issuer {:?}, key id {:?}, audience {system_id:?}, \
             scope {SCOPE_DESCRIBE}) failed: {}: the system must trust that key for that \
             issuer and accept its own id as audience",
            k.minter.trusted.issuer(),
            k.minter.trusted.kid(),
            status_text(&s)
        ),
    };
    k.check("Describe is coherent", describe_coherent(&describe));
    k.check(
        "Describe names the system its tokens are for",
        if describe.system_id == system_id {
            Ok(system_id.clone())
        } else {
            Err(format!(
                "Describe says {:?}, tokens are for {system_id:?}: one id for both",
                describe.system_id
            ))
        },
    );
    k.check(
        "Describe gives every text in Swedish and English",
        describe_translated(&describe),
    );

    // Locate the person under the controller that holds them.
    let controllers: Vec<String> = match &args.controller {
        Some(o) => vec![o.clone()],
        None => describe
            .controllers
            .iter()
            .map(|x| x.organisation_number.clone())
            .collect(),
    };
    let mut located = None;
    for org in &controllers {
        let h = k.header(org);
        let r = k.locate(h, id_pb(person.kind(), person.value())).await?;
        if let Ok(resp) = r
            && resp.found
        {
            located = Some((org.clone(), resp));
            break;
        }
    }
    let Some((org, loc)) = located else {
        k.check(
            "Locate finds the person",
            Err("not found under any controller: give a person the system holds".into()),
        );
        return report(&k.checks);
    };
    let records: Vec<pb::RecordRef> = loc.stores.iter().flat_map(|s| s.records.clone()).collect();
    k.check(
        "Locate finds the person",
        Ok(format!(
            "{} records in {} stores, {} linked identities",
            records.len(),
            loc.stores.len(),
            loc.linked_identities.len()
        )),
    );

    tokens(&mut k, &org, &person).await?;
    instructions(&mut k, &org, &person).await?;
    reads(&mut k, &describe, &org, &loc, &records, &person).await?;
    rights(&mut k, &describe, &org, &records).await?;
    outsiders(&mut k, cfg, &args, &describe, &org, &records, &person).await?;
    erase(&mut k, &describe, &org, &records).await?;
    report(&k.checks)
}

/// A system answers only a token it can verify, for itself, unexpired,
/// with the method's scope.
async fn tokens(k: &mut Kit, org: &str, person: &Identity) -> anyhow::Result<()> {
    let id = || id_pb(person.kind(), person.value());
    let h = k.header(org);
    let none = k.locate_as(None, h, id()).await?;
    let describe = k
        .inner
        .describe(Kit::with_token(pb::DescribeRequest {}, None)?)
        .await;
    let fix = "require a bearer token on every call";
    k.check(
        "A call without a token is UNAUTHENTICATED",
        expect_code(none, Code::Unauthenticated, fix)
            .and_then(|_| expect_code(describe, Code::Unauthenticated, fix)),
    );
    let cases = [
        (
            "A token signed by a key it does not trust is refused",
            k.minter
                .unknown
                .sign(&k.minter.claims(&k.system_id, &[SCOPE_READ], -5, 600))?,
            Code::Unauthenticated,
            "verify the token's signature with the trusted issuer's key (its JWKS)",
        ),
        (
            "A token for another audience is refused",
            k.minter.trusted.sign(&k.minter.claims(
                &format!("not-{}", k.system_id),
                &[SCOPE_READ],
                -5,
                600,
            ))?,
            Code::Unauthenticated,
            "check that the token's `aud` contains the system's own id",
        ),
        (
            "An expired token is refused",
            k.minter
                .trusted
                .sign(&k.minter.claims(&k.system_id, &[SCOPE_READ], -3600, 600))?,
            Code::Unauthenticated,
            "check the token's `exp` (a leeway of seconds, not minutes)",
        ),
        (
            "A token without the method's scope is PERMISSION_DENIED",
            k.minter
                .trusted
                .sign(&k.minter.claims(&k.system_id, &[SCOPE_DESCRIBE], -5, 600))?,
            Code::PermissionDenied,
            "require system:read for Locate, Access and FindAffected, system:write for writes",
        ),
    ];
    for (name, token, code, fix) in cases {
        let h = k.header(org);
        let r = k.locate_as(Some(&token), h, id()).await?;
        k.check(name, expect_code(r, code, fix));
    }
    Ok(())
}

/// The header's rules: not found is an answer, bad input is named, an
/// expired or misrouted instruction is refused.
async fn instructions(k: &mut Kit, org: &str, person: &Identity) -> anyhow::Result<()> {
    let h = k.header(org);
    let unknown = k
        .locate(h, id_pb(person.kind(), &unknown_value(person.kind())))
        .await?;
    k.check(
        "Locate answers NOT_FOUND as a result, not an error",
        match unknown {
            Ok(r) if !r.found && r.stores.is_empty() => Ok("found = false".into()),
            Ok(_) => Err("an unknown person was found".into()),
            Err(s) => Err(format!(
                "error {:?} instead of an answer: answer found = false",
                s.code()
            )),
        },
    );
    let h = k.header(org);
    let malformed = k.locate(h, id_pb(person.kind(), "@@ not valid @@")).await?;
    k.check(
        "Malformed input is INVALID_ARGUMENT",
        expect_code(
            malformed,
            Code::InvalidArgument,
            "validate identities and name the field in a BadRequest",
        ),
    );
    let expired = expired_header(k, org);
    let r = k
        .locate(expired, id_pb(person.kind(), person.value()))
        .await?;
    k.check(
        "An expired instruction is refused",
        expect_code(
            r,
            Code::FailedPrecondition,
            "refuse an instruction past its expires_at (INSTRUCTION_EXPIRED)",
        ),
    );
    let mut misrouted = k.header(org);
    misrouted.system_id = format!("not-{}", k.system_id);
    let r = k
        .locate(misrouted, id_pb(person.kind(), person.value()))
        .await?;
    k.check(
        "A misrouted instruction is refused",
        expect_code(
            r,
            Code::FailedPrecondition,
            "refuse an instruction for another system_id (INSTRUCTION_MISROUTED)",
        ),
    );
    Ok(())
}

fn expired_header(k: &mut Kit, org: &str) -> pb::Instruction {
    let mut h = k.header(org);
    let now = chrono::Utc::now();
    h.issued_at = Some(dsr_connector::grpc::timestamp(
        now - chrono::Duration::minutes(10),
    ));
    h.expires_at = Some(dsr_connector::grpc::timestamp(
        now - chrono::Duration::minutes(1),
    ));
    h
}

async fn access_count(
    k: &mut Kit,
    org: &str,
    records: &[pb::RecordRef],
    portable_only: bool,
) -> anyhow::Result<(usize, usize, usize)> {
    let h = k.header(org);
    let req = k.req(pb::AccessRequest {
        instruction: Some(h),
        records: records.to_vec(),
        portable_only,
    })?;
    let mut stream = k.inner.access(req).await?.into_inner();
    let (mut n, mut batches, mut restricted) = (0usize, 0usize, 0usize);
    while let Some(b) = stream.message().await? {
        batches += 1;
        n += b.records.len();
        restricted += b
            .records
            .iter()
            .filter(|r| {
                r.restricted
                    && r.restriction_reasons
                        .contains(&(pb::RestrictionReason::Request as i32))
            })
            .count();
    }
    Ok((n, batches, restricted))
}

/// Access, portability and a breach's FindAffected.
async fn reads(
    k: &mut Kit,
    d: &pb::DescribeResponse,
    org: &str,
    loc: &pb::LocateResponse,
    records: &[pb::RecordRef],
    person: &Identity,
) -> anyhow::Result<()> {
    let before = access_count(k, org, records, false).await;
    k.check(
        "Access streams the located records",
        match &before {
            Ok((n, b, _)) if *n == records.len() => Ok(format!("{n} records in {b} messages")),
            Ok((n, _, _)) => Err(format!(
                "{n} records streamed, {} located: stream each located record once",
                records.len()
            )),
            Err(e) => Err(e.to_string()),
        },
    );
    let portable = access_count(k, org, records, true).await;
    k.check(
        "Access for portability streams the portable subset",
        if supports(d, pb::Right::Portability) {
            match portable {
                Ok((n, _, _)) if n <= records.len() => Ok(format!("{n} portable records")),
                Ok((n, _, _)) => Err(format!("{n} portable records of {} located", records.len())),
                Err(e) => Err(e.to_string()),
            }
        } else {
            match portable {
                Err(e) => match e.downcast_ref::<Status>() {
                    Some(s) if s.code() == Code::Unimplemented => Ok("UNIMPLEMENTED".into()),
                    _ => Err(format!(
                        "{e}: portability is not in supported_rights, so answer UNIMPLEMENTED"
                    )),
                },
                Ok(_) => Err(
                    "portability is not in supported_rights but was answered: list it, or \
                     answer UNIMPLEMENTED"
                        .into(),
                ),
            }
        },
    );

    // For a breach: the person is among those with records in the
    // categories they hold.
    let categories: Vec<String> = loc
        .stores
        .iter()
        .flat_map(|s| s.category_ids.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let h = k.header(org);
    let req = k.req(pb::FindAffectedRequest {
        instruction: Some(h),
        category_ids: categories.clone(),
        from_time: None,
        to_time: None,
    })?;
    let affected = async {
        let mut stream = k.inner.find_affected(req).await?.into_inner();
        let (mut people, mut records, mut found) = (0u64, 0u64, false);
        while let Some(p) = stream.message().await? {
            people += 1;
            records += p.record_count;
            found |= p.contacts.iter().any(|i| i.value == person.value());
        }
        Ok::<_, anyhow::Error>((people, records, found))
    }
    .await;
    let contact = matches!(person.kind(), IdentityType::Email | IdentityType::Phone);
    k.check(
        "FindAffected lists the people a breach of their categories touches",
        match affected {
            Ok((people, records, found)) if people > 0 && (found || !contact) => Ok(format!(
                "{people} people, {records} records in {} categories",
                categories.len()
            )),
            Ok((people, _, _)) if people > 0 => Err(
                "the located person is not among them with their email address or phone: \
                 a notice (Art. 34) could not reach them"
                    .into(),
            ),
            Ok(_) => Err("nobody, though the person's records hold these categories".into()),
            Err(e) => Err(format!(
                "{e}: implement FindAffected (dsr.system.v1) so that a breach's counts \
                 and notices include this system"
            )),
        },
    );
    let h = k.header(org);
    let req = k.req(pb::FindAffectedRequest {
        instruction: Some(h),
        category_ids: vec![],
        from_time: None,
        to_time: None,
    })?;
    let none = k.inner.find_affected(req).await;
    k.check(
        "FindAffected without a category is INVALID_ARGUMENT",
        expect_code(
            none,
            Code::InvalidArgument,
            "name category_ids in a BadRequest",
        ),
    );
    Ok(())
}

fn all_methods() -> Vec<i32> {
    vec![
        pb::ErasureMethod::Delete as i32,
        pb::ErasureMethod::Anonymise as i32,
        pb::ErasureMethod::Nullify as i32,
    ]
}

fn restrict_req(h: pb::Instruction, records: &[pb::RecordRef], lift: bool) -> pb::RestrictRequest {
    pb::RestrictRequest {
        instruction: Some(h),
        records: records.to_vec(),
        lift,
        reason: "conformance".into(),
        basis: pb::RestrictionReason::Request as i32,
    }
}

/// Restriction and its effect on an erasure, a write cut short, and the
/// rights the system does not list answering UNIMPLEMENTED.
#[allow(clippy::too_many_lines)]
async fn rights(
    k: &mut Kit,
    d: &pb::DescribeResponse,
    org: &str,
    records: &[pb::RecordRef],
) -> anyhow::Result<()> {
    if supports(d, pb::Right::Restriction) {
        let h = k.header(org);
        let req = k.req(restrict_req(h, records, false))?;
        let placed = match k.inner.restrict(req).await {
            Ok(r) => k.settle(r.into_inner().operation).await,
            Err(s) => Err(status_text(&s)),
        };
        let after = match placed {
            Ok(_) => access_count(k, org, records, false)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        k.check(
            "Restrict, then Access shows the records restricted (REQUEST)",
            match after {
                Ok((n, _, r)) if n > 0 && n == r => Ok(format!("{r} of {n} restricted")),
                Ok((n, _, r)) => Err(format!(
                    "{r} of {n} restricted for an Art. 18 request: mark restricted records \
                     with restriction_reasons REQUEST"
                )),
                Err(e) => Err(e),
            },
        );
        if supports(d, pb::Right::Erasure) {
            // An Erase keeps records under an Art. 18 restriction, saying so
            // per record; lifting the restriction lets a later Erase remove them.
            let key = format!("conformance-{}-kept", k.run);
            let req = pb::EraseRequest {
                instruction: Some(k.header_with_key(org, key.clone())),
                records: records.to_vec(),
                acceptable_methods: all_methods(),
                retain: vec![],
            };
            let asked = Asked {
                system_id: &k.system_id.clone(),
                request_id: &format!("conformance-{}", k.run),
                key: &key,
                controller: org,
                action: pb::ReceiptAction::Erase,
                digest: instruction_digest(&req, |m| m.instruction.as_mut()),
                records: records.len(),
            };
            let kept = match k.inner.erase(k.req(req)?).await {
                Ok(r) => k.settle(r.into_inner().operation).await,
                Err(s) => Err(status_text(&s)),
            };
            let r = kept.and_then(|op| {
                let rc = check_receipt(op.receipt.as_ref().ok_or("no receipt")?, d, &asked)?;
                let all_kept = rc
                    .records
                    .iter()
                    .all(|o| o.result == pb::RecordResult::Retained as i32)
                    && rc
                        .retained
                        .iter()
                        .all(|x| x.reason == pb::RestrictionReason::Request as i32);
                if all_kept {
                    Ok(format!("{} records retained (REQUEST)", rc.records.len()))
                } else {
                    Err(
                        "the receipt does not report every record RETAINED for the request: \
                         an Art. 18 restriction keeps the records"
                            .into(),
                    )
                }
            });
            k.check("An Erase keeps records under an Art. 18 restriction", r);
        } else {
            k.check(
                "An Erase keeps records under an Art. 18 restriction",
                Outcome::Skip("erasure not in supported_rights".into()),
            );
        }
        let h = k.header(org);
        let req = k.req(restrict_req(h, records, true))?;
        let lifted = match k.inner.restrict(req).await {
            Ok(r) => k
                .settle(r.into_inner().operation)
                .await
                .map(|op| format!("operation {}", op.id)),
            Err(s) => Err(status_text(&s)),
        };
        k.check("Lifting the restriction answers a receipt", lifted);

        // A write cut short by the caller's deadline completes when asked
        // again with the same key: the system finished it, or finishes it now.
        let key = format!("conformance-{}-cut", k.run);
        let cut = restrict_req(k.header_with_key(org, key.clone()), records, true);
        let mut short = k.req(cut.clone())?;
        short.set_timeout(Duration::from_millis(1));
        let _ = k.inner.restrict(short).await;
        let again = restrict_req(k.header_with_key(org, key), records, true);
        let finished = match k.inner.restrict(k.req(again)?).await {
            Ok(r) => k
                .settle(r.into_inner().operation)
                .await
                .map(|op| format!("operation {} finished with a receipt", op.id)),
            Err(s) => Err(format!(
                "{}: a claimed key's work goes on after its caller stops waiting",
                status_text(&s)
            )),
        };
        k.check(
            "A write cut short by its caller completes when asked again with its key",
            finished,
        );
    } else {
        let h = k.header(org);
        let req = k.req(restrict_req(h, records, false))?;
        let r = k.inner.restrict(req).await;
        k.check(
            "Restrict (not in supported_rights) is UNIMPLEMENTED",
            expect_code(
                r,
                Code::Unimplemented,
                "answer UNIMPLEMENTED for a right not in supported_rights, or list it",
            ),
        );
    }
    if !supports(d, pb::Right::Erasure) {
        let h = k.header(org);
        let req = k.req(pb::EraseRequest {
            instruction: Some(h),
            records: records.to_vec(),
            acceptable_methods: all_methods(),
            retain: vec![],
        })?;
        let r = k.inner.erase(req).await;
        k.check(
            "Erase (not in supported_rights) is UNIMPLEMENTED",
            expect_code(
                r,
                Code::Unimplemented,
                "answer UNIMPLEMENTED for a right not in supported_rights, or list it",
            ),
        );
    }
    let h = k.header(org);
    let rectify = pb::RectifyRequest {
        instruction: Some(h),
        changes: records
            .iter()
            .take(1)
            .map(|r| pb::FieldChange {
                record: Some(r.clone()),
                field: "conformance_unknown_field".into(),
                value: "x".into(),
            })
            .collect(),
    };
    if supports(d, pb::Right::Rectification) {
        let r = k.inner.rectify(k.req(rectify)?).await;
        k.check(
            "Rectify of a field the record lacks is INVALID_ARGUMENT",
            expect_code(
                r,
                Code::InvalidArgument,
                "refuse a field Access does not show, naming it in a BadRequest",
            ),
        );
    } else {
        let r = k.inner.rectify(k.req(rectify)?).await;
        k.check(
            "Rectify (not in supported_rights) is UNIMPLEMENTED",
            expect_code(
                r,
                Code::Unimplemented,
                "answer UNIMPLEMENTED for a right not in supported_rights, or list it",
            ),
        );
    }
    if !supports(d, pb::Right::Objection) {
        let h = k.header(org);
        let req = k.req(pb::ObjectRequest {
            instruction: Some(h),
            records: records.to_vec(),
            purposes: vec![],
            direct_marketing: true,
        })?;
        let r = k.inner.object(req).await;
        k.check(
            "Object (not in supported_rights) is UNIMPLEMENTED",
            expect_code(
                r,
                Code::Unimplemented,
                "answer UNIMPLEMENTED for a right not in supported_rights, or list it",
            ),
        );
    }
    Ok(())
}

/// Only the erasure service writes: a reader's write and a portal's call
/// are refused by a system that trusts their keys; an expired write too;
/// the person is still there afterwards.
async fn outsiders(
    k: &mut Kit,
    cfg: &Config,
    args: &ConformanceArgs,
    d: &pb::DescribeResponse,
    org: &str,
    records: &[pb::RecordRef],
    person: &Identity,
) -> anyhow::Result<()> {
    let (reader, portal) = outsider_tokens(cfg, args, &k.system_id);
    let erasure = supports(d, pb::Right::Erasure);
    let as_reader = match &reader {
        Some(t) => {
            let h = k.header(org);
            let r = Kit::with_token(
                pb::EraseRequest {
                    instruction: Some(h),
                    records: records.to_vec(),
                    acceptable_methods: vec![pb::ErasureMethod::Delete as i32],
                    retain: vec![],
                },
                Some(t),
            )?;
            let codes: &[Code] = if erasure {
                &[Code::PermissionDenied]
            } else {
                &[Code::PermissionDenied, Code::Unimplemented]
            };
            expect_codes(
                k.inner.erase(r).await,
                codes,
                "grant system:write to the erasure service's issuer only",
            )
            .into()
        }
        None => Outcome::Fail("no token of another service to try: give --reader-token".into()),
    };
    k.check(
        "An Erase from a service other than erasure is refused",
        as_reader,
    );
    let as_portal = match &portal {
        Some(t) => {
            let h = k.header(org);
            let r = k
                .locate_as(Some(t), h, id_pb(person.kind(), person.value()))
                .await?;
            expect_codes(
                r,
                &[Code::PermissionDenied, Code::Unauthenticated],
                "grant the system's scopes to the mesh's services only",
            )
            .into()
        }
        None => Outcome::Fail("no portal token to try: give --portal-token".into()),
    };
    k.check("A portal's token cannot reach the system", as_portal);
    if erasure {
        let h = expired_header(k, org);
        let req = k.req(pb::EraseRequest {
            instruction: Some(h),
            records: records.to_vec(),
            acceptable_methods: all_methods(),
            retain: vec![],
        })?;
        let r = k.inner.erase(req).await;
        k.check(
            "An expired Erase is refused",
            expect_code(
                r,
                Code::FailedPrecondition,
                "check the window of every write before claiming its key (INSTRUCTION_EXPIRED)",
            ),
        );
    }
    let h = k.header(org);
    let still = k.locate(h, id_pb(person.kind(), person.value())).await?;
    k.check(
        "Refused writes changed nothing",
        match still {
            Ok(r) if r.found => Ok("the person is still found".into()),
            Ok(_) => Err("the person is gone after refused writes".into()),
            Err(s) => Err(status_text(&s)),
        },
    );
    Ok(())
}

/// Erase twice with one key: one operation, one receipt that verifies and
/// is bound to the instruction; the key with another payload is refused.
async fn erase(
    k: &mut Kit,
    d: &pb::DescribeResponse,
    org: &str,
    records: &[pb::RecordRef],
) -> anyhow::Result<()> {
    const ONE: &str = "Erase twice with one key gives one receipt";
    const VERIFIES: &str = "The receipt verifies against Describe's keys and the instruction";
    const REUSED: &str = "The same key with another payload is refused";
    if !supports(d, pb::Right::Erasure) {
        for name in [ONE, VERIFIES, REUSED] {
            k.check(
                name,
                Outcome::Skip("erasure not in supported_rights".into()),
            );
        }
        return Ok(());
    }
    let key = format!("conformance-{}-erase", k.run);
    let erase = pb::EraseRequest {
        instruction: Some(k.header_with_key(org, key.clone())),
        records: records.to_vec(),
        acceptable_methods: all_methods(),
        retain: vec![],
    };
    let first = match k.inner.erase(k.req(erase.clone())?).await {
        Ok(r) => k.settle(r.into_inner().operation).await,
        Err(s) => Err(status_text(&s)),
    };
    let mut replay = erase.clone();
    replay.instruction = Some(k.header_with_key(org, key.clone()));
    let second = match k.inner.erase(k.req(replay)?).await {
        Ok(r) => k.settle(r.into_inner().operation).await,
        Err(s) => Err(status_text(&s)),
    };
    let receipt = match (first, second) {
        (Ok(a), Ok(b)) => match (&a.receipt, &b.receipt) {
            (Some(ra), Some(rb))
                if a.id == b.id && ra.payload == rb.payload && ra.signature == rb.signature =>
            {
                k.check(ONE, Ok(format!("operation {}", a.id)));
                Some(ra.clone())
            }
            _ => {
                k.check(
                    ONE,
                    Err(
                        "the second call acted again: the same key with the same instruction \
                         must answer the first operation and its receipt, byte for byte"
                            .into(),
                    ),
                );
                a.receipt
            }
        },
        (Err(e), _) | (_, Err(e)) => {
            k.check(ONE, Err(e));
            None
        }
    };
    let asked = Asked {
        system_id: &k.system_id.clone(),
        request_id: &format!("conformance-{}", k.run),
        key: &key,
        controller: org,
        action: pb::ReceiptAction::Erase,
        digest: instruction_digest(&erase, |m| m.instruction.as_mut()),
        records: records.len(),
    };
    k.check(
        VERIFIES,
        match &receipt {
            Some(r) => check_receipt(r, d, &asked).map(|rc| {
                let affected: u64 = rc.stores.iter().map(|s| s.affected).sum();
                format!(
                    "key {}, {} stores, {affected} records erased, {} retained",
                    r.key_id,
                    rc.stores.len(),
                    rc.retained.len()
                )
            }),
            None => Err("no receipt to check".into()),
        },
    );
    let mut reused = erase;
    reused.instruction = Some(k.header_with_key(org, key));
    reused.records.truncate(1);
    reused.acceptable_methods.truncate(1);
    let r = k.inner.erase(k.req(reused)?).await;
    k.check(
        REUSED,
        expect_code(
            r,
            Code::AlreadyExists,
            "keep each key's instruction digest and refuse another instruction under it \
             (IDEMPOTENCY_KEY_REUSED)",
        ),
    );
    Ok(())
}

#[allow(clippy::print_stdout)]
fn report(checks: &[(String, Outcome)]) -> anyhow::Result<()> {
    println!("{:<70} RESULT", "CHECK");
    for (name, r) in checks {
        match r {
            Outcome::Pass(d) => println!("{name:<70} ok    {d}"),
            Outcome::Fail(e) => println!("{name:<70} FAIL  {e}"),
            Outcome::Skip(w) => println!("{name:<70} skip  {w}"),
        }
    }
    let failed = checks
        .iter()
        .filter(|(_, r)| matches!(r, Outcome::Fail(_)))
        .count();
    let skipped = checks
        .iter()
        .filter(|(_, r)| matches!(r, Outcome::Skip(_)))
        .count();
    println!(
        "{} passed, {failed} failed, {skipped} not applicable",
        checks.len() - failed - skipped
    );
    if failed > 0 {
        bail!("{failed} of {} conformance checks failed", checks.len());
    }
    Ok(())
}
