//! Metrics of the registry: safeguard reviews due within the configured
//! window, and overdue ones, as OpenTelemetry gauges
//! (`dsr.transfer.reviews_due`, `dsr.transfer.reviews_overdue`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;

use crate::Registry;

/// Recomputes the review counts every `every` and exports them as gauges.
pub fn spawn_reviews_gauge(
    registry: Registry,
    window_days: u32,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let due = Arc::new(AtomicU64::new(0));
    let overdue = Arc::new(AtomicU64::new(0));
    let meter = opentelemetry::global::meter("dsr-transfer-registry");
    let attrs = [KeyValue::new("window_days", i64::from(window_days))];
    let due_gauge = {
        let due = due.clone();
        let attrs = attrs.clone();
        meter
            .u64_observable_gauge("dsr.transfer.reviews_due")
            .with_description("recipients whose transfer safeguard must be reviewed within the window, overdue included")
            .with_callback(move |o| o.observe(due.load(Ordering::Relaxed), &attrs))
            .build()
    };
    let overdue_gauge = {
        let overdue = overdue.clone();
        meter
            .u64_observable_gauge("dsr.transfer.reviews_overdue")
            .with_description("recipients whose transfer safeguard review date has passed")
            .with_callback(move |o| o.observe(overdue.load(Ordering::Relaxed), &[]))
            .build()
    };
    tokio::spawn(async move {
        // The gauges live as long as this task.
        let _keep = (due_gauge, overdue_gauge);
        loop {
            match registry.reviews_due(window_days).await {
                Ok(list) => {
                    let late = list.iter().filter(|r| r.overdue).count() as u64;
                    due.store(list.len() as u64, Ordering::Relaxed);
                    overdue.store(late, Ordering::Relaxed);
                    if late > 0 {
                        tracing::warn!(overdue = late, "transfer safeguard reviews overdue");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot compute reviews due"),
            }
            tokio::time::sleep(every).await;
        }
    })
}
