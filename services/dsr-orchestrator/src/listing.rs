//! Listing requests (filters, keyset pages) and counting them for metrics.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use dsr_domain::identity::Organisationsnummer;
use dsr_domain::request::{Kind, State};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, Func},
};

use crate::entity::request as req;
use crate::ledger::{Error, Ledger, Request};

const FINAL: [&str; 4] = [
    "completed",
    "completed_with_retained",
    "rejected",
    "cancelled",
];

/// Filters of a listing; they combine with AND.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only in this state.
    pub state: Option<State>,
    /// Only of this kind.
    pub kind: Option<Kind>,
    /// Only for this controller.
    pub controller: Option<Organisationsnummer>,
    /// Only open requests past their deadline on `today`.
    pub overdue_on: Option<NaiveDate>,
    /// Only open requests due on or before this date.
    pub due_by: Option<NaiveDate>,
    /// Only those this caller submitted (a portal's view).
    pub submitted_by: Option<String>,
}

/// One page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The requests, newest first.
    pub requests: Vec<Request>,
    /// Where the next page starts, if there is one.
    pub next: Option<String>,
}

/// The counts the gauges show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// By (kind, state).
    pub by_kind_state: BTreeMap<(String, String), u64>,
    /// Open and past their deadline.
    pub overdue: u64,
    /// Open and due within 7 days.
    pub due_soon: u64,
}

/// A page token that does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid page token")]
pub struct BadToken;

/// The token of the page that starts after `r`.
pub fn token_after(r: &Request) -> String {
    encode_token(r.submitted_at, &r.id)
}

fn encode_token(at: DateTime<Utc>, id: &str) -> String {
    hex::encode(format!("{}|{id}", at.timestamp_nanos_opt().unwrap_or(0)))
}

fn decode_token(t: &str) -> Result<(DateTime<Utc>, String), BadToken> {
    let raw = String::from_utf8(hex::decode(t).map_err(|_| BadToken)?).map_err(|_| BadToken)?;
    let (nanos, id) = raw.split_once('|').ok_or(BadToken)?;
    let nanos: i64 = nanos.parse().map_err(|_| BadToken)?;
    Ok((DateTime::from_timestamp_nanos(nanos), id.to_owned()))
}

impl Ledger {
    /// A page of requests matching `filter`, newest first.
    pub async fn list(
        &self,
        filter: &Filter,
        page_size: u64,
        token: Option<&str>,
    ) -> Result<Result<Page, BadToken>, Error> {
        let mut q = req::Entity::find();
        if let Some(by) = &filter.submitted_by {
            q = q.filter(req::Column::SubmittedBy.eq(by.as_str()));
        }
        if let Some(s) = filter.state {
            q = q.filter(req::Column::State.eq(s.as_str()));
        }
        if let Some(k) = filter.kind {
            q = q.filter(req::Column::Kind.eq(k.as_str()));
        }
        if let Some(c) = &filter.controller {
            q = q.filter(req::Column::Controller.eq(c.as_str()));
        }
        if let Some(today) = filter.overdue_on {
            q = q
                .filter(req::Column::Due.lt(today))
                .filter(req::Column::State.is_not_in(FINAL));
        }
        if let Some(by) = filter.due_by {
            q = q
                .filter(req::Column::Due.lte(by))
                .filter(req::Column::State.is_not_in(FINAL));
        }
        if let Some(t) = token {
            let Ok((at, id)) = decode_token(t) else {
                return Ok(Err(BadToken));
            };
            q = q.filter(
                Condition::any().add(req::Column::SubmittedAt.lt(at)).add(
                    Condition::all()
                        .add(req::Column::SubmittedAt.eq(at))
                        .add(req::Column::Id.lt(id)),
                ),
            );
        }
        let rows = q
            .order_by_desc(req::Column::SubmittedAt)
            .order_by_desc(req::Column::Id)
            .limit(page_size + 1)
            .all(self.reads())
            .await?;
        let more = rows.len() as u64 > page_size;
        let mut requests = Vec::with_capacity(rows.len());
        for m in rows
            .into_iter()
            .take(usize::try_from(page_size).unwrap_or(usize::MAX))
        {
            requests.push(self.request_from_row(m)?);
        }
        let next = more
            .then(|| requests.last().map(|r| encode_token(r.submitted_at, &r.id)))
            .flatten();
        Ok(Ok(Page { requests, next }))
    }

    /// Requests changed at or after `since` (id and when), oldest change
    /// first, at most `limit`; with no `since`, only the latest change.
    pub async fn changed_since(
        &self,
        since: Option<DateTime<Utc>>,
        limit: u64,
    ) -> Result<Vec<(String, DateTime<Utc>)>, Error> {
        let q = req::Entity::find()
            .select_only()
            .column(req::Column::Id)
            .column(req::Column::UpdatedAt);
        let q = match since {
            Some(at) => q
                .filter(req::Column::UpdatedAt.gte(at))
                .order_by_asc(req::Column::UpdatedAt)
                .limit(limit),
            None => q.order_by_desc(req::Column::UpdatedAt).limit(1),
        };
        Ok(q.into_tuple().all(self.reads()).await?)
    }

    /// Counts by kind and state; open requests overdue and due within 7
    /// days of `today`.
    pub async fn counts(&self, today: NaiveDate) -> Result<Counts, Error> {
        let rows: Vec<(String, String, i64)> = req::Entity::find()
            .select_only()
            .column(req::Column::Kind)
            .column(req::Column::State)
            .column_as(Expr::expr(Func::count(Expr::col(req::Column::Id))), "n")
            .group_by(req::Column::Kind)
            .group_by(req::Column::State)
            .into_tuple()
            .all(self.reads())
            .await?;
        let overdue = req::Entity::find()
            .filter(req::Column::State.is_not_in(FINAL))
            .filter(req::Column::Due.lt(today))
            .count(self.reads())
            .await?;
        let due_soon = req::Entity::find()
            .filter(req::Column::State.is_not_in(FINAL))
            .filter(req::Column::Due.gte(today))
            .filter(req::Column::Due.lte(today + chrono::Days::new(7)))
            .count(self.reads())
            .await?;
        Ok(Counts {
            by_kind_state: rows
                .into_iter()
                .map(|(k, s, n)| ((k, s), u64::try_from(n).unwrap_or(0)))
                .collect(),
            overdue,
            due_soon,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let at = DateTime::from_timestamp_nanos(1_700_000_000_123_456_789);
        let t = encode_token(at, "abc-1");
        assert_eq!(decode_token(&t).unwrap(), (at, "abc-1".to_owned()));
        assert_eq!(decode_token("zz"), Err(BadToken));
        assert_eq!(decode_token(&hex::encode("no-bar")), Err(BadToken));
    }
}
