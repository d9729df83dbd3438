//! The proto edge of the kit: the instruction header in, operations and
//! receipts out, and a status for every refusal (fixed messages, ErrorInfo
//! reasons, BadRequest field violations, no personal data).

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Utc};
use dsr_domain::identity::Organisationsnummer;
use dsr_proto::common::v1 as common;
use dsr_proto::system::v1 as pb;
use prost::Message as _;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::instruction::{Instruction, Refusal, valid_idempotency_key};
use crate::operations::{self, OpState, Operation};
use crate::signing::{self, Signed};

/// The ErrorInfo domain of the contract.
pub const DOMAIN: &str = "system.dsr-mesh";

/// The ErrorInfo reason of an UNAVAILABLE answer from a system whose
/// people have not answered yet (a manual system's open task): the caller
/// waits and asks again, it is no fault.
pub const AWAITING_VENDOR: &str = "AWAITING_VENDOR";

/// Statuses stamped with one service's own ErrorInfo domain (e.g.
/// "erasure.dsr-mesh"), so a caller tells which service refused; the free
/// functions of this module stamp the contract's ([`DOMAIN`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errors {
    domain: &'static str,
}

impl Errors {
    /// Statuses of the service whose ErrorInfo domain is `domain`.
    pub const fn new(domain: &'static str) -> Self {
        Self { domain }
    }

    /// The domain.
    pub fn domain(&self) -> &'static str {
        self.domain
    }

    /// A status with a fixed message and a reason.
    pub fn status(&self, code: Code, message: &str, reason: &str) -> Status {
        Status::with_error_details(
            code,
            message,
            ErrorDetails::with_error_info(reason, self.domain, []),
        )
    }

    /// A status with a reason and a RetryInfo: when trying again may
    /// succeed (RESOURCE_EXHAUSTED for a limit, say).
    pub fn retry_after(
        &self,
        code: Code,
        message: &str,
        reason: &str,
        wait: std::time::Duration,
    ) -> Status {
        let mut details = ErrorDetails::with_error_info(reason, self.domain, []);
        details.set_retry_info(Some(wait));
        Status::with_error_details(code, message, details)
    }

    /// INVALID_ARGUMENT naming each `(field, description)`.
    pub fn invalid_argument(&self, violations: Vec<(String, String)>) -> Status {
        self.invalid_argument_because("INVALID_ARGUMENT", violations)
    }

    /// INVALID_ARGUMENT with the reason the proto documents for this
    /// refusal, and a BadRequest naming each field.
    pub fn invalid_argument_because(
        &self,
        reason: &str,
        violations: Vec<(String, String)>,
    ) -> Status {
        let mut details = ErrorDetails::with_error_info(reason, self.domain, []);
        for (field, description) in violations {
            details.add_bad_request_violation(field, description);
        }
        Status::with_error_details(Code::InvalidArgument, "invalid request", details)
    }
}

/// INVALID_ARGUMENT naming each `(field, description)`.
pub fn invalid_argument(violations: Vec<(String, String)>) -> Status {
    let mut details = ErrorDetails::with_error_info("INVALID_ARGUMENT", DOMAIN, []);
    for (field, description) in violations {
        details.add_bad_request_violation(field, description);
    }
    Status::with_error_details(Code::InvalidArgument, "invalid request", details)
}

/// INVALID_ARGUMENT with the ErrorInfo `reason` the proto documents for this
/// refusal (e.g. CODE_MISMATCH) instead of the generic one, and a BadRequest
/// naming each field.
pub fn invalid_argument_because(reason: &str, violations: Vec<(String, String)>) -> Status {
    let mut details = ErrorDetails::with_error_info(reason, DOMAIN, []);
    for (field, description) in violations {
        details.add_bad_request_violation(field, description);
    }
    Status::with_error_details(Code::InvalidArgument, "invalid request", details)
}

/// A status with a fixed message and a reason.
pub fn status(code: Code, message: &str, reason: &str) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, DOMAIN, []),
    )
}

/// The status for a refused instruction.
pub fn refusal_status(r: &Refusal) -> Status {
    let message = match r {
        Refusal::Misrouted => "instruction is addressed to another system",
        Refusal::Expired => "instruction has expired",
        Refusal::NotYetValid => "instruction is not valid yet",
        Refusal::BadWindow => "instruction window must be at most 15 minutes",
        Refusal::ControllerNotServed => "controller not served by this system",
    };
    status(Code::FailedPrecondition, message, r.reason())
}

/// The status for a ledger error.
pub fn ledger_status(e: operations::Error) -> Status {
    match e {
        operations::Error::KeyReused => status(
            Code::AlreadyExists,
            "idempotency key already used for a different instruction",
            "IDEMPOTENCY_KEY_REUSED",
        ),
        operations::Error::NotFound => {
            status(Code::NotFound, "operation not found", "OPERATION_NOT_FOUND")
        }
        operations::Error::Storage(err) => {
            tracing::error!(error = %err, "connector storage failure");
            status(Code::Internal, "internal error", "INTERNAL")
        }
    }
}

/// A timestamp from the proto, or None when absent or out of range.
pub fn time(t: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let t = t?;
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

/// A proto timestamp.
pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A date from the proto.
pub fn date(d: Option<common::Date>) -> Option<NaiveDate> {
    let common::Date { year, month, day } = d?;
    NaiveDate::from_ymd_opt(year, u32::try_from(month).ok()?, u32::try_from(day).ok()?)
}

/// A proto date.
pub fn date_to_pb(d: NaiveDate) -> common::Date {
    use chrono::Datelike as _;
    common::Date {
        year: d.year(),
        month: i32::try_from(d.month()).unwrap_or(0),
        day: i32::try_from(d.day()).unwrap_or(0),
    }
}

/// Parses the header (INVALID_ARGUMENT naming each bad field under
/// `instruction.`) and checks it against this system now
/// (FAILED_PRECONDITION with the refusal's reason).
pub fn instruction(
    header: Option<pb::Instruction>,
    system_id: &str,
    controllers: &BTreeSet<Organisationsnummer>,
) -> Result<Instruction, Status> {
    let Some(pb::Instruction {
        request_id,
        controller,
        system_id: target,
        due_date,
        issued_at,
        expires_at,
        idempotency_key,
    }) = header
    else {
        return Err(invalid_argument(vec![(
            "instruction".into(),
            "required".into(),
        )]));
    };
    let mut v: Vec<(String, String)> = Vec::new();
    let mut bad = |f: &str, d: &str| v.push((format!("instruction.{f}"), d.to_owned()));
    if !valid_id(&request_id) {
        bad(
            "request_id",
            "required: up to 64 letters, digits and - (the orchestrator's UUID)",
        );
    }
    let controller = match controller.map(|c| c.organisation_number) {
        Some(org) if !org.is_empty() => match Organisationsnummer::parse(&org) {
            Ok(o) => Some(o),
            Err(e) => {
                bad("controller.organisation_number", &e.to_string());
                None
            }
        },
        _ => {
            bad("controller.organisation_number", "required");
            None
        }
    };
    if target.is_empty() {
        bad("system_id", "required");
    }
    let due = date(due_date);
    if due.is_none() {
        bad("due_date", "required, a valid date");
    }
    let issued = time(issued_at);
    if issued.is_none() {
        bad("issued_at", "required");
    }
    let expires = time(expires_at);
    if expires.is_none() {
        bad("expires_at", "required");
    }
    if !valid_idempotency_key(&idempotency_key) {
        bad("idempotency_key", "8 to 128 of A-Z a-z 0-9 . _ : -");
    }
    let (Some(controller), Some(due_date), Some(issued_at), Some(expires_at), true) =
        (controller, due, issued, expires, v.is_empty())
    else {
        return Err(invalid_argument(v));
    };
    let i = Instruction {
        request_id,
        controller,
        system_id: target,
        due_date,
        issued_at,
        expires_at,
        idempotency_key,
    };
    i.check(system_id, controllers, Utc::now())
        .map_err(|r| refusal_status(&r))?;
    Ok(i)
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// SHA-256 of `bytes`.
pub fn digest_bytes(bytes: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).to_vec()
}

/// A signed receipt in proto form.
pub fn signed_to_pb(s: &Signed) -> pb::SignedReceipt {
    pb::SignedReceipt {
        payload: s.payload.clone(),
        key_id: s.key_id.clone(),
        signature: s.signature.clone(),
    }
}

/// Why a receipt could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// The signature does not verify.
    #[error(transparent)]
    Signature(#[from] signing::SigningError),
    /// The signed bytes are not a Receipt.
    #[error("receipt payload does not decode")]
    Decode,
}

/// Verifies a signed receipt against a system's published keys, then decodes
/// it.
pub fn verify_receipt(
    signed: &pb::SignedReceipt,
    keys: &[pb::SigningKey],
) -> Result<pb::Receipt, ReceiptError> {
    let s = Signed {
        payload: signed.payload.clone(),
        key_id: signed.key_id.clone(),
        signature: signed.signature.clone(),
    };
    let published: Vec<(String, Vec<u8>)> = keys
        .iter()
        .filter(|k| k.algorithm == "Ed25519")
        .map(|k| (k.key_id.clone(), k.public_key.clone()))
        .collect();
    let payload = signing::verify(&s, &published)?;
    pb::Receipt::decode(payload).map_err(|_| ReceiptError::Decode)
}

/// An operation in proto form.
pub fn operation_to_pb(op: &Operation) -> pb::Operation {
    pb::Operation {
        id: op.id.clone(),
        state: match op.state {
            OpState::Pending => pb::OperationState::Pending,
            OpState::Running => pb::OperationState::Running,
            OpState::Succeeded => pb::OperationState::Succeeded,
            OpState::Failed => pb::OperationState::Failed,
        } as i32,
        done: op.done,
        total: op.total,
        receipt: op.receipt.as_ref().map(signed_to_pb),
        error: op.error.clone().unwrap_or_default(),
        start_time: Some(timestamp(op.started_at)),
        end_time: op.ended_at.map(timestamp),
    }
}

/// The domain identity type of a proto one (None when unspecified).
pub fn identity_type_from_pb(t: i32) -> Option<dsr_domain::identity::IdentityType> {
    use dsr_domain::identity::IdentityType as T;
    match common::IdentityType::try_from(t).ok()? {
        common::IdentityType::Email => Some(T::Email),
        common::IdentityType::Phone => Some(T::Phone),
        common::IdentityType::SePersonnummer => Some(T::Personnummer),
        common::IdentityType::SeOrganisationsnummer => Some(T::Organisationsnummer),
        common::IdentityType::CustomerId => Some(T::CustomerId),
        common::IdentityType::Unspecified => None,
    }
}

/// The proto identity type of a domain one.
pub fn identity_type_to_pb(t: dsr_domain::identity::IdentityType) -> common::IdentityType {
    use dsr_domain::identity::IdentityType as T;
    match t {
        T::Email => common::IdentityType::Email,
        T::Phone => common::IdentityType::Phone,
        T::Personnummer => common::IdentityType::SePersonnummer,
        T::Organisationsnummer => common::IdentityType::SeOrganisationsnummer,
        T::CustomerId => common::IdentityType::CustomerId,
    }
}

/// A domain identity in proto form (raw format).
pub fn identity_to_pb(i: &dsr_domain::identity::Identity) -> common::Identity {
    common::Identity {
        r#type: identity_type_to_pb(i.kind()) as i32,
        format: common::IdentityFormat::Raw as i32,
        value: i.value().to_owned(),
        hmac_key_id: String::new(),
    }
}

/// Parses raw proto identities; each bad one is a `(field, description)`
/// violation under `field[i]`, without its value.
pub fn identities_from_pb(
    list: Vec<common::Identity>,
    field: &str,
) -> Result<Vec<dsr_domain::identity::Identity>, Vec<(String, String)>> {
    let mut v = Vec::new();
    let mut out = Vec::new();
    for (
        i,
        common::Identity {
            r#type,
            format,
            value,
            hmac_key_id: _,
        },
    ) in list.into_iter().enumerate()
    {
        let Some(kind) = identity_type_from_pb(r#type) else {
            v.push((format!("{field}[{i}].type"), "required".to_owned()));
            continue;
        };
        if !matches!(
            common::IdentityFormat::try_from(format),
            Ok(common::IdentityFormat::Raw | common::IdentityFormat::Unspecified)
        ) {
            v.push((format!("{field}[{i}].format"), "raw values only".to_owned()));
            continue;
        }
        match dsr_domain::identity::Identity::parse(kind, &value) {
            Ok(id) => out.push(id),
            Err(e) => v.push((format!("{field}[{i}].value"), e.to_string())),
        }
    }
    if v.is_empty() { Ok(out) } else { Err(v) }
}

/// The controller of a request: parsed, or a field violation
/// (`controller.organisation_number`) added to `v`.
pub fn controller_from_pb(
    c: Option<common::ControllerRef>,
    v: &mut Vec<(String, String)>,
) -> Option<Organisationsnummer> {
    const FIELD: &str = "controller.organisation_number";
    match c.map(|c| Organisationsnummer::parse(&c.organisation_number)) {
        Some(Ok(o)) => Some(o),
        Some(Err(e)) => {
            v.push((FIELD.into(), e.to_string()));
            None
        }
        None => {
            v.push((FIELD.into(), "required".into()));
            None
        }
    }
}

/// Whether `s` can be a request or package id: 1 to 64 letters, digits and
/// `-` (a UUID).
pub fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Adds a field violation for `request_id` unless it is a valid id.
pub fn check_request_id(request_id: &str, v: &mut Vec<(String, String)>) {
    if !valid_id(request_id) {
        v.push((
            "request_id".into(),
            "required: up to 64 letters, digits and -".into(),
        ));
    }
}

/// The subject map of a request from discovery's proto form; bad
/// identities are added to `v` as violations of `subject_map.identities`.
pub fn subject_map_from_pb(
    m: dsr_proto::discovery::v1::SubjectMap,
    v: &mut Vec<(String, String)>,
) -> crate::subject::SubjectMap {
    let identities = match identities_from_pb(m.identities, "subject_map.identities") {
        Ok(ids) => ids,
        Err(bad) => {
            v.extend(bad);
            Vec::new()
        }
    };
    let systems = m
        .systems
        .into_iter()
        .map(|s| crate::subject::MapSystem {
            system_id: s.system_id,
            stores: s
                .stores
                .into_iter()
                .map(|st| crate::subject::MapStore {
                    keys: st.records.into_iter().map(|r| r.key).collect(),
                    categories: st.category_ids,
                    store: st.store,
                })
                .collect(),
        })
        .collect();
    crate::subject::SubjectMap {
        identities,
        systems,
        partial: m.partial,
    }
}

/// A restriction reason in proto form.
pub fn restriction_to_pb(r: crate::restriction::Reason) -> pb::RestrictionReason {
    use crate::restriction::Reason;
    match r {
        Reason::Retention => pb::RestrictionReason::Retention,
        Reason::Request => pb::RestrictionReason::Request,
        Reason::Hold => pb::RestrictionReason::Hold,
    }
}

/// A restriction reason from the wire: `unset` when the field is not set,
/// `None` for a value this version does not know.
pub fn restriction_from_pb(
    v: i32,
    unset: crate::restriction::Reason,
) -> Option<crate::restriction::Reason> {
    use crate::restriction::Reason;
    match pb::RestrictionReason::try_from(v).ok()? {
        pb::RestrictionReason::Unspecified => Some(unset),
        pb::RestrictionReason::Retention => Some(Reason::Retention),
        pb::RestrictionReason::Request => Some(Reason::Request),
        pb::RestrictionReason::Hold => Some(Reason::Hold),
    }
}
