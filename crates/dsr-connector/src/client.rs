//! Calling another service of the mesh: a lazily connected channel, a
//! service token minted for the callee, and the caller's trace context
//! carried on, on every call.

use std::sync::Arc;
use std::time::Duration;

use dsr_auth::{ServiceTokenInterceptor, TokenRequest, TokenSigner};
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Attaches a service token and the current W3C trace context.
#[derive(Clone, Debug)]
pub struct Outgoing {
    token: ServiceTokenInterceptor,
}

impl Outgoing {
    /// Calls as `service:<caller>` to `audience`, with `scopes`.
    pub fn new(signer: Arc<TokenSigner>, caller: &str, audience: &str, scopes: &[&str]) -> Self {
        Self {
            token: ServiceTokenInterceptor::new(
                signer,
                TokenRequest {
                    subject: format!("service:{caller}"),
                    audiences: vec![audience.to_owned()],
                    scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                    ttl: Duration::from_secs(300),
                },
            ),
        }
    }
}

impl Interceptor for Outgoing {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let req = dsr_telemetry::propagation::TraceContextInterceptor.call(req)?;
        self.token.call(req)
    }
}

/// A channel to `endpoint` that connects on first use. The error names the
/// setting, never a value beyond the endpoint itself.
pub fn lazy_channel(endpoint: &str) -> Result<Channel, String> {
    Ok(Channel::from_shared(endpoint.to_owned())
        .map_err(|_| format!("invalid endpoint {endpoint:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// A stable, personal-data-free reason for a failed call: the gRPC code in
/// upper case, e.g. "UNAVAILABLE".
pub fn failure_reason(s: &Status) -> String {
    format!("{:?}", s.code()).to_uppercase()
}
