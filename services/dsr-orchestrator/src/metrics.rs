//! Metrics of the orchestrator, over OpenTelemetry:
//! `dsr.requests` (gauge: requests by kind and state),
//! `dsr.requests.overdue` and `dsr.requests.due_soon` (gauges: open requests
//! past their deadline, and due within 7 days), and
//! `dsr.orchestrator.step.duration` (histogram, seconds, by step and
//! outcome).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;

use crate::ledger::Ledger;

/// The orchestrator's instruments.
#[derive(Clone, Debug)]
pub struct Metrics {
    step: Histogram<f64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The instruments, from the global meter provider.
    pub fn new() -> Self {
        let meter = opentelemetry::global::meter("dsr-orchestrator");
        Self {
            step: meter
                .f64_histogram("dsr.orchestrator.step.duration")
                .with_unit("s")
                .with_description("time one attempt of a step took, by step and outcome")
                .with_boundaries(dsr_telemetry::metrics::SECONDS_BUCKETS.to_vec())
                .build(),
        }
    }

    /// Records one attempt.
    pub fn step_done(&self, step: &str, outcome: &'static str, took: Duration) {
        self.step.record(
            took.as_secs_f64(),
            &[
                KeyValue::new("step", step.to_owned()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }
}

/// Counts requests by kind and state, overdue and due within 7 days, every
/// `every`, and exports them as gauges.
pub fn spawn_request_gauges(ledger: Ledger, every: Duration) -> tokio::task::JoinHandle<()> {
    type Counts = BTreeMap<(String, String), u64>;
    let counts: Arc<Mutex<(Counts, u64, u64)>> = Arc::default();
    let meter = opentelemetry::global::meter("dsr-orchestrator");
    let by_state = {
        let c = counts.clone();
        meter
            .u64_observable_gauge("dsr.requests")
            .with_description("data-subject requests by kind and state")
            .with_callback(move |o| {
                let g = c.lock().expect("metrics lock");
                for ((kind, state), n) in &g.0 {
                    o.observe(
                        *n,
                        &[
                            KeyValue::new("kind", kind.clone()),
                            KeyValue::new("state", state.clone()),
                        ],
                    );
                }
            })
            .build()
    };
    let overdue = {
        let c = counts.clone();
        meter
            .u64_observable_gauge("dsr.requests.overdue")
            .with_description("open requests past their Art. 12(3) deadline")
            .with_callback(move |o| o.observe(c.lock().expect("metrics lock").1, &[]))
            .build()
    };
    let due_soon = {
        let c = counts.clone();
        meter
            .u64_observable_gauge("dsr.requests.due_soon")
            .with_description("open requests due within 7 days")
            .with_callback(move |o| o.observe(c.lock().expect("metrics lock").2, &[]))
            .build()
    };
    tokio::spawn(async move {
        let _keep = (by_state, overdue, due_soon);
        loop {
            match ledger.counts(ledger.clock().today()).await {
                Ok(c) => {
                    if c.overdue > 0 {
                        tracing::warn!(overdue = c.overdue, "requests past their deadline");
                    }
                    *counts.lock().expect("metrics lock") =
                        (c.by_kind_state, c.overdue, c.due_soon);
                }
                Err(e) => tracing::warn!(error = %e, "cannot count requests"),
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// Counts the incidents whose notification to the supervisory authority is
/// overdue (past the 72 hours, not notified, not assessed as no risk) every
/// `every`, as the gauge `dsr.incidents.authority_overdue`.
pub async fn incident_gauges(ledger: Ledger, every: Duration) {
    let overdue = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = overdue.clone();
    let _gauge = opentelemetry::global::meter("dsr-orchestrator")
        .u64_observable_gauge("dsr.incidents.authority_overdue")
        .with_description(
            "personal-data breaches past their 72 hours without a notification to the supervisory authority",
        )
        .with_callback(move |o| o.observe(seen.load(std::sync::atomic::Ordering::Relaxed), &[]))
        .build();
    loop {
        match ledger.incidents_overdue().await {
            Ok(n) => overdue.store(n, std::sync::atomic::Ordering::Relaxed),
            Err(e) => tracing::warn!(error = %e, "incident gauge not updated"),
        }
        tokio::time::sleep(every).await;
    }
}
