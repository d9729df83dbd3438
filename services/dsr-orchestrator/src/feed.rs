//! The change feed behind `Watch`: one reader per process tells every open
//! stream which requests changed.
//!
//! Changes made in this process reach the feed's channel at once (the
//! handlers and the worker send the request as they committed it, so a
//! stream shows it without reading it again). Changes made by another
//! replica are found by one indexed query per interval for the whole
//! process, however many streams are open, and only while one is; a stream
//! reads the ledger only when its own request changed after what it shows.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::ledger::{Ledger, Request};

/// What the feed's channel carries.
#[derive(Clone, Debug)]
pub enum Change {
    /// This process committed the request as it is here.
    Written(Arc<Request>),
    /// The request changed, at `at` when known (the feed's look): a stream
    /// that already shows the change of that very time reads nothing.
    Changed {
        /// The request.
        id: String,
        /// When it changed, when known.
        at: Option<DateTime<Utc>>,
    },
    /// More changed than one look reads: every stream reads its request
    /// again.
    Everyone,
}

impl Change {
    /// `r` as this process has just committed it.
    pub fn written(r: &Request) -> Self {
        Self::Written(Arc::new(r.clone()))
    }

    /// Request `id` changed; when is not known.
    pub fn of(id: &str) -> Self {
        Self::Changed {
            id: id.to_owned(),
            at: None,
        }
    }

    /// Whether a stream of request `id` has to look at it.
    pub fn concerns(&self, id: &str) -> bool {
        match self {
            Self::Written(r) => r.id == id,
            Self::Changed { id: c, .. } => c == id,
            Self::Everyone => true,
        }
    }
}

/// Most changes read per look; the rest come at the next.
const BATCH: u64 = 1000;

/// How far back each look reaches again, for a change committed after a
/// later one (two replicas' transactions finishing out of order).
const OVERLAP: chrono::Duration = chrono::Duration::seconds(5);

/// Runs the feed for the life of the process: every `every`, while anyone
/// listens, sends the id of each request another replica (or this one)
/// changed since the last look.
pub async fn run(ledger: Ledger, changes: broadcast::Sender<Change>, every: Duration) {
    let mut since: Option<DateTime<Utc>> = None;
    let mut seen: BTreeSet<(String, DateTime<Utc>)> = BTreeSet::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if changes.receiver_count() == 0 {
            // Nobody watches: start afresh from the latest change next time.
            since = None;
            seen.clear();
            continue;
        }
        let Some(from) = since else {
            // The first look only finds where the ledger stands: what
            // changed before it is not news.
            let start = async {
                let latest = ledger.changed_since(None, 1).await?;
                let at = latest.first().map_or_else(|| ledger.clock().now(), |x| x.1);
                let recent = ledger.changed_since(Some(at - OVERLAP), BATCH).await?;
                Ok::<_, crate::ledger::Error>((at, recent))
            };
            match start.await {
                Ok((at, recent)) => {
                    since = Some(at);
                    seen = recent.into_iter().collect();
                }
                Err(e) => tracing::warn!(error = %e, "change feed: cannot read the ledger"),
            }
            continue;
        };
        match ledger.changed_since(Some(from - OVERLAP), BATCH).await {
            Ok(rows) if rows.len() as u64 >= BATCH => {
                // More than one look reads: everyone reads again, and the
                // next look starts from the latest change.
                let _ = changes.send(Change::Everyone);
                since = None;
                seen.clear();
            }
            Ok(rows) => {
                let now: BTreeSet<_> = rows.into_iter().collect();
                for (id, at) in now.difference(&seen) {
                    let _ = changes.send(Change::Changed {
                        id: id.clone(),
                        at: Some(*at),
                    });
                }
                if let Some(latest) = now.iter().map(|x| x.1).max() {
                    since = Some(latest.max(from));
                }
                seen = now;
            }
            Err(e) => tracing::warn!(error = %e, "change feed: cannot read the ledger"),
        }
    }
}
