//! Outgoing calls, observed: a client span per call (the callee's server
//! span becomes its child, as the trace context is written inside it) and
//! the `dsr.client.call.duration` histogram (seconds) by peer, method and
//! gRPC status code ("waiting" for a system that awaits a person's answer,
//! `AWAITING_VENDOR`): per-system latency and errors.
//!
//! Wrap the channel *outside* the interceptor that writes the trace
//! context, so that the context written is the client span's:
//! `Observed::new(InterceptedService::new(channel, interceptor), "crm")`.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::{BoxFuture, FutureExt};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;
use tower_service::Service;
use tracing::Instrument;

fn histogram() -> &'static Histogram<f64> {
    static H: OnceLock<Histogram<f64>> = OnceLock::new();
    H.get_or_init(|| {
        opentelemetry::global::meter("dsr")
            .f64_histogram("dsr.client.call.duration")
            .with_unit("s")
            .with_description(
                "calls to another service or a data system, by peer, method and gRPC status code \
                 (\"transport\" when no answer came)",
            )
            .with_boundaries(crate::metrics::SECONDS_BUCKETS.to_vec())
            .build()
    })
}

/// The `code` label of an answer: its gRPC status code ("0" when it is in
/// the trailers, a success), or "waiting" for an UNAVAILABLE whose
/// ErrorInfo reason is `AWAITING_VENDOR`: a system that waits for a person
/// to answer by hand, by design, not a failing one.
fn code_of(headers: &http::HeaderMap) -> String {
    use tonic_types::StatusExt as _;
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0");
    let waiting = code == "14"
        && tonic::Status::from_header_map(headers)
            .and_then(|s| s.get_details_error_info())
            .is_some_and(|i| i.reason == "AWAITING_VENDOR");
    if waiting { "waiting" } else { code }.to_owned()
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct Observed<S> {
    inner: S,
    peer: Arc<str>,
}

impl<S> Observed<S> {
    /// Observes the calls `inner` makes to `peer` (a data system's id or a
    /// service's name: never personal data).
    pub fn new(inner: S, peer: &str) -> Self {
        Self {
            inner,
            peer: Arc::from(peer),
        }
    }
}

impl<S, B, RB> Service<http::Request<B>> for Observed<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().trim_start_matches('/').to_owned();
        let (service, method) = path.split_once('/').unwrap_or(("", path.as_str()));
        let method = method.to_owned();
        let span = tracing::info_span!(
            "call",
            otel.name = %path,
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            peer = %self.peer,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        // Inside the span: the interceptor below writes its context.
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        let peer = self.peer.clone();
        let started = Instant::now();
        async move {
            let res = fut.await;
            // An error answer is trailers-only: its status is in the headers.
            // A success carries it in the trailers, after this point: "0".
            let code = match &res {
                Ok(r) => code_of(r.headers()),
                Err(_) => "transport".to_owned(),
            };
            tracing::Span::current().record("rpc.grpc.status_code", code.as_str());
            histogram().record(
                started.elapsed().as_secs_f64(),
                &[
                    KeyValue::new("peer", peer.to_string()),
                    KeyValue::new("method", method),
                    KeyValue::new("code", code),
                ],
            );
            res
        }
        .instrument(span)
        .boxed()
    }
}
