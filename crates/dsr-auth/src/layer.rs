//! The tower layer that authenticates and authorises every call to one
//! gRPC service.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, FutureExt};
use tonic::server::NamedService;
use tonic_types::{ErrorDetails, StatusExt};
use tower_layer::Layer;
use tower_service::Service;

use crate::{Error, Principal, Validator};

/// The scopes one RPC requires (all of them).
#[derive(Clone, Copy, Debug)]
pub struct ScopeRule {
    /// The RPC's method name, e.g. "CreateRecipient".
    pub method: &'static str,
    /// Required scopes.
    pub scopes: &'static [&'static str],
}

/// Wraps one gRPC service: every call must carry a valid bearer token with the
/// scopes its method requires. Methods without a rule are refused.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    validator: Arc<Validator>,
    rules: &'static [ScopeRule],
}

impl AuthLayer {
    /// A layer with `validator` and the service's scope table.
    pub fn new(validator: Arc<Validator>, rules: &'static [ScopeRule]) -> Self {
        Self { validator, rules }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            validator: self.validator.clone(),
            rules: self.rules,
        }
    }
}

/// See [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    validator: Arc<Validator>,
    rules: &'static [ScopeRule],
}

impl<S: NamedService> NamedService for AuthService<S> {
    const NAME: &'static str = S::NAME;
}

/// The gRPC status for an authentication or authorisation failure.
pub(crate) fn status_for(err: &Error) -> tonic::Status {
    let (code, message) = match err {
        Error::MissingScope(_) | Error::NoRule | Error::NotGranted => {
            (tonic::Code::PermissionDenied, "permission denied")
        }
        Error::Missing => (tonic::Code::Unauthenticated, "authentication required"),
        Error::KeySet(_) | Error::Signing(_) => (tonic::Code::Internal, "internal error"),
        Error::Malformed
        | Error::UnknownKey
        | Error::AlgorithmMismatch
        | Error::BadSignature
        | Error::Expired
        | Error::NotYetValid
        | Error::Issuer
        | Error::Audience
        | Error::Claims => (tonic::Code::Unauthenticated, "invalid token"),
    };
    let mut details = ErrorDetails::with_error_info(err.reason(), "auth.dsr-mesh", []);
    if let Error::MissingScope(scope) = err {
        details = ErrorDetails::with_error_info(
            err.reason(),
            "auth.dsr-mesh",
            [("scope".to_owned(), (*scope).to_owned())],
        );
    }
    tonic::Status::with_error_details(code, message, details)
}

fn bearer(headers: &http::HeaderMap) -> Result<&str, Error> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(Error::Missing)?;
    let value = value.to_str().map_err(|_| Error::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(Error::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Error::Malformed);
    }
    Ok(token.trim())
}

fn authorise(
    validator: &Validator,
    rules: &[ScopeRule],
    path: &str,
    headers: &http::HeaderMap,
) -> Result<Principal, Error> {
    let principal = validator.validate(bearer(headers)?)?;
    let method = path.rsplit('/').next().unwrap_or_default();
    let rule = rules
        .iter()
        .find(|r| r.method == method)
        .ok_or(Error::NoRule)?;
    if let Some(missing) = rule.scopes.iter().find(|s| !principal.has_scope(s)) {
        return Err(Error::MissingScope(missing));
    }
    Ok(principal)
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match authorise(&self.validator, self.rules, req.uri().path(), req.headers()) {
            Ok(principal) => {
                tracing::debug!(subject_kind = principal_kind(&principal), "call authorised");
                req.extensions_mut().insert(principal);
                // Take the service that was made ready and leave a fresh clone behind.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                async move { inner.call(req).await }.boxed()
            }
            Err(err) => {
                tracing::info!(reason = err.reason(), "call refused");
                let response = status_for(&err).into_http();
                async move { Ok(response) }.boxed()
            }
        }
    }
}

/// "service" or "user", for logs (the subject itself may identify a person).
fn principal_kind(p: &Principal) -> &'static str {
    if p.subject.starts_with("service:") {
        "service"
    } else {
        "user"
    }
}
