//! The server-wide bound on calls in progress.
//!
//! A call holds its permit until its response body ends (or the caller goes
//! away), so a server stream (`Watch`, `Access`, a download) counts for its
//! whole life, not only until its headers as with a plain concurrency
//! limit. Past the bound a call is answered at once with RESOURCE_EXHAUSTED
//! (the status a client retries after a pause), never queued. Health checks
//! are never counted nor refused: a busy server is still alive.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, FutureExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tower_layer::Layer;
use tower_service::Service;

const HEALTH: &str = "/grpc.health.v1.Health/";

/// See the module documentation.
#[derive(Clone, Debug)]
pub struct CallLimitLayer {
    permits: Arc<Semaphore>,
}

impl CallLimitLayer {
    /// At most `limit` calls (streams included) in progress at once.
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit.max(1))),
        }
    }

    /// Calls that could start now.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }
}

impl<S> Layer<S> for CallLimitLayer {
    type Service = CallLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CallLimit {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// See [`CallLimitLayer`].
#[derive(Clone, Debug)]
pub struct CallLimit<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S, B> Service<http::Request<B>> for CallLimit<S>
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
        let permit = if req.uri().path().starts_with(HEALTH) {
            None
        } else {
            match self.permits.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    tracing::debug!("call refused: the server is at its limit");
                    let busy =
                        tonic::Status::resource_exhausted("the server is busy; retry shortly");
                    return std::future::ready(Ok(busy.into_http())).boxed();
                }
            }
        };
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        async move {
            let res = inner.call(req).await?;
            Ok(match permit {
                Some(permit) => res.map(|body| Body::new(Permitted { body, permit })),
                None => res,
            })
        }
        .boxed()
    }
}

pin_project_lite::pin_project! {
    /// A response body that gives its call's permit back when it ends or is
    /// dropped.
    struct Permitted {
        #[pin]
        body: Body,
        permit: OwnedSemaphorePermit,
    }
}

impl http_body::Body for Permitted {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
