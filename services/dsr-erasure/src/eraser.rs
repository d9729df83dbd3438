//! The erasure logic over the [`Systems`] trait: plans from the subject
//! map, the retention policy and the holds; execution with one idempotency
//! key per (request, system, phase) so a retry or a crash never erases
//! twice nor skips; deferred erasures when retained records reach their
//! date; tombstones, and their replay after a restore.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use dsr_domain::erasure::{Action, HoldRef, decide};
use dsr_domain::identity::Organisationsnummer;
use dsr_domain::retention::RetentionPolicy;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::model::{
    EraseOrder, Header, Plan, PlannedRecord, RecordRef, RetainOrder, SubjectMap, SystemError,
    Systems,
};
use crate::store::{Hold, HoldScope, Store, StoreError, StoredReceipt, Tombstone};

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

/// The service's logic.
#[derive(Clone)]
pub struct Eraser {
    systems: Arc<dyn Systems>,
    store: Store,
    policy: Arc<RetentionPolicy>,
    hasher: IdentityHasher,
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
    /// Over `systems` and `store`, planning under `policy`.
    pub fn new(
        systems: Arc<dyn Systems>,
        store: Store,
        policy: Arc<RetentionPolicy>,
        hasher: IdentityHasher,
    ) -> Self {
        Self {
            systems,
            store,
            policy,
            hasher,
        }
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
        let mut records = Vec::new();
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
            let anchors: BTreeMap<RecordRef, Option<NaiveDate>> = self
                .systems
                .anchors(&s.system_id, h, &refs)
                .await?
                .into_iter()
                .collect();
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
            created_at: Utc::now(),
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
                });
            }
        }
        let systems = self.run_phase(h, &plan, "erase", orders).await?;
        let (retained, next) = remaining(&plan, None);
        Ok(Execution {
            request_id: h.request_id.clone(),
            systems,
            retained,
            next_deferred_on: next,
        })
    }

    /// Erases the retained records whose date has passed by `as_of`.
    pub async fn execute_deferred(
        &self,
        h: &Header,
        as_of: NaiveDate,
    ) -> Result<Execution, EraseError> {
        let plan = self.store.plan(&h.request_id).await?;
        let mut by_date: BTreeMap<NaiveDate, BTreeMap<String, EraseOrder>> = BTreeMap::new();
        for r in &plan.records {
            if r.decision.action != Action::Retain {
                continue;
            }
            let Some(until) = r.decision.retain_until.filter(|u| *u < as_of) else {
                continue;
            };
            by_date
                .entry(until)
                .or_default()
                .entry(r.system_id.clone())
                .or_insert_with(|| EraseOrder {
                    records: Vec::new(),
                    retain: Vec::new(),
                })
                .records
                .push(r.record.clone());
        }
        let mut systems = Vec::new();
        for (until, orders) in by_date {
            let phase = format!("deferred:{until}");
            systems.extend(self.run_phase(h, &plan, &phase, orders).await?);
        }
        let (retained, next) = remaining(&plan, Some(as_of));
        Ok(Execution {
            request_id: h.request_id.clone(),
            systems,
            retained,
            next_deferred_on: next,
        })
    }

    async fn run_phase(
        &self,
        h: &Header,
        plan: &Plan,
        phase: &str,
        orders: BTreeMap<String, EraseOrder>,
    ) -> Result<Vec<(String, SystemOutcome)>, EraseError> {
        let mut out = Vec::new();
        for (system, order) in &orders {
            let key = erase_key(&h.request_id, system, phase);
            if let Some(done) = self.store.receipt_by_key(&key).await? {
                out.push((system.clone(), SystemOutcome::Done(Box::new(done))));
                continue;
            }
            let outcome = match self.systems.erase(system, h, &key, order).await {
                Ok(receipt) => {
                    let stored = self
                        .store
                        .save_receipt(&h.request_id, phase, &receipt)
                        .await?;
                    tracing::info!(
                        system = %system,
                        phase,
                        affected = receipt.affected(),
                        refused = receipt.refused(),
                        retained = receipt.retained,
                        "erasure receipt verified and stored"
                    );
                    SystemOutcome::Done(Box::new(stored))
                }
                Err(e) if e.receipt_invalid => {
                    tracing::error!(system = %system, reason = %e.reason, "erasure receipt does not verify");
                    SystemOutcome::ReceiptInvalid(e.reason)
                }
                Err(e) => {
                    tracing::warn!(system = %system, reason = %e.reason, "erasure failed");
                    SystemOutcome::Failed(e.reason)
                }
            };
            out.push((system.clone(), outcome));
        }
        if out.iter().all(|(_, o)| matches!(o, SystemOutcome::Done(_))) {
            self.store
                .save_tombstone(&Tombstone {
                    id: uuid::Uuid::new_v4().to_string(),
                    request_id: h.request_id.clone(),
                    phase: phase.to_owned(),
                    controller: plan.controller.clone(),
                    identity_hashes: plan.identity_hashes.clone(),
                    orders,
                    erased_at: Utc::now(),
                })
                .await?;
        }
        Ok(out)
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
                match self.systems.erase(system, &h, &key, order).await {
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

/// Records still retained after the deferred erasures due before `as_of`
/// (none run yet when `None`), and the day the next one is due.
fn remaining(plan: &Plan, as_of: Option<NaiveDate>) -> (u32, Option<NaiveDate>) {
    let kept: Vec<&PlannedRecord> = plan
        .records
        .iter()
        .filter(|r| r.decision.action == Action::Retain)
        .filter(|r| match (r.decision.retain_until, as_of) {
            (Some(u), Some(a)) => u >= a,
            (None, _) | (Some(_), None) => true,
        })
        .collect();
    let next = kept
        .iter()
        .filter_map(|r| r.decision.retain_until)
        .min()
        .and_then(|d| d.succ_opt());
    (u32::try_from(kept.len()).unwrap_or(u32::MAX), next)
}
