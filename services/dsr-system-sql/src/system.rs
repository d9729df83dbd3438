//! The contract's operations over a manifest-described database.
//!
//! All SQL is built with sea-query and parameterised; table and column names
//! come only from the manifest (checked against the live schema at start),
//! never from a request. Every query that takes record keys from a request is
//! scoped to the instruction's controller: a table naming the controller
//! filters on it, a child table through its parents.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Months, NaiveDate, Utc};
use dsr_connector::instruction::Instruction;
use dsr_connector::operations::{self, Claim, Operation, Operations};
use dsr_connector::restriction::{Reason, Reasons};
use dsr_connector::signing::ReceiptSigner;
use dsr_connector::suppression::Suppressions;
use dsr_domain::clock::Clock;
use dsr_domain::identity::{Identity, IdentityType, Organisationsnummer};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query, SelectStatement, Value};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, QueryResult, TransactionTrait};

use crate::manifest::{ErasureAction, KeyType, Manifest, TableSpec};

/// Keys per query.
const CHUNK: usize = 500;

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: (field, description) pairs, no values.
    #[error("invalid argument")]
    InvalidArgument(Vec<(String, String)>),
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[from] DbErr),
    /// The ledger refused or failed.
    #[error(transparent)]
    Ledger(#[from] operations::Error),
    /// The system behind the connector (a REST API) is unavailable or
    /// answered out of contract; the text names the call, never a value.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A right or operation the system does not act on.
    #[error("{0} is not supported")]
    Unsupported(&'static str),
    /// A person at the vendor has not answered the task yet (a manual
    /// system): the caller asks again later.
    #[error("awaiting the vendor's answer")]
    AwaitingVendor,
}

impl Error {
    /// A description safe for logs: database messages can quote the values
    /// of the system's own rows (a unique-constraint detail names the
    /// duplicate value), so only the kind of failure is logged.
    pub fn log_kind(&self) -> &'static str {
        match self {
            Self::InvalidArgument(_) => "invalid argument",
            Self::Unavailable(_) => "system unavailable",
            Self::Unsupported(_) => "not supported",
            Self::AwaitingVendor => "awaiting the vendor",
            Self::Ledger(operations::Error::KeyReused) => "idempotency key reused",
            Self::Ledger(operations::Error::NotFound) => "operation not found",
            Self::Storage(e) | Self::Ledger(operations::Error::Storage(e)) => {
                let sql = e.sql_err();
                if matches!(sql, Some(sea_orm::SqlErr::UniqueConstraintViolation(_))) {
                    "unique constraint violated"
                } else if matches!(sql, Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))) {
                    "foreign key constraint violated"
                } else if matches!(e, DbErr::ConnectionAcquire(_) | DbErr::Conn(_)) {
                    "database unavailable"
                } else {
                    "database error"
                }
            }
        }
    }
}

/// A record pointer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RecordRef {
    /// Table.
    pub store: String,
    /// Primary key as text.
    pub key: String,
}

/// Records found in one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocatedStore {
    /// Table.
    pub store: String,
    /// Primary keys.
    pub keys: Vec<String>,
    /// The table's categories.
    pub categories: BTreeSet<String>,
}

/// The answer to Locate.
#[derive(Clone, Debug, Default)]
pub struct Located {
    /// Per table.
    pub stores: Vec<LocatedStore>,
    /// Identities found that were not asked about.
    pub linked: Vec<Identity>,
    /// Whether every one of `linked` was searched with (the expansion ran
    /// until nothing new turned up, within its bound).
    pub linked_searched: bool,
}

/// One field of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldValue {
    /// Column.
    pub name: String,
    /// Category.
    pub category: String,
    /// Value as text.
    pub value: Option<String>,
}

/// One record's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordData {
    /// Which.
    pub reference: RecordRef,
    /// Fields.
    pub fields: Vec<FieldValue>,
    /// Restricted.
    pub restricted: bool,
    /// Why it is restricted (empty when it is not).
    pub restriction: Reasons,
    /// Purposes objected to.
    pub objected: Vec<String>,
    /// The date its retention period runs from, once the anchor event has
    /// happened.
    pub retention_anchor: Option<NaiveDate>,
    /// Reported by a person at a vendor without an API: who attested it.
    pub attestation: Option<Attestation>,
}

/// Erasure methods, as the contract names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    /// Rows deleted.
    Delete,
    /// Personal-data columns set to null.
    Nullify,
    /// Personal data and the link to the parent set to null.
    Anonymise,
}

/// What a write did in one store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOutcome {
    /// Table.
    pub store: String,
    /// Its categories.
    pub categories: BTreeSet<String>,
    /// Records matched.
    pub matched: u64,
    /// Records changed.
    pub affected: u64,
    /// Records left alone because no acceptable method applies.
    pub refused: u64,
    /// The erasure method, for erasures.
    pub method: Option<Method>,
}

/// A record kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retained {
    /// Which.
    pub reference: RecordRef,
    /// Its categories.
    pub categories: BTreeSet<String>,
    /// Why.
    pub legal_ground: String,
    /// Until when, when the period has begun.
    pub until: Option<NaiveDate>,
    /// Why it is kept (and restricted).
    pub reason: Reason,
}

/// What a write did to one record it was asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordResult {
    /// Erased by the method given.
    Erased(Method),
    /// Anonymised.
    Anonymised,
    /// Kept (see the receipt's retained records).
    Retained,
    /// No acceptable method.
    Refused,
    /// No such record of the controller.
    NotFound,
    /// Changed as asked.
    Applied,
    /// Found, nothing to change.
    Unchanged,
}

/// One record's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordOutcome {
    /// The record.
    pub reference: RecordRef,
    /// What was done.
    pub result: RecordResult,
}

/// The controller's order to keep a record over an erasure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetainOrder {
    /// The record.
    pub record: RecordRef,
    /// The legal ground.
    pub ground: String,
    /// Until when.
    pub until: Option<NaiveDate>,
    /// Retention or hold.
    pub reason: Reason,
}

/// What a write reports, to be signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptData {
    /// The system.
    pub system_id: String,
    /// The instruction.
    pub instruction: Instruction,
    /// SHA-256 of the instruction (without its validity window).
    pub instruction_digest: Vec<u8>,
    /// What.
    pub action: Action,
    /// Per store.
    pub stores: Vec<StoreOutcome>,
    /// Kept records.
    pub retained: Vec<Retained>,
    /// Per record asked about.
    pub records: Vec<RecordOutcome>,
    /// When the data stopped being visible.
    pub hidden_at: DateTime<Utc>,
    /// When backups holding it expire.
    pub backup_expiry: DateTime<Utc>,
    /// Completed.
    pub completed_at: DateTime<Utc>,
    /// Work done by hand at a vendor: who attested it.
    pub attestation: Option<Attestation>,
}

/// A person's statement that work was done (a manual system).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attestation {
    /// Who.
    pub name: String,
    /// How to reach them.
    pub contact: String,
    /// When.
    pub attested_at: DateTime<Utc>,
    /// What they stated.
    pub statement: String,
}

/// Write actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Erase.
    Erase,
    /// Rectify.
    Rectify,
    /// Restrict.
    Restrict,
    /// Lift a restriction.
    Lift,
    /// Object.
    Object,
    /// Sweep.
    Sweep,
}

impl Action {
    fn kind(self) -> &'static str {
        match self {
            Self::Erase => "erase",
            Self::Rectify => "rectify",
            Self::Restrict => "restrict",
            Self::Lift => "lift_restriction",
            Self::Object => "object",
            Self::Sweep => "sweep",
        }
    }
}

fn system_error_kind(e: &operations::Error) -> &'static str {
    match e {
        operations::Error::KeyReused => "idempotency key reused",
        operations::Error::NotFound => "operation not found",
        operations::Error::Storage(_) => "database error",
    }
}

/// Encodes a receipt for signing (the proto edge implements it).
pub trait ReceiptCodec: Send + Sync {
    /// The exact bytes to sign.
    fn encode(&self, receipt: &ReceiptData) -> Vec<u8>;
}

/// A write asked of the system.
#[derive(Clone, Debug)]
pub enum Write {
    /// Erase, by one of `acceptable` methods, keeping `retain`.
    Erase {
        /// Records.
        records: Vec<RecordRef>,
        /// Acceptable methods.
        acceptable: BTreeSet<Method>,
        /// Retention orders.
        retain: Vec<RetainOrder>,
    },
    /// Correct fields: record, column, value.
    Rectify(Vec<(RecordRef, String, String)>),
    /// Restrict or lift.
    Restrict {
        /// Records.
        records: Vec<RecordRef>,
        /// Lift instead.
        lift: bool,
        /// Which restriction: an Art. 18 request or a hold.
        basis: Reason,
    },
    /// Object to purposes.
    Object {
        /// Records.
        records: Vec<RecordRef>,
        /// Purposes (direct marketing included as "direct_marketing").
        purposes: BTreeSet<String>,
    },
}

/// The purpose name an objection to direct marketing records.
pub const DIRECT_MARKETING: &str = "direct_marketing";

/// Records a sweep's progress at most twice a second (one write per batch
/// would cost as much as the batch).
#[derive(Default)]
struct Throttle {
    last: Option<std::time::Instant>,
}

impl Throttle {
    async fn report(&mut self, ops: &Operations, id: &str, done: u64) -> Result<(), Error> {
        if self
            .last
            .is_some_and(|t| t.elapsed() < std::time::Duration::from_millis(500))
        {
            return Ok(());
        }
        self.last = Some(std::time::Instant::now());
        ops.progress(id, done).await?;
        Ok(())
    }
}

/// One person a breach may have touched (see [`SqlSystem::find_affected`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Affected {
    /// Their email addresses and phones.
    pub contacts: Vec<Identity>,
    /// Their language, when the system holds it.
    pub language: Option<String>,
    /// The asked-about categories their records hold.
    pub categories: BTreeSet<String>,
    /// Their records in those categories.
    pub records: u64,
}

/// One system served by the generic connector.
#[derive(Clone)]
pub struct SqlSystem {
    db: DatabaseConnection,
    manifest: Arc<Manifest>,
    controllers: BTreeSet<Organisationsnummer>,
    ops: Operations,
    signer: ReceiptSigner,
    codec: Arc<dyn ReceiptCodec>,
    suppressions: Suppressions,
    clock: Clock,
    /// On SQLite, one write at a time in this process: a transaction that
    /// reads and then writes would otherwise meet another's lock at once
    /// ("database is locked") instead of waiting for it.
    write_gate: Option<Arc<tokio::sync::Mutex<()>>>,
    text: TextType,
}

impl std::fmt::Debug for SqlSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlSystem")
            .field("system", &self.manifest.system.id)
            .finish_non_exhaustive()
    }
}

/// The SQL type a value is read as text with: `text` on SQLite and
/// PostgreSQL, `char` on MySQL and MariaDB (which have no `CAST(… AS text)`).
#[derive(Clone, Copy, Debug)]
struct TextType(&'static str);

impl TextType {
    fn of(backend: sea_orm::DbBackend) -> Self {
        Self(if backend == sea_orm::DbBackend::MySql {
            "char"
        } else {
            "text"
        })
    }
}

fn text_col(t: TextType, col: &str) -> Expr {
    Expr::col(Alias::new(col)).cast_as(Alias::new(t.0))
}

fn get_text(row: &QueryResult, i: usize) -> Result<Option<String>, DbErr> {
    row.try_get_by_index::<Option<String>>(i)
}

impl SqlSystem {
    /// A system over `db` with its manifest (already checked against the
    /// schema), operations ledger, signer and receipt codec.
    pub fn new(
        db: DatabaseConnection,
        manifest: Arc<Manifest>,
        signer: ReceiptSigner,
        codec: Arc<dyn ReceiptCodec>,
    ) -> Self {
        let controllers = manifest.controllers();
        Self {
            text: TextType::of(db.get_database_backend()),
            write_gate: (db.get_database_backend() == sea_orm::DbBackend::Sqlite)
                .then(|| Arc::new(tokio::sync::Mutex::new(()))),
            ops: Operations::new(db.clone()),
            suppressions: Suppressions::new(&manifest.system.id),
            db,
            manifest,
            controllers,
            signer,
            codec,
            clock: Clock::system(),
        }
    }

    /// The same system with write claims holding `lease` before another
    /// call with the same key may take a stopped one over (default 30 s).
    #[must_use]
    pub fn with_lease(mut self, lease: chrono::TimeDelta) -> Self {
        self.ops = self.ops.clone().with_lease(lease);
        self
    }

    /// The same system, on `clock` (retention dates, restriction times,
    /// receipts).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The controllers served.
    pub fn controllers(&self) -> &BTreeSet<Organisationsnummer> {
        &self.controllers
    }

    /// The signer (for Describe's published key).
    pub fn signer(&self) -> &ReceiptSigner {
        &self.signer
    }

    /// The operations.
    pub fn operations(&self) -> &Operations {
        &self.ops
    }

    fn key_value(&self, table: &TableSpec, key: &str) -> Option<Value> {
        match table.primary_key.kind {
            KeyType::Integer => key.parse::<i64>().ok().map(Value::from),
            KeyType::Text => Some(Value::from(key.to_owned())),
        }
    }

    /// The condition keeping `table`'s rows to `controller`'s.
    fn scope(&self, table: &TableSpec, controller: &Organisationsnummer) -> Option<Expr> {
        self.scope_as(table, controller, false)
    }

    /// [`Self::scope`]; with `per_row`, the parent is looked up by a scalar
    /// subquery, `(SELECT 1 … LIMIT 1) IS NOT NULL`, which PostgreSQL always
    /// evaluates as one primary-key lookup per row read: an `EXISTS` it may
    /// turn into a hash of every parent of the controller, built again for
    /// every page of a sweep.
    fn scope_as(
        &self,
        table: &TableSpec,
        controller: &Organisationsnummer,
        per_row: bool,
    ) -> Option<Expr> {
        if let Some(col) = &table.controller_column {
            return Some(Expr::col(Alias::new(col)).eq(controller.as_str()));
        }
        // A correlated EXISTS: one primary-key lookup of the parent per row,
        // where `IN (SELECT …)` would list every parent of the controller.
        let parent_ref = table.parent.as_ref()?;
        let parent = self.manifest.table(&parent_ref.table)?;
        let parent_scope = self.scope_as(parent, controller, per_row)?;
        let mut sub = Query::select();
        sub.expr(Expr::val(1))
            .from(Alias::new(&parent.name))
            .and_where(
                Expr::col((
                    Alias::new(&parent.name),
                    Alias::new(&parent.primary_key.column),
                ))
                .equals((Alias::new(&table.name), Alias::new(&parent_ref.column))),
            )
            .and_where(parent_scope);
        if per_row {
            sub.limit(1);
            return Some(Expr::SubQuery(None, Box::new(sub.into())).is_not_null());
        }
        Some(Expr::exists(sub))
    }

    async fn query<C: ConnectionTrait>(
        &self,
        conn: &C,
        sel: &SelectStatement,
    ) -> Result<Vec<QueryResult>, DbErr> {
        conn.query_all_raw(conn.get_database_backend().build(sel))
            .await
    }

    /// Validates record refs: known store, key of the right type.
    fn check_refs(&self, refs: &[RecordRef], field: &str) -> Result<(), Error> {
        let mut v = Vec::new();
        for (i, r) in refs.iter().enumerate() {
            match self.manifest.table(&r.store) {
                None => v.push((
                    format!("{field}[{i}].store"),
                    "no such store in this system".to_owned(),
                )),
                Some(t) if self.key_value(t, &r.key).is_none() => {
                    v.push((
                        format!("{field}[{i}].key"),
                        "not a key of this store".to_owned(),
                    ));
                }
                Some(_) => {}
            }
        }
        if v.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(v))
        }
    }

    /// For a breach: every person of `controller` with records in
    /// `categories`, grouped by the record at the top of each table's
    /// parent chain (the contact a KYC document belongs to), with their
    /// contacts and language. The tables keep no creation time, so every
    /// record in the categories counts (no window). One grouped count per
    /// table, then the people's contacts in chunks.
    pub async fn find_affected(
        &self,
        controller: &Organisationsnummer,
        categories: &BTreeSet<String>,
    ) -> Result<Vec<Affected>, Error> {
        type Person = (BTreeSet<String>, u64);
        let mut people: BTreeMap<String, BTreeMap<String, Person>> = BTreeMap::new();
        let qualified = |t: &str, c: &str| {
            Expr::col((Alias::new(t), Alias::new(c))).cast_as(Alias::new(self.text.0))
        };
        for t in &self.manifest.tables {
            let hit: BTreeSet<String> = t
                .categories()
                .into_iter()
                .filter(|c| categories.contains(*c))
                .map(str::to_owned)
                .collect();
            if hit.is_empty() {
                continue;
            }
            let mut chain = vec![t];
            while let Some(p) = chain
                .last()
                .and_then(|c| c.parent.as_ref())
                .and_then(|p| self.manifest.table(&p.table))
            {
                if chain.len() > self.manifest.tables.len() {
                    break;
                }
                chain.push(p);
            }
            let root = chain[chain.len() - 1];
            let mut sel = Query::select();
            sel.from(Alias::new(&t.name))
                .expr(qualified(&root.name, &root.primary_key.column))
                .expr(Expr::col((Alias::new(&t.name), Alias::new(&t.primary_key.column))).count());
            for pair in chain.windows(2) {
                let (child, parent) = (pair[0], pair[1]);
                let Some(link) = &child.parent else { continue };
                sel.inner_join(
                    Alias::new(&parent.name),
                    Expr::col((
                        Alias::new(&parent.name),
                        Alias::new(&parent.primary_key.column),
                    ))
                    .equals((Alias::new(&child.name), Alias::new(&link.column))),
                );
            }
            if let Some(col) = &root.controller_column {
                sel.and_where(
                    Expr::col((Alias::new(&root.name), Alias::new(col))).eq(controller.as_str()),
                );
            }
            sel.group_by_col((Alias::new(&root.name), Alias::new(&root.primary_key.column)));
            for row in self.query(&self.db, &sel).await? {
                let Some(key) = get_text(&row, 0)? else {
                    continue;
                };
                let n: i64 = row.try_get_by_index(1)?;
                let e = people
                    .entry(root.name.clone())
                    .or_default()
                    .entry(key)
                    .or_default();
                e.0.extend(hit.iter().cloned());
                e.1 += u64::try_from(n).unwrap_or(0);
            }
        }
        let mut out = Vec::new();
        for (root_name, by_key) in people {
            let Some(root) = self.manifest.table(&root_name) else {
                continue;
            };
            let keys: Vec<String> = by_key.keys().cloned().collect();
            let mut contacts: BTreeMap<String, (Vec<Identity>, Option<String>)> = BTreeMap::new();
            for chunk in keys.chunks(CHUNK) {
                let mut sel = Query::select();
                sel.from(Alias::new(&root.name))
                    .expr(text_col(self.text, &root.primary_key.column))
                    .and_where(
                        Expr::col(Alias::new(&root.primary_key.column))
                            .is_in(self.values(root, chunk)),
                    );
                for c in &root.identities {
                    sel.expr(text_col(self.text, &c.column));
                }
                if let Some(l) = &root.language_column {
                    sel.expr(text_col(self.text, l));
                }
                for row in self.query(&self.db, &sel).await? {
                    let Some(key) = get_text(&row, 0)? else {
                        continue;
                    };
                    let ids: Vec<Identity> = Self::row_identities(root, &row, 1)?
                        .into_iter()
                        .filter_map(|(k, v)| Identity::parse(IdentityType::parse(&k)?, &v).ok())
                        .filter(|i| matches!(i.kind(), IdentityType::Email | IdentityType::Phone))
                        .collect();
                    let language = match root.language_column {
                        Some(_) => get_text(&row, 1 + root.identities.len())?
                            .map(|l| l.trim().to_ascii_lowercase())
                            .filter(|l| l == "sv" || l == "en"),
                        None => None,
                    };
                    contacts.insert(key, (ids, language));
                }
            }
            for (key, (categories, records)) in by_key {
                let (contacts, language) = contacts.remove(&key).unwrap_or_default();
                out.push(Affected {
                    contacts,
                    language,
                    categories,
                    records,
                });
            }
        }
        Ok(out)
    }

    /// Finds the person's records and linked identities.
    pub async fn locate(
        &self,
        controller: &Organisationsnummer,
        identities: Vec<Identity>,
    ) -> Result<Located, Error> {
        let asked: BTreeSet<Identity> = identities.iter().cloned().collect();
        let mut known = asked.clone();
        let mut queue: Vec<Identity> = identities;
        let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        // Identity expansion inside the system, bounded.
        for _round in 0..4 {
            if queue.is_empty() {
                break;
            }
            let batch = std::mem::take(&mut queue);
            for t in self
                .manifest
                .tables
                .iter()
                .filter(|t| !t.identities.is_empty())
            {
                for id_col in &t.identities {
                    let values: Vec<String> = batch
                        .iter()
                        .filter(|i| i.kind() == id_col.kind.domain())
                        .map(|i| i.value().to_owned())
                        .collect();
                    for chunk in values.chunks(CHUNK) {
                        let mut sel = Query::select();
                        sel.expr(text_col(self.text, &t.primary_key.column))
                            .from(Alias::new(&t.name));
                        for c in &t.identities {
                            sel.expr(text_col(self.text, &c.column));
                        }
                        let col = Expr::col(Alias::new(&id_col.column));
                        sel.and_where(if let [one] = chunk {
                            col.eq(one.as_str())
                        } else {
                            col.is_in(chunk.iter().map(String::as_str))
                        });
                        if let Some(scope) = self.scope(t, controller) {
                            sel.and_where(scope);
                        }
                        for row in self.query(&self.db, &sel).await? {
                            if let Some(key) = get_text(&row, 0)? {
                                found.entry(t.name.clone()).or_default().insert(key);
                            }
                            for (i, c) in t.identities.iter().enumerate() {
                                let Some(raw) = get_text(&row, i + 1)? else {
                                    continue;
                                };
                                if let Ok(id) = Identity::parse(c.kind.domain(), &raw)
                                    && known.insert(id.clone())
                                {
                                    queue.push(id);
                                }
                            }
                        }
                    }
                }
            }
        }
        // Records linked to those found, down every parent reference.
        let mut frontier: Vec<(String, Vec<String>)> = found
            .iter()
            .map(|(t, k)| (t.clone(), k.iter().cloned().collect()))
            .collect();
        while let Some((parent_name, keys)) = frontier.pop() {
            let Some(parent) = self.manifest.table(&parent_name) else {
                continue;
            };
            for child in self.manifest.children(&parent_name) {
                let Some(p) = &child.parent else { continue };
                let mut new_keys = Vec::new();
                for chunk in keys.chunks(CHUNK) {
                    let values: Vec<Value> = chunk
                        .iter()
                        .filter_map(|k| self.key_value(parent, k))
                        .collect();
                    let mut sel = Query::select();
                    sel.expr(text_col(self.text, &child.primary_key.column))
                        .from(Alias::new(&child.name))
                        .and_where(Expr::col(Alias::new(&p.column)).is_in(values));
                    for row in self.query(&self.db, &sel).await? {
                        if let Some(key) = get_text(&row, 0)?
                            && found
                                .entry(child.name.clone())
                                .or_default()
                                .insert(key.clone())
                        {
                            new_keys.push(key);
                        }
                    }
                }
                if !new_keys.is_empty() {
                    frontier.push((child.name.clone(), new_keys));
                }
            }
        }
        let stores = found
            .into_iter()
            .filter(|(_, keys)| !keys.is_empty())
            .map(|(store, keys)| {
                let categories = self
                    .manifest
                    .table(&store)
                    .map(|t| t.categories().into_iter().map(str::to_owned).collect())
                    .unwrap_or_default();
                LocatedStore {
                    store,
                    keys: keys.into_iter().collect(),
                    categories,
                }
            })
            .collect();
        Ok(Located {
            stores,
            linked: known.difference(&asked).cloned().collect(),
            linked_searched: queue.is_empty(),
        })
    }

    /// Validates `refs` and streams their content in batches of at most
    /// `batch` records, through a channel of two batches (bounded memory).
    pub fn access(
        &self,
        controller: Organisationsnummer,
        refs: Vec<RecordRef>,
        portable_only: bool,
        batch: usize,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<Vec<RecordData>, Error>>, Error> {
        self.check_refs(&refs, "records")?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let this = self.clone();
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            let mut by_table: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in refs {
                by_table.entry(r.store).or_default().push(r.key);
            }
            for (store, keys) in by_table {
                let Some(t) = this.manifest.table(&store) else {
                    continue;
                };
                for chunk in keys.chunks(batch.clamp(1, CHUNK)) {
                    let res = this.read_chunk(t, chunk, &controller, portable_only).await;
                    let stop = res.is_err();
                    if tx.send(res.map_err(Error::from)).await.is_err() || stop {
                        return;
                    }
                }
            }
        }));
        Ok(rx)
    }

    async fn read_chunk(
        &self,
        t: &TableSpec,
        keys: &[String],
        controller: &Organisationsnummer,
        portable_only: bool,
    ) -> Result<Vec<RecordData>, DbErr> {
        let portable: BTreeSet<&str> = self
            .manifest
            .categories
            .iter()
            .filter(|c| c.portable)
            .map(|c| c.id.as_str())
            .collect();
        let columns: Vec<_> = t
            .columns
            .iter()
            .filter(|c| !portable_only || portable.contains(c.category.as_str()))
            .collect();
        let mut sel = Query::select();
        sel.expr(text_col(self.text, &t.primary_key.column))
            .from(Alias::new(&t.name));
        sel.expr(text_col(self.text, &t.restriction_column));
        sel.expr(text_col(self.text, &t.restriction_reasons_column));
        sel.expr(t.objection_column.as_deref().map_or_else(
            || Expr::value(Option::<String>::None),
            |c| text_col(self.text, c),
        ));
        let anchor = t
            .retain
            .as_ref()
            .map(|r| r.anchor_column.as_str())
            .or(t.retention.as_ref().map(|r| r.anchor_column.as_str()));
        sel.expr(anchor.map_or_else(
            || Expr::value(Option::<String>::None),
            |c| text_col(self.text, c),
        ));
        for c in &columns {
            sel.expr(text_col(self.text, &c.name));
        }
        let values: Vec<Value> = keys.iter().filter_map(|k| self.key_value(t, k)).collect();
        sel.and_where(Expr::col(Alias::new(&t.primary_key.column)).is_in(values));
        if let Some(scope) = self.scope(t, controller) {
            sel.and_where(scope);
        }
        let rows = self.query(&self.db, &sel).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let key = get_text(&row, 0)?.unwrap_or_default();
            let restricted = get_text(&row, 1)?.is_some();
            let restriction = reasons_of(restricted, get_text(&row, 2)?.as_deref());
            let objected = get_text(&row, 3)?
                .map(|s| {
                    s.split(',')
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let retention_anchor = get_text(&row, 4)?.and_then(|a| {
                NaiveDate::parse_from_str(a.get(..10).unwrap_or(&a), "%Y-%m-%d").ok()
            });
            let mut fields = Vec::with_capacity(columns.len());
            for (i, c) in columns.iter().enumerate() {
                fields.push(FieldValue {
                    name: c.name.clone(),
                    category: c.category.clone(),
                    value: get_text(&row, i + 5)?,
                });
            }
            out.push(RecordData {
                attestation: None,
                reference: RecordRef {
                    store: t.name.clone(),
                    key,
                },
                fields,
                restricted,
                restriction,
                objected,
                retention_anchor,
            });
        }
        Ok(out)
    }

    fn validate_write(&self, write: &Write) -> Result<(), Error> {
        match write {
            Write::Erase {
                records,
                acceptable,
                retain,
            } => {
                self.check_refs(records, "records")?;
                let orders: Vec<RecordRef> = retain.iter().map(|o| o.record.clone()).collect();
                self.check_refs(&orders, "retain")?;
                let mut v = Vec::new();
                if acceptable.is_empty() {
                    v.push((
                        "acceptable_methods".to_owned(),
                        "at least one method".to_owned(),
                    ));
                }
                for (i, o) in retain.iter().enumerate() {
                    if o.ground.trim().is_empty() {
                        v.push((format!("retain[{i}].legal_ground"), "required".to_owned()));
                    }
                    if o.reason == Reason::Request {
                        v.push((
                            format!("retain[{i}].reason"),
                            "RETENTION or HOLD; an Art. 18 restriction is placed with Restrict"
                                .to_owned(),
                        ));
                    }
                }
                if v.is_empty() {
                    Ok(())
                } else {
                    Err(Error::InvalidArgument(v))
                }
            }
            Write::Rectify(changes) => {
                let refs: Vec<RecordRef> = changes.iter().map(|(r, _, _)| r.clone()).collect();
                self.check_refs(&refs, "changes")?;
                let mut v = Vec::new();
                for (i, (r, col, value)) in changes.iter().enumerate() {
                    let Some(t) = self.manifest.table(&r.store) else {
                        continue;
                    };
                    if t.category_of(col).is_none() {
                        v.push((
                            format!("changes[{i}].field"),
                            "not a field of this store".to_owned(),
                        ));
                    } else if let Some(idc) = t.identities.iter().find(|c| c.column == *col)
                        && let Err(e) = Identity::parse(idc.kind.domain(), value)
                    {
                        v.push((format!("changes[{i}].value"), e.to_string()));
                    }
                }
                if v.is_empty() {
                    Ok(())
                } else {
                    Err(Error::InvalidArgument(v))
                }
            }
            Write::Restrict { records, basis, .. } => {
                self.check_refs(records, "records")?;
                if *basis == Reason::Retention {
                    return Err(Error::InvalidArgument(vec![(
                        "basis".to_owned(),
                        "REQUEST or HOLD; a retention comes with an erasure's retention order"
                            .to_owned(),
                    )]));
                }
                Ok(())
            }
            Write::Object { records, purposes } => {
                self.check_refs(records, "records")?;
                if purposes.is_empty() {
                    return Err(Error::InvalidArgument(vec![(
                        "purposes".to_owned(),
                        "at least one purpose, or direct_marketing".to_owned(),
                    )]));
                }
                Ok(())
            }
        }
    }

    /// Runs a write under the instruction's idempotency key: validates it,
    /// claims the key with `digest` (the instruction without its validity
    /// window), does the work and records its signed receipt in one
    /// transaction. The work runs on its own task: a caller that stops
    /// waiting (its deadline, a dropped connection) does not stop it, and
    /// the same key then answers with its receipt. A run stopped by a kill
    /// left nothing (its transaction never committed) and is taken over by
    /// the next call with the key once its lease lapses.
    pub async fn write(
        &self,
        instruction: Instruction,
        digest: Vec<u8>,
        write: Write,
    ) -> Result<Operation, Error> {
        self.validate_write(&write)?;
        let action = match &write {
            Write::Erase { .. } => Action::Erase,
            Write::Rectify(_) => Action::Rectify,
            Write::Restrict { lift: false, .. } => Action::Restrict,
            Write::Restrict { lift: true, .. } => Action::Lift,
            Write::Object { .. } => Action::Object,
        };
        let hex_digest: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        // From the claim on, the work belongs to its own task: a caller who
        // stops waiting at any moment leaves it to finish.
        let this = self.clone();
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            let _gate = match &this.write_gate {
                Some(g) => Some(g.clone().lock_owned().await),
                None => None,
            };
            let id = match this
                .ops
                .claim(&instruction.idempotency_key, &hex_digest, action.kind())
                .await?
            {
                Claim::Existing(op) => return Ok(op),
                Claim::New(id) | Claim::Retry(id) => id,
            };
            this.run_write(id, instruction, digest, write, action).await
        }))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "a write's task ended abnormally");
            Error::Storage(DbErr::Custom(
                "the write stopped; retry with the same idempotency key".into(),
            ))
        })?
    }

    async fn run_write(
        &self,
        id: String,
        instruction: Instruction,
        digest: Vec<u8>,
        write: Write,
        action: Action,
    ) -> Result<Operation, Error> {
        let total = match &write {
            Write::Erase { records, .. }
            | Write::Restrict { records, .. }
            | Write::Object { records, .. } => records.len(),
            Write::Rectify(c) => c.len(),
        };
        self.ops.start(&id, total as u64).await?;
        let now = self.clock.now();
        let done: Result<Operation, Error> = async {
            let txn = self.db.begin().await?;
            let (stores, retained, records) = self
                .apply(&txn, &instruction.controller, &write, now)
                .await?;
            let backup_days = u64::from(self.manifest.system.backup_retention_days);
            let receipt = ReceiptData {
                system_id: self.manifest.system.id.clone(),
                instruction,
                instruction_digest: digest,
                action,
                stores,
                retained,
                records,
                hidden_at: now,
                backup_expiry: now + chrono::Days::new(backup_days),
                completed_at: self.clock.now(),
                attestation: None,
            };
            let signed = self.signer.sign(self.codec.encode(&receipt));
            // The work and its receipt commit together.
            let op = self.ops.succeed_in(&txn, &id, total as u64, signed).await?;
            txn.commit().await?;
            Ok(op)
        }
        .await;
        match done {
            Ok(op) => {
                self.ops.published(&op);
                Ok(op)
            }
            Err(e) => {
                tracing::error!(operation = %id, error = e.log_kind(), "write failed");
                self.ops
                    .fail(&id, "the write failed; retry with the same idempotency key")
                    .await?;
                Err(e)
            }
        }
    }

    /// Does the work of `write` inside `txn` (the caller commits it with
    /// the receipt).
    async fn apply(
        &self,
        txn: &sea_orm::DatabaseTransaction,
        controller: &Organisationsnummer,
        write: &Write,
        now: DateTime<Utc>,
    ) -> Result<(Vec<StoreOutcome>, Vec<Retained>, Vec<RecordOutcome>), Error> {
        let mut stores = Vec::new();
        let mut retained = Vec::new();
        let mut outcomes = Vec::new();
        let by_table = |refs: &[RecordRef]| {
            let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in refs {
                m.entry(r.store.clone()).or_default().push(r.key.clone());
            }
            m
        };
        // Every record asked about and not matched is reported as not found.
        let not_found = |t: &str, keys: &[String], matched: &BTreeSet<&str>| {
            keys.iter()
                .filter(|k| !matched.contains(k.as_str()))
                .map(|k| RecordOutcome {
                    reference: RecordRef {
                        store: t.to_owned(),
                        key: k.clone(),
                    },
                    result: RecordResult::NotFound,
                })
                .collect::<Vec<_>>()
        };
        let outcome_of = |t: &str, k: &str, result: RecordResult| RecordOutcome {
            reference: RecordRef {
                store: t.to_owned(),
                key: k.to_owned(),
            },
            result,
        };
        match write {
            Write::Erase {
                records,
                acceptable,
                retain,
            } => {
                let groups = by_table(records);
                let orders: BTreeMap<&RecordRef, &RetainOrder> =
                    retain.iter().map(|o| (&o.record, o)).collect();
                let today = now.date_naive();
                for t in self.manifest.children_first() {
                    let Some(keys) = groups.get(&t.name) else {
                        continue;
                    };
                    let matched = self.restriction_of(txn, t, keys, controller).await?;
                    let found: BTreeSet<&str> = matched.iter().map(|(k, _)| k.as_str()).collect();
                    outcomes.extend(not_found(&t.name, keys, &found));
                    let cats: BTreeSet<String> =
                        t.categories().into_iter().map(str::to_owned).collect();
                    // A record is kept when the controller orders it; when an
                    // Art. 18 request or a hold restricts it (whatever the
                    // date: those end only when lifted); or when the
                    // system's own rule keeps its table and the period has
                    // not ended (no anchor yet, or its end ahead). A record
                    // restricted only for retention is erased once its
                    // period has ended: that is its deferred erasure.
                    let mut kept = Vec::new();
                    let mut erase = Vec::new();
                    for (k, current) in &matched {
                        let r = RecordRef {
                            store: t.name.clone(),
                            key: k.clone(),
                        };
                        let keep = match (orders.get(&r), current.protecting(), &t.retain) {
                            (Some(o), _, _) => Some((o.ground.clone(), o.until, o.reason)),
                            (None, Some(p), _) => Some((protected_ground(p).to_owned(), None, p)),
                            (None, None, Some(spec)) if t.erasure == ErasureAction::Retain => {
                                let until = self
                                    .anchor_until(txn, t, k, &spec.anchor_column, spec.months)
                                    .await?;
                                until
                                    .is_none_or(|u| u >= today)
                                    .then(|| (spec.legal_ground.clone(), until, Reason::Retention))
                            }
                            (None, None, _) => None,
                        };
                        match keep {
                            Some((ground, until, reason)) => {
                                kept.push((k.clone(), current.clone(), reason));
                                outcomes.push(outcome_of(&t.name, k, RecordResult::Retained));
                                retained.push(Retained {
                                    reference: r,
                                    categories: cats.clone(),
                                    legal_ground: ground,
                                    until,
                                    reason,
                                });
                            }
                            None => erase.push(k.clone()),
                        }
                    }
                    for (k, current, reason) in kept {
                        self.change_restriction(txn, t, &k, &current, reason, true, now)
                            .await?;
                    }
                    let method = match t.erasure {
                        ErasureAction::Nullify => Method::Nullify,
                        ErasureAction::Anonymise => Method::Anonymise,
                        // A retained table's records whose period has ended
                        // are deleted.
                        ErasureAction::Delete | ErasureAction::Retain => Method::Delete,
                    };
                    let (affected, refused) = if acceptable.contains(&method) {
                        (self.erase_rows(txn, t, &erase, method).await?, 0)
                    } else {
                        (0, erase.len() as u64)
                    };
                    let result = match method {
                        _ if refused > 0 => RecordResult::Refused,
                        Method::Anonymise => RecordResult::Anonymised,
                        m @ (Method::Delete | Method::Nullify) => RecordResult::Erased(m),
                    };
                    outcomes.extend(erase.iter().map(|k| outcome_of(&t.name, k, result)));
                    let method = Some(method)
                        .filter(|_| !erase.is_empty() || t.erasure != ErasureAction::Retain);
                    stores.push(StoreOutcome {
                        store: t.name.clone(),
                        categories: cats,
                        matched: matched.len() as u64,
                        affected,
                        refused,
                        method,
                    });
                }
            }
            Write::Restrict {
                records,
                lift,
                basis,
            } => {
                for (store, keys) in by_table(records) {
                    let Some(t) = self.manifest.table(&store) else {
                        continue;
                    };
                    let matched = self.restriction_of(txn, t, &keys, controller).await?;
                    let found: BTreeSet<&str> = matched.iter().map(|(k, _)| k.as_str()).collect();
                    outcomes.extend(not_found(&t.name, &keys, &found));
                    let mut affected = 0;
                    for (k, current) in &matched {
                        let changed = self
                            .change_restriction(txn, t, k, current, *basis, !lift, now)
                            .await?;
                        affected += u64::from(changed);
                        outcomes.push(outcome_of(
                            &t.name,
                            k,
                            if changed {
                                RecordResult::Applied
                            } else {
                                RecordResult::Unchanged
                            },
                        ));
                    }
                    stores.push(self.outcome(t, matched.len(), affected));
                }
            }
            Write::Object { records, purposes } => {
                for (store, keys) in by_table(records) {
                    let Some(t) = self.manifest.table(&store) else {
                        continue;
                    };
                    let matched = self.matched(txn, t, &keys, controller).await?;
                    let found: BTreeSet<&str> = matched.iter().map(String::as_str).collect();
                    outcomes.extend(not_found(&t.name, &keys, &found));
                    let affected = match &t.objection_column {
                        Some(col) => self.add_objections(txn, t, col, &matched, purposes).await?,
                        None => 0,
                    };
                    let result = if t.objection_column.is_some() {
                        RecordResult::Applied
                    } else {
                        RecordResult::Unchanged
                    };
                    outcomes.extend(matched.iter().map(|k| outcome_of(&t.name, k, result)));
                    // The objection holds for the person's records that
                    // arrive later: their identities join the suppression
                    // list (as hashes).
                    let ids = self.identities_of(txn, t, &matched).await?;
                    self.suppressions.add(txn, &ids, purposes).await?;
                    let mut o = self.outcome(t, matched.len(), affected);
                    o.refused = matched.len() as u64 - affected;
                    stores.push(o);
                }
            }
            Write::Rectify(changes) => {
                let mut per_store: BTreeMap<String, (usize, u64)> = BTreeMap::new();
                let mut per_record: BTreeMap<RecordRef, RecordResult> = BTreeMap::new();
                for (r, col, value) in changes {
                    let Some(t) = self.manifest.table(&r.store) else {
                        continue;
                    };
                    let matched = self
                        .matched(txn, t, std::slice::from_ref(&r.key), controller)
                        .await?;
                    let entry = per_store.entry(t.name.clone()).or_default();
                    entry.0 += matched.len();
                    if matched.is_empty() {
                        per_record
                            .entry(r.clone())
                            .or_insert(RecordResult::NotFound);
                        continue;
                    }
                    let value = match t.identities.iter().find(|c| c.column == *col) {
                        Some(c) => Identity::parse(c.kind.domain(), value)
                            .map(|i| i.value().to_owned())
                            .map_err(|e| {
                                Error::InvalidArgument(vec![(
                                    "changes.value".into(),
                                    e.to_string(),
                                )])
                            })?,
                        None => value.clone(),
                    };
                    let mut upd = Query::update();
                    upd.table(Alias::new(&t.name))
                        .value(Alias::new(col), value)
                        .and_where(
                            Expr::col(Alias::new(&t.primary_key.column))
                                .is_in(self.values(t, &matched)),
                        );
                    let res = txn
                        .execute_raw(txn.get_database_backend().build(&upd))
                        .await?;
                    entry.1 += res.rows_affected();
                    per_record.insert(r.clone(), RecordResult::Applied);
                }
                for (store, (matched, affected)) in per_store {
                    if let Some(t) = self.manifest.table(&store) {
                        stores.push(self.outcome(t, matched, affected));
                    }
                }
                outcomes.extend(
                    per_record
                        .into_iter()
                        .map(|(reference, result)| RecordOutcome { reference, result }),
                );
            }
        }
        Ok((stores, retained, outcomes))
    }

    /// Starts a retention sweep in the background and returns its operation:
    /// every table with a retention rule, in keyset-paged batches of `batch`
    /// rows, one transaction per batch. A dry run counts and changes nothing.
    pub async fn sweep(
        &self,
        instruction: Instruction,
        digest: Vec<u8>,
        dry_run: bool,
        batch: usize,
    ) -> Result<Operation, Error> {
        let hex_digest: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let id = match self
            .ops
            .claim(
                &instruction.idempotency_key,
                &hex_digest,
                Action::Sweep.kind(),
            )
            .await?
        {
            Claim::Existing(op) => return Ok(op),
            Claim::New(id) | Claim::Retry(id) => id,
        };
        let op = self.ops.start(&id, 0).await?;
        let this = self.clone();
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            let now = this.clock.now();
            match this
                .run_sweep(
                    &id,
                    &instruction.controller,
                    dry_run,
                    batch.clamp(1, 10_000),
                    now,
                )
                .await
            {
                Ok((stores, done)) => {
                    let receipt = ReceiptData {
                        system_id: this.manifest.system.id.clone(),
                        instruction,
                        instruction_digest: digest,
                        action: Action::Sweep,
                        stores,
                        retained: Vec::new(),
                        records: Vec::new(),
                        hidden_at: now,
                        backup_expiry: now
                            + chrono::Days::new(u64::from(
                                this.manifest.system.backup_retention_days,
                            )),
                        completed_at: this.clock.now(),
                        attestation: None,
                    };
                    let signed = this.signer.sign(this.codec.encode(&receipt));
                    if let Err(e) = this.ops.succeed(&id, done, signed).await {
                        tracing::error!(operation = %id, error = system_error_kind(&e), "cannot record the sweep's receipt");
                    }
                }
                Err(e) => {
                    tracing::error!(operation = %id, error = e.log_kind(), "sweep failed");
                    let _ = this.ops.fail(&id, "the sweep failed; run it again").await;
                }
            }
        }));
        Ok(op)
    }

    async fn run_sweep(
        &self,
        id: &str,
        controller: &Organisationsnummer,
        dry_run: bool,
        batch: usize,
        now: DateTime<Utc>,
    ) -> Result<(Vec<StoreOutcome>, u64), Error> {
        let mut stores = Vec::new();
        let mut done = 0u64;
        let mut progress = Throttle::default();
        for t in self.manifest.children_first() {
            let Some(rule) = &t.retention else { continue };
            let cutoff = now
                .date_naive()
                .checked_sub_months(Months::new(rule.months))
                .unwrap_or(NaiveDate::MIN);
            let method = match t.erasure {
                ErasureAction::Nullify => Method::Nullify,
                ErasureAction::Anonymise => Method::Anonymise,
                ErasureAction::Delete | ErasureAction::Retain => Method::Delete,
            };
            let expired = || {
                let mut c = sea_orm::sea_query::Condition::all()
                    .add(Expr::col(Alias::new(&rule.anchor_column)).is_not_null())
                    .add(Expr::col(Alias::new(&rule.anchor_column)).lt(cutoff));
                if let Some(scope) = self.sweep_scope(t, controller) {
                    c = c.add(scope);
                }
                c
            };
            let (mut matched, mut affected) = (0u64, 0u64);
            // Keyset pages in key order: each row is read once per pass,
            // whatever the other controllers' expired rows or the rows
            // deleted before (a page restarting from the top would read
            // those again every batch, quadratic in the table's size).
            let mut last: Option<Value> = None;
            loop {
                let mut sel = Query::select();
                sel.expr(text_col(self.text, &t.primary_key.column))
                    .from(Alias::new(&t.name))
                    .cond_where(expired())
                    // Qualified: the select list's `CAST(pk AS text)` is
                    // named like the key, and PostgreSQL would order by that
                    // text (so "1000" < "999") and the keyset skip rows.
                    .order_by(
                        (Alias::new(&t.name), Alias::new(&t.primary_key.column)),
                        sea_orm::sea_query::Order::Asc,
                    )
                    .limit(batch as u64);
                if let Some(v) = last.clone() {
                    sel.and_where(
                        Expr::col((Alias::new(&t.name), Alias::new(&t.primary_key.column))).gt(v),
                    );
                }
                // One transaction per page. On PostgreSQL without JIT: a page
                // is a short query, but its estimated cost (the whole table,
                // before LIMIT) passes the JIT thresholds, and compiling it
                // took longer than running it, at every page.
                let txn = self.db.begin().await?;
                if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
                    txn.execute_unprepared("SET LOCAL jit = off").await?;
                }
                let keys: Vec<String> = self
                    .query(&txn, &sel)
                    .await?
                    .iter()
                    .filter_map(|r| get_text(r, 0).ok().flatten())
                    .collect();
                let Some(last_key) = keys.last() else {
                    txn.commit().await?;
                    break;
                };
                last = self.key_value(t, last_key);
                matched += keys.len() as u64;
                if !dry_run && method == Method::Delete {
                    // One statement per page; the rule is checked again, so
                    // a row restricted since the page was read stays.
                    let mut del = Query::delete();
                    del.from_table(Alias::new(&t.name))
                        .and_where(
                            Expr::col(Alias::new(&t.primary_key.column))
                                .is_in(self.values(t, &keys)),
                        )
                        .cond_where(expired());
                    affected += txn
                        .execute_raw(txn.get_database_backend().build(&del))
                        .await?
                        .rows_affected();
                } else if !dry_run {
                    affected += self.erase_rows(&txn, t, &keys, method).await?;
                }
                txn.commit().await?;
                done += keys.len() as u64;
                progress.report(&self.ops, id, done).await?;
                if keys.len() < batch {
                    break;
                }
            }
            stores.push(StoreOutcome {
                store: t.name.clone(),
                categories: t.categories().into_iter().map(str::to_owned).collect(),
                matched,
                affected,
                refused: 0,
                method: (!dry_run).then_some(method),
            });
        }
        self.ops.progress(id, done).await?;
        Ok((stores, done))
    }

    fn outcome(&self, t: &TableSpec, matched: usize, affected: u64) -> StoreOutcome {
        StoreOutcome {
            store: t.name.clone(),
            categories: t.categories().into_iter().map(str::to_owned).collect(),
            matched: matched as u64,
            affected,
            refused: 0,
            method: None,
        }
    }

    fn values(&self, t: &TableSpec, keys: &[String]) -> Vec<Value> {
        keys.iter().filter_map(|k| self.key_value(t, k)).collect()
    }

    /// The rows a sweep for `controller` may remove: the controller's, and
    /// rows whose parent is gone (their retention rule still applies, and no
    /// controller's scope would otherwise reach them); a restricted row only
    /// when it is restricted for retention alone (kept over an erasure
    /// until its date, which the sweep's rule checks), never one under an
    /// Art. 18 request or a legal hold.
    fn sweep_scope(&self, t: &TableSpec, controller: &Organisationsnummer) -> Option<Expr> {
        let scope = self.scope_as(t, controller, true)?;
        let scope = match &t.parent {
            Some(p) => scope.or(Expr::col(Alias::new(&p.column)).is_null()),
            None => scope,
        };
        let unprotected = Expr::col(Alias::new(&t.restriction_column))
            .is_null()
            .or(Expr::col(Alias::new(&t.restriction_reasons_column)).eq(Reasons::retention_only()));
        Some(scope.and(unprotected))
    }

    /// The condition a system's own processing for `purpose` (scoring,
    /// selections, marketing, exports to others) puts on `t`'s rows: not
    /// restricted (Art. 18(2): storage only), and not objected to for that
    /// purpose (Art. 21). The reference CRM's lead scoring selects with it;
    /// docs/manifest.md gives it as SQL for a system's own jobs.
    pub fn may_process(&self, t: &TableSpec, purpose: &str) -> Expr {
        let mut c = Expr::col(Alias::new(&t.restriction_column)).is_null();
        if let Some(col) = &t.objection_column {
            c = c.and(
                Expr::col(Alias::new(col))
                    .is_null()
                    .or(Expr::col(Alias::new(col)).not_like(format!("%{purpose}%"))),
            );
        }
        c
    }

    /// The keys among `keys` that exist and belong to `controller`.
    async fn matched<C: ConnectionTrait>(
        &self,
        conn: &C,
        t: &TableSpec,
        keys: &[String],
        controller: &Organisationsnummer,
    ) -> Result<Vec<String>, DbErr> {
        let mut out = Vec::new();
        for chunk in keys.chunks(CHUNK) {
            let mut sel = Query::select();
            sel.expr(text_col(self.text, &t.primary_key.column))
                .from(Alias::new(&t.name))
                .and_where(
                    Expr::col(Alias::new(&t.primary_key.column)).is_in(self.values(t, chunk)),
                );
            if let Some(scope) = self.scope(t, controller) {
                sel.and_where(scope);
            }
            for row in self.query(conn, &sel).await? {
                if let Some(k) = get_text(&row, 0)? {
                    out.push(k);
                }
            }
        }
        Ok(out)
    }

    async fn anchor_until<C: ConnectionTrait>(
        &self,
        conn: &C,
        t: &TableSpec,
        key: &str,
        anchor: &str,
        months: u32,
    ) -> Result<Option<NaiveDate>, DbErr> {
        let mut sel = Query::select();
        sel.expr(text_col(self.text, anchor))
            .from(Alias::new(&t.name))
            .and_where(
                Expr::col(Alias::new(&t.primary_key.column))
                    .is_in(self.values(t, &[key.to_owned()])),
            );
        let rows = self.query(conn, &sel).await?;
        let anchor = rows.first().map(|r| get_text(r, 0)).transpose()?.flatten();
        Ok(anchor
            .and_then(|a| NaiveDate::parse_from_str(a.get(..10).unwrap_or(&a), "%Y-%m-%d").ok())
            .and_then(|d| d.checked_add_months(Months::new(months))))
    }

    /// The keys among `keys` that exist for `controller` (or whose parent
    /// is gone: a record retained over an erasure outlives its parent, and
    /// its deferred erasure must still reach it), each with why it is
    /// restricted.
    async fn restriction_of<C: ConnectionTrait>(
        &self,
        conn: &C,
        t: &TableSpec,
        keys: &[String],
        controller: &Organisationsnummer,
    ) -> Result<Vec<(String, Reasons)>, DbErr> {
        let mut out = Vec::new();
        for chunk in keys.chunks(CHUNK) {
            let mut sel = Query::select();
            sel.expr(text_col(self.text, &t.primary_key.column))
                .expr(text_col(self.text, &t.restriction_column))
                .expr(text_col(self.text, &t.restriction_reasons_column))
                .from(Alias::new(&t.name))
                .and_where(
                    Expr::col(Alias::new(&t.primary_key.column)).is_in(self.values(t, chunk)),
                );
            if let Some(scope) = self.scope(t, controller) {
                let scope = match &t.parent {
                    Some(p) => scope.or(Expr::col(Alias::new(&p.column)).is_null()),
                    None => scope,
                };
                sel.and_where(scope);
            }
            for row in self.query(conn, &sel).await? {
                if let Some(k) = get_text(&row, 0)? {
                    let restricted = get_text(&row, 1)?.is_some();
                    let reasons = reasons_of(restricted, get_text(&row, 2)?.as_deref());
                    out.push((k, reasons));
                }
            }
        }
        Ok(out)
    }

    /// Adds (`place`) or removes `reason` on one row whose reasons are
    /// `current`: the reasons column records every reason that holds, the
    /// restriction column when the first was placed (cleared with the
    /// last). Returns whether the row changed.
    #[allow(clippy::too_many_arguments)]
    async fn change_restriction<C: ConnectionTrait>(
        &self,
        conn: &C,
        t: &TableSpec,
        key: &str,
        current: &Reasons,
        reason: Reason,
        place: bool,
        now: DateTime<Utc>,
    ) -> Result<bool, DbErr> {
        let mut next = current.clone();
        if place {
            next.add(reason);
        } else {
            next.remove(reason);
        }
        if next == *current {
            return Ok(false);
        }
        let mut upd = Query::update();
        upd.table(Alias::new(&t.name))
            .value(Alias::new(&t.restriction_reasons_column), next.encode());
        if next.is_empty() {
            upd.value(
                Alias::new(&t.restriction_column),
                Option::<DateTime<Utc>>::None,
            );
        } else if current.is_empty() {
            upd.value(Alias::new(&t.restriction_column), Some(now));
        }
        upd.and_where(
            Expr::col(Alias::new(&t.primary_key.column)).is_in(self.values(t, &[key.to_owned()])),
        );
        conn.execute_raw(conn.get_database_backend().build(&upd))
            .await?;
        Ok(true)
    }

    async fn erase_rows<C: ConnectionTrait>(
        &self,
        conn: &C,
        t: &TableSpec,
        keys: &[String],
        m: Method,
    ) -> Result<u64, DbErr> {
        let mut affected = 0;
        for chunk in keys.chunks(CHUNK) {
            let cond = Expr::col(Alias::new(&t.primary_key.column)).is_in(self.values(t, chunk));
            let stmt = match m {
                Method::Delete => {
                    let mut del = Query::delete();
                    del.from_table(Alias::new(&t.name)).and_where(cond);
                    conn.get_database_backend().build(&del)
                }
                Method::Nullify | Method::Anonymise => {
                    let mut upd = Query::update();
                    upd.table(Alias::new(&t.name));
                    let mut cols: BTreeSet<&str> = t
                        .columns
                        .iter()
                        .filter(|c| m == Method::Nullify || !c.keep_when_anonymised)
                        .map(|c| c.name.as_str())
                        .collect();
                    cols.extend(t.identities.iter().map(|c| c.column.as_str()));
                    if m == Method::Anonymise
                        && let Some(p) = &t.parent
                    {
                        cols.insert(&p.column);
                    }
                    for c in cols {
                        // An untyped NULL: a bound text NULL is refused by
                        // PostgreSQL for a column of another type (the
                        // parent's bigint key).
                        upd.value(Alias::new(c), Expr::cust("NULL"));
                    }
                    upd.and_where(cond);
                    conn.get_database_backend().build(&upd)
                }
            };
            affected += conn.execute_raw(stmt).await?.rows_affected();
        }
        Ok(affected)
    }

    /// The identities (kind, normalised value) held in `keys` of `t`.
    async fn identities_of<C: ConnectionTrait>(
        &self,
        conn: &C,
        t: &TableSpec,
        keys: &[String],
    ) -> Result<Vec<(String, String)>, DbErr> {
        let mut out = Vec::new();
        if t.identities.is_empty() {
            return Ok(out);
        }
        for chunk in keys.chunks(CHUNK) {
            let mut sel = Query::select();
            sel.from(Alias::new(&t.name)).and_where(
                Expr::col(Alias::new(&t.primary_key.column)).is_in(self.values(t, chunk)),
            );
            for c in &t.identities {
                sel.expr(text_col(self.text, &c.column));
            }
            for row in self.query(conn, &sel).await? {
                out.extend(Self::row_identities(t, &row, 0)?);
            }
        }
        Ok(out)
    }

    /// The identities in a row whose identity columns start at `first`.
    fn row_identities(
        t: &TableSpec,
        row: &QueryResult,
        first: usize,
    ) -> Result<Vec<(String, String)>, DbErr> {
        let mut out = Vec::new();
        for (i, c) in t.identities.iter().enumerate() {
            if let Some(raw) = get_text(row, first + i)?
                && let Ok(id) = Identity::parse(c.kind.domain(), &raw)
            {
                out.push((id.kind().as_str().to_owned(), id.value().to_owned()));
            }
        }
        Ok(out)
    }

    /// Applies the suppression list to records that arrived after an
    /// objection (an import, a new registration): every row whose
    /// identities are on the list gets the purposes objected to in its
    /// objection column. Returns the rows changed. Runs in keyset-paged
    /// batches; cheap when the list is empty.
    pub async fn enforce_objections(&self) -> Result<u64, Error> {
        let list = self.suppressions.all(&self.db).await?;
        if list.is_empty() {
            return Ok(0);
        }
        let mut changed = 0;
        for t in &self.manifest.tables {
            let Some(col) = &t.objection_column else {
                continue;
            };
            if t.identities.is_empty() {
                continue;
            }
            let mut last: Option<Value> = None;
            loop {
                let mut sel = Query::select();
                sel.expr(text_col(self.text, &t.primary_key.column))
                    .expr(text_col(self.text, col))
                    .from(Alias::new(&t.name))
                    // Qualified: the select list's `CAST(pk AS text)` is
                    // named like the key, and PostgreSQL would order by that
                    // text (so "1000" < "999") and the keyset skip rows.
                    .order_by(
                        (Alias::new(&t.name), Alias::new(&t.primary_key.column)),
                        sea_orm::sea_query::Order::Asc,
                    )
                    .limit(1000);
                for c in &t.identities {
                    sel.expr(text_col(self.text, &c.column));
                }
                if let Some(v) = last.clone() {
                    sel.and_where(Expr::col(Alias::new(&t.primary_key.column)).gt(v));
                }
                let rows = self.query(&self.db, &sel).await?;
                let Some(last_row) = rows.last() else { break };
                last = get_text(last_row, 0)?.and_then(|k| self.key_value(t, &k));
                for row in &rows {
                    let ids = Self::row_identities(t, row, 2)?;
                    let due = self.suppressions.purposes_of(&list, &ids);
                    let current: BTreeSet<String> = get_text(row, 1)?
                        .unwrap_or_default()
                        .split(',')
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect();
                    let missing: BTreeSet<String> = due.difference(&current).cloned().collect();
                    if missing.is_empty() {
                        continue;
                    }
                    let Some(key) = get_text(row, 0)? else {
                        continue;
                    };
                    changed += self
                        .add_objections(&self.db, t, col, &[key], &missing)
                        .await?;
                }
                if rows.len() < 1000 {
                    break;
                }
            }
        }
        if changed > 0 {
            tracing::info!(
                system = %self.manifest.system.id,
                rows = changed,
                "objections applied to records that arrived after them"
            );
        }
        Ok(changed)
    }

    async fn add_objections<C: ConnectionTrait>(
        &self,
        conn: &C,
        t: &TableSpec,
        col: &str,
        keys: &[String],
        purposes: &BTreeSet<String>,
    ) -> Result<u64, DbErr> {
        let mut affected = 0;
        for key in keys {
            let mut sel = Query::select();
            sel.expr(text_col(self.text, col))
                .from(Alias::new(&t.name))
                .and_where(
                    Expr::col(Alias::new(&t.primary_key.column))
                        .is_in(self.values(t, std::slice::from_ref(key))),
                );
            let rows = self.query(conn, &sel).await?;
            let current = rows
                .first()
                .map(|r| get_text(r, 0))
                .transpose()?
                .flatten()
                .unwrap_or_default();
            let mut all: BTreeSet<String> = current
                .split(',')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect();
            all.extend(purposes.iter().cloned());
            let joined = all.into_iter().collect::<Vec<_>>().join(",");
            let mut upd = Query::update();
            upd.table(Alias::new(&t.name))
                .value(Alias::new(col), joined)
                .and_where(
                    Expr::col(Alias::new(&t.primary_key.column))
                        .is_in(self.values(t, std::slice::from_ref(key))),
                );
            affected += conn
                .execute_raw(conn.get_database_backend().build(&upd))
                .await?
                .rows_affected();
        }
        Ok(affected)
    }
}

/// Why a row is restricted, from its restriction and reasons columns: a
/// row restricted without a recorded reason (by hand, or before reasons
/// were recorded) counts as under an Art. 18 request, so that nothing
/// erases it by date.
fn reasons_of(restricted: bool, stored: Option<&str>) -> Reasons {
    let reasons = stored.map(Reasons::decode).unwrap_or_default();
    if restricted && reasons.is_empty() {
        Reasons::of([Reason::Request])
    } else {
        reasons
    }
}

/// The ground recorded for a record an erasure leaves because of its
/// restriction.
fn protected_ground(r: Reason) -> &'static str {
    match r {
        Reason::Hold => "legal hold: kept until the hold is lifted",
        Reason::Request | Reason::Retention => {
            "GDPR Art. 18: processing restricted at the person's request; kept until the restriction is lifted"
        }
    }
}
