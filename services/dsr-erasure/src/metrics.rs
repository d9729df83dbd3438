//! Metrics of erasure, over OpenTelemetry:
//! `dsr.erasure.receipts.rejected` (counter: receipts that did not verify,
//! by system and reason), `dsr.erasure.writes.failed` (counter: writes a
//! system failed, by system and reason), `dsr.sweep.records` (counter:
//! records a sweep went through, by system and whether a dry run),
//! `dsr.sweep.failures` (counter, by system) and `dsr.sweep.completed`
//! (gauge: the Unix time this replica last finished a sweep of a system),
//! `dsr.erasure.discrepancies` (counter: records whose receipt differs from
//! the plan, by system and phase kind).

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge};

struct Instruments {
    rejected: Counter<u64>,
    failed: Counter<u64>,
    swept: Counter<u64>,
    sweep_failures: Counter<u64>,
    sweep_completed: Gauge<u64>,
    discrepancies: Counter<u64>,
}

fn instruments() -> &'static Instruments {
    static I: OnceLock<Instruments> = OnceLock::new();
    I.get_or_init(|| {
        let m = opentelemetry::global::meter("dsr-erasure");
        Instruments {
            rejected: m
                .u64_counter("dsr.erasure.receipts.rejected")
                .with_description(
                    "receipts that did not verify against the system's published keys",
                )
                .build(),
            failed: m
                .u64_counter("dsr.erasure.writes.failed")
                .with_description("erasures and other writes a system failed or refused")
                .build(),
            swept: m
                .u64_counter("dsr.sweep.records")
                .with_description("records a retention sweep went through")
                .build(),
            sweep_failures: m
                .u64_counter("dsr.sweep.failures")
                .with_description("sweeps of a system that failed")
                .build(),
            sweep_completed: m
                .u64_gauge("dsr.sweep.completed")
                .with_unit("s")
                .with_description("Unix time at which this replica last finished sweeping a system")
                .build(),
            discrepancies: m
                .u64_counter("dsr.erasure.discrepancies")
                .with_description("records whose receipt differs from the erasure plan")
                .build(),
        }
    })
}

/// The reasons a receipt is rejected for.
pub const RECEIPT_REASONS: [&str; 4] = [
    "RECEIPT_SIGNATURE",
    "RECEIPT_MISMATCH",
    "RECEIPT_ACTION",
    "RECEIPT_MISSING",
];

/// Starts the counters that pages are written on at zero for each of
/// `systems`: Prometheus's `increase()` sees a series' first value as its
/// start, so a counter first exported at 1 would never fire its alert.
pub fn start_at_zero(systems: &[String]) {
    for system in systems {
        for reason in RECEIPT_REASONS {
            instruments().rejected.add(
                0,
                &[
                    KeyValue::new("system", system.clone()),
                    KeyValue::new("reason", reason),
                ],
            );
        }
        instruments()
            .sweep_failures
            .add(0, &[KeyValue::new("system", system.clone())]);
    }
}

/// A receipt that did not verify.
pub(crate) fn receipt_rejected(system: &str, reason: &str) {
    instruments().rejected.add(
        1,
        &[
            KeyValue::new("system", system.to_owned()),
            KeyValue::new("reason", reason.to_owned()),
        ],
    );
}

/// A write a system failed.
pub(crate) fn write_failed(system: &str, reason: &str) {
    instruments().failed.add(
        1,
        &[
            KeyValue::new("system", system.to_owned()),
            KeyValue::new("reason", reason.to_owned()),
        ],
    );
}

/// `n` more records swept at `system`.
pub(crate) fn swept(system: &str, dry_run: bool, n: u64) {
    if n > 0 {
        instruments().swept.add(
            n,
            &[
                KeyValue::new("system", system.to_owned()),
                KeyValue::new("dry_run", dry_run),
            ],
        );
    }
}

/// A system's sweep ended: failed, or completed now.
pub(crate) fn sweep_ended(system: &str, ok: bool) {
    let attrs = [KeyValue::new("system", system.to_owned())];
    if ok {
        let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
        instruments().sweep_completed.record(now, &attrs);
    } else {
        instruments().sweep_failures.add(1, &attrs);
    }
}

/// A record whose receipt differs from the plan, in `phase` ("erase" or
/// "deferred:<date>", counted as "deferred").
pub(crate) fn discrepancy(system: &str, phase: &str) {
    let kind = if phase.starts_with("deferred:") {
        "deferred"
    } else {
        "erase"
    };
    instruments().discrepancies.add(
        1,
        &[
            KeyValue::new("system", system.to_owned()),
            KeyValue::new("phase", kind),
        ],
    );
}
