//! One REST API served through the contract.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use dsr_connector::instruction::Instruction;
use dsr_connector::operations::{Operation, Operations};
use dsr_connector::restriction::{Reason, Reasons};
use dsr_connector::signing::ReceiptSigner;
use dsr_domain::clock::Clock;
use dsr_domain::identity::{Identity, Organisationsnummer};
use serde_json::Value;

use super::api::{Api, ApiError, Vars, as_text, at, set_at};
use super::manifest::{HttpManifest, ResourceSpec};
use crate::grpc::ProtoReceipts;
use crate::system::{
    Action, Error, FieldValue, Located, LocatedStore, Method, ReceiptCodec as _, ReceiptData,
    RecordData, RecordOutcome, RecordRef, RecordResult, Retained, StoreOutcome, Write,
};

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// A REST API served by the generic connector.
#[derive(Clone)]
pub struct HttpSystem {
    pub(super) manifest: Arc<HttpManifest>,
    pub(super) api: Api,
    pub(super) ops: Operations,
    pub(super) signer: ReceiptSigner,
    pub(super) controllers: BTreeSet<Organisationsnummer>,
    pub(super) clock: Clock,
}

impl std::fmt::Debug for HttpSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSystem")
            .field("system", &self.manifest.system.id)
            .finish_non_exhaustive()
    }
}

const REQUEST_GROUND: &str = "GDPR Art. 18: processing restricted at the person's request; kept until the restriction is lifted";
const HOLD_GROUND: &str = "a legal hold (GDPR Art. 17(3)(e)); kept until the hold is lifted";

impl HttpSystem {
    /// A system over the API `manifest` describes, with its ledger in `db`
    /// (run `dsr_connector::migration::Migrator` on it first).
    pub fn new(
        db: sea_orm::DatabaseConnection,
        manifest: Arc<HttpManifest>,
        signer: ReceiptSigner,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            api: Api::new(&manifest.api)?,
            controllers: manifest.controllers(),
            manifest,
            ops: Operations::new(db),
            signer,
            clock: Clock::system(),
        })
    }

    /// The same system reading time from `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The manifest.
    pub fn manifest(&self) -> &HttpManifest {
        &self.manifest
    }

    pub(super) fn resource(&self, store: &str) -> Result<&ResourceSpec, Error> {
        self.manifest
            .resource(store)
            .ok_or_else(|| Error::InvalidArgument(vec![("records".into(), "unknown store".into())]))
    }

    /// An item of `r` that belongs to `controller`, with its key.
    pub(super) fn owned(
        &self,
        r: &ResourceSpec,
        item: &Value,
        controller: &Organisationsnummer,
    ) -> Option<String> {
        let theirs = r
            .controller
            .as_deref()
            .and_then(|p| at(item, p))
            .and_then(as_text)?;
        if Organisationsnummer::parse(&theirs).ok()? != *controller {
            return None;
        }
        at(item, &r.key).and_then(as_text)
    }

    pub(super) fn reasons(r: &ResourceSpec, item: &Value) -> Reasons {
        let list = r.restrictions.as_deref().and_then(|p| at(item, p));
        match list {
            Some(Value::Array(a)) => Reasons::of(
                a.iter()
                    .filter_map(Value::as_str)
                    // An unknown reason protects the record, as a request.
                    .map(|s| Reason::parse(s).unwrap_or(Reason::Request)),
            ),
            Some(Value::String(s)) if !s.is_empty() => {
                Reasons::of([Reason::parse(s).unwrap_or(Reason::Request)])
            }
            Some(Value::Bool(true)) => Reasons::of([Reason::Request]),
            _ => Reasons::none(),
        }
    }

    pub(super) fn categories(r: &ResourceSpec) -> BTreeSet<String> {
        r.fields.iter().map(|f| f.category.clone()).collect()
    }

    /// The record at `reference` when it is `controller`'s.
    pub(super) async fn get(
        &self,
        reference: &RecordRef,
        controller: &Organisationsnummer,
    ) -> Result<Option<(Value, &ResourceSpec)>, Error> {
        let r = self.resource(&reference.store)?;
        let vars: Vars<'_> = [("key", reference.key.as_str())].into();
        let Some(item) = self.api.call(&r.get, &vars, None, None).await? else {
            return Ok(None);
        };
        Ok(self
            .owned(r, &item, controller)
            .filter(|k| *k == reference.key)
            .map(|_| (item, r)))
    }

    pub(super) async fn locate_all(
        &self,
        controller: &Organisationsnummer,
        identities: Vec<Identity>,
    ) -> Result<Located, Error> {
        let asked: BTreeSet<Identity> = identities.iter().cloned().collect();
        let mut known = asked.clone();
        let mut queue = identities;
        let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut frontier: Vec<(String, String)> = Vec::new();
        let org = controller.as_str().to_owned();
        // Identity expansion inside the system, bounded.
        for _round in 0..4 {
            if queue.is_empty() {
                break;
            }
            let mut next = Vec::new();
            for id in &queue {
                for r in self
                    .manifest
                    .resources
                    .iter()
                    .filter(|r| r.parent.is_none())
                {
                    for f in r.find.iter().filter(|f| f.identity.domain() == id.kind()) {
                        let vars: Vars<'_> =
                            [("value", id.value()), ("controller", org.as_str())].into();
                        for item in self.api.list(&f.call, &r.page, &vars).await? {
                            let Some(key) = self.owned(r, &item, controller) else {
                                continue;
                            };
                            if found.entry(r.name.clone()).or_default().insert(key.clone()) {
                                frontier.push((r.name.clone(), key));
                            }
                            for field in &r.fields {
                                let Some(kind) = field.identity else { continue };
                                let Some(v) = at(&item, &field.path).and_then(as_text) else {
                                    continue;
                                };
                                if let Ok(other) = Identity::parse(kind.domain(), &v)
                                    && known.insert(other.clone())
                                {
                                    next.push(other);
                                }
                            }
                        }
                    }
                }
            }
            queue = next;
        }
        // Each found record's children, down the tree.
        while let Some((store, key)) = frontier.pop() {
            for child in self.manifest.children(&store) {
                let Some(p) = &child.parent else { continue };
                let vars: Vars<'_> = [("parent", key.as_str())].into();
                for item in self.api.list(&p.call, &child.page, &vars).await? {
                    let Some(k) = self.owned(child, &item, controller) else {
                        continue;
                    };
                    if found
                        .entry(child.name.clone())
                        .or_default()
                        .insert(k.clone())
                    {
                        frontier.push((child.name.clone(), k));
                    }
                }
            }
        }
        Ok(Located {
            stores: self
                .manifest
                .resources
                .iter()
                .filter_map(|r| {
                    let keys = found.remove(&r.name)?;
                    Some(LocatedStore {
                        store: r.name.clone(),
                        keys: keys.into_iter().collect(),
                        categories: Self::categories(r),
                    })
                })
                .collect(),
            linked: known.difference(&asked).cloned().collect(),
            linked_searched: queue.is_empty(),
        })
    }

    pub(super) fn record_data(
        &self,
        r: &ResourceSpec,
        reference: RecordRef,
        item: &Value,
        portable_only: bool,
    ) -> Option<RecordData> {
        let portable: BTreeSet<&str> = self
            .manifest
            .categories
            .iter()
            .filter(|c| c.portable)
            .map(|c| c.id.as_str())
            .collect();
        let fields: Vec<FieldValue> = r
            .fields
            .iter()
            .filter(|f| !portable_only || portable.contains(f.category.as_str()))
            .map(|f| FieldValue {
                name: f.name.clone(),
                category: f.category.clone(),
                value: at(item, &f.path).and_then(as_text),
            })
            .collect();
        if fields.is_empty() {
            return None;
        }
        let restriction = Self::reasons(r, item);
        Some(RecordData {
            attestation: None,
            reference,
            fields,
            restricted: !restriction.is_empty(),
            restriction,
            objected: vec![],
            retention_anchor: None,
        })
    }

    pub(super) fn validate(&self, write: &Write) -> Result<(), Error> {
        let mut v = Vec::new();
        let check = |records: &[RecordRef], v: &mut Vec<(String, String)>| {
            for (i, r) in records.iter().enumerate() {
                if self.manifest.resource(&r.store).is_none() {
                    v.push((format!("records[{i}].store"), "unknown store".into()));
                }
                if r.key.is_empty() {
                    v.push((format!("records[{i}].key"), "required".into()));
                }
            }
        };
        match write {
            Write::Erase {
                records, retain, ..
            } => {
                check(records, &mut v);
                for (i, o) in retain.iter().enumerate() {
                    if o.reason == Reason::Request {
                        v.push((
                            format!("retain[{i}].reason"),
                            "RETENTION or HOLD; an Art. 18 restriction is placed with Restrict"
                                .into(),
                        ));
                    }
                }
            }
            Write::Restrict { records, basis, .. } => {
                check(records, &mut v);
                if *basis == Reason::Retention {
                    v.push(("basis".into(), "REQUEST or HOLD".into()));
                }
            }
            Write::Rectify(changes) => {
                for (i, (r, field, _)) in changes.iter().enumerate() {
                    match self.manifest.resource(&r.store) {
                        None => {
                            v.push((format!("changes[{i}].record.store"), "unknown store".into()))
                        }
                        Some(res) if !res.fields.iter().any(|f| f.name == *field) => {
                            v.push((
                                format!("changes[{i}].field"),
                                "not a field of this store".into(),
                            ));
                        }
                        Some(res) if res.rectify.is_none() => {
                            v.push((
                                format!("changes[{i}].record.store"),
                                "this store's records cannot be corrected through the API".into(),
                            ));
                        }
                        Some(_) => {}
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

    pub(super) async fn run(
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
        let applied = self.apply(&instruction.controller, &write).await;
        let (stores, retained, records) = match applied {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(operation = %id, error = e.log_kind(), "write failed");
                self.ops
                    .fail(
                        &id,
                        "the system's API failed; retry with the same idempotency key",
                    )
                    .await?;
                return Err(e);
            }
        };
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
        let signed = self.signer.sign(ProtoReceipts.encode(&receipt));
        Ok(self.ops.succeed(&id, total as u64, signed).await?)
    }

    #[allow(clippy::too_many_lines)]
    pub(super) async fn apply(
        &self,
        controller: &Organisationsnummer,
        write: &Write,
    ) -> Result<(Vec<StoreOutcome>, Vec<Retained>, Vec<RecordOutcome>), Error> {
        let mut stores: BTreeMap<String, StoreOutcome> = BTreeMap::new();
        let mut retained = Vec::new();
        let mut outcomes: BTreeMap<RecordRef, RecordResult> = BTreeMap::new();
        let bump = |stores: &mut BTreeMap<String, StoreOutcome>,
                    r: &ResourceSpec,
                    affected: bool,
                    refused: bool,
                    method: Option<Method>| {
            let s = stores
                .entry(r.name.clone())
                .or_insert_with(|| StoreOutcome {
                    store: r.name.clone(),
                    categories: Self::categories(r),
                    matched: 0,
                    affected: 0,
                    refused: 0,
                    method: None,
                });
            s.matched += 1;
            s.affected += u64::from(affected);
            s.refused += u64::from(refused);
            if method.is_some() {
                s.method = method;
            }
        };
        let order = |records: &[RecordRef]| {
            // Children before their parents.
            let rank: BTreeMap<&str, usize> = self
                .manifest
                .children_first()
                .iter()
                .enumerate()
                .map(|(i, r)| (r.name.as_str(), i))
                .collect();
            let mut v = records.to_vec();
            v.sort_by_key(|r| rank.get(r.store.as_str()).copied().unwrap_or(usize::MAX));
            v
        };
        match write {
            Write::Erase {
                records,
                acceptable,
                retain,
            } => {
                let orders: BTreeMap<&RecordRef, _> =
                    retain.iter().map(|o| (&o.record, o)).collect();
                for reference in order(records) {
                    let Some((item, r)) = self.get(&reference, controller).await? else {
                        outcomes.insert(reference, RecordResult::NotFound);
                        continue;
                    };
                    let reasons = Self::reasons(r, &item);
                    if let Some(reason) = reasons.protecting() {
                        bump(&mut stores, r, false, false, None);
                        retained.push(Retained {
                            reference: reference.clone(),
                            categories: Self::categories(r),
                            legal_ground: if reason == Reason::Hold {
                                HOLD_GROUND
                            } else {
                                REQUEST_GROUND
                            }
                            .to_owned(),
                            until: None,
                            reason,
                        });
                        outcomes.insert(reference, RecordResult::Retained);
                        continue;
                    }
                    if let Some(o) = orders.get(&reference) {
                        if let Some(call) = &r.restrict {
                            let vars: Vars<'_> = [
                                ("key", reference.key.as_str()),
                                ("basis", o.reason.as_str()),
                                ("reason", o.ground.as_str()),
                            ]
                            .into();
                            self.api.call(call, &vars, None, None).await?;
                        }
                        bump(&mut stores, r, false, false, None);
                        retained.push(Retained {
                            reference: reference.clone(),
                            categories: Self::categories(r),
                            legal_ground: o.ground.clone(),
                            until: o.until,
                            reason: o.reason,
                        });
                        outcomes.insert(reference, RecordResult::Retained);
                        continue;
                    }
                    let (Some(call), true) = (&r.erase, acceptable.contains(&Method::Delete))
                    else {
                        bump(&mut stores, r, false, true, None);
                        outcomes.insert(reference, RecordResult::Refused);
                        continue;
                    };
                    let vars: Vars<'_> =
                        [("key", reference.key.as_str()), ("reason", "erasure")].into();
                    match self.api.call(call, &vars, None, None).await? {
                        Some(_) => {
                            bump(&mut stores, r, true, false, Some(Method::Delete));
                            outcomes.insert(reference, RecordResult::Erased(Method::Delete));
                        }
                        None => {
                            outcomes.insert(reference, RecordResult::NotFound);
                        }
                    }
                }
            }
            Write::Restrict {
                records,
                lift,
                basis,
            } => {
                for reference in records {
                    let Some((_, r)) = self.get(reference, controller).await? else {
                        outcomes.insert(reference.clone(), RecordResult::NotFound);
                        continue;
                    };
                    let call = if *lift { &r.lift } else { &r.restrict };
                    let Some(call) = call else {
                        bump(&mut stores, r, false, false, None);
                        outcomes.insert(reference.clone(), RecordResult::Unchanged);
                        continue;
                    };
                    let vars: Vars<'_> = [
                        ("key", reference.key.as_str()),
                        ("basis", basis.as_str()),
                        ("reason", if *lift { "lifted" } else { "restricted" }),
                    ]
                    .into();
                    let done = self.api.call(call, &vars, None, None).await?;
                    bump(&mut stores, r, done.is_some(), false, None);
                    outcomes.insert(
                        reference.clone(),
                        if done.is_some() {
                            RecordResult::Applied
                        } else {
                            RecordResult::NotFound
                        },
                    );
                }
            }
            Write::Rectify(changes) => {
                let mut by_record: BTreeMap<&RecordRef, Vec<(&str, &str)>> = BTreeMap::new();
                for (r, field, value) in changes {
                    by_record.entry(r).or_default().push((field, value));
                }
                for (reference, fields) in by_record {
                    let Some((_, r)) = self.get(reference, controller).await? else {
                        outcomes.insert(reference.clone(), RecordResult::NotFound);
                        continue;
                    };
                    let mut body = serde_json::Map::new();
                    for (name, value) in fields {
                        if let Some(f) = r.fields.iter().find(|f| f.name == name) {
                            set_at(&mut body, &f.path, Value::String(value.to_owned()));
                        }
                    }
                    let Some(call) = &r.rectify else {
                        outcomes.insert(reference.clone(), RecordResult::Refused);
                        continue;
                    };
                    let vars: Vars<'_> = [("key", reference.key.as_str())].into();
                    let done = self
                        .api
                        .call(call, &vars, None, Some(Value::Object(body)))
                        .await?;
                    bump(&mut stores, r, done.is_some(), false, None);
                    outcomes.insert(
                        reference.clone(),
                        if done.is_some() {
                            RecordResult::Applied
                        } else {
                            RecordResult::NotFound
                        },
                    );
                }
            }
            Write::Object { .. } => return Err(Error::Unsupported("objection")),
        }
        let records_asked: Vec<RecordRef> = match write {
            Write::Erase { records, .. }
            | Write::Restrict { records, .. }
            | Write::Object { records, .. } => records.clone(),
            Write::Rectify(changes) => {
                let mut seen = BTreeSet::new();
                changes
                    .iter()
                    .filter(|(r, _, _)| seen.insert(r.clone()))
                    .map(|(r, _, _)| r.clone())
                    .collect()
            }
        };
        let records = records_asked
            .into_iter()
            .map(|reference| RecordOutcome {
                result: outcomes
                    .get(&reference)
                    .copied()
                    .unwrap_or(RecordResult::NotFound),
                reference,
            })
            .collect();
        Ok((stores.into_values().collect(), retained, records))
    }
}
