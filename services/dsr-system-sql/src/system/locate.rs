//! Locate and access: which records of a person each table holds, and
//! their fields, read in chunks of keys.

use super::*;
use crate::manifest::ColumnSpec;
use sea_orm::sea_query::{Condition, UnionType};

/// Values bound in one statement reading a parent's child tables at most:
/// a manifest with many child tables splits them over several statements,
/// within every database's limit on bound parameters.
const UNION_VALUES: usize = 4 * CHUNK;

impl SqlSystem {
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
        // PostgreSQL and MySQL merge the indexes of a table's identity
        // columns for an OR of them. SQLite without statistics reads such an
        // OR through the controller's index, every row of the controller's:
        // there, one statement a column.
        let merge = self.db.get_database_backend() != sea_orm::DbBackend::Sqlite;
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
                // One statement a table for every identity column the batch
                // has values for (`email = … OR phone = …`), as many values
                // as a chunk holds (see `merge`).
                let mut groups: Vec<Vec<(&str, Vec<&str>)>> = Vec::new();
                let mut in_group = 0;
                for id_col in &t.identities {
                    let values: Vec<&str> = batch
                        .iter()
                        .filter(|i| i.kind() == id_col.kind.domain())
                        .map(Identity::value)
                        .collect();
                    for chunk in values.chunks(CHUNK) {
                        if groups.is_empty() || !merge || in_group + chunk.len() > CHUNK {
                            groups.push(Vec::new());
                            in_group = 0;
                        }
                        in_group += chunk.len();
                        if let Some(g) = groups.last_mut() {
                            g.push((id_col.column.as_str(), chunk.to_vec()));
                        }
                    }
                }
                for group in groups {
                    let mut sel = Query::select();
                    sel.expr(text_col(self.text, &t.primary_key.column))
                        .from(Alias::new(&t.name));
                    for c in &t.identities {
                        sel.expr(text_col(self.text, &c.column));
                    }
                    let mut any = Condition::any();
                    for (column, chunk) in group {
                        let col = Expr::col(Alias::new(column));
                        any = any.add(if let [one] = chunk.as_slice() {
                            col.eq(*one)
                        } else {
                            col.is_in(chunk)
                        });
                    }
                    let mut cond = Condition::all().add(any);
                    if let Some(scope) = self.scope(t, controller) {
                        cond = cond.add(scope);
                    }
                    sel.cond_where(cond);
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
        // Records linked to those found, down every parent reference.
        let mut frontier: Vec<(String, Vec<String>)> = found
            .iter()
            .map(|(t, k)| (t.clone(), k.iter().cloned().collect()))
            .collect();
        while let Some((parent_name, keys)) = frontier.pop() {
            let Some(parent) = self.manifest.table(&parent_name) else {
                continue;
            };
            let children: Vec<(&TableSpec, &str)> = self
                .manifest
                .children(&parent_name)
                .filter_map(|c| Some((c, c.parent.as_ref()?.column.as_str())))
                .collect();
            if children.is_empty() {
                continue;
            }
            let mut new_keys: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for chunk in keys.chunks(CHUNK) {
                let values: Vec<Value> = chunk
                    .iter()
                    .filter_map(|k| self.key_value(parent, k))
                    .collect();
                // The parent's child tables in one statement (as many as
                // keep its bound values within UNION_VALUES): each part's
                // rows tagged with its table's place in the list.
                let per_statement = (UNION_VALUES / values.len().max(1)).max(1);
                let numbered: Vec<(usize, &(&TableSpec, &str))> =
                    children.iter().enumerate().collect();
                let mut rows = Vec::new();
                for part in numbered.chunks(per_statement) {
                    let mut union: Option<SelectStatement> = None;
                    for (n, (child, column)) in part {
                        let mut sel = Query::select();
                        sel.expr(text_col(self.text, &child.primary_key.column))
                            .expr(Expr::val(i64::try_from(*n).unwrap_or(i64::MAX)))
                            .from(Alias::new(&child.name))
                            .and_where(Expr::col(Alias::new(*column)).is_in(values.clone()));
                        match union.as_mut() {
                            None => union = Some(sel),
                            Some(u) => {
                                u.union(UnionType::All, sel);
                            }
                        }
                    }
                    if let Some(union) = union {
                        rows.extend(self.query(&self.db, &union).await?);
                    }
                }
                for row in rows {
                    let n: i64 = row.try_get_by_index(1)?;
                    let Some((child, _)) = usize::try_from(n).ok().and_then(|n| children.get(n))
                    else {
                        continue;
                    };
                    if let Some(key) = get_text(&row, 0)?
                        && found
                            .entry(child.name.clone())
                            .or_default()
                            .insert(key.clone())
                    {
                        new_keys.entry(child.name.as_str()).or_default().push(key);
                    }
                }
            }
            for (child, keys) in new_keys {
                frontier.push((child.to_owned(), keys));
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
    /// A batch reads its keys from every table it covers in one statement
    /// (one `SELECT` a table, in a `UNION ALL`): a person's few records in
    /// a handful of tables cost one round trip, not one a table.
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
        let batch = batch.clamp(1, CHUNK);
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            let mut by_table: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in refs {
                by_table.entry(r.store).or_default().push(r.key);
            }
            // Each table's keys in chunks of `batch`, then as many chunks in
            // one statement as keep it to `batch` keys.
            let mut group: Vec<(&TableSpec, &[String])> = Vec::new();
            let mut in_group = 0;
            let mut groups = Vec::new();
            for (store, keys) in &by_table {
                let Some(t) = this.manifest.table(store) else {
                    continue;
                };
                for chunk in keys.chunks(batch) {
                    if in_group + chunk.len() > batch && !group.is_empty() {
                        groups.push(std::mem::take(&mut group));
                        in_group = 0;
                    }
                    group.push((t, chunk));
                    in_group += chunk.len();
                }
            }
            if !group.is_empty() {
                groups.push(group);
            }
            for group in groups {
                let res = this.read_group(&group, &controller, portable_only).await;
                let stop = res.is_err();
                if tx.send(res.map_err(Error::from)).await.is_err() || stop {
                    return;
                }
            }
        }));
        Ok(rx)
    }

    /// The columns of `t` an access reads: every one, or only those of
    /// portable categories.
    fn access_columns<'t>(&self, t: &'t TableSpec, portable_only: bool) -> Vec<&'t ColumnSpec> {
        t.columns
            .iter()
            .filter(|c| {
                !portable_only
                    || self
                        .manifest
                        .categories
                        .iter()
                        .any(|k| k.portable && k.id == c.category)
            })
            .collect()
    }

    /// The records with `keys` of each table in `group`, `controller`'s
    /// only, in one statement: each table's part tagged with its place in
    /// `group` and padded with NULLs to the widest part's columns.
    async fn read_group(
        &self,
        group: &[(&TableSpec, &[String])],
        controller: &Organisationsnummer,
        portable_only: bool,
    ) -> Result<Vec<RecordData>, DbErr> {
        let columns: Vec<Vec<&ColumnSpec>> = group
            .iter()
            .map(|(t, _)| self.access_columns(t, portable_only))
            .collect();
        let width = columns.iter().map(Vec::len).max().unwrap_or(0);
        let null = || Expr::cust("NULL").cast_as(Alias::new(self.text.0));
        let mut union: Option<SelectStatement> = None;
        for (n, ((t, keys), cols)) in group.iter().zip(&columns).enumerate() {
            let mut sel = Query::select();
            sel.expr(Expr::val(i64::try_from(n).unwrap_or(i64::MAX)))
                .from(Alias::new(&t.name));
            sel.expr(text_col(self.text, &t.primary_key.column));
            sel.expr(text_col(self.text, &t.restriction_column));
            sel.expr(text_col(self.text, &t.restriction_reasons_column));
            sel.expr(
                t.objection_column
                    .as_deref()
                    .map_or_else(null, |c| text_col(self.text, c)),
            );
            let anchor = t
                .retain
                .as_ref()
                .map(|r| r.anchor_column.as_str())
                .or(t.retention.as_ref().map(|r| r.anchor_column.as_str()));
            sel.expr(anchor.map_or_else(null, |c| text_col(self.text, c)));
            for c in cols {
                sel.expr(text_col(self.text, &c.name));
            }
            for _ in cols.len()..width {
                sel.expr(null());
            }
            let values: Vec<Value> = keys.iter().filter_map(|k| self.key_value(t, k)).collect();
            sel.and_where(Expr::col(Alias::new(&t.primary_key.column)).is_in(values));
            if let Some(scope) = self.scope(t, controller) {
                sel.and_where(scope);
            }
            match union.as_mut() {
                None => union = Some(sel),
                Some(u) => {
                    u.union(UnionType::All, sel);
                }
            }
        }
        let Some(union) = union else {
            return Ok(Vec::new());
        };
        let rows = self.query(&self.db, &union).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let n: i64 = row.try_get_by_index(0)?;
            let Some(((t, _), cols)) = usize::try_from(n)
                .ok()
                .and_then(|n| Some((group.get(n)?, columns.get(n)?)))
            else {
                continue;
            };
            let key = get_text(&row, 1)?.unwrap_or_default();
            let restricted = get_text(&row, 2)?.is_some();
            let restriction = reasons_of(restricted, get_text(&row, 3)?.as_deref());
            let objected = get_text(&row, 4)?
                .map(|s| {
                    s.split(',')
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let retention_anchor = get_text(&row, 5)?.and_then(|a| {
                NaiveDate::parse_from_str(a.get(..10).unwrap_or(&a), "%Y-%m-%d").ok()
            });
            let mut fields = Vec::with_capacity(cols.len());
            for (i, c) in cols.iter().enumerate() {
                fields.push(FieldValue {
                    name: c.name.clone(),
                    category: c.category.clone(),
                    value: get_text(&row, i + 6)?,
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
}
