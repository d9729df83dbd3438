//! A vendor without an API served through the contract: each Locate and
//! write becomes a task for the vendor's contact, answered by a person.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use dsr_connector::instruction::Instruction;
use dsr_connector::operations::{Claim, Operation, Operations};
use dsr_connector::restriction::Reason;
use dsr_connector::signing::ReceiptSigner;
use dsr_domain::clock::Clock;
use dsr_domain::identity::{Identity, IdentityType, Organisationsnummer};
use dsr_server::notifier::{Message, Notifier};

use super::manifest::{ContactSpec, ManualManifest};
use super::tasks::{Attested, Body, Issued, Kept, Kind, Order, Task, TaskRecord, Tasks};
use super::texts::Texts;
use crate::grpc::ProtoReceipts;
use crate::system::{
    Action, Attestation, Error, FieldValue, Located, LocatedStore, Method, ReceiptCodec as _,
    ReceiptData, RecordData, RecordOutcome, RecordRef, RecordResult, Retained, StoreOutcome, Write,
};

/// How long a write's claim holds: a vendor answers in days, and a retry of
/// the same instruction meanwhile must find the same operation, not run the
/// work again.
const MANUAL_LEASE: TimeDelta = TimeDelta::days(400);

/// An answer to a task, as the vendor gives it.
#[derive(Clone, Debug, Default)]
pub struct Answer {
    /// Locate: the records found.
    pub found: Vec<TaskRecord>,
    /// Locate: nothing found.
    pub not_found: bool,
    /// Writes: records acted on.
    pub done: u64,
    /// Erase: records kept, with their ground.
    pub kept: Vec<Kept>,
    /// Who attests it.
    pub attested_by: String,
    /// How to reach them (the manifest's contact when empty).
    pub contact: String,
    /// What they state.
    pub statement: String,
}

/// Why an answer was refused.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// No such task.
    #[error("task not found")]
    NotFound,
    /// Answered already.
    #[error("task answered already")]
    Answered,
    /// The answer does not fit the task: (field, description) pairs.
    #[error("invalid answer")]
    Invalid(Vec<(String, String)>),
    /// Storage or the ledger failed.
    #[error(transparent)]
    System(#[from] Error),
}

/// What one round of the background job did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Reminders sent.
    pub reminded: u32,
    /// Overdue tasks escalated.
    pub escalated: u32,
    /// Answered tasks deleted after their keeping time.
    pub purged: u64,
    /// Open tasks past their due date.
    pub overdue: u32,
}

/// A vendor without an API.
#[derive(Clone)]
pub struct ManualSystem {
    pub(super) manifest: Arc<ManualManifest>,
    pub(super) tasks: Tasks,
    pub(super) ops: Operations,
    pub(super) signer: ReceiptSigner,
    pub(super) controllers: BTreeSet<Organisationsnummer>,
    pub(super) clock: Clock,
    pub(super) notifier: Arc<dyn Notifier>,
    pub(super) texts: Arc<Texts>,
}

impl std::fmt::Debug for ManualSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualSystem")
            .field("system", &self.manifest.system.id)
            .finish_non_exhaustive()
    }
}

fn storage(e: sea_orm::DbErr) -> Error {
    Error::Storage(e)
}

impl ManualSystem {
    /// The vendor `manifest` describes, its tasks and ledger in `db`
    /// (migrated with the connector's and [`super::Migrator`]), emailing
    /// through `notifier` with `texts`.
    pub fn new(
        db: sea_orm::DatabaseConnection,
        manifest: Arc<ManualManifest>,
        signer: ReceiptSigner,
        notifier: Arc<dyn Notifier>,
        texts: Texts,
    ) -> Self {
        Self {
            controllers: manifest.controllers(),
            manifest,
            tasks: Tasks::new(db.clone()),
            ops: Operations::new(db).with_lease(MANUAL_LEASE),
            signer,
            clock: Clock::system(),
            notifier,
            texts: Arc::new(texts),
        }
    }

    /// The same system reading time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The manifest.
    pub fn manifest(&self) -> &ManualManifest {
        &self.manifest
    }

    /// The task table.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// When a task created now for a request due on `request_due` must be
    /// answered: within the vendor's answer days and the manifest's margin
    /// before the request's due date, and never less than a day from now.
    pub(super) fn due(&self, now: DateTime<Utc>, request_due: NaiveDate) -> DateTime<Utc> {
        let v = &self.manifest.vendor;
        let by_vendor = now + TimeDelta::days(i64::from(v.answer_days));
        let by_request = request_due
            .and_hms_opt(12, 0, 0)
            .unwrap_or_default()
            .and_utc()
            - TimeDelta::days(i64::from(v.margin_days));
        by_vendor.min(by_request).max(now + TimeDelta::days(1))
    }

    pub(super) fn categories(&self, store: &str) -> BTreeSet<String> {
        self.manifest
            .store(store)
            .map(|s| s.fields.iter().map(|f| f.category.clone()).collect())
            .unwrap_or_default()
    }

    pub(super) fn write_to(&self, contact: &ContactSpec, message: &str, task: &Task) -> Message {
        let lang = contact.language.as_str();
        let w = |k: &str| self.texts.word(lang, k);
        let items: Vec<String> = match task.kind {
            Kind::Locate => task
                .body
                .identities
                .iter()
                .map(|(t, v)| format!("- {}: {v}", w(t)))
                .collect(),
            Kind::Erase | Kind::Rectify | Kind::Restrict | Kind::LiftRestriction => task
                .body
                .records
                .iter()
                .map(|r| {
                    let mut line = format!("- {} {}", r.store, r.key);
                    for (f, v) in &r.fields {
                        line.push_str(&format!("; {f} {} {v}", w("set_to")));
                    }
                    line
                })
                .chain(task.body.orders.iter().map(|k| {
                    format!(
                        "- {} {}: {} ({})",
                        k.store,
                        k.key,
                        w("keep"),
                        k.legal_ground
                    )
                }))
                .collect(),
        };
        let days = (self.clock.now() - task.due_at).num_days().max(1);
        let vars = [
            ("contact", self.manifest.vendor.contact.name.clone()),
            (
                "system",
                self.manifest
                    .system
                    .display_name
                    .get(dsr_domain::text::Lang::parse(lang).unwrap_or(dsr_domain::text::Lang::En))
                    .clone(),
            ),
            ("task", task.id.clone()),
            ("request", task.request_id.clone()),
            ("controller", task.controller.clone()),
            ("due", task.due_at.format("%Y-%m-%d").to_string()),
            ("items", items.join("\n")),
            ("days", days.to_string()),
            ("kind", self.texts.kind(lang, task.kind.as_str())),
        ];
        let e = self.texts.render(lang, message, &vars);
        Message {
            to: contact.address(),
            subject: e.subject,
            body: e.body,
        }
    }

    /// Sends `message` about `task` to `contact`; a failure is logged (the
    /// background job sends reminders and escalations again until they go).
    pub(super) async fn send(&self, contact: &ContactSpec, message: &str, task: &Task) -> bool {
        match self
            .notifier
            .send(&self.write_to(contact, message, task))
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(task = %task.id, message, error = %e, "task email not sent");
                false
            }
        }
    }

    pub(super) async fn open(&self, task: Task) -> Result<Task, Error> {
        self.tasks.insert(&task).await.map_err(storage)?;
        tracing::info!(task = %task.id, kind = task.kind.as_str(), "task for the vendor opened");
        let message = task.kind.as_str();
        self.send(&self.manifest.vendor.contact, message, &task)
            .await;
        Ok(task)
    }

    pub(super) fn new_task(&self, kind: Kind, i: &Instruction, lookup: String, body: Body) -> Task {
        // One reading of the clock: the due date is counted from creation.
        let now = self.clock.now();
        Task {
            id: uuid::Uuid::new_v4().to_string(),
            system_id: self.manifest.system.id.clone(),
            kind,
            answered: false,
            request_id: i.request_id.clone(),
            controller: i.controller.as_str().to_owned(),
            lookup,
            created_at: now,
            due_at: self.due(now, i.due_date),
            reminders_sent: 0,
            escalated_at: None,
            answered_at: None,
            body,
        }
    }

    pub(super) async fn search(
        &self,
        instruction: &Instruction,
        identities: Vec<Identity>,
    ) -> Result<Located, Error> {
        let accepted = self.manifest.accepted_identity_types();
        let mut ids: Vec<(String, String)> = identities
            .iter()
            .filter(|i| accepted.contains(&i.kind()))
            .map(|i| (i.kind().as_str().to_owned(), i.value().to_owned()))
            .collect();
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            return Ok(Located {
                stores: vec![],
                linked: vec![],
                linked_searched: false,
            });
        }
        // One search per request and controller: identities learnt later in
        // the request (another system's linked ones) join the open task.
        let lookup = {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            h.update(instruction.request_id.as_bytes());
            h.update([0]);
            h.update(instruction.controller.as_str().as_bytes());
            hex::encode(h.finalize())
        };
        let task = match self
            .tasks
            .find(Kind::Locate, &lookup)
            .await
            .map_err(storage)?
        {
            Some(mut t) if !t.answered && ids.iter().any(|i| !t.body.identities.contains(i)) => {
                for i in ids {
                    if !t.body.identities.contains(&i) {
                        t.body.identities.push(i);
                    }
                }
                self.tasks.update(&t).await.map_err(storage)?;
                self.send(&self.manifest.vendor.contact, "locate", &t).await;
                t
            }
            Some(t) => t,
            None => {
                let body = Body {
                    identities: ids,
                    ..Body::default()
                };
                self.open(self.new_task(Kind::Locate, instruction, lookup, body))
                    .await?
            }
        };
        if !task.answered {
            return Err(Error::AwaitingVendor);
        }
        let mut stores: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &task.body.records {
            stores
                .entry(r.store.clone())
                .or_default()
                .push(r.key.clone());
        }
        Ok(Located {
            stores: stores
                .into_iter()
                .map(|(store, keys)| LocatedStore {
                    categories: self.categories(&store),
                    store,
                    keys,
                })
                .collect(),
            linked: vec![],
            linked_searched: false,
        })
    }

    pub(super) fn validate(&self, write: &Write) -> Result<(), Error> {
        let mut v = Vec::new();
        let check = |v: &mut Vec<(String, String)>, i: usize, r: &RecordRef, prefix: &str| {
            if self.manifest.store(&r.store).is_none() {
                v.push((format!("{prefix}[{i}].store"), "unknown store".into()));
            }
            if r.key.is_empty() {
                v.push((format!("{prefix}[{i}].key"), "required".into()));
            }
        };
        match write {
            Write::Erase { records, .. } | Write::Restrict { records, .. } => {
                for (i, r) in records.iter().enumerate() {
                    check(&mut v, i, r, "records");
                }
            }
            Write::Rectify(changes) => {
                for (i, (r, field, _)) in changes.iter().enumerate() {
                    check(&mut v, i, r, "changes");
                    let known = self
                        .manifest
                        .store(&r.store)
                        .is_some_and(|s| s.fields.iter().any(|f| f.name == *field));
                    if !known {
                        v.push((
                            format!("changes[{i}].field"),
                            "not a field of this store".into(),
                        ));
                    }
                }
                if changes.is_empty() {
                    v.push(("changes".into(), "at least one".into()));
                }
            }
            Write::Object { .. } => return Err(Error::Unsupported("objection")),
        }
        if v.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(v))
        }
    }

    pub(super) async fn begin(
        &self,
        instruction: Instruction,
        digest: Vec<u8>,
        write: Write,
    ) -> Result<Operation, Error> {
        let kind = match &write {
            Write::Erase { .. } => Kind::Erase,
            Write::Rectify(_) => Kind::Rectify,
            Write::Restrict { lift: false, .. } => Kind::Restrict,
            Write::Restrict { lift: true, .. } => Kind::LiftRestriction,
            Write::Object { .. } => return Err(Error::Unsupported("objection")),
        };
        let hex_digest = hex::encode(&digest);
        let id = match self
            .ops
            .claim(&instruction.idempotency_key, &hex_digest, kind.as_str())
            .await?
        {
            Claim::Existing(op) => return Ok(op),
            Claim::New(id) | Claim::Retry(id) => id,
        };
        if self.tasks.find(kind, &id).await.map_err(storage)?.is_some() {
            return Ok(self.ops.get(&id).await?);
        }
        let mut body = Body {
            issued: Some(Issued {
                due_date: instruction.due_date,
                issued_at: instruction.issued_at,
                expires_at: instruction.expires_at,
                idempotency_key: instruction.idempotency_key.clone(),
                digest,
                basis: match &write {
                    Write::Restrict { basis, .. } => Some(basis.as_str().to_owned()),
                    Write::Erase { .. } | Write::Rectify(_) | Write::Object { .. } => None,
                },
            }),
            ..Body::default()
        };
        let plain = |r: &RecordRef| TaskRecord {
            store: r.store.clone(),
            key: r.key.clone(),
            fields: vec![],
        };
        let total = match &write {
            Write::Erase { records, .. } | Write::Restrict { records, .. } => records.len(),
            Write::Rectify(changes) => changes.len(),
            Write::Object { .. } => 0,
        };
        match &write {
            Write::Erase {
                records,
                acceptable,
                retain,
            } => {
                body.asked = records.iter().map(plain).collect();
                // Records the mesh orders kept are kept and restricted to
                // storage at the vendor, and the task says so.
                body.orders = retain
                    .iter()
                    .map(|o| Order {
                        store: o.record.store.clone(),
                        key: o.record.key.clone(),
                        legal_ground: o.ground.clone(),
                        until: o.until,
                        reason: o.reason.as_str().to_owned(),
                    })
                    .collect();
                let ordered: BTreeSet<&RecordRef> = retain.iter().map(|o| &o.record).collect();
                if acceptable.contains(&Method::Delete) {
                    body.records = records
                        .iter()
                        .filter(|r| !ordered.contains(r))
                        .map(plain)
                        .collect();
                }
            }
            Write::Rectify(changes) => {
                let mut by: BTreeMap<&RecordRef, Vec<(String, String)>> = BTreeMap::new();
                for (r, f, v) in changes {
                    by.entry(r).or_default().push((f.clone(), v.clone()));
                }
                body.records = by
                    .into_iter()
                    .map(|(r, fields)| TaskRecord {
                        store: r.store.clone(),
                        key: r.key.clone(),
                        fields,
                    })
                    .collect();
                body.asked = body.records.clone();
            }
            Write::Restrict { records, .. } => {
                body.records = records.iter().map(plain).collect();
                body.asked = body.records.clone();
            }
            Write::Object { .. } => return Err(Error::Unsupported("objection")),
        }
        self.ops.start(&id, total as u64).await?;
        let task = self.new_task(kind, &instruction, id.clone(), body);
        if task.body.records.is_empty() && task.body.orders.is_empty() {
            // Nothing for a person to do: the method asked for is not one a
            // vendor applies. (Records the mesh orders kept still need the
            // vendor to restrict them, and to say so.)
            return self.complete(task, None).await;
        }
        self.open(task).await?;
        Ok(self.ops.get(&id).await?)
    }

    /// Ends `task`'s operation with a receipt signed by this connector for
    /// `attested` (none when nobody had anything to do).
    pub(super) async fn complete(
        &self,
        mut task: Task,
        attested: Option<Attested>,
    ) -> Result<Operation, Error> {
        let issued = task
            .body
            .issued
            .clone()
            .ok_or_else(|| Error::Unavailable("a write task without its instruction".into()))?;
        let action = match task.kind {
            Kind::Erase => Action::Erase,
            Kind::Rectify => Action::Rectify,
            Kind::Restrict => Action::Restrict,
            Kind::LiftRestriction => Action::Lift,
            Kind::Locate => {
                return Err(Error::Unavailable("a search has no receipt".into()));
            }
        };
        let controller = Organisationsnummer::parse(&task.controller)
            .map_err(|_| Error::Unavailable("a task with an invalid controller".into()))?;
        let instruction = Instruction {
            request_id: task.request_id.clone(),
            controller,
            system_id: task.system_id.clone(),
            due_date: issued.due_date,
            issued_at: issued.issued_at,
            expires_at: issued.expires_at,
            idempotency_key: issued.idempotency_key.clone(),
        };
        let reference = |r: &TaskRecord| RecordRef {
            store: r.store.clone(),
            key: r.key.clone(),
        };
        let acted: BTreeSet<RecordRef> = task.body.records.iter().map(reference).collect();
        let mut retained = Vec::new();
        let mut kept_refs = BTreeSet::new();
        for o in &task.body.orders {
            let r = RecordRef {
                store: o.store.clone(),
                key: o.key.clone(),
            };
            retained.push(Retained {
                categories: self.categories(&o.store),
                legal_ground: o.legal_ground.clone(),
                until: o.until,
                reason: Reason::parse(&o.reason).unwrap_or(Reason::Retention),
                reference: r.clone(),
            });
            kept_refs.insert(r);
        }
        for k in &task.body.kept {
            let r = RecordRef {
                store: k.store.clone(),
                key: k.key.clone(),
            };
            retained.push(Retained {
                categories: self.categories(&k.store),
                legal_ground: k.legal_ground.clone(),
                until: None,
                reason: Reason::Retention,
                reference: r.clone(),
            });
            kept_refs.insert(r);
        }
        let mut stores: BTreeMap<String, StoreOutcome> = BTreeMap::new();
        let mut records = Vec::new();
        for r in task.body.asked.iter().map(reference) {
            let result = if kept_refs.contains(&r) {
                RecordResult::Retained
            } else if !acted.contains(&r) {
                RecordResult::Refused
            } else if task.kind == Kind::Erase {
                RecordResult::Erased(Method::Delete)
            } else {
                RecordResult::Applied
            };
            let s = stores
                .entry(r.store.clone())
                .or_insert_with(|| StoreOutcome {
                    store: r.store.clone(),
                    categories: self.categories(&r.store),
                    matched: 0,
                    affected: 0,
                    refused: 0,
                    method: None,
                });
            s.matched += 1;
            match result {
                RecordResult::Erased(m) => {
                    s.affected += 1;
                    s.method = Some(m);
                }
                RecordResult::Applied => s.affected += 1,
                RecordResult::Refused => s.refused += 1,
                RecordResult::Anonymised
                | RecordResult::Retained
                | RecordResult::NotFound
                | RecordResult::Unchanged => {}
            }
            records.push(RecordOutcome {
                reference: r,
                result,
            });
        }
        let now = self.clock.now();
        let done = records
            .iter()
            .filter(|r| matches!(r.result, RecordResult::Erased(_) | RecordResult::Applied))
            .count() as u64;
        let receipt = ReceiptData {
            system_id: task.system_id.clone(),
            instruction,
            instruction_digest: issued.digest.clone(),
            action,
            stores: stores.into_values().collect(),
            retained,
            records,
            hidden_at: attested.as_ref().map_or(now, |a| a.at),
            backup_expiry: now
                + chrono::Days::new(u64::from(self.manifest.system.backup_retention_days)),
            completed_at: now,
            attestation: attested.as_ref().map(|a| Attestation {
                name: a.name.clone(),
                contact: a.contact.clone(),
                attested_at: a.at,
                statement: a.statement.clone(),
            }),
        };
        let signed = self.signer.sign(ProtoReceipts.encode(&receipt));
        let op = self.ops.succeed(&task.lookup, done, signed).await?;
        if task.answered || attested.is_some() {
            task.answered = true;
            task.answered_at = Some(now);
            task.body.attested = attested;
            task.body.done = done;
            if self.tasks.get(&task.id).await.map_err(storage)?.is_some() {
                self.tasks.update(&task).await.map_err(storage)?;
            }
        }
        Ok(op)
    }

    /// Records the vendor's answer to task `id`: a search's records, or a
    /// write's count (the operation then ends with a receipt this connector
    /// signs for the attestation).
    pub async fn answer(&self, id: &str, a: Answer) -> Result<Task, AnswerError> {
        let mut task = self
            .tasks
            .get(id)
            .await
            .map_err(storage)?
            .ok_or(AnswerError::NotFound)?;
        if task.answered {
            return Err(AnswerError::Answered);
        }
        let mut v: Vec<(String, String)> = Vec::new();
        let mut bad = |f: String, d: String| v.push((f, d));
        if a.attested_by.trim().is_empty() {
            bad(
                "attested_by".into(),
                "required: who at the vendor attests the answer".into(),
            );
        }
        let contact = if a.contact.trim().is_empty() {
            self.manifest.vendor.contact.email.clone()
        } else {
            if Identity::parse(IdentityType::Email, &a.contact).is_err() {
                bad("contact".into(), "an email address".into());
            }
            a.contact.trim().to_owned()
        };
        if task.kind == Kind::Locate {
            if a.done != 0 || !a.kept.is_empty() {
                bad("done".into(), "only for write tasks".into());
            }
            match (a.not_found, a.found.is_empty()) {
                (true, false) => bad("not_found".into(), "not with records found".into()),
                (false, true) => bad("found".into(), "the records found, or not_found".into()),
                _ => {}
            }
            let mut seen = BTreeSet::new();
            for (i, r) in a.found.iter().enumerate() {
                match self.manifest.store(&r.store) {
                    None => bad(
                        format!("found[{i}].store"),
                        "not a store of the manifest".into(),
                    ),
                    Some(s) => {
                        for (j, (f, _)) in r.fields.iter().enumerate() {
                            if !s.fields.iter().any(|x| x.name == *f) {
                                bad(
                                    format!("found[{i}].fields[{j}].name"),
                                    "not a field of the store".into(),
                                );
                            }
                        }
                    }
                }
                if r.key.trim().is_empty() {
                    bad(format!("found[{i}].key"), "required".into());
                } else if !seen.insert((&r.store, &r.key)) {
                    bad(format!("found[{i}].key"), "listed twice".into());
                }
            }
        } else {
            if a.not_found || !a.found.is_empty() {
                bad("found".into(), "only for search tasks".into());
            }
            if !a.kept.is_empty() && task.kind != Kind::Erase {
                bad("kept".into(), "only for erasure tasks".into());
            }
            let listed: BTreeSet<(&str, &str)> = task
                .body
                .records
                .iter()
                .map(|r| (r.store.as_str(), r.key.as_str()))
                .collect();
            let mut kept = BTreeSet::new();
            for (i, k) in a.kept.iter().enumerate() {
                if !listed.contains(&(k.store.as_str(), k.key.as_str())) {
                    bad(format!("kept[{i}]"), "not a record of the task".into());
                } else if !kept.insert((k.store.as_str(), k.key.as_str())) {
                    bad(format!("kept[{i}]"), "listed twice".into());
                }
                if k.legal_ground.trim().is_empty() {
                    bad(
                        format!("kept[{i}].legal_ground"),
                        "required: why the law requires keeping it".into(),
                    );
                }
            }
            let expected = listed.len().saturating_sub(kept.len()) as u64;
            if a.done != expected {
                bad(
                    "done".into(),
                    format!(
                        "{expected}: the task's {} records less the {} kept",
                        listed.len(),
                        kept.len()
                    ),
                );
            }
        }
        if !v.is_empty() {
            return Err(AnswerError::Invalid(v));
        }
        let attested = Attested {
            name: a.attested_by.trim().to_owned(),
            contact,
            at: self.clock.now(),
            statement: a.statement.trim().to_owned(),
        };
        if task.kind == Kind::Locate {
            task.body.records = a.found;
            task.body.not_found = a.not_found;
            task.body.attested = Some(attested);
            task.answered = true;
            task.answered_at = Some(self.clock.now());
            self.tasks.update(&task).await.map_err(storage)?;
        } else {
            let kept: BTreeSet<(String, String)> = a
                .kept
                .iter()
                .map(|k| (k.store.clone(), k.key.clone()))
                .collect();
            task.body
                .records
                .retain(|r| !kept.contains(&(r.store.clone(), r.key.clone())));
            task.body.kept = a.kept;
            self.complete(task, Some(attested)).await?;
        }
        tracing::info!(task = id, "task answered");
        self.tasks
            .get(id)
            .await
            .map_err(storage)?
            .ok_or(AnswerError::NotFound)
    }

    /// One round of the background job at the clock's time: reminders
    /// before a task is due, an escalation when it is overdue (to the
    /// escalation contact and the vendor's contact), and answered tasks
    /// deleted after the manifest's keeping time.
    pub async fn tick(&self) -> Result<Round, Error> {
        let now = self.clock.now();
        let v = &self.manifest.vendor;
        let mut days = v.reminder_days.clone();
        days.sort_unstable();
        days.dedup();
        let mut round = Round::default();
        for mut t in self.tasks.list(Some(false), None).await.map_err(storage)? {
            let mut changed = false;
            if now >= t.due_at {
                round.overdue += 1;
                if t.escalated_at.is_none() && self.send(&v.escalation, "escalation", &t).await {
                    self.send(&v.contact, "escalation", &t).await;
                    t.escalated_at = Some(now);
                    round.escalated += 1;
                    changed = true;
                }
            } else {
                let owed = days
                    .iter()
                    .filter(|d| now >= t.due_at - TimeDelta::days(i64::from(**d)))
                    .count() as u32;
                if owed > t.reminders_sent && self.send(&v.contact, "reminder", &t).await {
                    t.reminders_sent = owed;
                    round.reminded += 1;
                    changed = true;
                }
            }
            if changed {
                self.tasks.update(&t).await.map_err(storage)?;
            }
        }
        round.purged = self
            .tasks
            .purge_answered(now - TimeDelta::days(i64::from(v.keep_answered_days)))
            .await
            .map_err(storage)?;
        Ok(round)
    }

    pub(super) async fn recorded(
        &self,
        controller: &Organisationsnummer,
        refs: Vec<RecordRef>,
        portable_only: bool,
    ) -> Result<Vec<RecordData>, Error> {
        let mut reported: BTreeMap<(String, String), (TaskRecord, Option<Attested>)> =
            BTreeMap::new();
        for t in self
            .tasks
            .answered_searches(controller.as_str())
            .await
            .map_err(storage)?
        {
            for r in t.body.records {
                reported
                    .entry((r.store.clone(), r.key.clone()))
                    .or_insert((r, t.body.attested.clone()));
            }
        }
        let portable: BTreeSet<&str> = self
            .manifest
            .categories
            .iter()
            .filter(|c| c.portable)
            .map(|c| c.id.as_str())
            .collect();
        let mut out = Vec::new();
        for reference in refs {
            let Some((r, attested)) =
                reported.get(&(reference.store.clone(), reference.key.clone()))
            else {
                continue;
            };
            let Some(store) = self.manifest.store(&r.store) else {
                continue;
            };
            let fields: Vec<FieldValue> = store
                .fields
                .iter()
                .filter(|f| !portable_only || portable.contains(f.category.as_str()))
                .map(|f| FieldValue {
                    name: f.name.clone(),
                    category: f.category.clone(),
                    value: r
                        .fields
                        .iter()
                        .find(|(n, _)| *n == f.name)
                        .map(|(_, v)| v.clone()),
                })
                .collect();
            if fields.is_empty() {
                continue;
            }
            out.push(RecordData {
                attestation: attested.as_ref().map(|a| Attestation {
                    name: a.name.clone(),
                    contact: a.contact.clone(),
                    attested_at: a.at,
                    statement: a.statement.clone(),
                }),
                reference,
                fields,
                restricted: false,
                restriction: dsr_connector::restriction::Reasons::none(),
                objected: vec![],
                retention_anchor: None,
            });
        }
        Ok(out)
    }
}
