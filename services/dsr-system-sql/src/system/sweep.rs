//! The retention sweep: rows whose retention ended, per controller, in
//! batches, each batch receipted.

use super::*;

impl SqlSystem {
    /// Starts a retention sweep in the background and returns its operation:
    /// every table with a retention rule, in keyset-paged batches of about
    /// `batch` rows to remove from a table, one transaction per batch. A dry
    /// run counts and changes nothing.
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

    /// The sweep for `controller`. Tables under a table naming the controller
    /// (the controller's *own* table: a contact's KYC documents, events and
    /// surveys under its contact) are swept together with it, in pages of the
    /// controller's own rows in key order, each as many as should hold about
    /// `batch` rows to remove from a table ([`next_page`]): each page
    /// removes, in one transaction, the expired rows that belong to those
    /// rows, children first, then the expired ones among them. In one pass
    /// each row of a table is read by one page: a page reads the rows in its
    /// key range (on a child, of its link), every controller's, each checked
    /// against the page's rows (a walk of a child table by its own key would
    /// look up the parent of each row it passes). Rows that reach no
    /// controller's row any more ([`Self::orphaned`]), and tables no
    /// controller names, are walked by their own key. A row that stays below
    /// one that goes is detached from it first ([`Self::delete_detaching`]).
    pub(super) async fn run_sweep(
        &self,
        id: &str,
        controller: &Organisationsnummer,
        dry_run: bool,
        batch: usize,
        now: DateTime<Utc>,
    ) -> Result<(Vec<StoreOutcome>, u64), Error> {
        let order = self.manifest.children_first();
        let mut tally: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        let mut sweep = Pass {
            controller,
            dry_run,
            batch,
            now,
            done: 0,
            progress: Throttle::default(),
            id,
        };
        // Rows that reach no controller's row, and tables whose rows no
        // controller names (one controller's system): by their own key.
        for t in order.iter().filter(|t| t.retention.is_some()) {
            let scope = match self.own_table(t) {
                Some(root) if root.name == t.name => continue,
                Some(_) => self.orphaned(t),
                None => None,
            };
            let (m, a) = self.sweep_by_key(t, scope, &mut sweep).await?;
            let e = tally.entry(t.name.as_str()).or_default();
            e.0 += m;
            e.1 += a;
        }
        // The controller's own tables, each with the tables under it.
        let mut roots: Vec<&TableSpec> = Vec::new();
        for t in order.iter().filter(|t| t.retention.is_some()) {
            if let Some(root) = self.own_table(t)
                && !roots.iter().any(|r| r.name == root.name)
            {
                roots.push(root);
            }
        }
        roots.sort_by_key(|r| order.iter().position(|t| t.name == r.name));
        for root in roots {
            let group: Vec<&TableSpec> = order
                .iter()
                .copied()
                .filter(|t| {
                    t.retention.is_some() && self.own_table(t).is_some_and(|r| r.name == root.name)
                })
                .collect();
            for (name, (m, a)) in self.sweep_under(root, &group, &mut sweep).await? {
                let e = tally.entry(name).or_default();
                e.0 += m;
                e.1 += a;
            }
        }
        let stores = order
            .iter()
            .filter(|t| t.retention.is_some())
            .map(|t| {
                let (matched, affected) = tally.get(t.name.as_str()).copied().unwrap_or_default();
                StoreOutcome {
                    store: t.name.clone(),
                    categories: t.categories().into_iter().map(str::to_owned).collect(),
                    matched,
                    affected,
                    refused: 0,
                    method: (!dry_run).then_some(Self::sweep_method(t)),
                }
            })
            .collect();
        self.ops.progress(id, sweep.done).await?;
        Ok((stores, sweep.done))
    }

    fn sweep_method(t: &TableSpec) -> Method {
        match t.erasure {
            ErasureAction::Nullify => Method::Nullify,
            ErasureAction::Anonymise => Method::Anonymise,
            ErasureAction::Delete | ErasureAction::Retain => Method::Delete,
        }
    }

    /// The table naming the controller that `t`'s rows belong to: `t`
    /// itself, or the nearest parent that names it; none on a system whose
    /// rows name no controller.
    fn own_table<'m>(&'m self, t: &'m TableSpec) -> Option<&'m TableSpec> {
        let mut cur = t;
        for _ in 0..=self.manifest.tables.len() {
            if cur.controller_column.is_some() {
                return Some(cur);
            }
            cur = self.manifest.table(&cur.parent.as_ref()?.table)?;
        }
        None
    }

    /// `t`'s rows whose retention ended and that may go
    /// ([`Self::unprotected`]), whoever's they are.
    fn expired(&self, t: &TableSpec, now: DateTime<Utc>) -> sea_orm::sea_query::Condition {
        let mut c = sea_orm::sea_query::Condition::all();
        if let Some(rule) = &t.retention {
            let cutoff = now
                .date_naive()
                .checked_sub_months(Months::new(rule.months))
                .unwrap_or(NaiveDate::MIN);
            c = c
                .add(Expr::col(Alias::new(&rule.anchor_column)).is_not_null())
                .add(Expr::col(Alias::new(&rule.anchor_column)).lt(cutoff));
        }
        c.add(Self::unprotected(t))
    }

    /// Rows not restricted, or restricted for retention alone (kept over an
    /// erasure until their date, which the sweep's rule checks); never one
    /// under an Art. 18 request or a legal hold.
    fn unprotected(t: &TableSpec) -> Expr {
        Expr::col(Alias::new(&t.restriction_column))
            .is_null()
            .or(Expr::col(Alias::new(&t.restriction_reasons_column)).eq(Reasons::retention_only()))
    }

    /// `t`'s rows in `scope` whose retention ended, walked in keyset pages
    /// of `batch` by `t`'s key, one transaction a page; (matched, affected).
    async fn sweep_by_key(
        &self,
        t: &TableSpec,
        scope: Option<Expr>,
        pass: &mut Pass<'_>,
    ) -> Result<(u64, u64), Error> {
        let method = Self::sweep_method(t);
        let now = pass.now;
        let cond = || {
            let c = self.expired(t, now);
            match &scope {
                Some(s) => c.add(s.clone()),
                None => c,
            }
        };
        let (mut matched, mut affected) = (0u64, 0u64);
        // Keyset pages in key order: each row is read once, whatever the
        // rows deleted before (a page restarting from the top would read
        // those again every batch, quadratic in the table's size).
        let mut last: Option<Value> = None;
        loop {
            let mut sel = Query::select();
            sel.expr(text_col(self.text, &t.primary_key.column))
                .from(Alias::new(&t.name))
                .cond_where(cond())
                // Qualified: the select list's `CAST(pk AS text)` is named
                // like the key, and PostgreSQL would order by that text (so
                // "1000" < "999") and the keyset skip rows.
                .order_by(
                    (Alias::new(&t.name), Alias::new(&t.primary_key.column)),
                    sea_orm::sea_query::Order::Asc,
                )
                .limit(pass.batch as u64);
            if let Some(v) = last.clone() {
                sel.and_where(
                    Expr::col((Alias::new(&t.name), Alias::new(&t.primary_key.column))).gt(v),
                );
            }
            let txn = self.sweep_txn().await?;
            let keys = self.keys(&txn, &sel).await?;
            let Some(last_key) = keys.last() else {
                txn.commit().await?;
                break;
            };
            last = self.key_value(t, last_key);
            matched += keys.len() as u64;
            if !pass.dry_run && method == Method::Delete {
                // The rule is checked again, so a row restricted since the
                // page was read stays.
                let these =
                    Expr::col(Alias::new(&t.primary_key.column)).is_in(self.values(t, &keys));
                affected += self
                    .delete_detaching(&txn, t, cond().add(these), None)
                    .await?;
            } else if !pass.dry_run {
                affected += self.erase_rows(&txn, t, &keys, method).await?;
            }
            txn.commit().await?;
            pass.advance(&self.ops, keys.len() as u64).await?;
            if keys.len() < pass.batch {
                break;
            }
        }
        Ok((matched, affected))
    }

    /// The controller's rows of `root` in keyset pages (the first of `batch`
    /// rows, the next sized by [`next_page`]), and with each page the
    /// expired rows of `group` (the tables under `root`, children first,
    /// then `root` itself) that belong to the page's rows; (matched,
    /// affected) per table.
    async fn sweep_under<'t>(
        &self,
        root: &TableSpec,
        group: &[&'t TableSpec],
        pass: &mut Pass<'_>,
    ) -> Result<BTreeMap<&'t str, (u64, u64)>, Error> {
        let mut out: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        let Some(ctl) = &root.controller_column else {
            return Ok(out);
        };
        let pk =
            |t: &TableSpec| Expr::col((Alias::new(&t.name), Alias::new(&t.primary_key.column)));
        let mut last: Option<Value> = None;
        let mut size = pass.batch;
        loop {
            // The page: how many of the controller's next rows, and the last
            // key among them (the keys themselves stay in the database).
            let mut page = Query::select();
            page.expr_as(pk(root), Alias::new("k"))
                .from(Alias::new(&root.name))
                .and_where(Expr::col(Alias::new(ctl)).eq(pass.controller.as_str()))
                .order_by(
                    (Alias::new(&root.name), Alias::new(&root.primary_key.column)),
                    sea_orm::sea_query::Order::Asc,
                )
                .limit(size as u64);
            if let Some(v) = last.clone() {
                page.and_where(pk(root).gt(v));
            }
            let mut sel = Query::select();
            sel.expr(Expr::col(sea_orm::sea_query::Asterisk).count())
                .expr(
                    Expr::col((Alias::new("page"), Alias::new("k")))
                        .max()
                        .cast_as(Alias::new(self.text.0)),
                )
                .from_subquery(page, Alias::new("page"));
            let txn = self.sweep_txn().await?;
            let row = self.query(&txn, &sel).await?;
            let n = first_count(&row)?;
            let Some(last_key) = row.first().and_then(|r| get_text(r, 1).ok().flatten()) else {
                txn.commit().await?;
                break;
            };
            let upper = self.key_value(root, &last_key);
            let range = upper.clone().map(|upto| KeyRange {
                after: last.clone(),
                upto,
            });
            // The page's rows of `t`: the root's keys in (last, upper], or
            // the children of such rows, level by level.
            let in_page = |t: &TableSpec| -> Option<Expr> {
                let mut chain = vec![t];
                while chain.last()?.name != root.name {
                    let p = chain.last()?.parent.as_ref()?;
                    chain.push(self.manifest.table(&p.table)?);
                }
                let range = range.as_ref()?;
                // From the root down: each level's rows whose parent is
                // among the level above's.
                let mut cond = Expr::col(Alias::new(ctl))
                    .eq(pass.controller.as_str())
                    .and(range.on(pk(root)));
                for w in chain.windows(2).rev() {
                    let (child, parent) = (w[0], w[1]);
                    let link = Expr::col((
                        Alias::new(&child.name),
                        Alias::new(&child.parent.as_ref()?.column),
                    ));
                    let mut level = link.clone().in_subquery(keys_where(parent, cond));
                    if parent.name == root.name {
                        level = level.and(range.on(link));
                    }
                    cond = level;
                }
                Some(cond)
            };
            let (mut rows, mut most) = (0u64, 0u64);
            for t in group {
                let Some(scope) = in_page(t) else { continue };
                let cond = self.expired(t, pass.now).add(scope);
                let method = Self::sweep_method(t);
                let (m, a) = if pass.dry_run {
                    let mut count = Query::select();
                    count
                        .expr(Expr::col(sea_orm::sea_query::Asterisk).count())
                        .from(Alias::new(&t.name))
                        .cond_where(cond);
                    let n = first_count(&self.query(&txn, &count).await?)?;
                    (n.unsigned_abs(), 0)
                } else if method == Method::Delete {
                    // The rule and the restriction are checked in the
                    // delete, so a row restricted meanwhile stays. The rows
                    // below that stay are detached first (below the root's:
                    // in the page's key range).
                    let within = range.as_ref().filter(|_| t.name == root.name);
                    let n = self.delete_detaching(&txn, t, cond, within).await?;
                    (n, n)
                } else {
                    let mut sel = Query::select();
                    sel.expr(text_col(self.text, &t.primary_key.column))
                        .from(Alias::new(&t.name))
                        .cond_where(cond);
                    let keys = self.keys(&txn, &sel).await?;
                    let a = self.erase_rows(&txn, t, &keys, method).await?;
                    (keys.len() as u64, a)
                };
                let e = out.entry(t.name.as_str()).or_default();
                e.0 += m;
                e.1 += a;
                rows += m;
                most = Ord::max(most, m);
            }
            txn.commit().await?;
            pass.advance(&self.ops, rows).await?;
            last = upper;
            if n < size as i64 {
                break;
            }
            size = next_page(size, pass.batch, most);
        }
        Ok(out)
    }

    /// The keys `sel` reads (its first column, as text).
    async fn keys<C: ConnectionTrait>(
        &self,
        conn: &C,
        sel: &SelectStatement,
    ) -> Result<Vec<String>, DbErr> {
        Ok(self
            .query(conn, sel)
            .await?
            .iter()
            .filter_map(|r| get_text(r, 0).ok().flatten())
            .collect())
    }

    /// A page's transaction. On PostgreSQL without JIT (a page is a short
    /// query, but its estimated cost, a whole table before LIMIT, can pass
    /// the JIT thresholds, and compiling it took longer than running it),
    /// and with nested loops only: a page's rows below the controller's are
    /// found by the page's key range (one range of an index), where the
    /// planner, not knowing the page's bounds when it plans the prepared
    /// statement once for all pages, read a whole child table into a hash
    /// at every page. With those joins ruled out, each statement is planned
    /// once for every page (a generic plan) instead of again at each page's
    /// values, which took about as long as running it.
    async fn sweep_txn(&self) -> Result<sea_orm::DatabaseTransaction, DbErr> {
        let txn = self.db.begin().await?;
        if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
            txn.execute_unprepared(
                "SET LOCAL jit = off; SET LOCAL enable_hashjoin = off; \
                 SET LOCAL enable_mergejoin = off; SET LOCAL plan_cache_mode = force_generic_plan",
            )
            .await?;
        }
        Ok(txn)
    }
}

/// How many of the controller's rows the next page of [`SqlSystem::sweep_under`]
/// takes, after a page of `size` of them found at most `found` rows to
/// remove in one table: as many as should hold about `batch` in a table
/// (a statement's work is in the rows it removes, each locked, logged and
/// its keys checked, more than in the rows it reads), judging by the page
/// just done. At most twice or half the last page, and from a sixteenth of
/// `batch` (rows with many expired rows below them) to sixteen times it (a
/// sweep that finds little: the daily one, after the first).
fn next_page(size: usize, batch: usize, found: u64) -> usize {
    let want = match usize::try_from(found) {
        Ok(0) => size.saturating_mul(2),
        Ok(found) => size.saturating_mul(batch) / found,
        Err(_) => size / 2,
    };
    want.clamp(size / 2, size.saturating_mul(2))
        .clamp((batch / 16).max(1), batch.saturating_mul(16))
}

/// A sweep's run: what it was asked and how far it got.
struct Pass<'a> {
    id: &'a str,
    controller: &'a Organisationsnummer,
    dry_run: bool,
    batch: usize,
    now: DateTime<Utc>,
    done: u64,
    progress: Throttle,
}

impl Pass<'_> {
    async fn advance(&mut self, ops: &Operations, rows: u64) -> Result<(), Error> {
        self.done += rows;
        self.progress.report(ops, self.id, self.done).await
    }
}

/// A page's keys of the root table: after `after` (from the start when
/// none), up to `upto` included.
pub(super) struct KeyRange {
    after: Option<Value>,
    upto: Value,
}

impl KeyRange {
    /// The range on `col`: the root's key, or a child's column naming it.
    /// On a child it repeats what its parent's subquery already says, and
    /// lets the database read the children of the page's range in one range
    /// of the link's index instead of looking up the children of each of
    /// the page's rows.
    pub(super) fn on(&self, col: Expr) -> Expr {
        let below = col.clone().lte(self.upto.clone());
        match &self.after {
            Some(v) => col.gt(v.clone()).and(below),
            None => below,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_page;

    #[test]
    fn a_page_grows_where_little_is_found_and_shrinks_where_much_is() {
        // A page of 1 000 that found at most 500 rows in a table: the next
        // takes twice as many.
        assert_eq!(next_page(1_000, 1_000, 500), 2_000);
        // At most 700: about as many as should hold 1 000.
        assert_eq!(next_page(1_000, 1_000, 700), 1_428);
        // Found nothing: twice as many, up to sixteen times the batch.
        assert_eq!(next_page(1_000, 1_000, 0), 2_000);
        assert_eq!(next_page(12_000, 1_000, 0), 16_000);
        assert_eq!(next_page(16_000, 1_000, 0), 16_000);
        // Found as many as wanted: the same size.
        assert_eq!(next_page(3_000, 1_000, 1_000), 3_000);
        // Found four times too many: half (at most), down to a sixteenth.
        assert_eq!(next_page(1_000, 1_000, 4_000), 500);
        assert_eq!(next_page(70, 1_000, 100_000), 62);
        // A batch of one stays at least one.
        assert_eq!(next_page(1, 1, 50), 1);
    }
}
