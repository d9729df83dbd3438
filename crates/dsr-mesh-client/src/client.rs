//! Calling another service of the mesh: a lazily connected channel (TLS to
//! `https://` endpoints with the process's client TLS settings), a service
//! token minted for the callee, the caller's trace context carried on, and a
//! client span and latency measure, on every call.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::NaiveDate;
use dsr_auth::{ServiceTokenInterceptor, TokenRequest, TokenSigner};
use dsr_domain::identity::Organisationsnummer;
use dsr_proto::common::v1 as common;
use dsr_proto::system::v1 as pb;
use tonic::codegen::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Request, Status};

use dsr_connector::grpc::{date_to_pb, timestamp};

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

/// A client of another service: the token and trace context written on
/// every call ([`Outgoing`]), each call observed
/// ([`dsr_telemetry::client::Observed`]).
pub type Calls = dsr_telemetry::client::Observed<InterceptedService<Channel, Outgoing>>;

/// `channel` to `peer` (a system id or a service name), calling through
/// `out`.
pub fn calls(channel: Channel, out: Outgoing, peer: &str) -> Calls {
    dsr_telemetry::client::Observed::new(InterceptedService::new(channel, out), peer)
}

static CLIENT_TLS: OnceLock<ClientTlsConfig> = OnceLock::new();

/// Sets, once per process, how calls to `https://` endpoints use TLS: the
/// CA to trust and, for mutual TLS, the certificate to present. Returns
/// false when it was already set.
pub fn set_client_tls(tls: ClientTlsConfig) -> bool {
    CLIENT_TLS.set(tls).is_ok()
}

/// A channel to `endpoint` that connects on first use; see [`endpoint`].
pub fn lazy_channel(endpoint: &str) -> Result<Channel, String> {
    Ok(self::endpoint(endpoint)?.connect_lazy())
}

/// How to reach `endpoint`: TLS for an `https://` endpoint, with the
/// settings of [`set_client_tls`] (required). The error names the setting,
/// never a value beyond the endpoint itself.
pub fn endpoint(endpoint: &str) -> Result<Endpoint, String> {
    let mut e = Channel::from_shared(endpoint.to_owned())
        .map_err(|_| format!("invalid endpoint {endpoint:?}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    if endpoint.starts_with("https://") {
        let tls = CLIENT_TLS.get().cloned().ok_or_else(|| {
            format!("endpoint {endpoint:?} is https: set client.tls_ca (the CA to trust)")
        })?;
        e = e
            .tls_config(tls)
            .map_err(|err| format!("TLS for endpoint {endpoint:?}: {err}"))?;
    }
    Ok(e)
}

/// A stable, personal-data-free reason for a failed call: the gRPC code's
/// canonical name, e.g. "UNAVAILABLE", "DEADLINE_EXCEEDED"; or
/// AWAITING_VENDOR when a system waits for a person's answer (the caller
/// waits, it does not give up).
pub fn failure_reason(s: &Status) -> String {
    use tonic_types::StatusExt as _;
    let waiting = s.code() == tonic::Code::Unavailable
        && s.get_details_error_info().is_some_and(|i| {
            i.domain == dsr_connector::grpc::DOMAIN
                && i.reason == dsr_connector::grpc::AWAITING_VENDOR
        });
    if waiting {
        dsr_connector::grpc::AWAITING_VENDOR.to_owned()
    } else {
        code_name(s.code()).to_owned()
    }
}

/// The canonical name of a gRPC status code (as in the gRPC specification).
pub fn code_name(c: tonic::Code) -> &'static str {
    match c {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The header of an instruction to `system` for the request `request_id` of
/// `controller`, due on `due`, under `idempotency_key`: issued five seconds
/// ago (clock skew) and valid for ten minutes.
pub fn instruction(
    system: &str,
    request_id: &str,
    controller: &Organisationsnummer,
    due: NaiveDate,
    idempotency_key: &str,
) -> pb::Instruction {
    let now = chrono::Utc::now();
    pb::Instruction {
        request_id: request_id.to_owned(),
        controller: Some(common::ControllerRef {
            organisation_number: controller.as_str().to_owned(),
        }),
        system_id: system.to_owned(),
        due_date: Some(date_to_pb(due)),
        issued_at: Some(timestamp(now - chrono::Duration::seconds(5))),
        expires_at: Some(timestamp(now + chrono::Duration::minutes(10))),
        idempotency_key: idempotency_key.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::failure_reason;
    use tonic::{Code, Status};

    #[test]
    fn reasons_are_the_codes_canonical_names() {
        for (code, name) in [
            (Code::DeadlineExceeded, "DEADLINE_EXCEEDED"),
            (Code::Unavailable, "UNAVAILABLE"),
            (Code::FailedPrecondition, "FAILED_PRECONDITION"),
            (Code::Unauthenticated, "UNAUTHENTICATED"),
        ] {
            assert_eq!(failure_reason(&Status::new(code, "a@b.se")), name);
        }
    }
}
