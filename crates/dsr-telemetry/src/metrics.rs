//! The process's metrics, read by Prometheus.
//!
//! Instruments are made with `opentelemetry::global::meter` wherever they
//! are recorded; [`install`] makes the global meter provider, which keeps
//! them in a Prometheus registry (served as text by [`render`], on each
//! service's ops port at `/metrics`) and also pushes them over OTLP when an
//! endpoint is set. Names follow OpenTelemetry's Prometheus mapping: dots
//! become underscores, a unit adds its suffix (`s` → `_seconds`), counters
//! end in `_total`.
//!
//! Also here: `dsr_build_info` (1, by version and revision) and
//! [`watch_pool`], a database pool's connections as gauges.

use std::sync::OnceLock;

use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;

use crate::Error;

static REGISTRY: OnceLock<prometheus::Registry> = OnceLock::new();

/// The version and source revision the binary was built from (the
/// revision from `DSR_BUILD_REVISION` at build time, "unknown" without).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// See [`VERSION`].
pub const REVISION: &str = match option_env!("DSR_BUILD_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// Makes the process's meter provider for `service` (its `service.name`)
/// and installs it as the global one: Prometheus always, OTLP too when
/// `otlp_endpoint` is set. Once per process: a later call returns `None`
/// and changes nothing (instruments already made keep their provider).
pub fn install(
    service: &str,
    otlp_endpoint: Option<&str>,
) -> Result<Option<SdkMeterProvider>, Error> {
    let registry = prometheus::Registry::new();
    if REGISTRY.set(registry.clone()).is_err() {
        return Ok(None);
    }
    let prometheus = opentelemetry_prometheus::exporter()
        .with_registry(registry)
        .build()
        .map_err(|e| Error::Exporter(e.to_string()))?;
    let mut builder = SdkMeterProvider::builder()
        .with_reader(prometheus)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        );
    if let Some(endpoint) = otlp_endpoint {
        let otlp = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| Error::Exporter(e.to_string()))?;
        builder = builder.with_periodic_exporter(otlp);
    }
    let provider = builder.build();
    opentelemetry::global::set_meter_provider(provider.clone());
    // Its callback stays registered with the provider (the handle is not
    // needed to keep it).
    let _build = opentelemetry::global::meter("dsr")
        .u64_observable_gauge("dsr.build.info")
        .with_description("1, labelled with the version and source revision of the running binary")
        .with_callback(|o| {
            o.observe(
                1,
                &[
                    KeyValue::new("version", VERSION),
                    KeyValue::new("revision", REVISION),
                ],
            );
        })
        .build();
    Ok(Some(provider))
}

/// The metrics in Prometheus's text format (version 0.0.4); empty before
/// [`install`].
pub fn render() -> String {
    use prometheus::Encoder as _;
    let Some(registry) = REGISTRY.get() else {
        return String::new();
    };
    let mut out = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut out) {
        tracing::warn!(error = %e, "cannot encode metrics");
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Histogram buckets for durations in seconds: 1 ms to 30 s.
pub const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A database pool's connections, as seen when Prometheus asks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open.
    pub open: u64,
    /// Of those, idle.
    pub idle: u64,
    /// Most the pool opens.
    pub max: u64,
}

/// Exports the pool `pool` (the service's database, e.g. "orchestrator")
/// as `dsr_db_pool_connections{pool,state="idle"|"in_use"}` and
/// `dsr_db_pool_max_connections{pool}`, read by `stats` at each scrape.
pub fn watch_pool(pool: &str, stats: impl Fn() -> PoolStats + Send + Sync + 'static) {
    let stats = std::sync::Arc::new(stats);
    let meter = opentelemetry::global::meter("dsr");
    let name = pool.to_owned();
    let s = stats.clone();
    // Their callbacks stay registered with the provider: a pool is watched
    // for the process's life.
    let _connections = meter
        .u64_observable_gauge("dsr.db.pool.connections")
        .with_description("database connections of the pool, by state (idle, in_use)")
        .with_callback(move |o| {
            let now = s();
            o.observe(
                now.idle,
                &[
                    KeyValue::new("pool", name.clone()),
                    KeyValue::new("state", "idle"),
                ],
            );
            o.observe(
                now.open.saturating_sub(now.idle),
                &[
                    KeyValue::new("pool", name.clone()),
                    KeyValue::new("state", "in_use"),
                ],
            );
        })
        .build();
    let name = pool.to_owned();
    let _max = meter
        .u64_observable_gauge("dsr.db.pool.max_connections")
        .with_description("most connections the pool opens")
        .with_callback(move |o| o.observe(stats().max, &[KeyValue::new("pool", name.clone())]))
        .build();
}
