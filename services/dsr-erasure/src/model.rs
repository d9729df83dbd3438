//! What erasure works with, free of the wire types: the subject map it is
//! given, plans, receipts as the systems signed them, holds, and the
//! systems it calls (gRPC in production, test doubles in tests).

use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;

use chrono::{DateTime, NaiveDate, Utc};
use dsr_domain::erasure::Decision;
use dsr_domain::identity::Organisationsnummer;
use serde::{Deserialize, Serialize};

/// A record of a system.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordRef {
    /// The store.
    pub store: String,
    /// The key.
    pub key: String,
}

pub use dsr_connector::subject::{MapStore, MapSystem, SubjectMap};

/// The header of every instruction to a system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The request.
    pub request_id: String,
    /// The controller.
    pub controller: Organisationsnummer,
    /// The request's due date.
    pub due_date: NaiveDate,
}

/// One record of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedRecord {
    /// The system.
    pub system_id: String,
    /// The record.
    pub record: RecordRef,
    /// Its categories.
    pub categories: Vec<String>,
    /// Its retention anchor, as the system reported it.
    pub anchor: Option<NaiveDate>,
    /// The decision.
    pub decision: Decision,
}

/// A plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The request.
    pub request_id: String,
    /// The controller.
    pub controller: String,
    /// Built.
    pub created_at: DateTime<Utc>,
    /// The policy version.
    pub policy_version: String,
    /// The records.
    pub records: Vec<PlannedRecord>,
    /// Keyed hashes of the person's identities (for tombstones and person
    /// holds; never the identities).
    pub identity_hashes: Vec<String>,
}

impl Plan {
    /// The systems with records, in order.
    pub fn systems(&self) -> BTreeSet<&str> {
        self.records.iter().map(|r| r.system_id.as_str()).collect()
    }
}

/// A retention order sent with an erasure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainOrder {
    /// The record.
    pub record: RecordRef,
    /// The ground.
    pub ground: String,
    /// Until when.
    pub until: Option<NaiveDate>,
    /// A legal hold keeps it (not erased at its date until lifted), rather
    /// than a period set by law or an open contract.
    pub hold: bool,
}

/// An erasure instruction to one system.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EraseOrder {
    /// The records to erase or anonymise (the retained ones included, the
    /// system keeps them by the orders).
    pub records: Vec<RecordRef>,
    /// The retention orders.
    pub retain: Vec<RetainOrder>,
}

/// What a receipt says, per store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreResult {
    /// The store.
    pub store: String,
    /// Matched.
    pub matched: u64,
    /// Changed.
    pub affected: u64,
    /// Left alone: no acceptable method.
    pub refused: u64,
}

/// A receipt, verified and decoded by the edge that received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The serialised receipt, as signed.
    pub payload: Vec<u8>,
    /// The signing key's id.
    pub key_id: String,
    /// The signature.
    pub signature: Vec<u8>,
    /// The system named in it.
    pub system_id: String,
    /// The request named in it.
    pub request_id: String,
    /// The idempotency key named in it.
    pub idempotency_key: String,
    /// Per store.
    pub stores: Vec<StoreResult>,
    /// Records retained.
    pub retained: u64,
    /// Per record asked about, what the system did (empty from a system
    /// that does not report per record).
    pub records: Vec<RecordOutcome>,
}

/// What a receipt says one record got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordResult {
    /// Erased.
    Erased,
    /// Anonymised.
    Anonymised,
    /// Kept, restricted.
    Retained,
    /// Left alone: no acceptable method.
    Refused,
    /// Not there.
    NotFound,
    /// Changed as asked (rectify, restrict, object).
    Applied,
    /// Nothing to change.
    Unchanged,
}

/// Why a system keeps a record restricted.
pub use dsr_connector::restriction::Reason as RestrictionReason;

/// One record's line in a receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordOutcome {
    /// The record.
    pub record: RecordRef,
    /// What it got.
    pub result: RecordResult,
    /// When kept: why it is restricted ("retention", "request", "hold").
    #[serde(default)]
    pub reason: Option<String>,
    /// When kept: the ground.
    #[serde(default)]
    pub ground: Option<String>,
    /// When kept: until when.
    #[serde(default)]
    pub until: Option<NaiveDate>,
}

impl Receipt {
    /// Records changed, over all stores.
    pub fn affected(&self) -> u64 {
        self.stores.iter().map(|s| s.affected).sum()
    }

    /// Records refused, over all stores.
    pub fn refused(&self) -> u64 {
        self.stores.iter().map(|s| s.refused).sum()
    }
}

/// Why a system call failed: a stable reason without personal data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("system {system}: {reason}")]
pub struct SystemError {
    /// The system.
    pub system: String,
    /// E.g. "UNAVAILABLE", "RECEIPT_SIGNATURE".
    pub reason: String,
    /// The receipt came but does not verify.
    pub receipt_invalid: bool,
}

/// A record as erasure reads it: its retention anchor and its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordInfo {
    /// The record.
    pub record: RecordRef,
    /// The date its retention runs from, once begun.
    pub anchor: Option<NaiveDate>,
    /// Its fields: name and category (no values).
    pub fields: Vec<(String, String)>,
}

/// A write other than erasure, as sent to one system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// New values: record, field, value.
    Rectify(Vec<(RecordRef, String, String)>),
    /// Restrict (or lift) the records.
    Restrict {
        /// The records.
        records: Vec<RecordRef>,
        /// Lift instead.
        lift: bool,
        /// Why.
        reason: String,
    },
    /// Object to purposes for the records.
    Object {
        /// The records.
        records: Vec<RecordRef>,
        /// The purposes.
        purposes: Vec<String>,
        /// Direct marketing.
        direct_marketing: bool,
    },
}

impl Write {
    /// The receipt action it produces, as a stable name.
    pub fn action(&self) -> &'static str {
        match self {
            Self::Rectify(_) => "rectify",
            Self::Restrict { lift: false, .. } => "restrict",
            Self::Restrict { lift: true, .. } => "lift_restriction",
            Self::Object { .. } => "object",
        }
    }
}

/// A recipient the data was disclosed to (from the transfer registry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its country.
    pub country: String,
    /// Whether sending it the categories concerned is lawful today (the
    /// transfer registry's assessment: EEA, adequacy, DPF, SCC, BCR or a
    /// derogation).
    pub lawful: bool,
    /// When not: the registry's blocking reasons ("code: message").
    pub blocking_reasons: Vec<String>,
}

/// What erasure does with a disclosure it drives (an Art. 19
/// notification, a correction sent to a recipient's own system) when the
/// transfer registry says the transfer is not lawful.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UnlawfulTransfers {
    /// Nothing is sent; the notification is recorded as refused, with the
    /// registry's reasons.
    #[default]
    Refuse,
    /// Nothing is sent until a case handler approves it (with a note, e.g.
    /// the Art. 49 derogation relied on); the request waits for review.
    Review,
}

impl UnlawfulTransfers {
    /// From configuration: "refuse" or "review".
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "refuse" => Some(Self::Refuse),
            "review" => Some(Self::Review),
            _ => None,
        }
    }
}

/// The data systems, as erasure calls them.
#[tonic::async_trait]
pub trait Systems: Send + Sync {
    /// Each record's retention anchor and fields (read through `Access`).
    async fn read(
        &self,
        system: &str,
        h: &Header,
        refs: &[RecordRef],
    ) -> Result<Vec<RecordInfo>, SystemError>;

    /// Sends `Erase` under `idempotency_key`, waits for the operation to
    /// end, verifies the receipt against the system's published keys and
    /// checks that it names this system, request and key.
    async fn erase(
        &self,
        system: &str,
        h: &Header,
        idempotency_key: &str,
        order: &EraseOrder,
    ) -> Result<Receipt, SystemError>;

    /// Sends a rectification, restriction or objection, the same way.
    async fn write(
        &self,
        system: &str,
        h: &Header,
        idempotency_key: &str,
        write: &Write,
    ) -> Result<Receipt, SystemError>;

    /// Whether `system` acts on the right `write` exercises (its
    /// Describe's `supported_rights`). One that does not is not sent the
    /// write: its operator is told by a notification task instead.
    async fn acts_on(&self, system: &str, write: &Write) -> Result<bool, SystemError> {
        let _ = (system, write);
        Ok(true)
    }

    /// The recipient (in the transfer registry) that operates `system`,
    /// when configured.
    fn operator(&self, system: &str) -> Option<String>;

    /// Every configured system, by id.
    fn system_ids(&self) -> Vec<String>;

    /// The controllers whose data `system` holds (from its Describe).
    async fn controllers(&self, system: &str) -> Result<Vec<Organisationsnummer>, SystemError>;

    /// Sends `Sweep` under `idempotency_key` and waits for it to end,
    /// storing the records handled so far in `progress`; verifies the
    /// receipt like `erase`.
    async fn sweep(
        &self,
        system: &str,
        h: &Header,
        idempotency_key: &str,
        dry_run: bool,
        batch_size: u32,
        progress: &AtomicU64,
    ) -> Result<Receipt, SystemError>;
}

/// The transfer registry, as erasure asks it for the recipients to notify
/// (Art. 19).
#[tonic::async_trait]
pub trait Registry: Send + Sync {
    /// The recipients the controller discloses data of `systems` or of
    /// `categories` to.
    async fn recipients(
        &self,
        h: &Header,
        systems: &[String],
        categories: &[String],
    ) -> Result<Vec<Recipient>, SystemError>;
}
