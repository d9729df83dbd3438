//! Logs, traces and redaction for every DSR Mesh process.
//!
//! - [`init`]: a `tracing` subscriber, pretty on a terminal and JSON
//!   otherwise, plus OpenTelemetry trace export over OTLP/gRPC when an
//!   endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT`), and nothing when
//!   not; when exporting, JSON lines carry the trace and span ids of the
//!   span they are in.
//! - [`metrics`]: instruments made with `opentelemetry::global::meter` are
//!   read by Prometheus (`/metrics` on the ops port) and pushed over OTLP
//!   when an endpoint is set.
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
pub mod metrics;
pub mod propagation;
mod redact;

pub use redact::{Redacted, Sensitive, set_redaction_key};

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
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
    exporting: bool,
}

impl TelemetryGuard {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.exporting
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
            .event_format(TraceIds(
                tracing_subscriber::fmt::format()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            ))
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_writer(std::io::stderr)
            .boxed()
    };
    // With an endpoint, spans get OpenTelemetry trace ids: exported, logged
    // on each JSON line, and carried to the services called in
    // `traceparent`. Without one, no span is built for OpenTelemetry at all
    // (it costs about 8% of an access request's time), and log lines carry
    // the request id of their call instead.
    let provider = match &cfg.otlp_endpoint {
        Some(endpoint) => Some(otlp_provider(&cfg.service_name, endpoint)?),
        None => None,
    };
    let meters = metrics::install(&cfg.service_name, cfg.otlp_endpoint.as_deref())?;
    let otel_layer = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(cfg.service_name.clone())));
    let exporting = provider.is_some();
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|_| Error::AlreadyInstalled)?;
    Ok(TelemetryGuard {
        provider,
        meters,
        exporting,
    })
}

/// A JSON log line with the `trace_id` and `span_id` of the span it was
/// written in, so that a log line leads to its trace and the lines of one
/// request across services are found by one id.
struct TraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for TraceIds<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use opentelemetry::trace::TraceContextExt as _;
        // The global dispatcher (what `init` installs) is reachable while
        // an event is being written; under a scoped one this finds none.
        let ids = ctx
            .lookup_current()
            .map(|span| span.id())
            .and_then(|id| {
                tracing::dispatcher::get_default(|d| {
                    tracing_opentelemetry::get_otel_context(&id, d)
                })
            })
            .map(|cx| cx.span().span_context().clone())
            .filter(opentelemetry::trace::SpanContext::is_valid);
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        if let Some(sc) = ids
            && let Some(end) = line.rfind('}')
        {
            line.insert_str(
                end,
                &format!(
                    ",\"trace_id\":\"{}\",\"span_id\":\"{}\"",
                    sc.trace_id(),
                    sc.span_id()
                ),
            );
        }
        writer.write_str(&line)
    }
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
