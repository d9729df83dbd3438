//! Objections kept: the suppression list applied to rows that arrive later
//! (the background job).

use super::*;

impl SqlSystem {
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

    pub(super) async fn add_objections<C: ConnectionTrait>(
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
