//! Serving a set of DSR Mesh gRPC services on an already-bound listener.
//!
//! [`serve`] mounts, next to the given services:
//! - gRPC health (`grpc.health.v1.Health`), one status per service plus the
//!   overall status "", all SERVING while up;
//! - reflection v1 and v1alpha (grpcurl and Python clients use v1alpha);
//! - a request context layer: a request id (`x-request-id`, taken from the
//!   caller or made up), a span per call whose parent is the caller's W3C
//!   trace context;
//! - RPC metrics by service, method and code ([`RpcMetricsLayer`]);
//! - a server-wide bound on calls in progress, streams counted until they
//!   end, answering RESOURCE_EXHAUSTED when full; health is never refused
//!   ([`CallLimitLayer`]); tonic's per-request timeout, which also honours
//!   the caller's `grpc-timeout`;
//! - optional TLS (rustls), requiring client certificates when a CA is set;
//! - optional gRPC-Web (HTTP/1.1 and HTTP/2, binary and text encodings) for
//!   browsers, with CORS for the configured origins only ([`GrpcWeb`]); the
//!   same scopes and limits apply as for gRPC.
//!
//! [`notifier`] sends email and SMS (SMTP, or an outbox directory in
//! development) for the services that write to people and vendors.
//!
//! When the shutdown future completes, every health status turns
//! NOT_SERVING, the listener closes (new connections are refused, open ones
//! get GOAWAY so new calls are refused), and in-flight calls run to completion
//! within the grace period.
#![forbid(unsafe_code)]

mod context;
mod limit;
mod metrics;
pub mod notifier;

pub use context::{RequestContextLayer, RequestId};
pub use limit::CallLimitLayer;
pub use metrics::RpcMetricsLayer;

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tower::ServiceBuilder;

/// Why a server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A TLS file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    TlsFile {
        /// Which file.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS configuration was refused.
    #[error("invalid TLS configuration: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// Reflection could not be built from the descriptor sets.
    #[error("invalid descriptor set for reflection: {0}")]
    Reflection(String),
    /// A gRPC-Web origin is not a valid origin.
    #[error(
        "invalid gRPC-Web origin {0:?}: give scheme://host[:port], e.g. https://portal.example.se"
    )]
    GrpcWebOrigin(String),
    /// The health port could not be bound.
    #[error("cannot listen on the health port: {0}")]
    HealthListen(#[source] std::io::Error),
    /// The server failed.
    #[error("server error: {0}")]
    Transport(#[source] tonic::transport::Error),
}

/// TLS settings: PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

/// gRPC-Web for browsers: which origins' pages may call (CORS). A page
/// from another origin is refused by the browser; calls without an
/// `Origin` (non-browser clients, same-origin pages) are served as any
/// gRPC-Web call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcWeb {
    /// Origins allowed, as `scheme://host[:port]` (no path, no `*`).
    pub allowed_origins: Vec<String>,
}

/// The headers a browser may send on a gRPC-Web call.
const WEB_REQUEST_HEADERS: [&str; 8] = [
    "content-type",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "authorization",
    "x-request-id",
    "traceparent",
    "tracestate",
];

/// The headers a page may read from the answer: the status and its details.
const WEB_RESPONSE_HEADERS: [&str; 4] = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "x-request-id",
];

/// The CORS layer for `web`; an origin that is not one is refused.
pub fn cors_layer(web: &GrpcWeb) -> Result<tower_http::cors::CorsLayer, Error> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let mut origins = Vec::with_capacity(web.allowed_origins.len());
    for o in &web.allowed_origins {
        let ok = (o.starts_with("https://") || o.starts_with("http://"))
            && !o.trim_end_matches('/').contains(['*', '?', '#'])
            && o.splitn(4, '/').nth(3).is_none_or(str::is_empty);
        let value = http::HeaderValue::from_str(o.trim_end_matches('/'))
            .ok()
            .filter(|_| ok)
            .ok_or_else(|| Error::GrpcWebOrigin(o.clone()))?;
        origins.push(value);
    }
    Ok(CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([http::Method::POST])
        .allow_headers(WEB_REQUEST_HEADERS.map(http::HeaderName::from_static))
        .expose_headers(WEB_RESPONSE_HEADERS.map(http::HeaderName::from_static))
        .max_age(Duration::from_secs(24 * 3600)))
}

/// How a server runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Longest a call may take; a shorter `grpc-timeout` from the caller wins.
    pub request_timeout: Duration,
    /// Most calls in progress at once across all connections, a stream
    /// counted until it ends; beyond it calls are refused with
    /// RESOURCE_EXHAUSTED (health checks are never counted).
    pub concurrency_limit: usize,
    /// After shutdown starts, how long in-flight calls may still run.
    pub shutdown_grace: Duration,
    /// After health turns NOT_SERVING, how long to keep accepting calls so that
    /// load balancers notice (0 in development, a few seconds on Kubernetes).
    pub drain_delay: Duration,
    /// TLS, or plaintext when `None`.
    pub tls: Option<TlsConfig>,
    /// A second, plaintext address, the ops port: `grpc.health.v1.Health`
    /// for probes that cannot speak TLS (the kubelet's), following the same
    /// statuses and stopping with the server, and `GET /metrics` for
    /// Prometheus.
    pub health_listen: Option<std::net::SocketAddr>,
    /// gRPC-Web for browsers, or gRPC only when `None`.
    pub grpc_web: Option<GrpcWeb>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            concurrency_limit: 256,
            shutdown_grace: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
            tls: None,
            health_listen: None,
            grpc_web: None,
        }
    }
}

/// The gRPC services one server serves, with the descriptor sets reflection
/// should describe.
#[derive(Debug)]
pub struct ServiceSet {
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    descriptor_sets: Vec<&'static [u8]>,
}

impl Default for ServiceSet {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceSet {
    /// An empty set.
    pub fn new() -> Self {
        Self {
            routes: RoutesBuilder::default(),
            names: Vec::new(),
            descriptor_sets: Vec::new(),
        }
    }

    /// Adds a service.
    pub fn add<S>(&mut self, svc: S) -> &mut Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(svc);
        self
    }

    /// Adds an encoded `FileDescriptorSet` for reflection.
    pub fn describe(&mut self, descriptor_set: &'static [u8]) -> &mut Self {
        if !self.descriptor_sets.contains(&descriptor_set) {
            self.descriptor_sets.push(descriptor_set);
        }
        self
    }

    /// The fully qualified names of the services added.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }
}

fn read(what: &'static str, path: &PathBuf) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::TlsFile {
        what,
        path: path.clone(),
        source,
    })
}

/// Builds the rustls configuration for `tls`.
pub fn tls_config(tls: &TlsConfig) -> Result<ServerTlsConfig, Error> {
    let identity = Identity::from_pem(
        read("certificate", &tls.cert)?,
        read("private key", &tls.key)?,
    );
    let mut cfg = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca {
        cfg = cfg.client_ca_root(Certificate::from_pem(read("client CA", ca)?));
    }
    Ok(cfg)
}

/// Serves `services` on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    services: ServiceSet,
    cfg: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let ServiceSet {
        mut routes,
        names,
        descriptor_sets,
    } = services;
    let local = listener.local_addr().ok();

    let (reporter, health) = tonic_health::server::health_reporter();
    for name in &names {
        reporter
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }

    // Health, and google.rpc's error details so that clients such as grpcurl
    // can decode the ErrorInfo and BadRequest attached to errors.
    let mut v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET);
    let mut v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET);
    for set in &descriptor_sets {
        v1 = v1.register_encoded_file_descriptor_set(set);
        v1alpha = v1alpha.register_encoded_file_descriptor_set(set);
    }
    // Reflection lists what this port serves, not every service of the
    // descriptor sets (which describe the whole mesh).
    for name in names.iter().copied().chain([
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]) {
        v1 = v1.with_service_name(name);
        v1alpha = v1alpha.with_service_name(name);
    }
    let v1 = v1
        .build_v1()
        .map_err(|e| Error::Reflection(e.to_string()))?;
    let v1alpha = v1alpha
        .build_v1alpha()
        .map_err(|e| Error::Reflection(e.to_string()))?;
    routes
        .add_service(health.clone())
        .add_service(v1)
        .add_service(v1alpha);
    // A call to a service this port does not serve says so, naming what
    // it serves (the mesh's services each have their own port), instead of
    // an UNIMPLEMENTED with no message.
    let served = names.join(", ");
    let routes = tonic::service::Routes::from(routes.routes().into_axum_router().fallback(
        move |req: http::Request<axum::body::Body>| {
            let service = req
                .uri()
                .path()
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default()
                .chars()
                .take(128)
                .collect::<String>();
            let served = served.clone();
            async move {
                tonic::Status::unimplemented(format!(
                    "{service} is not served on this port; it serves {served} (each service of the mesh listens on its own port)"
                ))
                .into_http::<axum::body::Body>()
            }
        },
    ));

    // The probes' port: health only, plaintext, the same reporter.
    let health_only = match cfg.health_listen {
        Some(addr) => {
            let l = TcpListener::bind(addr).await.map_err(Error::HealthListen)?;
            tracing::info!(addr = %addr, "health probes served");
            let routes = ops_routes(health.clone());
            Some(tokio::spawn(async move {
                if let Err(e) = Server::builder()
                    .accept_http1(true)
                    .add_routes(routes)
                    .serve_with_incoming(incoming(l))
                    .await
                {
                    tracing::warn!(error = %e, "health port stopped");
                }
            }))
        }
        None => None,
    };
    let metric_names: Vec<&'static str> = names
        .iter()
        .copied()
        .chain([
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ])
        .collect();
    let cors = cfg.grpc_web.as_ref().map(cors_layer).transpose()?;
    let web = cfg.grpc_web.is_some();
    let layers = ServiceBuilder::new()
        .option_layer(cors)
        .option_layer(web.then(tonic_web::GrpcWebLayer::new))
        .layer(RpcMetricsLayer::new(&metric_names))
        .layer(RequestContextLayer)
        .layer(CallLimitLayer::new(cfg.concurrency_limit))
        .into_inner();
    // Browsers speak gRPC-Web over HTTP/1.1 too.
    let mut builder = Server::builder()
        .timeout(cfg.request_timeout)
        .accept_http1(web);
    if let Some(tls) = &cfg.tls {
        builder = builder.tls_config(tls_config(tls)?).map_err(Error::Tls)?;
    }

    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let drain_delay = cfg.drain_delay;
    let signal = {
        let reporter = reporter.clone();
        let names = names.clone();
        async move {
            shutdown.await;
            tracing::info!("shutdown requested: health NOT_SERVING, draining in-flight calls");
            reporter
                .set_service_status("", ServingStatus::NotServing)
                .await;
            for name in names {
                reporter
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
            if !drain_delay.is_zero() {
                tokio::time::sleep(drain_delay).await;
            }
            let _ = stopping_tx.send(());
        }
    };

    let addr = local.map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(%addr, services = ?names, tls = cfg.tls.is_some(), grpc_web = web, "serving");
    let server = builder
        .layer(layers)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming(listener), signal);
    tokio::pin!(server);
    let grace = cfg.shutdown_grace;
    let expired = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        res = &mut server => {
            res.map_err(Error::Transport)?;
            tracing::info!("stopped");
        }
        () = expired => {
            tracing::warn!(grace_secs = grace.as_secs(), "grace period over: closing remaining calls");
        }
    }
    if let Some(h) = health_only {
        h.abort();
    }
    Ok(())
}

/// Serves `grpc.health.v1.Health` (and `/metrics`) on `listener`, SERVING for `name`
/// and overall until `shutdown` completes, then NOT_SERVING for
/// `drain_delay` before it stops: the probes' port of a process that is not
/// a gRPC service itself (the privacy centre).
pub async fn serve_health(
    listener: TcpListener,
    name: &str,
    drain_delay: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(name, ServingStatus::Serving)
        .await;
    let signal = async move {
        shutdown.await;
        reporter
            .set_service_status("", ServingStatus::NotServing)
            .await;
        reporter
            .set_service_status(name, ServingStatus::NotServing)
            .await;
        if !drain_delay.is_zero() {
            tokio::time::sleep(drain_delay).await;
        }
    };
    Server::builder()
        .accept_http1(true)
        .add_routes(ops_routes(health))
        .serve_with_incoming_shutdown(incoming(listener), signal)
        .await
        .map_err(Error::Transport)
}

/// The ops port's routes: gRPC health for the probes (with reflection of
/// health alone, for grpcurl), and `GET /metrics` (HTTP/1.1 or 2) for
/// Prometheus, the process's metrics in its text format.
fn ops_routes<H>(health: H) -> tonic::service::Routes
where
    H: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    H::Future: Send + 'static,
{
    let metrics = axum::routing::get(|| async {
        (
            [(
                http::header::CONTENT_TYPE,
                dsr_telemetry::metrics::CONTENT_TYPE,
            )],
            dsr_telemetry::metrics::render(),
        )
    });
    let mut routes = tonic::service::Routes::new(health);
    // Reflection of health alone, so that `grpcurl -plaintext host:8081
    // grpc.health.v1.Health/Check` works without proto files.
    if let Ok(v1) = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health")
        .build_v1()
    {
        routes = routes.add_service(v1);
    }
    tonic::service::Routes::from(routes.into_axum_router().route("/metrics", metrics))
}

/// Accepted connections with Nagle's algorithm off: gRPC writes headers and
/// body separately, and with delayed acknowledgements a small answer would
/// otherwise wait about 40 ms.
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt as _;
    TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok(conn)
    })
}

/// Completes on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when
/// this is called, not when it is first polled: call it before binding, so a
/// SIGTERM that arrives as soon as the port answers still drains.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => tracing::info!(signal = "SIGINT", "signal received"),
            () = term => tracing::info!(signal = "SIGTERM", "signal received"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Error, GrpcWeb, cors_layer};

    #[test]
    fn grpc_web_origins_are_origins_or_refused_by_name() {
        let web = |o: &[&str]| GrpcWeb {
            allowed_origins: o.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert!(cors_layer(&web(&[])).is_ok());
        assert!(
            cors_layer(&web(&[
                "https://portal.example.se",
                "http://127.0.0.1:8080",
                "https://portal.example.se/"
            ]))
            .is_ok()
        );
        for bad in [
            "*",
            "portal.example.se",
            "https://*.example.se",
            "https://portal.example.se/path",
            "ftp://portal.example.se",
            "https://portal.example.se\n",
        ] {
            assert!(
                matches!(cors_layer(&web(&[bad])), Err(Error::GrpcWebOrigin(o)) if o == bad),
                "{bad:?}"
            );
        }
    }
}
