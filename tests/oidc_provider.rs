//! A small OpenID Connect provider for the browser tests, standing in for
//! the company's identity provider: discovery, an authorization page where
//! the tester picks who signs in (or cancels), the code exchange with the
//! client's secret and the PKCE verifier checked, and its published key.
//! ID tokens are EdDSA-signed with a key made for the run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest as _, Sha256};

/// Who may sign in: the button's label and the ID token's claims.
pub(crate) type Users = Vec<(String, serde_json::Value)>;

struct Pending {
    redirect_uri: String,
    state: String,
    nonce: String,
    challenge: String,
}

struct Issued {
    claims: serde_json::Value,
    redirect_uri: String,
    challenge: String,
}

struct Idp {
    url: String,
    client_id: String,
    secret: String,
    users: Users,
    key: jsonwebtoken::EncodingKey,
    jwks: String,
    pending: Mutex<HashMap<String, Pending>>,
    codes: Mutex<HashMap<String, Issued>>,
    /// Token exchanges refused (a wrong secret, verifier or code).
    refused: Mutex<u32>,
}

/// A running provider.
pub(crate) struct Provider {
    /// Its issuer URL.
    pub(crate) url: String,
    /// Its keys (JWKS), for a service told to trust it by file.
    pub(crate) jwks: String,
    idp: Arc<Idp>,
}

impl Provider {
    /// Token exchanges it refused so far.
    pub(crate) fn refused(&self) -> u32 {
        *self.idp.refused.lock().unwrap()
    }
}

/// Starts a provider on `port` for client `client_id` with `secret`.
pub(crate) async fn start(port: u16, client_id: &str, secret: &str, users: Users) -> Provider {
    let url = format!("http://127.0.0.1:{port}");
    let pair = dsr_auth::generate_ed25519("test-idp-1").unwrap();
    let idp = Arc::new(Idp {
        url: url.clone(),
        client_id: client_id.to_owned(),
        secret: secret.to_owned(),
        users,
        key: jsonwebtoken::EncodingKey::from_ed_pem(pair.private_pem.as_bytes()).unwrap(),
        jwks: pair.jwks_json.clone(),
        pending: Mutex::new(HashMap::new()),
        codes: Mutex::new(HashMap::new()),
        refused: Mutex::new(0),
    });
    let app = axum::Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(jwks))
        .route("/authorize", get(authorize))
        .route("/authorize/{id}", post(choose))
        .route("/token", post(token))
        .with_state(idp.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Provider {
        url,
        jwks: pair.jwks_json,
        idp,
    }
}

fn json(v: serde_json::Value) -> ([(header::HeaderName, &'static str); 1], String) {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string())
}

async fn discovery(State(i): State<Arc<Idp>>) -> Response {
    json(serde_json::json!({
        "issuer": i.url,
        "authorization_endpoint": format!("{}/authorize", i.url),
        "token_endpoint": format!("{}/token", i.url),
        "jwks_uri": format!("{}/jwks", i.url),
        "response_types_supported": ["code"],
        "id_token_signing_alg_values_supported": ["EdDSA"],
    }))
    .into_response()
}

async fn jwks(State(i): State<Arc<Idp>>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], i.jwks.clone()).into_response()
}

async fn authorize(
    State(i): State<Arc<Idp>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("client_id") != i.client_id
        || get("response_type") != "code"
        || get("code_challenge_method") != "S256"
        || get("code_challenge").is_empty()
        || !get("scope").split(' ').any(|s| s == "openid")
    {
        return (StatusCode::BAD_REQUEST, "bad authorization request").into_response();
    }
    let id = uuid::Uuid::new_v4().to_string();
    i.pending.lock().unwrap().insert(
        id.clone(),
        Pending {
            redirect_uri: get("redirect_uri"),
            state: get("state"),
            nonce: get("nonce"),
            challenge: get("code_challenge"),
        },
    );
    let mut page = String::from(
        "<!doctype html><html lang=\"en\"><head><title>Test identity provider</title></head><body><h1>Sign in</h1>",
    );
    for (n, (label, _)) in i.users.iter().enumerate() {
        page.push_str(&format!(
            "<form method=\"post\" action=\"/authorize/{id}\"><input type=\"hidden\" name=\"user\" value=\"{n}\">\
<button type=\"submit\" id=\"user-{n}\">{label}</button></form>"
        ));
    }
    page.push_str(&format!(
        "<form method=\"post\" action=\"/authorize/{id}\"><input type=\"hidden\" name=\"user\" value=\"cancel\">\
<button type=\"submit\" id=\"cancel\">Cancel</button></form></body></html>"
    ));
    Html(page).into_response()
}

async fn choose(
    State(i): State<Arc<Idp>>,
    Path(id): Path<String>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let Some(p) = i.pending.lock().unwrap().remove(&id) else {
        return (StatusCode::BAD_REQUEST, "unknown authorization").into_response();
    };
    let sep = if p.redirect_uri.contains('?') {
        '&'
    } else {
        '?'
    };
    let user = f.get("user").and_then(|u| u.parse::<usize>().ok());
    let Some((_, claims)) = user.and_then(|n| i.users.get(n)) else {
        return Redirect::to(&format!(
            "{}{sep}error=access_denied&state={}",
            p.redirect_uri, p.state
        ))
        .into_response();
    };
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = claims.clone();
    let o = claims.as_object_mut().unwrap();
    o.insert("iss".into(), i.url.clone().into());
    o.insert("aud".into(), i.client_id.clone().into());
    o.insert("iat".into(), now.into());
    o.insert("exp".into(), (now + 300).into());
    o.insert("nonce".into(), p.nonce.clone().into());
    o.entry("sub")
        .or_insert_with(|| uuid::Uuid::new_v4().to_string().into());
    let code = uuid::Uuid::new_v4().to_string();
    i.codes.lock().unwrap().insert(
        code.clone(),
        Issued {
            claims,
            redirect_uri: p.redirect_uri.clone(),
            challenge: p.challenge,
        },
    );
    Redirect::to(&format!(
        "{}{sep}code={code}&state={}",
        p.redirect_uri, p.state
    ))
    .into_response()
}

async fn token(
    State(i): State<Arc<Idp>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let refuse = || {
        *i.refused.lock().unwrap() += 1;
        (
            StatusCode::BAD_REQUEST,
            json(serde_json::json!({ "error": "invalid_grant" })),
        )
            .into_response()
    };
    let basic = format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", i.client_id, i.secret))
    );
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(basic.as_str())
        || f.get("grant_type").map(String::as_str) != Some("authorization_code")
    {
        return refuse();
    }
    // A code is good once.
    let Some(issued) = f
        .get("code")
        .and_then(|c| i.codes.lock().unwrap().remove(c))
    else {
        return refuse();
    };
    let verifier = f.get("code_verifier").cloned().unwrap_or_default();
    if URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != issued.challenge
        || f.get("redirect_uri") != Some(&issued.redirect_uri)
    {
        return refuse();
    }
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    h.kid = Some("test-idp-1".into());
    let id_token = jsonwebtoken::encode(&h, &issued.claims, &i.key).unwrap();
    json(serde_json::json!({
        "access_token": uuid::Uuid::new_v4().to_string(),
        "token_type": "Bearer",
        "expires_in": 300,
        "id_token": id_token,
    }))
    .into_response()
}
