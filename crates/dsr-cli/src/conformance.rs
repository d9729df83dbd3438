//! `dsr conformance <endpoint> --identity <type:value>`: checks a DataSystem
//! implementation over gRPC against the contract. It reads, restricts and
//! finally erases the given person: point it at a test person.

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
    /// Bearer token (default: minted from the data directory's development key).
    #[arg(long, env = "DSR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A token the system trusts, from a service that may read but not
    /// write (discovery or export), asking for `system:write`: the system
    /// must refuse its writes with PERMISSION_DENIED (default under `dsr up`:
    /// minted with discovery's key).
    #[arg(long, env = "DSR_READER_TOKEN", hide_env_values = true)]
    reader_token: Option<String>,
    /// A token the system trusts from a portal's issuer, asking for the
    /// system's scopes: the system must refuse it with PERMISSION_DENIED
    /// (default under `dsr up`: minted with the development key).
    #[arg(long, env = "DSR_PORTAL_TOKEN", hide_env_values = true)]
    portal_token: Option<String>,
}

/// Tokens signed by keys the system trusts, for issuers that must not
/// write to it (the reader) or reach it at all (the portal): minted under
/// `dsr up` from the keys it gave them, never from a key made up here (a
/// refusal of an unknown key would prove nothing).
fn outsider_tokens(cfg: &Config, args: &ConformanceArgs) -> (Option<String>, Option<String>) {
    let all = || {
        [
            dsr_system_sql::grpc::SCOPE_DESCRIBE,
            dsr_system_sql::grpc::SCOPE_READ,
            dsr_system_sql::grpc::SCOPE_WRITE,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect::<Vec<_>>()
    };
    let ttl = Duration::from_secs(600);
    let reader = args.reader_token.clone().or_else(|| {
        cfg.data_dir
            .join("keys/discovery-service.pem")
            .exists()
            .then(|| {
                dev::service_token(
                    &cfg.data_dir,
                    "discovery",
                    services::all_audiences(),
                    all(),
                    ttl,
                )
                .ok()
            })
            .flatten()
    });
    let portal = args.portal_token.clone().or_else(|| {
        dev::load_dev_key(&cfg.data_dir).ok().and_then(|_| {
            dev::token_or_mint(
                &cfg.data_dir,
                None,
                "conformance-portal",
                services::all_audiences(),
                all(),
                ttl,
            )
            .ok()
        })
    });
    (reader, portal)
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

struct Client {
    inner: DataSystemClient<Channel>,
    token: String,
    system_id: String,
    run: String,
    n: u32,
}

impl Client {
    fn req<T>(&self, m: T) -> anyhow::Result<tonic::Request<T>> {
        let mut r = tonic::Request::new(m);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {}", self.token).parse()?);
        r.set_timeout(Duration::from_secs(60));
        Ok(r)
    }

    async fn locate(
        &mut self,
        instruction: pb::Instruction,
        identity: common::Identity,
    ) -> anyhow::Result<Result<pb::LocateResponse, Status>> {
        let req = self.req(pb::LocateRequest {
            instruction: Some(instruction),
            identities: vec![identity],
        })?;
        Ok(self
            .inner
            .locate(req)
            .await
            .map(tonic::Response::into_inner))
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
}

type Check = (String, Result<String, String>);

fn check(name: &str, r: Result<String, String>) -> Check {
    (name.to_owned(), r)
}

fn expect_code(r: Result<impl Sized, Status>, code: Code) -> Result<String, String> {
    match r {
        Err(s) if s.code() == code => Ok(format!("{code:?}")),
        Err(s) => Err(format!("expected {code:?}, got {:?}", s.code())),
        Ok(_) => Err(format!("expected {code:?}, the call succeeded")),
    }
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
    let (reader, portal) = outsider_tokens(cfg, &args);
    // Only the erasure service may write to a data system: the kit acts as
    // it (under `dsr up`, with the key `dsr up` gave it).
    let token = match args.token {
        Some(t) => t,
        None => dev::service_token(
            &cfg.data_dir,
            "erasure",
            services::all_audiences(),
            [
                dsr_system_sql::grpc::SCOPE_DESCRIBE,
                dsr_system_sql::grpc::SCOPE_READ,
                dsr_system_sql::grpc::SCOPE_WRITE,
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
            Duration::from_secs(600),
        )?,
    };
    let channel = Channel::from_shared(args.endpoint.clone())
        .context("invalid endpoint")?
        .connect()
        .await
        .with_context(|| format!("cannot reach {}", args.endpoint))?;
    let mut c = Client {
        inner: DataSystemClient::new(channel),
        token,
        system_id: String::new(),
        run: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
        n: 0,
    };
    let mut checks: Vec<Check> = Vec::new();

    let describe = c
        .inner
        .describe(c.req(pb::DescribeRequest {})?)
        .await
        .map(tonic::Response::into_inner);
    let describe = match describe {
        Ok(d) => d,
        Err(s) => bail!("Describe failed: {:?} {}", s.code(), s.message()),
    };
    checks.push(check("Describe is coherent", describe_coherent(&describe)));
    checks.push(check(
        "Describe gives every text in Swedish and English",
        describe_translated(&describe),
    ));
    c.system_id = describe.system_id.clone();

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
        let h = c.header(org);
        let r = c.locate(h, id_pb(person.kind(), person.value())).await?;
        if let Ok(resp) = r
            && resp.found
        {
            located = Some((org.clone(), resp));
            break;
        }
    }
    let Some((org, loc)) = located else {
        checks.push(check(
            "Locate finds the person",
            Err("not found under any controller".into()),
        ));
        return report(&checks);
    };
    let records: Vec<pb::RecordRef> = loc.stores.iter().flat_map(|s| s.records.clone()).collect();
    checks.push(check(
        "Locate finds the person",
        Ok(format!(
            "{} records in {} stores, {} linked identities",
            records.len(),
            loc.stores.len(),
            loc.linked_identities.len()
        )),
    ));

    let h = c.header(&org);
    let unknown = c
        .locate(h, id_pb(person.kind(), &unknown_value(person.kind())))
        .await?;
    checks.push(check(
        "Locate answers NOT_FOUND as a result, not an error",
        match unknown {
            Ok(r) if !r.found && r.stores.is_empty() => Ok("found = false".into()),
            Ok(_) => Err("an unknown person was found".into()),
            Err(s) => Err(format!("error {:?} instead of an answer", s.code())),
        },
    ));

    let h = c.header(&org);
    let malformed = c.locate(h, id_pb(person.kind(), "@@ not valid @@")).await?;
    checks.push(check(
        "Malformed input is INVALID_ARGUMENT",
        expect_code(malformed, Code::InvalidArgument),
    ));

    let mut expired = c.header(&org);
    let now = chrono::Utc::now();
    expired.issued_at = Some(dsr_connector::grpc::timestamp(
        now - chrono::Duration::minutes(10),
    ));
    expired.expires_at = Some(dsr_connector::grpc::timestamp(
        now - chrono::Duration::minutes(1),
    ));
    let r = c
        .locate(expired, id_pb(person.kind(), person.value()))
        .await?;
    checks.push(check(
        "An expired instruction is refused",
        expect_code(r, Code::FailedPrecondition),
    ));

    let mut misrouted = c.header(&org);
    misrouted.system_id = format!("not-{}", c.system_id);
    let r = c
        .locate(misrouted, id_pb(person.kind(), person.value()))
        .await?;
    checks.push(check(
        "A misrouted instruction is refused",
        expect_code(r, Code::FailedPrecondition),
    ));

    // Access streams every located record.
    let h = c.header(&org);
    let access = async {
        let mut stream = c
            .inner
            .access(c.req(pb::AccessRequest {
                instruction: Some(h),
                records: records.clone(),
                portable_only: false,
            })?)
            .await?
            .into_inner();
        let (mut n, mut batches, mut restricted) = (0usize, 0usize, 0usize);
        while let Some(b) = stream.message().await? {
            batches += 1;
            n += b.records.len();
            restricted += b.records.iter().filter(|r| r.restricted).count();
        }
        Ok::<_, anyhow::Error>((n, batches, restricted))
    };
    let before = access.await;
    checks.push(check(
        "Access streams the located records",
        match &before {
            Ok((n, b, _)) if *n == records.len() => Ok(format!("{n} records in {b} messages")),
            Ok((n, _, _)) => Err(format!("{n} records streamed, {} located", records.len())),
            Err(e) => Err(e.to_string()),
        },
    ));

    // For a breach: the person is among those with records in the
    // categories they hold.
    let categories: Vec<String> = loc
        .stores
        .iter()
        .flat_map(|s| s.category_ids.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let h = c.header(&org);
    let affected = async {
        let mut stream = c
            .inner
            .find_affected(c.req(pb::FindAffectedRequest {
                instruction: Some(h),
                category_ids: categories.clone(),
                from_time: None,
                to_time: None,
            })?)
            .await?
            .into_inner();
        let (mut people, mut records, mut found) = (0u64, 0u64, false);
        while let Some(p) = stream.message().await? {
            people += 1;
            records += p.record_count;
            found |= p.contacts.iter().any(|i| i.value == person.value());
        }
        Ok::<_, anyhow::Error>((people, records, found))
    }
    .await;
    let contact = matches!(
        person.kind(),
        dsr_domain::identity::IdentityType::Email | dsr_domain::identity::IdentityType::Phone
    );
    checks.push(check(
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
    ));
    let h = c.header(&org);
    let none = c
        .inner
        .find_affected(c.req(pb::FindAffectedRequest {
            instruction: Some(h),
            category_ids: vec![],
            from_time: None,
            to_time: None,
        })?)
        .await;
    checks.push(check(
        "FindAffected without a category is INVALID_ARGUMENT",
        expect_code(none, Code::InvalidArgument),
    ));

    // Restrict, then Access shows the records restricted.
    let h = c.header(&org);
    let r = c
        .inner
        .restrict(c.req(pb::RestrictRequest {
            instruction: Some(h),
            records: records.clone(),
            lift: false,
            reason: "conformance".into(),
            basis: pb::RestrictionReason::Request as i32,
        })?)
        .await;
    let h = c.header(&org);
    let after = async {
        r?;
        let mut stream = c
            .inner
            .access(c.req(pb::AccessRequest {
                instruction: Some(h),
                records: records.clone(),
                portable_only: false,
            })?)
            .await?
            .into_inner();
        let (mut n, mut restricted) = (0usize, 0usize);
        while let Some(b) = stream.message().await? {
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
        Ok::<_, anyhow::Error>((n, restricted))
    }
    .await;
    checks.push(check(
        "Restrict, then Access shows the records restricted (REQUEST)",
        match after {
            Ok((n, r)) if n > 0 && n == r => Ok(format!("{r} of {n} restricted")),
            Ok((n, r)) => Err(format!("{r} of {n} restricted for an Art. 18 request")),
            Err(e) => Err(e.to_string()),
        },
    ));

    // An Erase keeps records under an Art. 18 restriction, saying so per
    // record; lifting the restriction lets the next Erase remove them.
    let h = c.header_with_key(&org, format!("conformance-{}-kept", c.run));
    let kept = c
        .inner
        .erase(c.req(pb::EraseRequest {
            instruction: Some(h),
            records: records.clone(),
            acceptable_methods: vec![
                pb::ErasureMethod::Delete as i32,
                pb::ErasureMethod::Anonymise as i32,
                pb::ErasureMethod::Nullify as i32,
            ],
            retain: vec![],
        })?)
        .await
        .map(|r| r.into_inner().operation);
    checks.push(check(
        "An Erase keeps records under an Art. 18 restriction",
        match kept {
            Ok(Some(op)) => match op
                .receipt
                .as_ref()
                .map(|r| dsr_connector::grpc::verify_receipt(r, &describe.signing_keys))
            {
                Some(Ok(rc)) => {
                    let all_kept = rc.records.len() == records.len()
                        && rc
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
                            "the receipt does not report every record RETAINED for the request"
                                .into(),
                        )
                    }
                }
                Some(Err(e)) => Err(e.to_string()),
                None => Err("no receipt (operation not finished)".into()),
            },
            Ok(None) => Err("no operation".into()),
            Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
        },
    ));
    let h = c.header(&org);
    let lifted = c
        .inner
        .restrict(c.req(pb::RestrictRequest {
            instruction: Some(h),
            records: records.clone(),
            lift: true,
            reason: "conformance: lifted".into(),
            basis: pb::RestrictionReason::Request as i32,
        })?)
        .await;
    checks.push(check(
        "Lifting the restriction answers a receipt",
        match lifted.map(|r| r.into_inner().operation) {
            Ok(Some(op)) if op.receipt.is_some() => Ok(format!("operation {}", op.id)),
            Ok(_) => Err("no receipt".into()),
            Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
        },
    ));

    // A write cut short by the caller's deadline completes when asked
    // again with the same key: the system finished it, or finishes it now.
    let key = format!("conformance-{}-cut", c.run);
    let cut = pb::RestrictRequest {
        instruction: Some(c.header_with_key(&org, key.clone())),
        records: records.clone(),
        lift: true,
        reason: "conformance: a write cut short".into(),
        basis: pb::RestrictionReason::Request as i32,
    };
    let mut short = c.req(cut.clone())?;
    short.set_timeout(Duration::from_millis(1));
    let _ = c.inner.restrict(short).await;
    let mut again = cut;
    again.instruction = Some(c.header_with_key(&org, key));
    let finished: Result<String, String> = async {
        let mut op = c
            .inner
            .restrict(c.req(again).map_err(|e| e.to_string())?)
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner()
            .operation
            .ok_or("no operation")?;
        for _ in 0..100 {
            if op.receipt.is_some() {
                return Ok(format!("operation {} finished with a receipt", op.id));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            op = c
                .inner
                .get_operation(
                    c.req(pb::GetOperationRequest { id: op.id.clone() })
                        .map_err(|e| e.to_string())?,
                )
                .await
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
                .into_inner()
                .operation
                .ok_or("no operation")?;
        }
        Err("the operation never finished".into())
    }
    .await;
    checks.push(check(
        "A write cut short by its caller completes when asked again with its key",
        finished,
    ));

    // Only the erasure service writes: a reader's write and a portal's
    // call are refused for want of the right, by a system that trusts
    // their keys; the person is still there afterwards.
    let as_reader = match &reader {
        Some(t) => {
            let mut r = tonic::Request::new(pb::EraseRequest {
                instruction: Some(c.header(&org)),
                records: records.clone(),
                acceptable_methods: vec![pb::ErasureMethod::Delete as i32],
                retain: vec![],
            });
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse()?);
            expect_code(c.inner.erase(r).await, Code::PermissionDenied)
        }
        None => Err("no token of another service to try: give --reader-token".into()),
    };
    checks.push(check(
        "An Erase from a service other than erasure is refused",
        as_reader,
    ));
    let as_portal = match &portal {
        Some(t) => {
            let mut r = tonic::Request::new(pb::LocateRequest {
                instruction: Some(c.header(&org)),
                identities: vec![id_pb(person.kind(), person.value())],
            });
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse()?);
            expect_code(c.inner.locate(r).await, Code::PermissionDenied)
        }
        None => Err("no portal token to try: give --portal-token".into()),
    };
    checks.push(check("A portal's token cannot reach the system", as_portal));
    let h = c.header(&org);
    let still = c.locate(h, id_pb(person.kind(), person.value())).await?;
    checks.push(check(
        "Refused writes changed nothing",
        match still {
            Ok(r) if r.found => Ok("the person is still found".into()),
            Ok(_) => Err("the person is gone after refused writes".into()),
            Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
        },
    ));
    let mut anonymous = tonic::Request::new(pb::DescribeRequest {});
    anonymous.set_timeout(Duration::from_secs(10));
    checks.push(check(
        "A call without a token is UNAUTHENTICATED",
        expect_code(c.inner.describe(anonymous).await, Code::Unauthenticated),
    ));

    // Erase twice with one key: one receipt.
    let key = format!("conformance-{}-erase", c.run);
    let erase = pb::EraseRequest {
        instruction: Some(c.header_with_key(&org, key.clone())),
        records: records.clone(),
        acceptable_methods: vec![
            pb::ErasureMethod::Delete as i32,
            pb::ErasureMethod::Anonymise as i32,
            pb::ErasureMethod::Nullify as i32,
        ],
        retain: vec![],
    };
    let first = c
        .inner
        .erase(c.req(erase.clone())?)
        .await
        .map(|r| r.into_inner().operation);
    let mut second_req = erase.clone();
    second_req.instruction = Some(c.header_with_key(&org, key.clone()));
    let second = c
        .inner
        .erase(c.req(second_req)?)
        .await
        .map(|r| r.into_inner().operation);
    let receipt = match (&first, &second) {
        (Ok(Some(a)), Ok(Some(b))) => match (&a.receipt, &b.receipt) {
            (Some(ra), Some(rb)) if ra.payload == rb.payload && ra.signature == rb.signature => {
                checks.push(check(
                    "Erase twice with one key gives one receipt",
                    Ok(format!("operation {}", a.id)),
                ));
                Some(ra.clone())
            }
            (Some(_), Some(_)) => {
                checks.push(check(
                    "Erase twice with one key gives one receipt",
                    Err("the receipts differ".into()),
                ));
                None
            }
            _ => {
                checks.push(check(
                    "Erase twice with one key gives one receipt",
                    Err("no receipt (operation not finished)".into()),
                ));
                None
            }
        },
        (Err(s), _) | (_, Err(s)) => {
            checks.push(check(
                "Erase twice with one key gives one receipt",
                Err(format!("{:?}: {}", s.code(), s.message())),
            ));
            None
        }
        _ => {
            checks.push(check(
                "Erase twice with one key gives one receipt",
                Err("no operation".into()),
            ));
            None
        }
    };
    checks.push(check(
        "The receipt's signature verifies against Describe's keys",
        match &receipt {
            Some(r) => match dsr_connector::grpc::verify_receipt(r, &describe.signing_keys) {
                Ok(rc) if rc.records.len() != records.len() => Err(format!(
                    "the receipt reports {} records of {} asked about",
                    rc.records.len(),
                    records.len()
                )),
                Ok(rc) if rc.system_id == c.system_id && rc.idempotency_key == key => {
                    let affected: u64 = rc.stores.iter().map(|s| s.affected).sum();
                    Ok(format!(
                        "key {}, {} stores, {affected} records erased, {} retained",
                        r.key_id,
                        rc.stores.len(),
                        rc.retained.len()
                    ))
                }
                Ok(_) => Err("the receipt names another system or key".into()),
                Err(e) => Err(e.to_string()),
            },
            None => Err("no receipt".into()),
        },
    ));
    let mut reused = erase.clone();
    reused.instruction = Some(c.header_with_key(&org, key));
    reused.records.truncate(1);
    reused.acceptable_methods.truncate(1);
    let r = c.inner.erase(c.req(reused)?).await;
    checks.push(check(
        "The same key with another payload is refused",
        expect_code(r, Code::AlreadyExists),
    ));
    report(&checks)
}

#[allow(clippy::print_stdout)]
fn report(checks: &[Check]) -> anyhow::Result<()> {
    println!("{:<58} RESULT", "CHECK");
    for (name, r) in checks {
        match r {
            Ok(d) => println!("{name:<58} ok    {d}"),
            Err(e) => println!("{name:<58} FAIL  {e}"),
        }
    }
    let failed = checks.iter().filter(|(_, r)| r.is_err()).count();
    println!("{} passed, {failed} failed", checks.len() - failed);
    if failed > 0 {
        bail!("{failed} of {} conformance checks failed", checks.len());
    }
    Ok(())
}
