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

mod locate;
mod objections;
mod sweep;
mod write;

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
    /// The child tables whose parent link the database clears itself
    /// ([`crate::schema::cleared_on_delete`]), read once, at the first
    /// write that deletes.
    cleared: Arc<tokio::sync::OnceCell<BTreeSet<String>>>,
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

/// The count in the first column of the first row (0 when none).
fn first_count(rows: &[QueryResult]) -> Result<i64, DbErr> {
    Ok(rows
        .first()
        .map(|r| r.try_get_by_index::<i64>(0))
        .transpose()?
        .unwrap_or(0))
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
            cleared: Arc::default(),
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

    /// The condition keeping `table`'s rows to `controller`'s: a table
    /// naming the controller filters on it, a child table through a
    /// correlated EXISTS on its parent (one primary-key lookup of the parent
    /// per row, where `IN (SELECT …)` would list every parent of the
    /// controller).
    fn scope(&self, table: &TableSpec, controller: &Organisationsnummer) -> Option<Expr> {
        if let Some(col) = &table.controller_column {
            return Some(Expr::col(Alias::new(col)).eq(controller.as_str()));
        }
        let parent_ref = table.parent.as_ref()?;
        let parent = self.manifest.table(&parent_ref.table)?;
        let parent_scope = self.scope(parent, controller)?;
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
        Some(Expr::exists(sub))
    }

    /// `table`'s rows that reach no row naming a controller any more:
    /// their parent link is empty, or their parent is such a row itself (a
    /// record kept over an erasure outlives its parent, and so do the
    /// records kept below it). Nobody's scope holds them; a deferred
    /// erasure and every controller's sweep must still reach them.
    fn orphaned(&self, table: &TableSpec) -> Option<Expr> {
        let link = table.parent.as_ref()?;
        let col = Expr::col((Alias::new(&table.name), Alias::new(&link.column)));
        let parent = self.manifest.table(&link.table)?;
        let up = match parent.controller_column {
            Some(_) => None,
            None => self.orphaned(parent),
        };
        Some(match up {
            Some(up) => col
                .clone()
                .is_null()
                .or(col.in_subquery(keys_where(parent, up))),
            None => col.is_null(),
        })
    }

    /// Before `parent`'s rows matching `rows` are deleted: the rows below
    /// them that stay (kept, restricted, not yet due; what goes was deleted
    /// first, children first) are detached from them, in `children` (those
    /// whose link the database would not clear itself, [`Self::to_detach`]).
    /// `within`, when given, is a sweep page's key range, which every row
    /// below `rows` is in anyway: on each child's link column it lets the
    /// database find them by one range of the link's index. Returns the
    /// rows detached.
    async fn detach_children<C: ConnectionTrait>(
        conn: &C,
        parent: &TableSpec,
        children: &[(&TableSpec, &str)],
        rows: sea_orm::sea_query::Condition,
        within: Option<&sweep::KeyRange>,
    ) -> Result<u64, DbErr> {
        let keys = keys_where(parent, rows);
        let mut detached = 0;
        for (child, link) in children {
            let mut upd = Query::update();
            upd.table(Alias::new(&child.name))
                // Untyped: PostgreSQL refuses a bound text NULL for the
                // parent's key type.
                .value(Alias::new(*link), Expr::cust("NULL"))
                .and_where(Expr::col(Alias::new(*link)).in_subquery(keys.clone()));
            if let Some(range) = within {
                upd.and_where(range.on(Expr::col(Alias::new(*link))));
            }
            detached += conn
                .execute_raw(conn.get_database_backend().build(&upd))
                .await?
                .rows_affected();
        }
        Ok(detached)
    }

    /// The tables below `parent` whose link to it the connector clears
    /// before it deletes the parent's rows (the database would not clear
    /// it itself, see [`crate::schema::cleared_on_delete`]), with the
    /// link's column.
    async fn to_detach<'m, C: ConnectionTrait>(
        &'m self,
        conn: &C,
        parent: &TableSpec,
    ) -> Result<Vec<(&'m TableSpec, &'m str)>, DbErr> {
        let cleared = self
            .cleared
            .get_or_try_init(|| crate::schema::cleared_on_delete(conn, &self.manifest))
            .await?;
        Ok(self
            .manifest
            .tables
            .iter()
            .filter(|child| !cleared.contains(&child.name))
            .filter_map(|child| {
                let link = child.parent.as_ref().filter(|l| l.table == parent.name)?;
                Some((child, link.column.as_str()))
            })
            .collect())
    }

    /// Deletes `t`'s rows matching `rows`, the rows below them that stay
    /// detached first ([`Self::detach_children`]); returns the rows
    /// deleted. On PostgreSQL in one statement, the rows below found from
    /// the keys the delete returns, instead of by a read of `t` for the
    /// rows about to go (on a sweep's page, every controller's rows in its
    /// key range): `WITH dsr_gone AS (DELETE … RETURNING key), d0 AS
    /// (UPDATE child SET link = NULL WHERE link IN (SELECT key FROM
    /// dsr_gone)) SELECT COUNT(*) FROM dsr_gone`. The database checks its
    /// foreign keys (`NO ACTION`, `RESTRICT`) and cascades when the
    /// statement ends, and finds those rows detached.
    async fn delete_detaching<C: ConnectionTrait>(
        &self,
        conn: &C,
        t: &TableSpec,
        rows: sea_orm::sea_query::Condition,
        within: Option<&sweep::KeyRange>,
    ) -> Result<u64, DbErr> {
        let backend = conn.get_database_backend();
        let children = self.to_detach(conn, t).await?;
        let mut del = Query::delete();
        del.from_table(Alias::new(&t.name)).cond_where(rows.clone());
        if backend != sea_orm::DbBackend::Postgres || children.is_empty() {
            Self::detach_children(conn, t, &children, rows, within).await?;
            return Ok(conn.execute_raw(backend.build(&del)).await?.rows_affected());
        }
        const GONE: &str = "dsr_gone";
        del.returning_col(Alias::new(&t.primary_key.column));
        let stmt = backend.build(&del);
        let mut sql = format!("WITH {GONE} AS ({})", stmt.sql);
        for (i, (child, link)) in children.iter().enumerate() {
            let mut gone = Query::select();
            gone.column(Alias::new(&t.primary_key.column))
                .from(Alias::new(GONE));
            let mut upd = Query::update();
            upd.table(Alias::new(&child.name))
                .value(Alias::new(*link), Expr::cust("NULL"))
                .and_where(Expr::col(Alias::new(*link)).in_subquery(gone));
            // No values of its own: the delete's are the statement's.
            let upd = upd.to_string(sea_orm::sea_query::PostgresQueryBuilder);
            sql.push_str(&format!(", d{i} AS ({upd})"));
        }
        sql.push_str(&format!(" SELECT COUNT(*) FROM {GONE}"));
        let rows = conn
            .query_all_raw(sea_orm::Statement { sql, ..stmt })
            .await?;
        Ok(first_count(&rows)?.unsigned_abs())
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

/// `SELECT <t's key> FROM t WHERE cond`: the keys of `t`'s rows matching
/// `cond`, as a subquery.
fn keys_where(t: &TableSpec, cond: impl sea_orm::sea_query::IntoCondition) -> SelectStatement {
    let mut q = Query::select();
    q.expr(Expr::col((
        Alias::new(&t.name),
        Alias::new(&t.primary_key.column),
    )))
    .from(Alias::new(&t.name))
    .cond_where(cond);
    q
}
