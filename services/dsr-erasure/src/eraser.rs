//! The erasure logic over the [`Systems`] trait: plans from the subject
//! map, the retention policy and the holds; execution with one idempotency
//! key per (request, system, phase) so a retry or a crash never erases
//! twice nor skips; deferred erasures when retained records reach their
//! date; tombstones, and their replay after a restore.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::Instrument as _;

use chrono::{DateTime, NaiveDate, Utc};
use dsr_domain::erasure::{Action, HoldRef, decide};
use dsr_domain::identity::Organisationsnummer;
use dsr_domain::retention::RetentionPolicy;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::{
    EraseOrder, Header, Plan, PlannedRecord, Receipt, Recipient, RecordRef, Registry, RetainOrder,
    SubjectMap, SystemError, Systems, UnlawfulTransfers, Write,
};
use crate::reconcile::{self, Discrepancy};
use crate::store::{
    Hold, HoldScope, Notification, Store, StoreError, StoredReceipt, Sweep, SweepTrigger,
    SweptState, SweptSystem, Tombstone, TransferVerdict,
};
use dsr_domain::clock::Clock;
use dsr_domain::request::WriteOrder;

/// Keyed hashes of identities (HMAC-SHA256): what tombstones and person
/// holds keep instead of the identity.
#[derive(Clone)]
pub struct IdentityHasher {
    key: [u8; 32],
}

impl std::fmt::Debug for IdentityHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityHasher(..)")
    }
}

impl IdentityHasher {
    /// With a 32-byte secret key.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The hash of an identity of `kind` (e.g. "email") with its normalised
    /// value, hex.
    pub fn hash(&self, kind: &str, value: &str) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        m.update(kind.as_bytes());
        m.update(b":");
        m.update(value.as_bytes());
        hex::encode(m.finalize().into_bytes())
    }
}

/// Where one system stands in an execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SystemOutcome {
    /// Its receipt is stored.
    Done(Box<StoredReceipt>),
    /// Not reached or failed.
    Failed(String),
    /// It answered with a receipt that does not verify.
    ReceiptInvalid(String),
}

/// What an execution did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execution {
    /// The request.
    pub request_id: String,
    /// Per system with work.
    pub systems: Vec<(String, SystemOutcome)>,
    /// Records still retained.
    pub retained: u32,
    /// When the next deferred erasure is due.
    pub next_deferred_on: Option<NaiveDate>,
    /// Where this execution's receipts differ from the plan.
    pub discrepancies: Vec<Discrepancy>,
}

impl Execution {
    /// Every system is done.
    pub fn complete(&self) -> bool {
        self.systems
            .iter()
            .all(|(_, o)| matches!(o, SystemOutcome::Done(_)))
    }
}

/// One system's part of a replay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Erasures replayed.
    pub erasures: u32,
    /// Records erased again.
    pub erased_again: u64,
    /// Retained records restricted again.
    pub restricted_again: u64,
    /// The first failure.
    pub error: Option<String>,
}

/// What a replay did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// Its id.
    pub id: String,
    /// Tombstones found.
    pub tombstones: u32,
    /// Per system.
    pub systems: BTreeMap<String, Replayed>,
}

/// Why an erasure call failed.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// The subject map is partial.
    #[error("the subject map is partial")]
    Partial,
    /// No plan for the request.
    #[error("no plan for the request")]
    NoPlan,
    /// A system could not be read while planning.
    #[error(transparent)]
    System(#[from] SystemError),
    /// Storage.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for EraseError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NoPlan,
            other @ (StoreError::Db(_) | StoreError::Corrupt(_)) => Self::Store(other),
        }
    }
}

/// Why a notification could not change.
#[derive(Debug, thiserror::Error)]
pub enum NotificationError {
    /// No such notification.
    #[error("no such notification")]
    NotFound,
    /// Its transfer is not lawful (refused or awaiting approval).
    #[error("the transfer to this recipient is not lawful ({})", .0.as_str())]
    NotLawful(TransferVerdict),
    /// Storage.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for NotificationError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::NotFound,
            other @ (StoreError::Db(_) | StoreError::Corrupt(_)) => Self::Store(other),
        }
    }
}

/// Why a sweep could not start.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// A system not configured.
    #[error("no system {0}")]
    UnknownSystem(String),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The service's logic.
#[derive(Clone)]
pub struct Eraser {
    systems: Arc<dyn Systems>,
    registry: Arc<dyn Registry>,
    store: Store,
    policy: Arc<RetentionPolicy>,
    hasher: IdentityHasher,
    clock: Clock,
    unlawful: UnlawfulTransfers,
}

impl std::fmt::Debug for Eraser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eraser")
            .field("policy", &self.policy.policy_version)
            .finish_non_exhaustive()
    }
}

/// The idempotency key of an erasure phase on one system.
fn erase_key(request_id: &str, system: &str, phase: &str) -> String {
    match phase.strip_prefix("deferred:") {
        Some(date) => format!("erase.{request_id}.{system}.d{date}"),
        None => format!("erase.{request_id}.{system}"),
    }
}

impl Eraser {
    /// Over `systems` and `store`, planning under `policy`, notifying the
    /// recipients `registry` names.
    pub fn new(
        systems: Arc<dyn Systems>,
        registry: Arc<dyn Registry>,
        store: Store,
        policy: Arc<RetentionPolicy>,
        hasher: IdentityHasher,
    ) -> Self {
        Self {
            systems,
            registry,
            store,
            policy,
            hasher,
            clock: Clock::system(),
            unlawful: UnlawfulTransfers::default(),
        }
    }

    /// The same eraser doing `unlawful` with a disclosure the transfer
    /// registry finds unlawful (refused by default).
    #[must_use]
    pub fn with_unlawful_transfers(mut self, unlawful: UnlawfulTransfers) -> Self {
        self.unlawful = unlawful;
        self
    }

    /// The same eraser on `clock` (plans, deferred erasures, sweeps,
    /// notifications' dates).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.store = self.store.with_clock(clock.clone());
        self.clock = clock;
        self
    }

    /// The clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The identity hasher.
    pub fn hasher(&self) -> &IdentityHasher {
        &self.hasher
    }

    /// Plans a request's erasure (or returns the plan already built).
    pub async fn plan(
        &self,
        h: &Header,
        map: &SubjectMap,
        today: NaiveDate,
    ) -> Result<Plan, EraseError> {
        if map.partial {
            return Err(EraseError::Partial);
        }
        match self.store.plan(&h.request_id).await {
            Ok(p) => return Ok(p),
            Err(StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
        let hashes: BTreeSet<String> = map
            .identities
            .iter()
            .map(|i| self.hasher.hash(i.kind().as_str(), i.value()))
            .collect();
        let holds: Vec<Hold> = self
            .store
            .holds(false, today)
            .await?
            .into_iter()
            .filter(|x| x.controller == h.controller.as_str())
            .collect();
        // Every system's anchor dates read at once: the systems are
        // independent, and the plan waits for the slowest, not their sum.
        let reads = map.systems.iter().filter_map(|s| {
            let refs: Vec<RecordRef> = s
                .stores
                .iter()
                .flat_map(|st| {
                    st.keys.iter().map(|k| RecordRef {
                        store: st.store.clone(),
                        key: k.clone(),
                    })
                })
                .collect();
            // A future does nothing until polled: built for every system,
            // awaited only for those with records.
            (!refs.is_empty()).then_some(async move {
                let read = self.systems.read(&s.system_id, h, &refs).await?;
                Ok::<_, EraseError>((s, read))
            })
        });
        let mut records = Vec::new();
        for (s, read) in futures_util::future::try_join_all(reads).await? {
            let anchors: BTreeMap<RecordRef, Option<NaiveDate>> =
                read.into_iter().map(|r| (r.record, r.anchor)).collect();
            for st in &s.stores {
                for key in &st.keys {
                    let record = RecordRef {
                        store: st.store.clone(),
                        key: key.clone(),
                    };
                    let anchor = anchors.get(&record).copied().flatten();
                    let applying: Vec<HoldRef> = holds
                        .iter()
                        .filter(|x| match &x.scope {
                            HoldScope::Person(hash) => hashes.contains(hash),
                            HoldScope::Record {
                                system_id,
                                record: r,
                            } => *system_id == s.system_id && *r == record,
                        })
                        .map(|x| HoldRef {
                            id: x.id.clone(),
                            ground: x.ground.clone(),
                            until: x.until,
                        })
                        .collect();
                    let decision = decide(&self.policy, &st.categories, anchor, &applying, today);
                    records.push(PlannedRecord {
                        system_id: s.system_id.clone(),
                        record,
                        categories: st.categories.clone(),
                        anchor,
                        decision,
                    });
                }
            }
        }
        records.sort_by(|a, b| (&a.system_id, &a.record).cmp(&(&b.system_id, &b.record)));
        let plan = Plan {
            request_id: h.request_id.clone(),
            controller: h.controller.as_str().to_owned(),
            created_at: self.clock.now(),
            policy_version: self.policy.policy_version.clone(),
            records,
            identity_hashes: hashes.into_iter().collect(),
        };
        Ok(self.store.save_plan(&plan).await?)
    }

    /// Executes the plan: every system with records gets its order once.
    pub async fn execute(&self, h: &Header) -> Result<Execution, EraseError> {
        let plan = self.store.plan(&h.request_id).await?;
        let mut orders: BTreeMap<String, EraseOrder> = BTreeMap::new();
        for r in &plan.records {
            let o = orders
                .entry(r.system_id.clone())
                .or_insert_with(|| EraseOrder {
                    records: Vec::new(),
                    retain: Vec::new(),
                });
            o.records.push(r.record.clone());
            if r.decision.action == Action::Retain {
                o.retain.push(RetainOrder {
                    record: r.record.clone(),
                    ground: r.decision.ground.clone(),
                    until: r.decision.retain_until,
                    hold: r.decision.hold,
                });
            }
        }
        let systems = self.run_phase(h, &plan, "erase", orders).await?;
        if systems
            .iter()
            .all(|(_, o)| matches!(o, SystemOutcome::Done(_)))
        {
            let categories = plan
                .records
                .iter()
                .flat_map(|r| r.categories.clone())
                .collect();
            self.notify(h, "erase", &systems, &[], categories, self.clock.today())
                .await?;
        }
        self.outcome(h, &plan, systems, &["erase".to_owned()]).await
    }

    /// An execution as the receipts tell it: what is still kept and when
    /// its next deferred erasure is due, and where the receipts of
    /// `phases` differ from the plan.
    async fn outcome(
        &self,
        h: &Header,
        plan: &Plan,
        systems: Vec<(String, SystemOutcome)>,
        phases: &[String],
    ) -> Result<Execution, EraseError> {
        let receipts = self.store.receipts(&h.request_id).await?;
        let (retained, next) = reconcile::remaining(&reconcile::standings(plan, &receipts));
        let discrepancies = reconcile::discrepancies(plan, &receipts, Some(phases));
        // Counted once, when the execution is whole (an incomplete one is
        // retried and would count its systems' discrepancies again).
        let whole = systems
            .iter()
            .all(|(_, o)| matches!(o, SystemOutcome::Done(_)));
        if whole {
            for d in &discrepancies {
                crate::metrics::discrepancy(&d.system_id, &d.phase);
            }
        }
        if whole && !discrepancies.is_empty() {
            tracing::warn!(
                request_id = %h.request_id,
                count = discrepancies.len(),
                "receipts differ from the plan"
            );
        }
        Ok(Execution {
            request_id: h.request_id.clone(),
            systems,
            retained,
            next_deferred_on: next,
            discrepancies,
        })
    }

    /// A request's plan, with every discrepancy between it and the
    /// receipts so far.
    pub async fn reviewed_plan(
        &self,
        request_id: &str,
    ) -> Result<(Plan, Vec<Discrepancy>), EraseError> {
        let plan = self.store.plan(request_id).await?;
        let receipts = self.store.receipts(request_id).await?;
        let found = reconcile::discrepancies(&plan, &receipts, None);
        Ok((plan, found))
    }

    /// Erases the retained records whose date has passed by `as_of`.
    pub async fn execute_deferred(
        &self,
        h: &Header,
        as_of: NaiveDate,
    ) -> Result<Execution, EraseError> {
        let plan = self.store.plan(&h.request_id).await?;
        let receipts = self.store.receipts(&h.request_id).await?;
        // What the receipts say is kept for a period that has ended: kept
        // by the plan's order or by the system's own rule, not under an
        // Art. 18 request or a hold.
        let mut by_date: BTreeMap<NaiveDate, BTreeMap<String, EraseOrder>> = BTreeMap::new();
        for s in reconcile::standings(&plan, &receipts) {
            let Some(until) = s.retained_until().filter(|u| *u < as_of) else {
                continue;
            };
            by_date
                .entry(until)
                .or_default()
                .entry(s.planned.system_id.clone())
                .or_insert_with(|| EraseOrder {
                    records: Vec::new(),
                    retain: Vec::new(),
                })
                .records
                .push(s.planned.record.clone());
        }
        let mut systems = Vec::new();
        let mut phases = Vec::new();
        for (until, orders) in by_date {
            let phase = format!("deferred:{until}");
            systems.extend(self.run_phase(h, &plan, &phase, orders).await?);
            phases.push(phase);
        }
        self.outcome(h, &plan, systems, &phases).await
    }

    async fn run_phase(
        &self,
        h: &Header,
        plan: &Plan,
        phase: &str,
        orders: BTreeMap<String, EraseOrder>,
    ) -> Result<Vec<(String, SystemOutcome)>, EraseError> {
        // Every system erases at once (each under its own key, each
        // receipt stored as it comes): the step waits for the slowest
        // system, not for their sum.
        let erasures = orders.iter().map(|(system, order)| async move {
            let key = erase_key(&h.request_id, system, phase);
            if let Some(done) = self.store.receipt_by_key(&key).await? {
                return Ok::<_, EraseError>((system.clone(), SystemOutcome::Done(Box::new(done))));
            }
            let outcome = match self.systems.erase(system, h, &key, order).await {
                Ok(receipt) => self.stored(h, phase, system, &receipt).await?,
                Err(e) => failed(system, e),
            };
            Ok((system.clone(), outcome))
        });
        let out = futures_util::future::try_join_all(erasures).await?;
        if out.iter().all(|(_, o)| matches!(o, SystemOutcome::Done(_))) {
            self.store
                .save_tombstone(&Tombstone {
                    id: uuid::Uuid::new_v4().to_string(),
                    request_id: h.request_id.clone(),
                    phase: phase.to_owned(),
                    controller: plan.controller.clone(),
                    identity_hashes: plan.identity_hashes.clone(),
                    orders,
                    erased_at: self.clock.now(),
                })
                .await?;
        }
        Ok(out)
    }

    /// Applies a rectification, restriction, lift or objection to every
    /// record of the map, one system at a time under
    /// `<action>.<request>.<system>`, then records the Art. 19
    /// notifications.
    pub async fn apply(
        &self,
        h: &Header,
        map: &SubjectMap,
        order: &WriteOrder,
        today: NaiveDate,
    ) -> Result<(Execution, Vec<Notification>), EraseError> {
        if map.partial {
            return Err(EraseError::Partial);
        }
        let mut out = Vec::new();
        let mut withheld = Vec::new();
        let mut categories = Vec::new();
        let mut action = "";
        // A correction sent to a system a recipient operates discloses the
        // corrected data to that recipient: checked against the registry
        // first, like any notification.
        let operators_unlawful: BTreeMap<String, Recipient> =
            if matches!(order, WriteOrder::Rectify { .. }) {
                self.unlawful_operators(h, map).await?
            } else {
                BTreeMap::new()
            };
        for s in &map.systems {
            let refs: Vec<RecordRef> = s
                .stores
                .iter()
                .flat_map(|st| {
                    st.keys.iter().map(|k| RecordRef {
                        store: st.store.clone(),
                        key: k.clone(),
                    })
                })
                .collect();
            if refs.is_empty() {
                continue;
            }
            let Some(write) = self.write_for(&s.system_id, h, order, refs).await? else {
                continue;
            };
            action = write.action();
            categories.extend(s.stores.iter().flat_map(|st| st.categories.clone()));
            match self.systems.acts_on(&s.system_id, &write).await {
                Ok(true) => {}
                Ok(false) => {
                    // Not a right the system acts on (Describe): it is not
                    // sent; its operator is told by a task (Art. 19).
                    tracing::info!(
                        system = %s.system_id,
                        action,
                        "the system does not act on this right: its operator is told by a task"
                    );
                    withheld.push(s.system_id.clone());
                    continue;
                }
                Err(e) => {
                    out.push((s.system_id.clone(), failed(&s.system_id, e)));
                    continue;
                }
            }
            if let Some(r) = operators_unlawful.get(&s.system_id) {
                tracing::warn!(
                    system = %s.system_id,
                    recipient = %r.id,
                    "correction not sent: the transfer to the system's operator is not lawful"
                );
                withheld.push(s.system_id.clone());
                continue;
            }
            let key = format!("{action}.{}.{}", h.request_id, s.system_id);
            let outcome = match self.store.receipt_by_key(&key).await? {
                Some(done) => SystemOutcome::Done(Box::new(done)),
                None => match self.systems.write(&s.system_id, h, &key, &write).await {
                    Ok(r) => self.stored(h, action, &s.system_id, &r).await?,
                    Err(e) => failed(&s.system_id, e),
                },
            };
            out.push((s.system_id.clone(), outcome));
        }
        let mut notifications = Vec::new();
        if !(out.is_empty() && withheld.is_empty())
            && out.iter().all(|(_, o)| matches!(o, SystemOutcome::Done(_)))
        {
            notifications = self
                .notify(h, action, &out, &withheld, categories, today)
                .await?;
        }
        Ok((
            Execution {
                request_id: h.request_id.clone(),
                systems: out,
                retained: 0,
                next_deferred_on: None,
                discrepancies: Vec::new(),
            },
            notifications,
        ))
    }

    /// What `order` asks of one system's records; `None` when nothing
    /// there is concerned (no field of a corrected category).
    async fn write_for(
        &self,
        system: &str,
        h: &Header,
        order: &WriteOrder,
        records: Vec<RecordRef>,
    ) -> Result<Option<Write>, EraseError> {
        Ok(Some(match order {
            WriteOrder::Rectify { corrections } => {
                let mut changes = Vec::new();
                for r in self.systems.read(system, h, &records).await? {
                    for (field, category) in &r.fields {
                        if let Some(c) = corrections.iter().find(|c| c.category == *category) {
                            changes.push((r.record.clone(), field.clone(), c.value.clone()));
                        }
                    }
                }
                if changes.is_empty() {
                    return Ok(None);
                }
                Write::Rectify(changes)
            }
            WriteOrder::Restrict { ground } => Write::Restrict {
                records,
                lift: false,
                reason: ground.reason().to_owned(),
            },
            WriteOrder::Lift { person_informed_at } => Write::Restrict {
                records,
                lift: true,
                reason: match person_informed_at {
                    Some(t) => format!(
                        "Art. 18(3): restriction lifted; the person was told on {}",
                        t.date_naive()
                    ),
                    None => "Art. 18(3): restriction lifted".to_owned(),
                },
            },
            WriteOrder::Object {
                purposes,
                direct_marketing,
            } => Write::Object {
                records,
                purposes: purposes.clone(),
                direct_marketing: *direct_marketing,
            },
        }))
    }

    async fn stored(
        &self,
        h: &Header,
        phase: &str,
        system: &str,
        r: &Receipt,
    ) -> Result<SystemOutcome, EraseError> {
        let stored = self.store.save_receipt(&h.request_id, phase, r).await?;
        tracing::info!(
            system = %system,
            phase,
            affected = r.affected(),
            refused = r.refused(),
            retained = r.retained,
            "receipt verified and stored"
        );
        Ok(SystemOutcome::Done(Box::new(stored)))
    }

    /// The systems of `map` whose operator the registry finds no lawful
    /// transfer to, with that recipient.
    async fn unlawful_operators(
        &self,
        h: &Header,
        map: &SubjectMap,
    ) -> Result<BTreeMap<String, Recipient>, EraseError> {
        let systems: Vec<String> = map.systems.iter().map(|s| s.system_id.clone()).collect();
        let mut categories: Vec<String> = map
            .systems
            .iter()
            .flat_map(|s| s.stores.iter().flat_map(|st| st.categories.clone()))
            .collect();
        categories.sort();
        categories.dedup();
        let recipients = self.registry.recipients(h, &systems, &categories).await?;
        Ok(systems
            .into_iter()
            .filter_map(|s| {
                let op = self.systems.operator(&s)?;
                let r = recipients.iter().find(|r| r.id == op && !r.lawful)?;
                Some((s, r.clone()))
            })
            .collect())
    }

    /// What becomes of a notification to `r`: lawful, or refused or held
    /// for approval by the configured rule.
    fn verdict(&self, r: &Recipient) -> TransferVerdict {
        match (r.lawful, self.unlawful) {
            (true, _) => TransferVerdict::Lawful,
            (false, UnlawfulTransfers::Refuse) => TransferVerdict::Refused,
            (false, UnlawfulTransfers::Review) => TransferVerdict::AwaitingApproval,
        }
    }

    /// Records the Art. 19 notifications of `action`: every recipient the
    /// registry names for these systems (those that acted and those
    /// `withheld`: for an unlawful operator, or not acting on the right) and categories, through its own
    /// data system when it operates one that acted (its receipt), else as a
    /// task due by the request's due date. A recipient the registry finds
    /// no lawful transfer to is told nothing: its notification is refused,
    /// or held for a case handler's approval, with the registry's reasons.
    async fn notify(
        &self,
        h: &Header,
        action: &str,
        done: &[(String, SystemOutcome)],
        withheld: &[String],
        mut categories: Vec<String>,
        today: NaiveDate,
    ) -> Result<Vec<Notification>, EraseError> {
        let systems: Vec<String> = done
            .iter()
            .map(|(s, _)| s.clone())
            .chain(withheld.iter().cloned())
            .collect();
        categories.sort();
        categories.dedup();
        let recipients = self.registry.recipients(h, &systems, &categories).await?;
        let mut found: Vec<Notification> = Vec::with_capacity(recipients.len());
        for r in recipients {
            if found.iter().any(|n| n.recipient_id == r.id) {
                continue;
            }
            let verdict = self.verdict(&r);
            if !verdict.may_send() {
                tracing::warn!(
                    recipient = %r.id,
                    action,
                    verdict = verdict.as_str(),
                    "Art. 19 notification not sent: no lawful transfer"
                );
            }
            let through = done.iter().find_map(|(s, o)| match o {
                SystemOutcome::Done(receipt)
                    if self.systems.operator(s).as_deref() == Some(r.id.as_str()) =>
                {
                    Some((s.clone(), receipt.id.clone()))
                }
                SystemOutcome::Done(_)
                | SystemOutcome::Failed(_)
                | SystemOutcome::ReceiptInvalid(_) => None,
            });
            let n = Notification {
                id: uuid::Uuid::new_v4().to_string(),
                request_id: h.request_id.clone(),
                recipient_id: r.id,
                recipient_name: r.name,
                country: r.country,
                action: action.to_owned(),
                due_on: (through.is_none() && verdict != TransferVerdict::Refused)
                    .then_some(h.due_date.max(today)),
                done_at: through.is_some().then(|| self.clock.now()),
                done_by: through
                    .as_ref()
                    .map(|_| format!("service:{}", crate::SERVICE_NAME)),
                through,
                transfer: verdict,
                transfer_reasons: if verdict == TransferVerdict::Lawful {
                    Vec::new()
                } else {
                    r.blocking_reasons
                },
                approval: None,
            };
            found.push(n);
        }
        // One statement for all; one already recorded (a retried step) stays.
        self.store.save_notifications(&found).await?;
        Ok(self.store.notifications(&h.request_id).await?)
    }

    /// Marks a notification task done by `by` (a case handler who told
    /// the recipient). One whose transfer is not lawful (refused, or
    /// awaiting a case handler's approval) cannot be done.
    pub async fn complete_notification(
        &self,
        id: &str,
        by: &str,
    ) -> Result<Notification, NotificationError> {
        let n = self.store.notification(id).await?;
        if !n.transfer.may_send() {
            return Err(NotificationError::NotLawful(n.transfer));
        }
        Ok(self
            .store
            .complete_notification(id, by, self.clock.now())
            .await?)
    }

    /// Records `by`'s approval of a notification held for one (unlawful
    /// transfers under `UnlawfulTransfers::Review`), with the note that
    /// justifies it (e.g. the Art. 49 derogation relied on); it becomes a
    /// task due by the request's due date, or today when that has passed.
    /// A refused one cannot be approved; an approved one stays as it is.
    pub async fn approve_notification(
        &self,
        id: &str,
        by: &str,
        note: &str,
    ) -> Result<Notification, NotificationError> {
        let n = self.store.notification(id).await?;
        match n.transfer {
            TransferVerdict::AwaitingApproval => {
                let today = self.clock.today();
                let due = n.due_on.map_or(today, |d| d.max(today));
                Ok(self.store.approve_notification(id, by, note, due).await?)
            }
            TransferVerdict::Approved | TransferVerdict::Lawful => Ok(n),
            TransferVerdict::Refused => Err(NotificationError::NotLawful(n.transfer)),
        }
    }

    /// Starts a retention sweep of `only` (every system when empty) in the
    /// background and returns it; `None` when `id` is taken (a scheduled
    /// slot another replica started).
    pub async fn start_sweep(
        &self,
        id: String,
        trigger: SweepTrigger,
        started_by: &str,
        only: &BTreeSet<String>,
        dry_run: bool,
        batch_size: u32,
    ) -> Result<Option<Sweep>, SweepError> {
        let all = self.systems.system_ids();
        if let Some(unknown) = only.iter().find(|s| !all.contains(s)) {
            return Err(SweepError::UnknownSystem(unknown.clone()));
        }
        let sweep = Sweep {
            id,
            trigger,
            dry_run,
            systems: all
                .into_iter()
                .filter(|s| only.is_empty() || only.contains(s))
                .map(|system_id| SweptSystem {
                    system_id,
                    state: SweptState::Running,
                    ..SweptSystem::default()
                })
                .collect(),
            started_at: self.clock.now(),
            finished_at: None,
            started_by: started_by.to_owned(),
        };
        let Some(created) = self.store.create_sweep(&sweep).await? else {
            return Ok(None);
        };
        tracing::info!(sweep = %created.id, trigger = trigger.as_str(), dry_run, "sweep started");
        let me = self.clone();
        let run = created.clone();
        let span = tracing::info_span!("sweep", otel.name = "sweep", sweep = %created.id, dry_run);
        tokio::spawn(
            async move {
                if let Err(e) = me.run_sweep(run, batch_size).await {
                    tracing::error!(error = %e, "sweep could not record its progress");
                }
            }
            .instrument(span),
        );
        Ok(Some(created))
    }

    /// Sweeps each system in turn, for each controller it serves, saving
    /// the progress every second; stores the receipts and, unless a dry
    /// run, a tombstone per system and controller.
    async fn run_sweep(&self, mut sweep: Sweep, batch_size: u32) -> Result<(), StoreError> {
        let today = self.clock.today();
        for i in 0..sweep.systems.len() {
            let system = sweep.systems[i].system_id.clone();
            let controllers = match self.systems.controllers(&system).await {
                Ok(c) => c,
                Err(e) => {
                    crate::metrics::sweep_ended(&system, false);
                    sweep.systems[i].state = SweptState::Failed;
                    sweep.systems[i].error = Some(e.reason);
                    self.store.save_sweep(&sweep).await?;
                    continue;
                }
            };
            for controller in controllers {
                let h = Header {
                    request_id: sweep.id.clone(),
                    controller,
                    due_date: today,
                };
                let key = format!("sweep.{}.{system}.{}", sweep.id, h.controller.as_str());
                let before = sweep.systems[i].done;
                let progress = AtomicU64::new(0);
                let work =
                    self.systems
                        .sweep(&system, &h, &key, sweep.dry_run, batch_size, &progress);
                tokio::pin!(work);
                let result = loop {
                    tokio::select! {
                        r = &mut work => break r,
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                            let done = before + progress.load(Ordering::Relaxed);
                            crate::metrics::swept(&system, sweep.dry_run, done.saturating_sub(sweep.systems[i].done));
                            sweep.systems[i].done = done;
                            self.store.save_sweep(&sweep).await?;
                        }
                    }
                };
                match result {
                    Ok(r) => {
                        let phase = if sweep.dry_run {
                            "sweep:dry-run"
                        } else {
                            "sweep"
                        };
                        let stored = self.store.save_receipt(&sweep.id, phase, &r).await?;
                        let s = &mut sweep.systems[i];
                        let done = before + progress.load(Ordering::Relaxed);
                        crate::metrics::swept(&system, sweep.dry_run, done.saturating_sub(s.done));
                        s.done = done;
                        // A dry run changes nothing: what it matched is
                        // what a sweep would remove.
                        s.removed += if sweep.dry_run {
                            r.stores.iter().map(|x| x.matched).sum()
                        } else {
                            r.affected()
                        };
                        s.receipt_ids.push(stored.id);
                        if !sweep.dry_run {
                            self.store
                                .save_tombstone(&Tombstone {
                                    id: uuid::Uuid::new_v4().to_string(),
                                    request_id: sweep.id.clone(),
                                    phase: format!("sweep:{system}:{}", h.controller.as_str()),
                                    controller: h.controller.as_str().to_owned(),
                                    identity_hashes: Vec::new(),
                                    orders: BTreeMap::from([(
                                        system.clone(),
                                        EraseOrder {
                                            records: Vec::new(),
                                            retain: Vec::new(),
                                        },
                                    )]),
                                    erased_at: self.clock.now(),
                                })
                                .await?;
                        }
                    }
                    Err(e) => {
                        crate::metrics::sweep_ended(&system, false);
                        tracing::warn!(system = %system, reason = %e.reason, "sweep failed");
                        sweep.systems[i].state = SweptState::Failed;
                        sweep.systems[i].error = Some(e.reason);
                        break;
                    }
                }
            }
            if sweep.systems[i].state == SweptState::Running {
                sweep.systems[i].state = SweptState::Done;
                crate::metrics::sweep_ended(&system, true);
            }
            self.store.save_sweep(&sweep).await?;
        }
        sweep.finished_at = Some(self.clock.now());
        self.store.save_sweep(&sweep).await?;
        let removed: u64 = sweep.systems.iter().map(|s| s.removed).sum();
        tracing::info!(sweep = %sweep.id, removed, dry_run = sweep.dry_run, "sweep finished");
        Ok(())
    }

    /// Starts a sweep every `every`, in slots anchored to the epoch: the
    /// slot's id is unique, so one replica runs it and a restart inside a
    /// slot does not run it again.
    pub fn spawn_schedule(&self, every: std::time::Duration, batch_size: u32) {
        let me = self.clone();
        tokio::spawn(async move {
            let secs = every.as_secs().max(60);
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let slot = u64::try_from(me.clock.now().timestamp()).unwrap_or(0) / secs;
                let id = format!("scheduled-{secs}-{slot}");
                match me
                    .start_sweep(
                        id,
                        SweepTrigger::Schedule,
                        "",
                        &BTreeSet::new(),
                        false,
                        batch_size,
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot start the scheduled sweep"),
                }
            }
        });
    }

    /// Replays the erasures completed since `since` on `only` (every
    /// system when empty).
    pub async fn replay(
        &self,
        since: DateTime<Utc>,
        only: &BTreeSet<String>,
        dry_run: bool,
        today: NaiveDate,
    ) -> Result<Replay, EraseError> {
        let id = uuid::Uuid::new_v4().to_string();
        let tombstones = self.store.tombstones_since(since).await?;
        let mut systems: BTreeMap<String, Replayed> = BTreeMap::new();
        for t in &tombstones {
            let Ok(controller) = Organisationsnummer::parse(&t.controller) else {
                return Err(EraseError::Store(StoreError::Corrupt("tombstone")));
            };
            let h = Header {
                request_id: t.request_id.clone(),
                controller,
                due_date: today,
            };
            for (system, order) in &t.orders {
                if !only.is_empty() && !only.contains(system) {
                    continue;
                }
                let entry = systems.entry(system.clone()).or_default();
                entry.erasures += 1;
                if dry_run || entry.error.is_some() {
                    continue;
                }
                let key = format!("replay.{id}.{}.{system}", &t.id[..8]);
                let result = if t.phase.starts_with("sweep:") {
                    // A sweep is replayed by sweeping again: what the
                    // restore brought back has passed its rule too.
                    self.systems
                        .sweep(system, &h, &key, false, 0, &AtomicU64::new(0))
                        .await
                } else {
                    self.systems.erase(system, &h, &key, order).await
                };
                match result {
                    Ok(r) => {
                        self.store
                            .save_receipt(&t.request_id, &format!("replay:{id}"), &r)
                            .await?;
                        entry.erased_again += r.affected();
                        entry.restricted_again += r.retained;
                    }
                    Err(e) => entry.error = Some(e.reason),
                }
            }
        }
        Ok(Replay {
            id,
            tombstones: u32::try_from(tombstones.len()).unwrap_or(u32::MAX),
            systems,
        })
    }

    /// Places a hold on a person (by one identity) or a record.
    pub async fn place_hold(
        &self,
        controller: &str,
        scope: HoldScope,
        ground: &str,
        until: Option<NaiveDate>,
        by: &str,
    ) -> Result<Hold, StoreError> {
        self.store
            .place_hold(controller, scope, ground, until, by)
            .await
    }
}

/// A system that failed, as an outcome (logged without personal data).
fn failed(system: &str, e: SystemError) -> SystemOutcome {
    if e.receipt_invalid {
        crate::metrics::receipt_rejected(system, &e.reason);
        tracing::error!(system = %system, reason = %e.reason, "receipt does not verify");
        SystemOutcome::ReceiptInvalid(e.reason)
    } else {
        crate::metrics::write_failed(system, &e.reason);
        tracing::warn!(system = %system, reason = %e.reason, "write failed");
        SystemOutcome::Failed(e.reason)
    }
}
