//! The retention sweep: rows whose retention ended, per controller, in
//! batches, each batch receipted.

use super::*;

impl SqlSystem {
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

    pub(super) async fn run_sweep(
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

    /// The rows a sweep for `controller` may remove: the controller's, and
    /// rows whose parent is gone (their retention rule still applies, and no
    /// controller's scope would otherwise reach them); a restricted row only
    /// when it is restricted for retention alone (kept over an erasure
    /// until its date, which the sweep's rule checks), never one under an
    /// Art. 18 request or a legal hold.
    pub(super) fn sweep_scope(
        &self,
        t: &TableSpec,
        controller: &Organisationsnummer,
    ) -> Option<Expr> {
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
}
