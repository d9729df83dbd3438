//! Server-side RPC metrics: `dsr.rpc.server.duration` (seconds), a
//! histogram by service, method and gRPC status code, so that Prometheus
//! has each service's request rate, errors and latency (`…_count`,
//! `…_bucket`) without a collector in between.
//!
//! A call's code is its `grpc-status`: in the headers for an error answered
//! at once, else in the trailers when its body ends ("1", CANCELLED, when
//! the caller goes away first). Only the services a port serves are named:
//! any other path counts as service and method "unknown", and an
//! UNIMPLEMENTED method as "unknown", so no caller can mint label values.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::{BoxFuture, FutureExt};
use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;
use tonic::body::Body;
use tower_layer::Layer;
use tower_service::Service;

fn histogram() -> &'static Histogram<f64> {
    static H: OnceLock<Histogram<f64>> = OnceLock::new();
    H.get_or_init(|| {
        opentelemetry::global::meter("dsr")
            .f64_histogram("dsr.rpc.server.duration")
            .with_unit("s")
            .with_description(
                "calls served, by service, method and gRPC status code (0 OK), until the answer ends",
            )
            .with_boundaries(dsr_telemetry::metrics::SECONDS_BUCKETS.to_vec())
            .build()
    })
}

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct RpcMetricsLayer {
    served: Arc<[&'static str]>,
}

impl RpcMetricsLayer {
    /// Counts the calls to `served` (fully qualified service names), and
    /// any other path as "unknown".
    pub fn new(served: &[&'static str]) -> Self {
        Self {
            served: served.into(),
        }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            served: self.served.clone(),
        }
    }
}

/// See [`RpcMetricsLayer`].
#[derive(Clone, Debug)]
pub struct RpcMetrics<S> {
    inner: S,
    served: Arc<[&'static str]>,
}

/// The labels of a call to `path`, before its code is known.
fn labels(served: &[&'static str], path: &str) -> (&'static str, String) {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or_default();
    match served.iter().find(|s| **s == service) {
        Some(s) if !method.is_empty() && method.len() <= 64 => (s, method.to_owned()),
        _ => ("unknown", "unknown".to_owned()),
    }
}

fn record(started: Instant, service: &'static str, method: &str, code: &str) {
    let method = if code == "12" { "unknown" } else { method };
    histogram().record(
        started.elapsed().as_secs_f64(),
        &[
            KeyValue::new("service", service),
            KeyValue::new("method", method.to_owned()),
            KeyValue::new("code", code.to_owned()),
        ],
    );
}

impl<S, B> Service<http::Request<B>> for RpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let (service, method) = labels(&self.served, req.uri().path());
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        async move {
            let res = inner.call(req).await?;
            let code = res
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok(match code {
                Some(code) => {
                    record(started, service, &method, &code);
                    res
                }
                None => res.map(|body| {
                    Body::new(Counted {
                        body,
                        call: Some((started, service, method)),
                    })
                }),
            })
        }
        .boxed()
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call when its trailers come (or
    /// as CANCELLED when it is dropped before).
    struct Counted {
        #[pin]
        body: Body,
        call: Option<(Instant, &'static str, String)>,
    }

    impl PinnedDrop for Counted {
        fn drop(this: Pin<&mut Self>) {
            if let Some((started, service, method)) = this.project().call.take() {
                record(started, service, &method, "1");
            }
        }
    }
}

impl http_body::Body for Counted {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        let code = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(|t| {
                t.get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_owned()
            }),
            Poll::Ready(Some(Err(status))) => Some(i32::from(status.code()).to_string()),
            Poll::Ready(None) => Some("0".to_owned()),
            Poll::Pending => None,
        };
        if let Some(code) = code
            && let Some((started, service, method)) = this.call.take()
        {
            record(started, service, &method, &code);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::labels;

    #[test]
    fn only_served_services_name_a_label() {
        let served = ["dsr.orchestrator.v1.Orchestrator"];
        assert_eq!(
            labels(&served, "/dsr.orchestrator.v1.Orchestrator/Submit"),
            ("dsr.orchestrator.v1.Orchestrator", "Submit".to_owned())
        );
        for other in ["/x.Y/Z", "/", "", "/dsr.orchestrator.v1.Orchestrator/"] {
            assert_eq!(
                labels(&served, other),
                ("unknown", "unknown".to_owned()),
                "{other}"
            );
        }
    }
}
