//! The other services as the orchestrator sees them: traits owned by its
//! domain, implemented over gRPC in [`crate::grpc::clients`] and by test
//! doubles in tests. Every call gets a deadline, passed down as
//! `grpc-timeout`.

use std::time::Duration;

use chrono::NaiveDate;
use dsr_domain::identity::{Identity, Organisationsnummer};
use dsr_domain::request::{Kind, WriteOrder};
use serde::{Deserialize, Serialize};

/// Why a call failed: a stable reason without personal data, and whether
/// trying again may help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{service}: {reason}")]
pub struct CallError {
    /// Which service, e.g. "discovery".
    pub service: String,
    /// E.g. "UNAVAILABLE", or "system crm: UNAVAILABLE".
    pub reason: String,
    /// Worth retrying (unavailable, timed out, partial answers).
    pub retryable: bool,
}

/// How a step's failure reason begins when it only waits on people (a
/// manual system's vendor has a task open, or a system's operation is
/// still running): the step is asked again later without using up its
/// attempts.
pub const WAITING: &str = "waiting: ";

impl CallError {
    /// A step that waits on `failures`, each "system X: REASON".
    pub fn waiting(service: &str, failures: &[String]) -> Self {
        Self {
            service: service.to_owned(),
            reason: format!("{WAITING}{}", failures.join(", ")),
            retryable: true,
        }
    }

    /// Whether the step only waits (see [`WAITING`]).
    pub fn is_waiting(&self) -> bool {
        self.reason.starts_with(WAITING)
    }
}

/// Whether every failure is a system waiting on people: AWAITING_VENDOR
/// (a task open at a vendor without an API) or OPERATION_PENDING (a write
/// still running at the system).
pub fn only_waiting(failures: &[String]) -> bool {
    !failures.is_empty()
        && failures
            .iter()
            .all(|f| f.ends_with(": AWAITING_VENDOR") || f.ends_with(": OPERATION_PENDING"))
}

/// The records of one store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Store {
    /// The store.
    pub store: String,
    /// Record keys.
    pub keys: Vec<String>,
    /// Categories.
    pub categories: Vec<String>,
}

/// One system in the subject map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemFound {
    /// The system.
    pub system_id: String,
    /// "found", "not_found", "no_accepted_identity", "failed", "timed_out".
    pub outcome: String,
    /// Its stores with records.
    pub stores: Vec<Store>,
    /// For failures.
    pub error_reason: String,
}

/// Where the person's data is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectMap {
    /// Every identity known at the end, as (type, value).
    pub identities: Vec<(String, String)>,
    /// Per system.
    pub systems: Vec<SystemFound>,
    /// Some system failed.
    pub partial: bool,
    /// Expansion rounds.
    pub rounds: u32,
}

impl SubjectMap {
    /// Records found, over all systems.
    pub fn record_count(&self) -> u64 {
        self.systems
            .iter()
            .flat_map(|s| &s.stores)
            .map(|st| st.keys.len() as u64)
            .sum()
    }

    /// The systems that failed, with their reasons: no personal data.
    pub fn failures(&self) -> Vec<String> {
        self.systems
            .iter()
            .filter(|s| matches!(s.outcome.as_str(), "failed" | "timed_out"))
            .map(|s| {
                if s.error_reason.is_empty() {
                    format!("system {}: {}", s.system_id, s.outcome.to_uppercase())
                } else {
                    format!("system {}: {}", s.system_id, s.error_reason)
                }
            })
            .collect()
    }
}

/// The header every downstream call carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The request.
    pub request_id: String,
    /// The controller.
    pub controller: Organisationsnummer,
    /// The due date.
    pub due_date: NaiveDate,
    /// Who submitted the request (a portal's issuer and subject): the one
    /// caller besides case handlers that may fetch what is built for it.
    pub submitted_by: Option<String>,
    /// The deadline of the call.
    pub timeout: Duration,
}

/// A started verification challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Its id at the identity service.
    pub id: String,
}

/// A built package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageRef {
    /// Its id at export.
    pub id: String,
    /// Records in it.
    pub record_count: u64,
    /// The systems they came from.
    pub system_ids: Vec<String>,
}

/// Identity verification.
#[tonic::async_trait]
pub trait Verification: Send + Sync {
    /// Whether a code could go to the person now: `Some(wait)` when the
    /// identity service rate-limits them (too many codes lately), with how
    /// long until one could; `None` when it could (or no code is needed).
    /// Sends nothing. Test doubles that never limit keep this default.
    async fn code_wait(
        &self,
        _call: &Call,
        _claimed: &[Identity],
    ) -> Result<Option<Duration>, CallError> {
        Ok(None)
    }

    /// Starts a challenge for the claimed identities (the code goes to the
    /// person).
    async fn start(
        &self,
        call: &Call,
        claimed: &[Identity],
        language: &str,
    ) -> Result<Challenge, CallError>;
    /// Completes a challenge with the person's code; returns the
    /// verification token.
    async fn complete(
        &self,
        call: &Call,
        challenge_id: &str,
        code: &str,
    ) -> Result<String, CallError>;
    /// Sends a letter to the person's email address or phone (the
    /// identity service's notifier); the text is not kept.
    async fn send_letter(
        &self,
        call: &Call,
        to: &Identity,
        subject: &str,
        body: &str,
    ) -> Result<(), CallError>;
}

/// What a breach concerns, as the systems are asked about it for one
/// controller (the call's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreachQuery {
    /// The systems concerned; empty: every system serving the controller.
    pub systems: Vec<String>,
    /// The categories of data.
    pub categories: Vec<String>,
    /// Its window, when known.
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// See `from`.
    pub to: Option<chrono::DateTime<chrono::Utc>>,
}

/// One person a system says a breach may have touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AffectedPerson {
    /// Their email addresses and phones.
    pub contacts: Vec<Identity>,
    /// Their language, when the system holds it ("sv", "en"), else empty.
    pub language: String,
    /// The breach's categories their records hold.
    pub categories: Vec<String>,
    /// Their records in those categories.
    pub records: u64,
    /// Whether the system applied the breach's window.
    pub window_applied: bool,
}

/// One system's answer about a breach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemAffected {
    /// The system.
    pub system_id: String,
    /// "found", "not_found", "failed" or "timed_out".
    pub outcome: String,
    /// The people.
    pub people: Vec<AffectedPerson>,
    /// For a failure: a stable reason.
    pub error_reason: String,
}

/// Discovery.
#[tonic::async_trait]
pub trait Discovery: Send + Sync {
    /// Locates the person in every system serving the controller.
    async fn locate(&self, call: &Call, identities: &[Identity]) -> Result<SubjectMap, CallError>;
    /// For a breach (the call's request id is the incident's): the people
    /// each system serving the call's controller holds in its categories.
    async fn find_affected(
        &self,
        call: &Call,
        query: &BreachQuery,
    ) -> Result<Vec<SystemAffected>, CallError>;
}

/// Export.
#[tonic::async_trait]
pub trait Export: Send + Sync {
    /// Builds (or returns the already built) package of the request.
    async fn build(
        &self,
        call: &Call,
        kind: Kind,
        language: &str,
        map: &SubjectMap,
    ) -> Result<PackageRef, CallError>;
}

/// An erasure plan, as counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// Records to erase.
    pub erase: u32,
    /// Records to anonymise.
    pub anonymise: u32,
    /// Records to retain.
    pub retain: u32,
}

/// What an execution did: an erasure, a deferred erasure, or a
/// rectification, restriction or objection applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Executed {
    /// Every system answered with a verified receipt.
    pub complete: bool,
    /// The systems that did not, with their reasons.
    pub failures: Vec<String>,
    /// Records erased or anonymised in this execution.
    pub affected: u64,
    /// Records a system could not erase by an acceptable method.
    pub refused: u64,
    /// Records still retained.
    pub retained: u32,
    /// When the next deferred erasure is due.
    pub next_deferred_on: Option<NaiveDate>,
    /// The systems with work.
    pub system_ids: Vec<String>,
    /// Where this execution's receipts differ from the plan.
    pub discrepancies: Vec<Discrepancy>,
    /// The request's disclosures withheld so far for want of a lawful
    /// transfer (every one, not only this execution's).
    pub withheld: Vec<Withheld>,
}

/// A disclosure withheld: the transfer registry found no lawful transfer
/// to the recipient (no personal data: a recipient, an action, reasons).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withheld {
    /// The recipient.
    pub recipient_id: String,
    /// Its name.
    pub recipient_name: String,
    /// Its country.
    pub country: String,
    /// What it would have been told.
    pub action: String,
    /// "refused" or "awaiting_approval".
    pub verdict: String,
    /// The registry's blocking reasons.
    pub reasons: Vec<String>,
    /// The notification's id at the erasure service.
    pub notification_id: String,
}

/// A record whose receipt differs from the erasure plan: what the plan
/// expected in which phase, and what the system says it did (no personal
/// data: a system, a store and a record key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discrepancy {
    /// The system.
    pub system_id: String,
    /// The store.
    pub store: String,
    /// The record's key.
    pub key: String,
    /// "erase" or "deferred:<date>".
    pub phase: String,
    /// "removed" or "retained".
    pub expected: String,
    /// What the receipt says ("erased", "retained", "not_found", ...;
    /// "not_reported" when it says nothing of the record).
    pub observed: String,
    /// When the system kept it: why ("retention", "request", "hold").
    pub reason: Option<String>,
    /// When the system kept it: its ground.
    pub ground: Option<String>,
    /// When the system kept it: until when.
    pub until: Option<NaiveDate>,
    /// The receipt's id at the erasure service.
    pub receipt_id: String,
}

/// Erasure.
#[tonic::async_trait]
pub trait Erasure: Send + Sync {
    /// Plans the request's erasure (or returns the plan already built).
    async fn plan(&self, call: &Call, map: &SubjectMap) -> Result<Planned, CallError>;
    /// Executes the plan (idempotent).
    async fn execute(&self, call: &Call) -> Result<Executed, CallError>;
    /// Runs the deferred erasures due before `as_of`.
    async fn deferred(&self, call: &Call, as_of: NaiveDate) -> Result<Executed, CallError>;
    /// Applies a rectification, restriction or objection to the records of
    /// the subject map (idempotent per request).
    async fn apply(
        &self,
        call: &Call,
        order: &WriteOrder,
        map: &SubjectMap,
    ) -> Result<Executed, CallError>;
}
