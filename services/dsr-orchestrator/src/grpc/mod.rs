//! The gRPC edge of the orchestrator: the `Requests` handlers (validation,
//! conversion, one mapping from ledger errors to statuses) and, in
//! [`clients`], the tonic implementations of the mesh traits.

pub mod clients;
pub mod incidents;

use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use dsr_auth::{AuthLayer, AuthService, Principal, ScopeRule, Validator};
use dsr_connector::grpc::{self as kit, identities_from_pb, identity_to_pb};
use dsr_domain::deadline::DeadlineError;
use dsr_domain::group::Group;
use dsr_domain::identity::Organisationsnummer;
use dsr_domain::request::{Correction, Kind, RestrictionGround, State, WriteOrder};
use dsr_proto::common::v1 as common;
use dsr_proto::orchestrator::v1 as pb;
use dsr_proto::orchestrator::v1::requests_server::{Requests, RequestsServer};
use futures_util::Stream;
use tokio::sync::{Notify, broadcast};
use tonic::{Code, Request, Response, Status};
use tower_layer::Layer;

use crate::feed::Change;
use crate::intake::{Intake, IntakeError, Proof};
use crate::ledger::{self, Ledger, Rejection, Submission};
use crate::listing::Filter;
use crate::queue::{StepStatus, StepView};

/// This service's statuses: ErrorInfo domain "orchestrator.dsr-mesh".
pub(crate) const ERR: kit::Errors = kit::Errors::new("orchestrator.dsr-mesh");

/// Scope of Submit and Verify.
pub const SCOPE_SUBMIT: &str = "requests:submit";
/// Scope of Get, List and Watch.
pub const SCOPE_READ: &str = "requests:read";
/// Scope of Cancel, Extend, Approve and Reject (case handlers).
pub const SCOPE_MANAGE: &str = "requests:manage";

/// Required scopes per RPC.
pub const SCOPES: &[ScopeRule] = &[
    ScopeRule {
        method: "Submit",
        scopes: &[SCOPE_SUBMIT],
    },
    ScopeRule {
        method: "Verify",
        scopes: &[SCOPE_SUBMIT],
    },
    ScopeRule {
        method: "Get",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "List",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "Watch",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "Cancel",
        scopes: &[SCOPE_MANAGE],
    },
    ScopeRule {
        method: "Extend",
        scopes: &[SCOPE_MANAGE],
    },
    ScopeRule {
        method: "Approve",
        scopes: &[SCOPE_MANAGE],
    },
    ScopeRule {
        method: "Reject",
        scopes: &[SCOPE_MANAGE],
    },
    ScopeRule {
        method: "GetCaseFile",
        scopes: &[SCOPE_MANAGE],
    },
    ScopeRule {
        method: "ListControllers",
        scopes: &[SCOPE_SUBMIT],
    },
];

/// Most bytes of requests in one `List` page: a quarter of the 4 MiB a
/// default gRPC client reads, whatever the requests hold.
const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// The first requests of a page (each with the token of the page after
/// it) that fit in `budget` bytes, at least one; and where the next page
/// starts when some were left out.
fn fit_page(
    views: Vec<(pb::DataSubjectRequest, String)>,
    budget: usize,
) -> (Vec<pb::DataSubjectRequest>, Option<String>) {
    let mut out = Vec::with_capacity(views.len());
    let mut bytes = 0;
    let mut after_last = None;
    for (v, after) in views {
        // The field's tag and length prefix come on top of the message.
        bytes += prost::Message::encoded_len(&v) + 8;
        if bytes > budget && !out.is_empty() {
            return (out, after_last);
        }
        out.push(v);
        after_last = Some(after);
    }
    (out, None)
}

/// What the handlers need.
#[derive(Clone)]
pub struct Deps {
    /// The ledger.
    pub ledger: Ledger,
    /// The controllers.
    pub group: Arc<Group>,
    /// Checks verification tokens and completes challenges.
    pub intake: Intake,
    /// Wakes the worker when work arrives.
    pub wake: Arc<Notify>,
    /// Requests that changed (in this process, as committed; at another
    /// replica, by id and time).
    pub changes: broadcast::Sender<Change>,
    /// Open Watch streams, bounded in all and per caller.
    pub watch_slots: Arc<WatchSlots>,
}

/// Open Watch streams, in all and per caller: bounded, so that a flood of
/// streams cannot hold the process's memory or the ledger's reads (a stream
/// lives long after the concurrency limit counted its call). Past a bound,
/// Watch answers RESOURCE_EXHAUSTED.
#[derive(Debug)]
pub struct WatchSlots {
    open: std::sync::Mutex<std::collections::HashMap<String, usize>>,
    max_total: usize,
    max_per_caller: usize,
}

/// One open stream's slot, given back when the stream ends.
#[derive(Debug)]
pub struct WatchSlot {
    slots: Arc<WatchSlots>,
    who: String,
}

impl WatchSlots {
    /// At most `max_total` streams, `max_per_caller` for one caller.
    pub fn new(max_total: usize, max_per_caller: usize) -> Arc<Self> {
        Arc::new(Self {
            open: std::sync::Mutex::new(std::collections::HashMap::new()),
            max_total,
            max_per_caller,
        })
    }

    /// A slot for `who`, or RESOURCE_EXHAUSTED.
    pub fn take(self: &Arc<Self>, who: &str) -> Result<WatchSlot, Status> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let total: usize = open.values().sum();
        let mine = open.get(who).copied().unwrap_or(0);
        if total >= self.max_total || mine >= self.max_per_caller {
            return Err(ERR.status(
                Code::ResourceExhausted,
                "too many open Watch streams; close one, or poll Get",
                "WATCH_LIMIT",
            ));
        }
        *open.entry(who.to_owned()).or_default() += 1;
        Ok(WatchSlot {
            slots: self.clone(),
            who: who.to_owned(),
        })
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .sum()
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.who) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.who);
            }
        }
    }
}

impl std::fmt::Debug for Deps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Deps(..)")
    }
}

/// The service.
pub type Service = AuthService<RequestsServer<Handlers>>;

/// Builds the service.
pub fn service(deps: Deps, validator: Arc<Validator>) -> Service {
    AuthLayer::new(validator, SCOPES).layer(RequestsServer::new(Handlers { d: deps }))
}

/// The handlers.
#[derive(Debug)]
pub struct Handlers {
    d: Deps,
}

/// Who reads requests: a case handler (`requests:manage`) reads every one;
/// anyone else (a portal) only those it submitted.
struct Reader {
    /// The caller's issuer and subject.
    who: String,
    handler: bool,
}

impl Reader {
    fn of<T>(req: &Request<T>) -> Self {
        let p = req.extensions().get::<Principal>();
        Self {
            who: p.map_or_else(String::new, |p| format!("{} {}", p.issuer, p.subject)),
            handler: p.is_some_and(|p| p.has_scope(SCOPE_MANAGE)),
        }
    }

    /// The submitter a listing is limited to; `None` for a case handler.
    fn only_own(&self) -> Option<String> {
        (!self.handler).then(|| self.who.clone())
    }

    /// NOT_FOUND for a request this caller may not read (no hint that it
    /// exists).
    fn may_read(&self, r: &ledger::Request) -> Result<(), Status> {
        if self.handler || r.submitted_by.as_deref() == Some(self.who.as_str()) {
            Ok(())
        } else {
            Err(ERR.status(Code::NotFound, "request not found", "REQUEST_NOT_FOUND"))
        }
    }
}

/// The most identities one submission may claim.
pub const MAX_CLAIMED: usize = 20;

/// The longest free text a request keeps (a reason, a note): enough for a
/// case handler's explanation, short enough that no listing page grows past
/// what a client reads.
pub const MAX_TEXT: usize = 2000;

fn ledger_status(e: ledger::Error) -> Status {
    match e {
        ledger::Error::NotFound => {
            ERR.status(Code::NotFound, "request not found", "REQUEST_NOT_FOUND")
        }
        ledger::Error::KeyReused => ERR.status(
            Code::AlreadyExists,
            "the idempotency key was used with another payload",
            "IDEMPOTENCY_KEY_REUSED",
        ),
        ledger::Error::IllegalMove(m) => ERR.status(
            Code::FailedPrecondition,
            &format!("a request cannot move from {} to {}", m.from, m.to),
            "ILLEGAL_STATE_CHANGE",
        ),
        ledger::Error::Deadline(d) => {
            let reason = match d {
                DeadlineError::ReasonRequired => "EXTENSION_REASON_REQUIRED",
                DeadlineError::TooLong => "EXTENSION_TOO_LONG",
                DeadlineError::OutsideFirstMonth => "EXTENSION_OUTSIDE_FIRST_MONTH",
                DeadlineError::BeforeReceipt | DeadlineError::OutsideCalendar { .. } => {
                    "DEADLINE_RULES"
                }
            };
            ERR.status(Code::FailedPrecondition, &d.to_string(), reason)
        }
        ledger::Error::VerificationUsed => ERR.status(
            Code::FailedPrecondition,
            "this verification token was already used for another request: verify again",
            "VERIFICATION_USED",
        ),
        ledger::Error::Storage(e) => {
            tracing::error!(error = %e, "ledger storage failed");
            ERR.status(Code::Unavailable, "the ledger is unavailable", "STORAGE")
        }
    }
}

fn intake_status(e: IntakeError) -> Status {
    match e {
        IntakeError::BadToken(why) => ERR.invalid_argument(vec![("verification_token".into(), why)]),
        IntakeError::CodeMismatch => ERR.invalid_argument_because(
            "CODE_MISMATCH",
            vec![("code".into(), "does not match".into())],
        ),
        IntakeError::NotVerifying => ERR.status(
            Code::FailedPrecondition,
            "the request is not waiting for verification",
            "NOT_VERIFYING",
        ),
        IntakeError::ChallengeRefused(reason) => ERR.status(
            Code::FailedPrecondition,
            "the challenge cannot be completed",
            &reason,
        ),
        IntakeError::Unavailable => ERR.status(
            Code::Unavailable,
            "identity verification is unavailable",
            "IDENTITY_UNAVAILABLE",
        ),
        IntakeError::AssuranceTooLow { needed, got } => ERR.status(
            Code::FailedPrecondition,
            &format!(
                "this kind of request needs {needed:?} assurance (BankID through the identity provider, or a case handler's attestation); the proof gave {got:?}: the request keeps waiting"
            ),
            "ASSURANCE_TOO_LOW",
        ),
        IntakeError::NotThePerson => ERR.status(
            Code::PermissionDenied,
            "the verification token does not vouch for every identity the request claims",
            "VERIFICATION_NOT_THE_PERSON",
        ),
        IntakeError::Ledger(e) => ledger_status(e),
    }
}

fn kind_to_pb(k: Kind) -> pb::Kind {
    match k {
        Kind::Access => pb::Kind::Access,
        Kind::Portability => pb::Kind::Portability,
        Kind::Erasure => pb::Kind::Erasure,
        Kind::Rectification => pb::Kind::Rectification,
        Kind::Restriction => pb::Kind::Restriction,
        Kind::Objection => pb::Kind::Objection,
    }
}

fn kind_from_pb(k: i32) -> Option<Kind> {
    match pb::Kind::try_from(k).ok()? {
        pb::Kind::Access => Some(Kind::Access),
        pb::Kind::Portability => Some(Kind::Portability),
        pb::Kind::Erasure => Some(Kind::Erasure),
        pb::Kind::Rectification => Some(Kind::Rectification),
        pb::Kind::Restriction => Some(Kind::Restriction),
        pb::Kind::Objection => Some(Kind::Objection),
        pb::Kind::Unspecified => None,
    }
}

fn ground_to_pb(g: RestrictionGround) -> pb::RestrictionGround {
    match g {
        RestrictionGround::AccuracyContested => pb::RestrictionGround::AccuracyContested,
        RestrictionGround::UnlawfulProcessing => pb::RestrictionGround::UnlawfulProcessing,
        RestrictionGround::NeededForLegalClaims => pb::RestrictionGround::NeededForLegalClaims,
        RestrictionGround::ObjectionPending => pb::RestrictionGround::ObjectionPending,
    }
}

fn order_to_pb(o: &WriteOrder) -> pb::WriteOrder {
    let mut w = pb::WriteOrder::default();
    match o {
        WriteOrder::Rectify { corrections } => {
            w.corrections = corrections
                .iter()
                .map(|c| pb::Correction {
                    category_id: c.category.clone(),
                    value: c.value.clone(),
                })
                .collect();
        }
        WriteOrder::Restrict { ground } => w.restriction_ground = ground_to_pb(*ground) as i32,
        WriteOrder::Lift { person_informed_at } => {
            w.lift = true;
            w.person_informed_time = person_informed_at.map(kit::timestamp);
        }
        WriteOrder::Object {
            purposes,
            direct_marketing,
        } => {
            w.purposes = purposes.clone();
            w.direct_marketing = *direct_marketing;
        }
    }
    w
}

/// The fields a write request carries, checked against its kind; the
/// violations name the field.
struct WriteFields {
    corrections: Vec<pb::Correction>,
    restriction_ground: i32,
    lift: bool,
    person_informed_time: Option<prost_types::Timestamp>,
    purposes: Vec<String>,
    direct_marketing: bool,
}

impl WriteFields {
    /// The same fields, from `order`.
    fn of(o: pb::submit_request::Order) -> Self {
        let mut f = Self {
            corrections: Vec::new(),
            restriction_ground: 0,
            lift: false,
            person_informed_time: None,
            purposes: Vec::new(),
            direct_marketing: false,
        };
        match o {
            pb::submit_request::Order::Rectification(r) => f.corrections = r.corrections,
            pb::submit_request::Order::Restriction(r) => {
                f.restriction_ground = r.ground;
                f.lift = r.lift;
                f.person_informed_time = r.person_informed_time;
            }
            pb::submit_request::Order::Objection(o) => {
                f.purposes = o.purposes;
                f.direct_marketing = o.direct_marketing;
            }
        }
        f
    }

    /// Whether any is set.
    fn given(&self) -> bool {
        !self.corrections.is_empty()
            || self.restriction_ground != 0
            || self.lift
            || self.person_informed_time.is_some()
            || !self.purposes.is_empty()
            || self.direct_marketing
    }
}

/// A violation's field, named as inside `order` (which the caller sent)
/// rather than as the flat field it stands for.
fn within_order(field: &str) -> String {
    const NAMES: [(&str, &str); 6] = [
        ("corrections", "rectification.corrections"),
        ("restriction_ground", "restriction.ground"),
        ("lift", "restriction.lift"),
        ("person_informed_time", "restriction.person_informed_time"),
        ("purposes", "objection.purposes"),
        ("direct_marketing", "objection.direct_marketing"),
    ];
    if field == "kind" {
        // Only a kind that takes no order refuses all of it.
        return "order".into();
    }
    NAMES
        .iter()
        .find_map(|(flat, inside)| {
            field
                .strip_prefix(flat)
                .filter(|rest| rest.is_empty() || rest.starts_with(['[', '.']))
                .map(|rest| format!("{inside}{rest}"))
        })
        .unwrap_or_else(|| field.to_owned())
}

/// A write request's order, from `order` or from the deprecated flat
/// fields (not both), checked against the kind; the violations name the
/// field as the caller sent it. `None` for a kind without an order.
fn parse_order(
    kind: Option<Kind>,
    order: Option<pb::submit_request::Order>,
    flat: WriteFields,
    now: DateTime<Utc>,
    v: &mut Vec<(String, String)>,
) -> Option<WriteOrder> {
    match (kind, order) {
        (None, _) => {
            v.push((
                "kind".into(),
                "required: ACCESS, PORTABILITY, ERASURE, RECTIFICATION, RESTRICTION or OBJECTION"
                    .into(),
            ));
            None
        }
        (Some(_), Some(_)) if flat.given() => {
            v.push((
                "order".into(),
                "given twice: in order and in the deprecated flat fields (corrections, restriction_ground, lift, person_informed_time, purposes, direct_marketing); use order".into(),
            ));
            None
        }
        (Some(k), None) => write_order(k, flat, now, v),
        (Some(k), Some(o)) => {
            let from = v.len();
            let w = write_order(k, WriteFields::of(o), now, v);
            for (field, _) in &mut v[from..] {
                *field = within_order(field);
            }
            w
        }
    }
}

fn write_order(
    kind: Kind,
    f: WriteFields,
    now: DateTime<Utc>,
    v: &mut Vec<(String, String)>,
) -> Option<WriteOrder> {
    let given = f.given();
    let refuse = |v: &mut Vec<(String, String)>, field: &str| {
        v.push((
            field.into(),
            format!("not for a request of kind {}", kind.as_str()),
        ));
    };
    match kind {
        Kind::Access | Kind::Portability | Kind::Erasure => {
            if given {
                v.push((
                    "kind".into(),
                    "only rectification, restriction and objection requests take an order (corrections, a restriction ground or lift, purposes)".into(),
                ));
            }
            None
        }
        Kind::Rectification => {
            if f.restriction_ground != 0 || f.lift || f.person_informed_time.is_some() {
                refuse(v, "restriction_ground");
            }
            if !f.purposes.is_empty() || f.direct_marketing {
                refuse(v, "purposes");
            }
            if f.corrections.is_empty() {
                v.push(("corrections".into(), "at least one".into()));
            }
            let mut seen = std::collections::BTreeSet::new();
            let mut out = Vec::new();
            for (i, c) in f.corrections.into_iter().enumerate() {
                if !valid_category(&c.category_id) {
                    v.push((
                        format!("corrections[{i}].category_id"),
                        "a category id such as contact.phone".into(),
                    ));
                } else if !seen.insert(c.category_id.clone()) {
                    v.push((
                        format!("corrections[{i}].category_id"),
                        "each category once".into(),
                    ));
                }
                let value = c.value.trim().to_owned();
                if value.is_empty() || value.chars().count() > 500 {
                    v.push((
                        format!("corrections[{i}].value"),
                        "required, at most 500 characters".into(),
                    ));
                }
                out.push(Correction {
                    category: c.category_id,
                    value,
                });
            }
            Some(WriteOrder::Rectify { corrections: out })
        }
        Kind::Restriction => {
            if !f.corrections.is_empty() {
                refuse(v, "corrections");
            }
            if !f.purposes.is_empty() || f.direct_marketing {
                refuse(v, "purposes");
            }
            if f.lift {
                if f.restriction_ground != 0 {
                    v.push((
                        "restriction_ground".into(),
                        "not with lift: a lift ends the restriction".into(),
                    ));
                }
                match kit::time(f.person_informed_time) {
                    Some(t) if t <= now + chrono::Duration::minutes(5) => Some(WriteOrder::Lift {
                        person_informed_at: Some(t),
                    }),
                    Some(_) => {
                        v.push((
                            "person_informed_time".into(),
                            "in the future: tell the person before lifting (Art. 18(3))".into(),
                        ));
                        None
                    }
                    // The mesh tells the person (the restriction-lifted
                    // letter) and lifts once it is sent.
                    None => Some(WriteOrder::Lift {
                        person_informed_at: None,
                    }),
                }
            } else {
                let ground = match pb::RestrictionGround::try_from(f.restriction_ground) {
                    Ok(pb::RestrictionGround::AccuracyContested) => {
                        Some(RestrictionGround::AccuracyContested)
                    }
                    Ok(pb::RestrictionGround::UnlawfulProcessing) => {
                        Some(RestrictionGround::UnlawfulProcessing)
                    }
                    Ok(pb::RestrictionGround::NeededForLegalClaims) => {
                        Some(RestrictionGround::NeededForLegalClaims)
                    }
                    Ok(pb::RestrictionGround::ObjectionPending) => {
                        Some(RestrictionGround::ObjectionPending)
                    }
                    Ok(pb::RestrictionGround::Unspecified) | Err(_) => {
                        v.push((
                            "restriction_ground".into(),
                            "required: one of Art. 18(1)(a)-(d), or lift".into(),
                        ));
                        None
                    }
                };
                if f.person_informed_time.is_some() {
                    refuse(v, "person_informed_time");
                }
                ground.map(|ground| WriteOrder::Restrict { ground })
            }
        }
        Kind::Objection => {
            if !f.corrections.is_empty() {
                refuse(v, "corrections");
            }
            if f.restriction_ground != 0 || f.lift || f.person_informed_time.is_some() {
                refuse(v, "restriction_ground");
            }
            if f.purposes.is_empty() && !f.direct_marketing {
                v.push((
                    "purposes".into(),
                    "at least one purpose, or direct_marketing".into(),
                ));
            }
            for (i, p) in f.purposes.iter().enumerate() {
                if p.trim().is_empty() || p.chars().count() > 200 {
                    v.push((
                        format!("purposes[{i}]"),
                        "a purpose as the systems name it, at most 200 characters".into(),
                    ));
                }
            }
            Some(WriteOrder::Object {
                purposes: f.purposes,
                direct_marketing: f.direct_marketing,
            })
        }
    }
}

fn valid_category(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 64
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

fn state_to_pb(s: State) -> pb::State {
    match s {
        State::Submitted => pb::State::Submitted,
        State::Verifying => pb::State::Verifying,
        State::Locating => pb::State::Locating,
        State::AwaitingApproval => pb::State::AwaitingApproval,
        State::Exporting => pb::State::Exporting,
        State::Completed => pb::State::Completed,
        State::Planning => pb::State::Planning,
        State::Executing => pb::State::Executing,
        State::CompletedWithRetained => pb::State::CompletedWithRetained,
        State::AwaitingReview => pb::State::AwaitingReview,
        State::Rejected => pb::State::Rejected,
        State::Cancelled => pb::State::Cancelled,
    }
}

fn state_from_pb(s: i32) -> Option<State> {
    Some(match pb::State::try_from(s).ok()? {
        pb::State::Unspecified => return None,
        pb::State::Submitted => State::Submitted,
        pb::State::Verifying => State::Verifying,
        pb::State::Locating => State::Locating,
        pb::State::AwaitingApproval => State::AwaitingApproval,
        pb::State::Exporting => State::Exporting,
        pb::State::Completed => State::Completed,
        pb::State::Planning => State::Planning,
        pb::State::Executing => State::Executing,
        pb::State::CompletedWithRetained => State::CompletedWithRetained,
        pb::State::AwaitingReview => State::AwaitingReview,
        pb::State::Rejected => State::Rejected,
        pb::State::Cancelled => State::Cancelled,
    })
}

fn rejection_to_pb(r: Rejection) -> pb::RejectionReason {
    match r {
        Rejection::IdentityInsufficient => pb::RejectionReason::IdentityInsufficient,
        Rejection::ManifestlyUnfoundedOrExcessive => {
            pb::RejectionReason::ManifestlyUnfoundedOrExcessive
        }
        Rejection::NoData => pb::RejectionReason::NoData,
        Rejection::Other => pb::RejectionReason::Other,
    }
}

fn step_to_pb(s: &StepView) -> pb::Step {
    // `status` is deprecated for `state` and still filled.
    #[allow(deprecated)]
    pb::Step {
        name: s.name.to_owned(),
        status: s.status.as_str().to_owned(),
        state: match s.status {
            StepStatus::Pending => pb::StepState::Pending,
            StepStatus::Running => pb::StepState::Running,
            StepStatus::WaitingRetry => pb::StepState::WaitingRetry,
            StepStatus::Done => pb::StepState::Done,
            StepStatus::Failed => pb::StepState::Failed,
        } as i32,
        attempts: s.attempts,
        last_error: s.last_error.clone().unwrap_or_default(),
        next_attempt_at: s.next_attempt_at.map(kit::timestamp),
        done_at: s.done_at.map(kit::timestamp),
    }
}

/// The wire form of a request with its steps.
pub fn request_to_pb(
    r: &ledger::Request,
    steps: &[StepView],
    today: chrono::NaiveDate,
) -> pb::DataSubjectRequest {
    let d = &r.deadline;
    let ext = d.extension();
    pb::DataSubjectRequest {
        required_assurance: String::new(),
        letters: Vec::new(),
        id: r.id.clone(),
        kind: kind_to_pb(r.kind) as i32,
        state: state_to_pb(r.state) as i32,
        controller: Some(common::ControllerRef {
            organisation_number: r.controller.as_str().to_owned(),
        }),
        deadline: Some(pb::Deadline {
            received_on: Some(kit::date_to_pb(d.received_on())),
            original_due: Some(kit::date_to_pb(d.original_due())),
            due: Some(kit::date_to_pb(d.due())),
            extended_months: ext.map(|e| e.months).unwrap_or(0),
            extension_reason: ext.map(|e| e.reason.clone()).unwrap_or_default(),
            overdue: !r.state.is_answered() && today > d.due(),
        }),
        language: r.language.clone(),
        steps: steps.iter().map(step_to_pb).collect(),
        rejection_reason: r
            .rejection
            .as_ref()
            .map(|(reason, _)| rejection_to_pb(*reason) as i32)
            .unwrap_or(0),
        rejection_note: r
            .rejection
            .as_ref()
            .map(|(_, n)| n.clone())
            .unwrap_or_default(),
        package_id: r.package_id.clone().unwrap_or_default(),
        submit_time: Some(kit::timestamp(r.submitted_at)),
        update_time: Some(kit::timestamp(r.updated_at)),
        challenge_id: r.challenge_id.clone().unwrap_or_default(),
        retrying: r.attempts > 0 && r.next_attempt_at.is_some(),
        record_count: r.record_count.unwrap_or(0),
        system_ids: r.system_ids.clone(),
        cancel_reason: r.cancel_reason.clone().unwrap_or_default(),
        retained_count: r.retained_count.unwrap_or(0),
        discrepancies: r
            .discrepancies
            .iter()
            .map(|d| pb::Discrepancy {
                system_id: d.system_id.clone(),
                store: d.store.clone(),
                key: d.key.clone(),
                phase: d.phase.clone(),
                expected: d.expected.clone(),
                observed: d.observed.clone(),
                restriction_reason: d.reason.clone().unwrap_or_default(),
                legal_ground: d.ground.clone().unwrap_or_default(),
                retain_until: d.until.map(kit::date_to_pb),
                receipt_id: d.receipt_id.clone(),
            })
            .collect(),
        withheld_disclosures: r
            .withheld
            .iter()
            .map(|w| pb::WithheldDisclosure {
                recipient_id: w.recipient_id.clone(),
                recipient_name: w.recipient_name.clone(),
                country: w.country.clone(),
                action: w.action.clone(),
                verdict: w.verdict.clone(),
                reasons: w.reasons.clone(),
                notification_id: w.notification_id.clone(),
            })
            .collect(),
        write_order: r.write_order.as_ref().map(order_to_pb),
    }
}

/// The wire form of a letter's record.
fn letter_to_pb(l: &crate::letters::LetterView) -> pb::Letter {
    use crate::letters::Status;
    use dsr_domain::letters::LetterKind;
    pb::Letter {
        kind: match l.kind {
            LetterKind::Received => pb::LetterKind::Received,
            LetterKind::IdentityNeeded => pb::LetterKind::IdentityNeeded,
            LetterKind::Extended => pb::LetterKind::Extended,
            LetterKind::Completed => pb::LetterKind::Completed,
            LetterKind::Refused => pb::LetterKind::Refused,
            LetterKind::RestrictionLifted => pb::LetterKind::RestrictionLifted,
            LetterKind::BreachNotice => pb::LetterKind::BreachNotice,
            LetterKind::ComplaintAnswer => pb::LetterKind::ComplaintAnswer,
        } as i32,
        key: l.key.clone(),
        status: match l.status {
            Status::Pending => pb::LetterStatus::Pending,
            Status::Sent => pb::LetterStatus::Sent,
            Status::Failed => pb::LetterStatus::Failed,
            Status::Undeliverable => pb::LetterStatus::Undeliverable,
        } as i32,
        channel: l.channel.clone().unwrap_or_default(),
        queue_time: Some(kit::timestamp(l.queued_at)),
        send_time: l.sent_at.map(kit::timestamp),
        attempts: l.attempts,
        last_error: l.last_error.clone().unwrap_or_default(),
    }
}

/// The wire form of a request's case file: its identities, its subject
/// map and its audit trail.
pub fn case_file_to_pb(
    r: &ledger::Request,
    audit: &[dsr_domain::request::AuditEvent],
) -> pb::GetCaseFileResponse {
    let map = r.subject_map.as_ref();
    pb::GetCaseFileResponse {
        claimed_identities: r.identities.iter().map(identity_to_pb).collect(),
        verified_identities: r.verified.iter().flatten().map(identity_to_pb).collect(),
        identities_purged: audit.iter().any(|e| e.action == "identities_purged"),
        located_systems: map
            .map(|m| {
                m.systems
                    .iter()
                    .map(|s| pb::LocatedSystem {
                        system_id: s.system_id.clone(),
                        outcome: s.outcome.clone(),
                        stores: s
                            .stores
                            .iter()
                            .map(|st| pb::LocatedStore {
                                store: st.store.clone(),
                                record_count: u32::try_from(st.keys.len()).unwrap_or(u32::MAX),
                                categories: st.categories.clone(),
                            })
                            .collect(),
                        error_reason: s.error_reason.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        location_partial: map.is_some_and(|m| m.partial),
        audit_entries: audit
            .iter()
            .map(|e| pb::AuditEntry {
                seq: e.seq,
                time: Some(kit::timestamp(e.at)),
                actor: e.actor.clone(),
                action: e.action.clone(),
                hash: e.hash.clone(),
            })
            .collect(),
    }
}

fn valid_key(k: &str) -> bool {
    (8..=128).contains(&k.len())
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn require_id(id: &str) -> Result<(), Status> {
    if kit::valid_id(id) {
        Ok(())
    } else {
        Err(ERR.invalid_argument(vec![("id".into(), "required: a request id".into())]))
    }
}

fn language(l: &str, v: &mut Vec<(String, String)>) -> String {
    match dsr_domain::text::Lang::requested(l) {
        Some(lang) => lang.code().into(),
        None => {
            v.push(("language".into(), "\"sv\" or \"en\"".into()));
            String::new()
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

impl Handlers {
    async fn view(&self, r: &ledger::Request) -> Result<pb::DataSubjectRequest, Status> {
        // Letters and steps in one statement: a Watch shows every change.
        let (letters, steps) = self
            .d
            .ledger
            .letters_and_steps(r)
            .await
            .map_err(ledger_status)?;
        Ok(self.view_of(r, &letters, &steps))
    }

    /// [`Self::view`] with the request's letters already read.
    async fn view_with(
        &self,
        r: &ledger::Request,
        letters: &[crate::letters::LetterView],
    ) -> Result<pb::DataSubjectRequest, Status> {
        let steps = self.d.ledger.steps(r).await.map_err(ledger_status)?;
        Ok(self.view_of(r, letters, &steps))
    }

    fn view_of(
        &self,
        r: &ledger::Request,
        letters: &[crate::letters::LetterView],
        steps: &[crate::queue::StepView],
    ) -> pb::DataSubjectRequest {
        let mut v = request_to_pb(r, steps, self.d.ledger.clock().today());
        v.required_assurance = match self.d.intake.assurance().required(r.kind) {
            dsr_auth::verification::Assurance::Low => "low",
            dsr_auth::verification::Assurance::Substantial => "substantial",
            dsr_auth::verification::Assurance::High => "high",
            dsr_auth::verification::Assurance::Attested => "attested",
        }
        .into();
        v.letters = letters.iter().map(letter_to_pb).collect();
        v
    }

    /// Tells the watchers of `r` (as committed) that it changed.
    fn changed(&self, r: &ledger::Request) {
        let _ = self.d.changes.send(Change::written(r));
    }
}

#[tonic::async_trait]
impl Requests for Handlers {
    #[tracing::instrument(
        skip_all,
        fields(dsr.request.id = tracing::field::Empty, dsr.request.kind = tracing::field::Empty)
    )]
    async fn submit(
        &self,
        req: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let actor = Principal::subject_of(&req);
        let submitted_by = Reader::of(&req).who;
        // The flat fields 7 to 12 are deprecated for `order` and still read.
        #[allow(deprecated)]
        let pb::SubmitRequest {
            kind,
            controller,
            claimed,
            verification_token,
            language: lang,
            idempotency_key,
            order,
            corrections,
            restriction_ground,
            lift,
            person_informed_time,
            purposes,
            direct_marketing,
        } = req.into_inner();
        let mut v: Vec<(String, String)> = Vec::new();
        let kind = kind_from_pb(kind);
        let flat = WriteFields {
            corrections,
            restriction_ground,
            lift,
            person_informed_time,
            purposes,
            direct_marketing,
        };
        let write = parse_order(kind, order, flat, self.d.ledger.clock().now(), &mut v);
        let controller = kit::controller_from_pb(controller, &mut v).and_then(|o| {
            if self.d.group.controller(&o).is_some() {
                Some(o)
            } else {
                v.push((
                    "controller.organisation_number".into(),
                    "not one of the group's controllers".into(),
                ));
                None
            }
        });
        // One person's identities: a handful, never a list of people.
        let claimed = if claimed.len() > MAX_CLAIMED {
            v.push((
                "claimed".into(),
                format!("at most {MAX_CLAIMED} identities of one person"),
            ));
            Vec::new()
        } else {
            match identities_from_pb(claimed, "claimed") {
                Ok(ids) => ids,
                Err(bad) => {
                    v.extend(bad);
                    Vec::new()
                }
            }
        };
        let mut claimed = claimed;
        let vouched = if verification_token.is_empty() {
            if claimed.is_empty() && !v.iter().any(|(f, _)| f.starts_with("claimed")) {
                v.push((
                    "claimed".into(),
                    "required unless verification_token is set".into(),
                ));
            }
            None
        } else {
            match self.d.intake.submission_proof(
                &verification_token,
                kind,
                std::mem::take(&mut claimed),
            ) {
                Ok(proof) => {
                    claimed = proof.claimed;
                    proof.verified
                }
                Err(IntakeError::NotThePerson) => {
                    v.push((
                        "verification_token".into(),
                        "does not vouch for every claimed identity".into(),
                    ));
                    None
                }
                Err(why) => {
                    v.push(("verification_token".into(), why.to_string()));
                    None
                }
            }
        };
        let verification_jti = vouched.as_ref().map(|x| x.jti.clone());
        let verified = vouched.map(|x| x.identities);
        let language = language(&lang, &mut v);
        if idempotency_key.is_empty() {
            v.push(("idempotency_key".into(), "required".into()));
        } else if !valid_key(&idempotency_key) {
            v.push((
                "idempotency_key".into(),
                "8 to 128 of [A-Za-z0-9._:-]".into(),
            ));
        }
        let (Some(kind), Some(controller), true) = (kind, controller, v.is_empty()) else {
            return Err(ERR.invalid_argument(v));
        };
        // A request that will send the person a code: refused at once while
        // they are rate-limited, rather than recorded to retry unheard.
        if verified.is_none()
            && verification_token.is_empty()
            && let Some(wait) = self
                .d
                .intake
                .code_wait(kind, &controller, &claimed, &idempotency_key)
                .await
                .map_err(intake_status)?
        {
            return Err(ERR.retry_after(
                Code::ResourceExhausted,
                "the person has had too many codes lately: no request was recorded; a code can go after the RetryInfo delay",
                "IDENTITY_RATE_LIMITED",
                wait,
            ));
        }
        let (r, new) = self
            .d
            .ledger
            .submit(
                Submission {
                    kind,
                    controller,
                    identities: claimed,
                    language,
                    idempotency_key,
                    verified,
                    write,
                    verification_jti,
                    submitted_by: Some(submitted_by),
                },
                self.d.ledger.clock().today(),
                &actor,
            )
            .await
            .map_err(ledger_status)?;
        let span = tracing::Span::current();
        span.record("dsr.request.id", r.id.as_str());
        span.record("dsr.request.kind", r.kind.as_str());
        if new {
            self.d.wake.notify_one();
            self.changed(&r);
        }
        Ok(Response::new(pb::SubmitResponse {
            request: Some(self.view(&r).await?),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn verify(
        &self,
        req: Request<pb::VerifyRequest>,
    ) -> Result<Response<pb::VerifyResponse>, Status> {
        let actor = Principal::subject_of(&req);
        let pb::VerifyRequest {
            id,
            code,
            verification_token,
        } = req.into_inner();
        require_id(&id)?;
        if code.is_empty() == verification_token.is_empty() {
            return Err(ERR.invalid_argument(vec![(
                "code".into(),
                "exactly one of code and verification_token".into(),
            )]));
        }
        let proof = if code.is_empty() {
            Proof::Token(verification_token)
        } else {
            Proof::Code(code)
        };
        let r = self
            .d
            .intake
            .verify(&id, proof, &actor)
            .await
            .map_err(intake_status)?;
        self.d.wake.notify_one();
        self.changed(&r);
        Ok(Response::new(pb::VerifyResponse {
            request: Some(self.view(&r).await?),
        }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let reader = Reader::of(&req);
        let pb::GetRequest { id } = req.into_inner();
        require_id(&id)?;
        let r = self.d.ledger.get(&id).await.map_err(ledger_status)?;
        reader.may_read(&r)?;
        Ok(Response::new(pb::GetResponse {
            request: Some(self.view(&r).await?),
        }))
    }

    async fn get_case_file(
        &self,
        req: Request<pb::GetCaseFileRequest>,
    ) -> Result<Response<pb::GetCaseFileResponse>, Status> {
        let pb::GetCaseFileRequest { id } = req.into_inner();
        require_id(&id)?;
        let r = self.d.ledger.get(&id).await.map_err(ledger_status)?;
        let audit = self.d.ledger.audit_of(&id).await.map_err(ledger_status)?;
        Ok(Response::new(case_file_to_pb(&r, &audit)))
    }

    async fn list_controllers(
        &self,
        req: Request<pb::ListControllersRequest>,
    ) -> Result<Response<pb::ListControllersResponse>, Status> {
        let pb::ListControllersRequest {} = req.into_inner();
        let g = &self.d.group;
        Ok(Response::new(pb::ListControllersResponse {
            controllers: g
                .controllers
                .iter()
                .map(|c| pb::GroupController {
                    organisation_number: c.organisation_number.as_str().to_owned(),
                    name: c.name.clone(),
                })
                .collect(),
            dpo_email: g.dpo_email.clone(),
            authority_names: [
                ("sv".to_owned(), g.authority.name_sv.clone()),
                ("en".to_owned(), g.authority.name_en.clone()),
            ]
            .into(),
            authority_url: g.authority.url.clone(),
            policy_version: g.policy.version.clone(),
            policy_published: Some(kit::date_to_pb(g.policy.published)),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let reader = Reader::of(&req);
        let pb::ListRequest {
            page,
            state,
            kind,
            controller,
            overdue,
            due_within_days,
        } = req.into_inner();
        let mut v = Vec::new();
        if due_within_days > 366 {
            v.push(("due_within_days".into(), "0 to 366".into()));
        }
        let page = page.unwrap_or_default();
        if page.page_size > 500 {
            v.push(("page.page_size".into(), "0 to 500".into()));
        }
        let controller = match controller {
            None => None,
            Some(c) => match Organisationsnummer::parse(&c.organisation_number) {
                Ok(o) => Some(o),
                Err(e) => {
                    v.push(("controller.organisation_number".into(), e.to_string()));
                    None
                }
            },
        };
        if pb::State::try_from(state).is_err() {
            v.push(("state".into(), "unknown state".into()));
        }
        if pb::Kind::try_from(kind).is_err() {
            v.push(("kind".into(), "unknown kind".into()));
        }
        if !v.is_empty() {
            return Err(ERR.invalid_argument(v));
        }
        let filter = Filter {
            state: state_from_pb(state),
            kind: kind_from_pb(kind),
            controller,
            overdue_on: overdue.then(|| self.d.ledger.clock().today()),
            due_by: (due_within_days > 0).then(|| {
                self.d.ledger.clock().today() + chrono::Days::new(u64::from(due_within_days))
            }),
            submitted_by: reader.only_own(),
        };
        let size = if page.page_size == 0 {
            50
        } else {
            u64::from(page.page_size)
        };
        let token = (!page.page_token.is_empty()).then_some(page.page_token.as_str());
        let listed = self
            .d
            .ledger
            .list(&filter, size, token)
            .await
            .map_err(ledger_status)?
            .map_err(|_| {
                ERR.invalid_argument(vec![(
                    "page.page_token".into(),
                    "invalid page token".into(),
                )])
            })?;
        // The page's letters in one read, not one per request.
        let ids: Vec<String> = listed.requests.iter().map(|r| r.id.clone()).collect();
        let mut letters = self
            .d
            .ledger
            .letters_of_many(&ids)
            .await
            .map_err(ledger_status)?;
        let mut views = Vec::with_capacity(listed.requests.len());
        for r in &listed.requests {
            let theirs = letters.remove(&r.id).unwrap_or_default();
            views.push((
                self.view_with(r, &theirs).await?,
                crate::listing::token_after(r),
            ));
        }
        let (requests, cut) = fit_page(views, MAX_PAGE_BYTES);
        Ok(Response::new(pb::ListResponse {
            requests,
            page: Some(common::PageResponse {
                next_page_token: cut.or(listed.next).unwrap_or_default(),
            }),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        req: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let reader = Reader::of(&req);
        let pb::WatchRequest { id } = req.into_inner();
        require_id(&id)?;
        // Listen before the first read: a change between the two would
        // otherwise wait for the next look of the feed.
        let mut changes = self.d.changes.subscribe();
        let first = self.d.ledger.get(&id).await.map_err(ledger_status)?;
        reader.may_read(&first)?;
        let slot = self.d.watch_slots.take(&reader.who)?;
        let ledger = self.d.ledger.clone();
        let me = Handlers { d: self.d.clone() };
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tokio::spawn(async move {
            // Held while the stream lives.
            let _slot = slot;
            let mut last = None;
            let mut current = first;
            loop {
                let key = (current.state, current.updated_at);
                if last != Some(key) {
                    last = Some(key);
                    let item = me
                        .view(&current)
                        .await
                        .map(|r| pb::WatchResponse { request: Some(r) });
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return;
                    }
                }
                if current.state.is_answered() {
                    return;
                }
                // This request changed (here or, through the feed, at another
                // replica), changes were missed, or the watcher is gone.
                tokio::select! {
                    changed = changes.recv() => match changed {
                        Ok(c) if !c.concerns(&current.id) => continue,
                        // As this process committed it: shown without a
                        // read, unless it is older than what is shown (two
                        // writers' messages crossed) or ties with another
                        // state.
                        Ok(Change::Written(r)) if r.updated_at > current.updated_at => {
                            current = Arc::unwrap_or_clone(r);
                            continue;
                        }
                        Ok(Change::Written(r))
                            if r.updated_at < current.updated_at
                                || (r.updated_at == current.updated_at
                                    && r.state == current.state) =>
                        {
                            continue;
                        }
                        // The feed's look finding the change shown (the
                        // same time, not any earlier one: replicas' clocks
                        // may differ).
                        Ok(Change::Changed { at: Some(at), .. }) if at == current.updated_at => {
                            continue;
                        }
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    () = tx.closed() => return,
                }
                match ledger.get(&current.id).await {
                    Ok(r) => current = r,
                    Err(e) => {
                        let _ = tx.send(Err(ledger_status(e))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn cancel(
        &self,
        req: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        let actor = Principal::subject_of(&req);
        let pb::CancelRequest { id, reason } = req.into_inner();
        require_id(&id)?;
        if reason.trim().is_empty() || reason.chars().count() > MAX_TEXT {
            return Err(ERR.invalid_argument(vec![(
                "reason".into(),
                format!("required, at most {MAX_TEXT} characters"),
            )]));
        }
        let r = self
            .d
            .ledger
            .cancel(&id, &reason, &actor)
            .await
            .map_err(ledger_status)?;
        self.changed(&r);
        Ok(Response::new(pb::CancelResponse {
            request: Some(self.view(&r).await?),
        }))
    }

    async fn extend(
        &self,
        req: Request<pb::ExtendRequest>,
    ) -> Result<Response<pb::ExtendResponse>, Status> {
        let actor = Principal::subject_of(&req);
        let pb::ExtendRequest { id, months, reason } = req.into_inner();
        require_id(&id)?;
        let mut v = Vec::new();
        if !(1..=2).contains(&months) {
            v.push(("months".into(), "1 or 2".into()));
        }
        if reason.trim().is_empty() || reason.chars().count() > MAX_TEXT {
            v.push((
                "reason".into(),
                format!("required (it is told to the person), at most {MAX_TEXT} characters"),
            ));
        }
        if !v.is_empty() {
            return Err(ERR.invalid_argument(v));
        }
        let r = self
            .d
            .ledger
            .extend(&id, months, &reason, self.d.ledger.clock().today(), &actor)
            .await
            .map_err(ledger_status)?;
        self.changed(&r);
        Ok(Response::new(pb::ExtendResponse {
            request: Some(self.view(&r).await?),
        }))
    }

    async fn approve(
        &self,
        req: Request<pb::ApproveRequest>,
    ) -> Result<Response<pb::ApproveResponse>, Status> {
        let actor = Principal::subject_of(&req);
        let pb::ApproveRequest { id, note } = req.into_inner();
        if note.chars().count() > MAX_TEXT {
            return Err(ERR.invalid_argument(vec![(
                "note".into(),
                format!("at most {MAX_TEXT} characters"),
            )]));
        }
        require_id(&id)?;
        let r = self
            .d
            .ledger
            .approve(&id, &actor)
            .await
            .map_err(ledger_status)?;
        self.d.wake.notify_one();
        self.changed(&r);
        Ok(Response::new(pb::ApproveResponse {
            request: Some(self.view(&r).await?),
        }))
    }

    async fn reject(
        &self,
        req: Request<pb::RejectRequest>,
    ) -> Result<Response<pb::RejectResponse>, Status> {
        let actor = Principal::subject_of(&req);
        let pb::RejectRequest { id, reason, note } = req.into_inner();
        if note.chars().count() > MAX_TEXT {
            return Err(ERR.invalid_argument(vec![(
                "note".into(),
                format!("at most {MAX_TEXT} characters"),
            )]));
        }
        require_id(&id)?;
        let reason = match pb::RejectionReason::try_from(reason) {
            Ok(pb::RejectionReason::IdentityInsufficient) => Rejection::IdentityInsufficient,
            Ok(pb::RejectionReason::ManifestlyUnfoundedOrExcessive) => {
                Rejection::ManifestlyUnfoundedOrExcessive
            }
            Ok(pb::RejectionReason::NoData) => Rejection::NoData,
            Ok(pb::RejectionReason::Other) if note.trim().is_empty() => {
                return Err(ERR.invalid_argument(vec![(
                    "note".into(),
                    "required for REJECTION_REASON_OTHER".into(),
                )]));
            }
            Ok(pb::RejectionReason::Other) => Rejection::Other,
            Ok(pb::RejectionReason::Unspecified) | Err(_) => {
                return Err(ERR.invalid_argument(vec![("reason".into(), "required".into())]));
            }
        };
        let r = self
            .d
            .ledger
            .reject(&id, reason, &note, &actor)
            .await
            .map_err(ledger_status)?;
        self.changed(&r);
        Ok(Response::new(pb::RejectResponse {
            request: Some(self.view(&r).await?),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::{WatchSlots, WriteFields, fit_page, parse_order, pb};
    use chrono::Utc;
    use dsr_domain::request::{Correction, Kind, RestrictionGround, WriteOrder};
    use pb::submit_request::Order;

    fn none() -> WriteFields {
        WriteFields::of(Order::Objection(pb::ObjectionOrder::default()))
    }

    fn correction(category: &str, value: &str) -> pb::Correction {
        pb::Correction {
            category_id: category.into(),
            value: value.into(),
        }
    }

    /// (order, violations) of a submission.
    fn parse(
        kind: Kind,
        order: Option<Order>,
        flat: WriteFields,
    ) -> (Option<WriteOrder>, Vec<(String, String)>) {
        let mut v = Vec::new();
        let w = parse_order(Some(kind), order, flat, Utc::now(), &mut v);
        (w, v)
    }

    fn fields(v: &[(String, String)]) -> Vec<&str> {
        v.iter().map(|(f, _)| f.as_str()).collect()
    }

    #[test]
    fn an_order_reads_the_same_from_the_oneof_as_from_the_deprecated_flat_fields() {
        let rectify = WriteOrder::Rectify {
            corrections: vec![Correction {
                category: "contact.phone".into(),
                value: "070-1234567".into(),
            }],
        };
        let (w, v) = parse(
            Kind::Rectification,
            Some(Order::Rectification(pb::RectificationOrder {
                corrections: vec![correction("contact.phone", " 070-1234567 ")],
            })),
            none(),
        );
        assert_eq!((w.as_ref(), v.len()), (Some(&rectify), 0));
        let mut flat = none();
        flat.corrections = vec![correction("contact.phone", "070-1234567")];
        assert_eq!(
            parse(Kind::Rectification, None, flat),
            (Some(rectify), vec![])
        );

        let (w, v) = parse(
            Kind::Restriction,
            Some(Order::Restriction(pb::RestrictionOrder {
                ground: pb::RestrictionGround::AccuracyContested as i32,
                ..Default::default()
            })),
            none(),
        );
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(
            w,
            Some(WriteOrder::Restrict {
                ground: RestrictionGround::AccuracyContested
            })
        );
        let (w, v) = parse(
            Kind::Objection,
            Some(Order::Objection(pb::ObjectionOrder {
                purposes: vec![],
                direct_marketing: true,
            })),
            none(),
        );
        assert!(v.is_empty(), "{v:?}");
        assert!(matches!(
            w,
            Some(WriteOrder::Object {
                direct_marketing: true,
                ..
            })
        ));
    }

    #[test]
    fn an_order_given_twice_wrong_for_its_kind_or_invalid_is_refused_naming_the_field_sent() {
        let mut flat = none();
        flat.direct_marketing = true;
        let (w, v) = parse(
            Kind::Objection,
            Some(Order::Objection(pb::ObjectionOrder {
                purposes: vec![],
                direct_marketing: true,
            })),
            flat,
        );
        assert_eq!((w, fields(&v)), (None, vec!["order"]));

        // A restriction's order on a rectification: both of its problems,
        // named inside the oneof.
        let (_, v) = parse(
            Kind::Rectification,
            Some(Order::Restriction(pb::RestrictionOrder {
                ground: pb::RestrictionGround::AccuracyContested as i32,
                ..Default::default()
            })),
            none(),
        );
        assert_eq!(
            fields(&v),
            vec!["restriction.ground", "rectification.corrections"]
        );

        let (_, v) = parse(
            Kind::Rectification,
            Some(Order::Rectification(pb::RectificationOrder {
                corrections: vec![
                    correction("contact.phone", "1"),
                    correction("contact phone", ""),
                ],
            })),
            none(),
        );
        assert_eq!(
            fields(&v),
            vec![
                "rectification.corrections[1].category_id",
                "rectification.corrections[1].value"
            ]
        );
        // The same mistake in the flat fields keeps their names.
        let mut flat = none();
        flat.corrections = vec![correction("contact phone", "x")];
        let (_, v) = parse(Kind::Rectification, None, flat);
        assert_eq!(fields(&v), vec!["corrections[0].category_id"]);

        // A kind that takes no order.
        let (_, v) = parse(
            Kind::Access,
            Some(Order::Objection(pb::ObjectionOrder {
                purposes: vec!["marketing".into()],
                direct_marketing: false,
            })),
            none(),
        );
        assert_eq!(fields(&v), vec!["order"]);
    }

    #[test]
    fn a_list_page_stops_before_its_byte_budget_and_says_where_to_go_on() {
        let big = |i: usize| {
            (
                pb::DataSubjectRequest {
                    id: format!("r{i}"),
                    cancel_reason: "x".repeat(2000),
                    ..Default::default()
                },
                format!("after-r{i}"),
            )
        };
        let one = prost::Message::encoded_len(&big(0).0) + 8;
        let (page, next) = fit_page((0..500).map(big).collect(), 10 * one + one / 2);
        assert_eq!(page.len(), 10);
        assert_eq!(next.as_deref(), Some("after-r9"));
        let all: usize = page
            .iter()
            .map(|v| prost::Message::encoded_len(v) + 8)
            .sum();
        assert!(all <= 10 * one + one / 2);
        // All fit: nothing cut, the listing's own token stands.
        let (page, next) = fit_page((0..5).map(big).collect(), 1024 * 1024);
        assert_eq!((page.len(), next), (5, None));
        // One request larger than the budget still comes, alone.
        let (page, next) = fit_page((0..3).map(big).collect(), 10);
        assert_eq!((page.len(), next.as_deref()), (1, Some("after-r0")));
    }

    #[test]
    fn watch_streams_are_bounded_in_all_and_per_caller_and_given_back() {
        let slots = WatchSlots::new(3, 2);
        let a1 = slots.take("a").unwrap();
        let _a2 = slots.take("a").unwrap();
        assert_eq!(
            slots.take("a").unwrap_err().code(),
            tonic::Code::ResourceExhausted,
            "per caller"
        );
        let _b1 = slots.take("b").unwrap();
        assert_eq!(
            slots.take("c").unwrap_err().code(),
            tonic::Code::ResourceExhausted,
            "in all"
        );
        drop(a1);
        assert_eq!(slots.open(), 2);
        assert!(
            slots.take("c").is_ok(),
            "a closed stream gives its slot back"
        );
    }
}
