//! Request id and per-call span.

use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::future::{BoxFuture, FutureExt};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;

/// The id of one call, from the caller's `x-request-id` when it is a
/// reasonable token (at most 128 of `[A-Za-z0-9._-]`), else a new UUID.
/// Available to handlers as a request extension and echoed in the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

const HEADER: &str = "x-request-id";

fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// See [`RequestId`]; also opens the call's span, parented on the caller's
/// trace context.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestContextLayer;

impl<S> Layer<S> for RequestContextLayer {
    type Service = RequestContext<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RequestContext { inner }
    }
}

/// See [`RequestContextLayer`].
#[derive(Clone, Debug)]
pub struct RequestContext<S> {
    inner: S,
}

impl<S, B, RB> Service<http::Request<B>> for RequestContext<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    RB: Send + 'static,
{
    type Response = http::Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let id = request_id(req.headers());
        let path = req.uri().path().to_owned();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("", &path));
        let span = tracing::info_span!(
            "rpc",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            request_id = %id,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        dsr_telemetry::propagation::adopt_remote_parent(&span, req.headers());
        req.extensions_mut().insert(RequestId(id.clone()));
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let started = Instant::now();
        async move {
            let mut res = inner.call(req).await?;
            if let Ok(v) = http::HeaderValue::from_str(&id) {
                res.headers_mut().insert(HEADER, v);
            }
            malformed_is_invalid_argument(&mut res);
            // A trailers-only response (every error) carries its status in the headers.
            let code = res
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok());
            if let Some(code) = code {
                tracing::Span::current().record("rpc.grpc.status_code", code);
            }
            let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            tracing::debug!(
                latency_ms,
                grpc_status = code.unwrap_or("in trailers"),
                "call answered"
            );
            Ok(res)
        }
        .instrument(span)
        .boxed()
    }
}

/// A request message that is not valid protobuf is the caller's error:
/// INVALID_ARGUMENT, not the INTERNAL the codec answers, and without
/// echoing what the decoder saw.
fn malformed_is_invalid_argument<RB>(res: &mut http::Response<RB>) {
    let h = res.headers();
    let internal = h.get("grpc-status").is_some_and(|v| v == "13");
    let decode = h
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|m| {
            let m = m.replace("%20", " ").to_ascii_lowercase();
            m.contains("decode protobuf message") || m.contains("decoding protobuf message")
        });
    if internal && decode {
        let h = res.headers_mut();
        h.insert("grpc-status", http::HeaderValue::from_static("3"));
        h.insert(
            "grpc-message",
            http::HeaderValue::from_static(
                "the%20request%20is%20not%20a%20valid%20protobuf%20message",
            ),
        );
        h.remove("grpc-status-details-bin");
    }
}

#[cfg(test)]
mod tests {
    use super::malformed_is_invalid_argument;

    #[test]
    fn a_decode_error_becomes_invalid_argument_and_others_stay() {
        let mut res = http::Response::builder()
            .header("grpc-status", "13")
            .header(
                "grpc-message",
                "failed%20to%20decode%20Protobuf%20message:%20invalid%20wire%20type",
            )
            .body(())
            .unwrap();
        malformed_is_invalid_argument(&mut res);
        assert_eq!(res.headers()["grpc-status"], "3");
        assert!(
            !res.headers()["grpc-message"]
                .to_str()
                .unwrap()
                .contains("wire")
        );
        let mut other = http::Response::builder()
            .header("grpc-status", "13")
            .header("grpc-message", "internal%20error")
            .body(())
            .unwrap();
        malformed_is_invalid_argument(&mut other);
        assert_eq!(other.headers()["grpc-status"], "13");
    }
}
