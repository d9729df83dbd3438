//! The HTTP connector's calls against real HTTP servers the tests start:
//! retries with backoff and `Retry-After`, OAuth 2 client credentials (a
//! token asked for once, asked again when refused), the rate limit, paging,
//! and the reference REST system through the contract with its key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use dsr_system_sql::http::api::{Api, ApiError, Vars};
use dsr_system_sql::http::manifest::{
    ApiSpec, AuthSpec, CallSpec, HttpManifest, OAuth2Spec, PageSpec,
};
use dsr_system_sql::http::reference_api::{self, Data, Settings};
use serde_json::{Value, json};

async fn serve(app: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

fn spec(base: &str, auth: AuthSpec, retries: u32, rps: u32) -> ApiSpec {
    ApiSpec {
        base_url: base.to_owned(),
        timeout_secs: 5,
        retries,
        requests_per_second: rps,
        auth,
    }
}

fn call(path: &str) -> CallSpec {
    CallSpec {
        method: "GET".into(),
        path: path.into(),
        query: BTreeMap::new(),
        body: None,
    }
}

#[derive(Clone, Default)]
struct Counters {
    calls: Arc<AtomicUsize>,
    tokens: Arc<AtomicUsize>,
}

#[tokio::test]
async fn a_busy_api_is_retried_with_backoff_and_retry_after_then_given_up_on() {
    let c = Counters::default();
    let app = axum::Router::new()
        .route(
            "/flaky",
            get(|State(c): State<Counters>| async move {
                // Busy twice (once with Retry-After), then answers.
                match c.calls.fetch_add(1, Ordering::SeqCst) {
                    0 => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after", "1")],
                        "busy",
                    )
                        .into_response(),
                    1 => (StatusCode::TOO_MANY_REQUESTS, "slow down").into_response(),
                    _ => Json(json!({"ok": true})).into_response(),
                }
            }),
        )
        .route(
            "/down",
            get(|| async { (StatusCode::BAD_GATEWAY, "down").into_response() }),
        )
        .route(
            "/broken",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "bug").into_response() }),
        )
        .with_state(c.clone());
    let base = serve(app).await;
    let api = Api::new(&spec(&base, AuthSpec::default(), 3, 0)).unwrap();
    let t0 = Instant::now();
    let v = api
        .call(&call("/flaky"), &Vars::new(), None, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(c.calls.load(Ordering::SeqCst), 3);
    // Retry-After: 1 s, then a backoff of 400 ms.
    assert!(
        t0.elapsed() >= Duration::from_millis(1300),
        "{:?}",
        t0.elapsed()
    );
    // Out of retries: unavailable, naming the call, never the URL's values.
    let api = Api::new(&spec(&base, AuthSpec::default(), 1, 0)).unwrap();
    let e = api
        .call(
            &call("/down"),
            &Vars::new(),
            Some(("email", "x@example.com")),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::Unavailable { .. }), "{e}");
    assert!(
        e.to_string().contains("GET /down") && !e.to_string().contains("example.com"),
        "{e}"
    );
    // A server error is not retried: it is reported at once.
    let e = api
        .call(&call("/broken"), &Vars::new(), None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::Status { status: 500, .. }), "{e}");
}

#[tokio::test]
async fn oauth2_client_credentials_are_asked_once_and_again_when_refused() {
    let c = Counters::default();
    let app = axum::Router::new()
        .route(
            "/token",
            post(|State(c): State<Counters>, body: String| async move {
                if !body.contains("grant_type=client_credentials")
                    || !body.contains("client_secret=s3cret")
                {
                    return (StatusCode::UNAUTHORIZED, "bad client").into_response();
                }
                let n = c.tokens.fetch_add(1, Ordering::SeqCst);
                Json(json!({"access_token": format!("t{n}"), "expires_in": 3600})).into_response()
            }),
        )
        .route(
            "/data",
            get(|State(c): State<Counters>, headers: HeaderMap| async move {
                let n = c.calls.fetch_add(1, Ordering::SeqCst);
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                // The third call finds its token revoked.
                if auth == "Bearer t0" && n < 2 || auth == "Bearer t1" {
                    Json(json!({"items": [1]})).into_response()
                } else {
                    (StatusCode::UNAUTHORIZED, "token refused").into_response()
                }
            }),
        )
        .with_state(c.clone());
    let base = serve(app).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let auth = AuthSpec {
        api_key: None,
        oauth2: Some(OAuth2Spec {
            token_url: format!("{base}/token"),
            client_id: "dsr".into(),
            client_secret_env: None,
            client_secret_file: Some(secret.display().to_string()),
            scope: "read write".into(),
        }),
    };
    let api = Api::new(&spec(&base, auth, 2, 0)).unwrap();
    for _ in 0..3 {
        let v = api
            .call(&call("/data"), &Vars::new(), None, None)
            .await
            .unwrap();
        assert_eq!(v.unwrap()["items"][0], 1);
    }
    // One token for the first two calls, a second after the refusal.
    assert_eq!(c.tokens.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_rate_limit_spaces_calls_and_lists_are_followed_page_by_page() {
    let app = axum::Router::new().route(
        "/items",
        get(|Query(q): Query<BTreeMap<String, String>>| async move {
            let from: usize = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
            let items: Vec<usize> = (from..(from + 3).min(10)).collect();
            let next = (from + 3 < 10).then(|| (from + 3).to_string());
            Json(json!({"data": {"items": items}, "next": next}))
        }),
    );
    let base = serve(app).await;
    let api = Api::new(&spec(&base, AuthSpec::default(), 0, 10)).unwrap();
    let page = PageSpec {
        items: "data.items".into(),
        next: Some("next".into()),
        cursor_param: "cursor".into(),
    };
    let t0 = Instant::now();
    let items = api
        .list(&call("/items"), &page, &Vars::new())
        .await
        .unwrap();
    assert_eq!(items, (0..10).map(Value::from).collect::<Vec<_>>());
    // Four pages at 10 calls a second: at least 300 ms between the first
    // and the last.
    assert!(
        t0.elapsed() >= Duration::from_millis(290),
        "{:?}",
        t0.elapsed()
    );
}

fn reference_manifest(base: &str, key_file: &std::path::Path) -> HttpManifest {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/reference/survey-http.yaml"
    ))
    .unwrap()
    .replace("http://127.0.0.1:50061/v1", &format!("{base}/v1"))
    .replace(
        "env: SURVEY_API_KEY",
        &format!("file: {}", key_file.display()),
    );
    HttpManifest::parse(&text, "survey-http.yaml").unwrap()
}

#[tokio::test]
async fn the_reference_api_refuses_calls_without_its_key_and_the_manifest_reaches_it() {
    let key = "reference-api-key-000111";
    let data = Data::seeded(300, 1);
    let someone = data.respondents.values().next().unwrap().clone();
    let base = serve(reference_api::router(
        data,
        Settings {
            api_key: key.into(),
            page_size: 5,
            file: None,
        },
    ))
    .await;
    // Without the key: 401, which the connector reports, not retries.
    let api = Api::new(&spec(&format!("{base}/v1"), AuthSpec::default(), 3, 0)).unwrap();
    let e = api
        .call(&call("/respondents"), &Vars::new(), None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, ApiError::Status { status: 401, .. }), "{e}");
    // With it, through the manifest: the person's record by email.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, key).unwrap();
    let m = reference_manifest(&base, &key_file);
    let api = Api::new(&m.api).unwrap();
    let r = &m.resources[0];
    let email = someone.email.clone().unwrap();
    let vars: Vars<'_> = [("value", email.as_str()), ("controller", "556134-1248")].into();
    let found = api.list(&r.find[0].call, &r.page, &vars).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], someone.id.as_str());
    // Every respondent of the controller, page by page (5 a page).
    let vars: Vars<'_> = [("controller", "556134-1248")].into();
    let all = api
        .list(r.list.as_ref().unwrap(), &r.page, &vars)
        .await
        .unwrap();
    assert!(all.len() > 5, "{}", all.len());
}
