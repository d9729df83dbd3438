//! The authentication layer in front of a service: status codes, and the
//! principal handed to the handler.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dsr_auth::{
    AuthLayer, KeySet, Principal, ScopeRule, TokenRequest, TokenSigner, Validator, ValidatorConfig,
};
use tower_layer::Layer;
use tower_service::Service;

/// A test double for a gRPC service: answers 200 with the principal's subject
/// in a header.
#[derive(Clone)]
struct Echo;

impl Service<http::Request<()>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<()>) -> Self::Future {
        let subject = req
            .extensions()
            .get::<Principal>()
            .map(|p| p.subject.clone())
            .unwrap_or_default();
        ready(Ok(http::Response::builder()
            .header("x-subject", subject)
            .body(tonic::body::Body::default())
            .unwrap()))
    }
}

const RULES: &[ScopeRule] = &[
    ScopeRule {
        method: "Read",
        scopes: &["things:read"],
    },
    ScopeRule {
        method: "Write",
        scopes: &["things:read", "things:write"],
    },
];

fn setup() -> (AuthLayer, TokenSigner, Arc<Validator>) {
    let pair = dsr_auth::generate_ed25519("k1").unwrap();
    let keys = Arc::new(KeySet::from_jwks_json(&pair.jwks_json).unwrap());
    let validator = Arc::new(Validator::new(
        keys,
        ValidatorConfig {
            issuers: vec!["iss".into()],
            audience: "things".into(),
            leeway_secs: 5,
            grants: None,
        },
    ));
    (
        AuthLayer::new(validator.clone(), RULES),
        TokenSigner::from_ed25519_pem(&pair.private_pem, "k1", "iss").unwrap(),
        validator,
    )
}

fn token(signer: &TokenSigner, scopes: &[&str]) -> String {
    signer
        .mint(&TokenRequest {
            subject: "user-42".into(),
            audiences: vec!["things".into()],
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            ttl: Duration::from_secs(60),
        })
        .unwrap()
}

async fn call(
    layer: &AuthLayer,
    method: &str,
    token: Option<&str>,
) -> http::Response<tonic::body::Body> {
    let mut b = http::Request::builder().uri(format!("http://x/pkg.v1.Things/{method}"));
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    layer.layer(Echo).call(b.body(()).unwrap()).await.unwrap()
}

fn grpc_status(r: &http::Response<tonic::body::Body>) -> Option<&str> {
    r.headers().get("grpc-status").and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn principal_reaches_the_handler_and_scopes_are_enforced() {
    let (layer, signer, _) = setup();
    let ok = call(&layer, "Read", Some(&token(&signer, &["things:read"]))).await;
    assert_eq!(grpc_status(&ok), None);
    assert_eq!(ok.headers()["x-subject"], "user-42");

    // all scopes of a rule are required
    let denied = call(&layer, "Write", Some(&token(&signer, &["things:write"]))).await;
    assert_eq!(grpc_status(&denied), Some("7"), "PERMISSION_DENIED");
    // a method without a rule is refused, even with every scope
    let unknown = call(
        &layer,
        "Drop",
        Some(&token(&signer, &["things:read", "things:write"])),
    )
    .await;
    assert_eq!(grpc_status(&unknown), Some("7"));
    // no token, or not a bearer token
    assert_eq!(
        grpc_status(&call(&layer, "Read", None).await),
        Some("16"),
        "UNAUTHENTICATED"
    );
    let basic = http::Request::builder()
        .uri("http://x/pkg.v1.Things/Read")
        .header("authorization", "Basic dXNlcjpwdw==");
    let r = layer
        .layer(Echo)
        .call(basic.body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(grpc_status(&r), Some("16"));
}

#[tokio::test]
async fn service_tokens_are_attached_and_reused() {
    use tonic::service::Interceptor as _;
    let (_, signer, validator) = setup();
    let mut i = dsr_auth::ServiceTokenInterceptor::new(
        Arc::new(signer),
        TokenRequest {
            subject: "service:orchestrator".into(),
            audiences: vec!["things".into()],
            scopes: vec!["things:read".into()],
            ttl: Duration::from_secs(60),
        },
    );
    let a = i.call(tonic::Request::new(())).unwrap();
    let b = i.call(tonic::Request::new(())).unwrap();
    let ta = a
        .metadata()
        .get("authorization")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(ta.starts_with("Bearer "));
    assert_eq!(
        ta,
        b.metadata().get("authorization").unwrap().to_str().unwrap(),
        "cached until near expiry"
    );
    // and it verifies as the calling service with its scopes
    let p = validator
        .validate(ta.trim_start_matches("Bearer "))
        .unwrap();
    assert_eq!(p.subject, "service:orchestrator");
    assert!(p.has_scope("things:read") && !p.has_scope("things:write"));
}
