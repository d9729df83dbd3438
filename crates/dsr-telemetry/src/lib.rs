//! Logs, traces and redaction for every DSR Mesh process.
//!
//! - [`init`]: a `tracing` subscriber, pretty on a terminal and JSON
//!   otherwise, plus OpenTelemetry trace export over OTLP/gRPC when an
//!   endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`), and nothing when
//!   not; metrics go the same way (instruments are made with
//!   `opentelemetry::global::meter`, and are no-ops without an endpoint).
//! - [`propagation`]: W3C `traceparent` read from incoming gRPC metadata and
//!   written into outgoing calls, so one request is one trace across services.
//! - [`client::Observed`]: a client span and a latency histogram per
//!   outgoing call.
//! - [`Redacted`]: shows identity values as a keyed short hash.
//!
//! **Architecture Invariant:** personal data never reaches a log line, a span
//! or a metric label; values that identify a person are wrapped in
//! [`Redacted`] before they meet `tracing`.
#![forbid(unsafe_code)]

pub mod client;
pub mod propagation;
mod redact;

pub use redact::{Redacted, Sensitive, set_redaction_key};

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written to standard error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    #[default]
    Auto,
    /// Human-readable, one line per event.
    Pretty,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Parses "auto", "pretty" or "json".
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "pretty" => Some(Self::Pretty),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// Telemetry settings of one process.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// The `service.name` resource attribute, e.g. "dsr-transfer-registry".
    pub service_name: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// An `EnvFilter` directive, e.g. "info" or "info,dsr_server=debug".
    pub filter: String,
    /// OTLP/gRPC endpoint for traces, e.g. "http://collector:4317"; `None`
    /// exports nothing.
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    /// Defaults for `service_name`, with the OTLP endpoint taken from
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` and the filter from `RUST_LOG`.
    pub fn from_env(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            log_format: LogFormat::Auto,
            filter: std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
            otlp_endpoint: std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
                .ok()
                .filter(|s| !s.is_empty()),
        }
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The filter directive does not parse.
    #[error("invalid log filter: {0}")]
    Filter(String),
    /// The OTLP exporter could not be built.
    #[error("cannot build OTLP exporter: {0}")]
    Exporter(String),
    /// A global subscriber is already installed.
    #[error("a tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Keeps the trace pipeline alive; call [`TelemetryGuard::shutdown`] on exit
/// to flush spans (outside async code: it blocks).
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    meters: Option<SdkMeterProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter. Blocks; call it outside the runtime
    /// or from `spawn_blocking`.
    pub fn shutdown(mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
        if let Some(m) = self.meters.take() {
            let _ = m.force_flush();
            let _ = m.shutdown();
        }
    }
}

/// Installs the global subscriber. Must run inside a Tokio runtime when an
/// OTLP endpoint is set.
pub fn init(cfg: &TelemetryConfig) -> Result<TelemetryGuard, Error> {
    let filter = EnvFilter::try_new(&cfg.filter).map_err(|e| Error::Filter(e.to_string()))?;
    let json = match cfg.log_format {
        LogFormat::Auto => !std::io::stderr().is_terminal(),
        LogFormat::Pretty => false,
        LogFormat::Json => true,
    };
    let fmt_layer = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_writer(std::io::stderr)
            .boxed()
    };
    let provider = match &cfg.otlp_endpoint {
        Some(endpoint) => Some(otlp_provider(&cfg.service_name, endpoint)?),
        None => None,
    };
    let meters = match &cfg.otlp_endpoint {
        Some(endpoint) => {
            let m = otlp_meters(&cfg.service_name, endpoint)?;
            opentelemetry::global::set_meter_provider(m.clone());
            Some(m)
        }
        None => None,
    };
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(cfg.service_name.clone())));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|_| Error::AlreadyInstalled)?;
    Ok(TelemetryGuard { provider, meters })
}

fn otlp_meters(service: &str, endpoint: &str) -> Result<SdkMeterProvider, Error> {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| Error::Exporter(e.to_string()))?;
    Ok(SdkMeterProvider::builder()
        .with_periodic_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build())
}

fn otlp_provider(service: &str, endpoint: &str) -> Result<SdkTracerProvider, Error> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| Error::Exporter(e.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build())
}
