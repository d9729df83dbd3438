//! The writes (erase, anonymise, rectify, restrict, lift, object): checked,
//! claimed in the operations ledger, applied in one transaction, receipted.

use super::*;

impl SqlSystem {
    pub(super) fn validate_write(&self, write: &Write) -> Result<(), Error> {
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

    pub(super) async fn run_write(
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
    pub(super) async fn apply(
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

    pub(super) fn outcome(&self, t: &TableSpec, matched: usize, affected: u64) -> StoreOutcome {
        StoreOutcome {
            store: t.name.clone(),
            categories: t.categories().into_iter().map(str::to_owned).collect(),
            matched: matched as u64,
            affected,
            refused: 0,
            method: None,
        }
    }

    pub(super) fn values(&self, t: &TableSpec, keys: &[String]) -> Vec<Value> {
        keys.iter().filter_map(|k| self.key_value(t, k)).collect()
    }

    /// The keys among `keys` that exist and belong to `controller`.
    pub(super) async fn matched<C: ConnectionTrait>(
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

    pub(super) async fn anchor_until<C: ConnectionTrait>(
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

    /// The keys among `keys` that exist for `controller` (or that reach no
    /// controller's row any more, [`Self::orphaned`]: a record retained over
    /// an erasure outlives its parent, and its deferred erasure must still
    /// reach it), each with why it is restricted.
    pub(super) async fn restriction_of<C: ConnectionTrait>(
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
                let scope = match self.orphaned(t) {
                    Some(o) => scope.or(o),
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
    pub(super) async fn change_restriction<C: ConnectionTrait>(
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

    pub(super) async fn erase_rows<C: ConnectionTrait>(
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
                    let these = sea_orm::sea_query::Condition::all().add(cond);
                    affected += self.delete_detaching(conn, t, these, None).await?;
                    continue;
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
    pub(super) async fn identities_of<C: ConnectionTrait>(
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
    pub(super) fn row_identities(
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
}
