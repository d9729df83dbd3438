//! The privacy centre's routes. Every page is under its language
//! (`/sv/…`, `/en/…`); `/` sends the browser to the one it prefers. The
//! person's progress lives in a server-side session named by an
//! HttpOnly, SameSite=Lax cookie (Lax: it comes back with the identity
//! provider's redirect; no page changes anything on a GET, and a
//! cross-site POST carries no cookie); nothing of theirs is in a URL.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dsr_domain::identity::{Identity, IdentityType};
use dsr_domain::text::Lang;
use dsr_proto::orchestrator::v1 as pb;

use crate::mesh::{Mesh, MeshError, NewRequest};
use crate::oidc::{Callback, Provider};
use crate::pages::{self, Entered, RIGHTS, Right};
use crate::sessions::{Session, Sessions};
use crate::texts::Texts;

const COOKIE: &str = "dsr_portal";

/// What the pages need.
#[derive(Clone)]
pub struct Portal {
    /// The texts.
    pub texts: Arc<Texts>,
    /// The mesh.
    pub mesh: Mesh,
    /// Open sessions.
    pub sessions: Arc<Sessions>,
    /// The group's controllers: organisation number and name.
    pub controllers: Vec<(String, String)>,
    /// The data protection officer's address.
    pub dpo_email: String,
    /// Mark the cookie `Secure` (behind HTTPS).
    pub secure_cookie: bool,
    /// The case handlers' console, when a sign-in for it is configured.
    pub console: Option<crate::console::Console>,
    /// BankID (or another strong identification) through the company's
    /// identity provider, when configured.
    pub person_idp: Option<Arc<crate::oidc::Provider>>,
    /// The time the pages count deadlines by.
    pub clock: dsr_domain::clock::Clock,
    /// Offer a one-time code by SMS besides email (the identity service
    /// must be able to send one).
    pub sms_codes: bool,
    /// The key a person's requests are filed under: a keyed hash of the
    /// address (or personnummer) they proved, so that whoever proves it
    /// again, in another session, finds them (`/{lang}/fetch`).
    pub person_key: [u8; 32],
}

impl std::fmt::Debug for Portal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Portal").finish_non_exhaustive()
    }
}

/// The routes.
pub fn router(p: Portal) -> Router {
    let origins: Vec<String> = p
        .person_idp
        .iter()
        .map(|i| i.origin())
        .chain(p.console.iter().filter_map(|c| match &c.sign_in {
            crate::console::SignIn::Oidc { provider, .. } => Some(provider.origin()),
            crate::console::SignIn::Development => None,
        }))
        .collect();
    let csp = (!origins.is_empty())
        .then(|| {
            HeaderValue::from_str(&PAGE_CSP.replace(
                "form-action 'self'",
                &format!("form-action 'self' {}", origins.join(" ")),
            ))
            .ok()
        })
        .flatten();
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(|| async { "ok" }))
        .route("/{lang}/", get(home))
        .route("/{lang}/begin/{right}", get(begin_form).post(begin))
        .route("/{lang}/code", get(code_form).post(code))
        .route("/{lang}/status", get(status))
        .route("/{lang}/fetch", get(fetch_form).post(fetch))
        .route("/{lang}/mine", get(mine))
        .route("/{lang}/mine/{id}", get(open_mine))
        .route("/{lang}/incident", get(incident_form).post(incident))
        .route("/{lang}/complaint", get(complaint_form).post(complaint))
        .route("/{lang}/report", get(report))
        .route("/{lang}/files/{name}", get(file))
        .route("/oidc/person/callback", get(person_callback))
        .merge(crate::console::router())
        .layer(axum::middleware::from_fn(access_log))
        .layer(axum::middleware::map_response(move |r: Response| {
            let csp = csp.clone();
            async move { with_form_targets(r, csp.as_ref()) }
        }))
        .with_state(p)
}

/// A form that starts a sign-in posts to the privacy centre, which sends
/// the browser on to the identity provider: `form-action` covers the whole
/// redirect chain, so the providers' origins are added to it.
fn with_form_targets(mut r: Response, csp: Option<&HeaderValue>) -> Response {
    if let Some(v) = csp
        && r.headers()
            .get(header::CONTENT_SECURITY_POLICY)
            .map(HeaderValue::as_bytes)
            == Some(PAGE_CSP.as_bytes())
    {
        r.headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v.clone());
    }
    r
}

/// One line per request: the route's pattern (never the path as typed, nor
/// a query, a form or a cookie), the status and the time taken.
async fn access_log(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    tracing::info!(
        http.method = %method,
        http.route = %route,
        http.status = res.status().as_u16(),
        latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "page answered"
    );
    res
}

pub(crate) fn page(html: String) -> Response {
    let mut r = (StatusCode::OK, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_CSP),
    );
    r
}

/// The pages' content security policy: nothing loaded from anywhere, forms
/// post to the privacy centre only (and, where a sign-in goes on to it,
/// the identity provider: see [`router`]).
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(crate) fn see_other(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

pub(crate) fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// Names the session `key` in the browser: HttpOnly, SameSite=Lax, and
/// Secure behind HTTPS.
pub(crate) fn set_cookie(p: &Portal, r: &mut Response, key: &str) {
    let cookie = format!(
        "{COOKIE}={key}; Path=/; HttpOnly; SameSite=Lax{}",
        if p.secure_cookie { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
}

fn lang_of(code: &str) -> Option<Lang> {
    Lang::parse(code)
}

fn right_of(key: &str) -> Option<Right> {
    RIGHTS.into_iter().find(|r| r.key == key)
}

pub(crate) fn session_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_owned)
        })
        .filter(|k| k.len() == 32 && k.bytes().all(|b| b.is_ascii_hexdigit()))
}

async fn root(headers: HeaderMap) -> Response {
    let prefers_en = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|first| first.trim().to_ascii_lowercase().starts_with("en"));
    see_other(if prefers_en { "/en/" } else { "/sv/" })
}

async fn home(State(p): State<Portal>, Path(lang): Path<String>) -> Response {
    let Some(lang) = lang_of(&lang) else {
        return not_found();
    };
    page(pages::home(&p.texts, lang, &p.dpo_email))
}

async fn begin_form(
    State(p): State<Portal>,
    Path((lang, right)): Path<(String, String)>,
) -> Response {
    let (Some(lang), Some(right)) = (lang_of(&lang), right_of(&right)) else {
        return not_found();
    };
    page(pages::form(
        &p.texts,
        lang,
        right,
        &p.controllers,
        &Entered {
            bankid_offered: p.person_idp.is_some(),
            sms_offered: p.sms_codes,
            ..Entered::default()
        },
        &BTreeMap::new(),
    ))
}

/// The request form as posted.
#[derive(Debug, Default, serde::Deserialize)]
pub struct BeginForm {
    #[serde(default)]
    controller: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    ground: String,
    #[serde(default)]
    fix_name: String,
    #[serde(default)]
    fix_address: String,
    #[serde(default)]
    fix_phone: String,
    #[serde(default)]
    fix_email: String,
    #[serde(default)]
    fix_job_title: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    purpose_direct_marketing: Option<String>,
    #[serde(default)]
    purpose_customer_surveys: Option<String>,
}

impl BeginForm {
    /// The purposes ticked (of [`pages::OBJECTABLE`]).
    fn purposes(&self) -> Vec<String> {
        pages::OBJECTABLE
            .iter()
            .filter(|(p, _)| match *p {
                "direct_marketing" => self.purpose_direct_marketing.is_some(),
                "customer_surveys" => self.purpose_customer_surveys.is_some(),
                _ => false,
            })
            .map(|(p, _)| (*p).to_owned())
            .collect()
    }

    /// The correct value typed in `field` (one of [`pages::CORRECTABLE`]).
    fn correction(&self, field: &str) -> &str {
        match field {
            "fix_name" => &self.fix_name,
            "fix_address" => &self.fix_address,
            "fix_phone" => &self.fix_phone,
            "fix_email" => &self.fix_email,
            "fix_job_title" => &self.fix_job_title,
            _ => "",
        }
    }
}

/// A rectification's corrections as typed, checked: (category, value)
/// pairs, or the fields' errors.
fn corrections(
    f: &BeginForm,
    errors: &mut BTreeMap<&'static str, &'static str>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (field, category, _) in pages::CORRECTABLE {
        let v = f.correction(field).trim();
        if v.is_empty() {
            continue;
        }
        let checked = match field {
            "fix_phone" => Identity::parse(IdentityType::Phone, v)
                .map(|_| ())
                .map_err(|_| "error_phone"),
            "fix_email" => Identity::parse(IdentityType::Email, v)
                .map(|_| ())
                .map_err(|_| "error_email"),
            _ if v.chars().count() > pages::MAX_CORRECTION => Err("error_too_long"),
            _ => Ok(()),
        };
        match checked {
            Ok(()) => out.push((category.to_owned(), v.to_owned())),
            Err(e) => {
                errors.insert(field, e);
            }
        }
    }
    if out.is_empty() && errors.is_empty() {
        errors.insert("corrections", "error_correction_none");
    }
    out
}

async fn begin(
    State(p): State<Portal>,
    Path((lang, right)): Path<(String, String)>,
    Form(f): Form<BeginForm>,
) -> Response {
    let (Some(lang), Some(right)) = (lang_of(&lang), right_of(&right)) else {
        return not_found();
    };
    let mut errors: BTreeMap<&'static str, &'static str> = BTreeMap::new();
    if !p.controllers.iter().any(|(org, _)| *org == f.controller) {
        errors.insert("controller", "error_choose");
    }
    if right.key == "restriction" && !pages::GROUNDS.iter().any(|(k, _)| *k == f.ground) {
        errors.insert("ground", "error_choose");
    }
    let purposes = if right.key == "objection" {
        let p = f.purposes();
        if p.is_empty() {
            errors.insert("purposes", "error_objection_none");
        }
        p
    } else {
        Vec::new()
    };
    let fixes = if right.key == "rectification" {
        corrections(&f, &mut errors)
    } else {
        Vec::new()
    };
    let bankid = f.method == "bankid" && p.person_idp.is_some();
    let sms = f.method == "sms" && p.sms_codes;
    // Where the code goes: the email address, or the phone for an SMS.
    let (field, kind, typed, wrong): (&'static str, _, &str, &'static str) = if sms {
        ("phone", IdentityType::Phone, &f.phone, "error_phone")
    } else {
        ("email", IdentityType::Email, &f.email, "error_email")
    };
    let to = match Identity::parse(kind, typed) {
        Ok(i) => Some(i),
        Err(_) if bankid => None,
        Err(_) if typed.trim().is_empty() => {
            errors.insert(field, "error_required");
            None
        }
        Err(_) => {
            errors.insert(field, wrong);
            None
        }
    };
    let entered = Entered {
        controller: f.controller.clone(),
        email: f.email.clone(),
        ground: f.ground.clone(),
        corrections: pages::CORRECTABLE
            .iter()
            .map(|(field, _, _)| (*field, f.correction(field).to_owned()))
            .collect(),
        bankid_offered: p.person_idp.is_some(),
        sms_offered: p.sms_codes,
        method: f.method.clone(),
        phone: f.phone.clone(),
        purposes: purposes.clone(),
    };
    if bankid && errors.is_empty() {
        return to_identity_provider(&p, lang, right, &entered, fixes, purposes).await;
    }
    let form_again = |errors: &BTreeMap<&'static str, &'static str>| {
        page(pages::form(
            &p.texts,
            lang,
            right,
            &p.controllers,
            &entered,
            errors,
        ))
    };
    let Some(to) = to.filter(|_| errors.is_empty()) else {
        return form_again(&errors);
    };
    let session = Session {
        right: right.key.to_owned(),
        controller: f.controller,
        ground: f.ground,
        corrections: fixes,
        purposes,
        method: if sms { "sms" } else { "email" }.to_owned(),
        ..Session::default()
    };
    send_code(&p, lang, session, &to, wrong, |k| {
        errors.insert(field, k);
        form_again(&errors)
    })
    .await
}

/// Opens `session`, sends a one-time code to `to` and goes on to the code
/// page; refused, the form again through `again` with the error's text key
/// (`wrong` for an address the identity service does not take, too many
/// codes).
async fn send_code(
    p: &Portal,
    lang: Lang,
    session: Session,
    to: &Identity,
    wrong: &'static str,
    again: impl FnOnce(&'static str) -> Response,
) -> Response {
    let key = p.sessions.open(session);
    let Some(s) = p.sessions.get(&key) else {
        return page(pages::notice(&p.texts, lang, "error_session"));
    };
    match p.mesh.start(&s.subject, to, lang.code()).await {
        Ok(challenge) => {
            p.sessions.update(&key, |s| s.challenge_id = challenge);
            let mut r = see_other(&format!("/{}/code", lang.code()));
            set_cookie(p, &mut r, &key);
            r
        }
        Err(MeshError::Refused(reason)) if reason == "IDENTITY_RATE_LIMITED" => {
            again("error_too_many")
        }
        Err(MeshError::Invalid(_)) => again(wrong),
        Err(e) => {
            tracing::warn!(error = %e, "verification could not start");
            page(pages::notice(&p.texts, lang, "error_unavailable"))
        }
    }
}

/// Off to the company's identity provider (BankID) with the request's
/// choices kept in a new session until the person comes back.
async fn to_identity_provider(
    p: &Portal,
    lang: Lang,
    right: Right,
    entered: &Entered,
    fixes: Vec<(String, String)>,
    purposes: Vec<String>,
) -> Response {
    let Some(idp) = &p.person_idp else {
        return not_found();
    };
    match idp.begin().await {
        Ok((url, attempt)) => {
            let key = p.sessions.open(Session {
                right: right.key.to_owned(),
                controller: entered.controller.clone(),
                ground: entered.ground.clone(),
                corrections: fixes,
                purposes,
                attempt,
                lang: lang.code().to_owned(),
                ..Session::default()
            });
            let mut r = see_other(&url);
            set_cookie(p, &mut r, &key);
            r
        }
        Err(e) => {
            tracing::warn!(error = %e, "identification could not start");
            page(pages::notice(&p.texts, lang, "error_unavailable"))
        }
    }
}

/// Why a return from the identity provider signed no one in.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Returned {
    /// Refused or cancelled at the provider, or an answer that does not
    /// verify (state, nonce, signature).
    Refused,
    /// The provider could not be reached.
    Unavailable,
}

/// The browser back from identity provider `idp` with `cb`: the session the
/// sign-in started from (by its cookie; closed, so whatever follows goes on
/// under a new key), its language, and the provider's ID token and claims,
/// or why not. `None` when no sign-in started from this browser.
pub(crate) async fn returned_from(
    p: &Portal,
    headers: &HeaderMap,
    idp: &Provider,
    cb: &Callback,
) -> Option<(Session, Lang, Result<(String, serde_json::Value), Returned>)> {
    let key = session_key(headers)?;
    let s = p.sessions.get(&key)?;
    p.sessions.close(&key);
    let lang = lang_of(&s.lang).unwrap_or(Lang::Sv);
    let answer = if cb.error().is_some() {
        tracing::info!("sign-in refused or cancelled at the identity provider");
        Err(Returned::Refused)
    } else {
        idp.finish(&s.attempt, cb.state(), cb.code())
            .await
            .map_err(|e| {
                tracing::info!(error = %e, "sign-in did not go through");
                match e {
                    crate::oidc::OidcError::Unavailable(_) => Returned::Unavailable,
                    crate::oidc::OidcError::Refused(_) => Returned::Refused,
                }
            })
    };
    Some((s, lang, answer))
}

/// `GET /oidc/person/callback`: back from the identity provider. The ID
/// token verified here (state, nonce, signature) is presented to identity
/// verification, whose token submits the request; the session goes on
/// under a new key.
async fn person_callback(
    State(p): State<Portal>,
    Query(cb): Query<Callback>,
    headers: HeaderMap,
) -> Response {
    let Some(idp) = p.person_idp.clone() else {
        return not_found();
    };
    let Some((s, lang, answer)) = returned_from(&p, &headers, &idp, &cb).await else {
        return page(pages::notice(&p.texts, Lang::Sv, "error_session"));
    };
    let id_token = match answer {
        Ok((t, _)) => t,
        Err(why) => {
            return page(pages::notice(
                &p.texts,
                lang,
                match why {
                    Returned::Unavailable => "error_unavailable",
                    Returned::Refused => "error_identification",
                },
            ));
        }
    };
    let key = p.sessions.open(Session {
        attempt: crate::oidc::Attempt::default(),
        ..s
    });
    let Some(s) = p.sessions.get(&key) else {
        return page(pages::notice(&p.texts, lang, "error_session"));
    };
    let token = match p.mesh.assertion(&s.subject, &id_token).await {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(error = %e, "identification not accepted");
            return page(pages::notice(
                &p.texts,
                lang,
                match e {
                    MeshError::Unavailable => "error_unavailable",
                    MeshError::Invalid(_) | MeshError::Refused(_) => "error_identification",
                },
            ));
        }
    };
    let mut r = submit(&p, lang, &key, &s, token).await;
    set_cookie(&p, &mut r, &key);
    r
}

async fn code_form(
    State(p): State<Portal>,
    Path(lang): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(lang) = lang_of(&lang) else {
        return not_found();
    };
    match session_key(&headers).and_then(|k| p.sessions.get(&k)) {
        Some(s) if !s.challenge_id.is_empty() => page(pages::code(
            &p.texts,
            lang,
            s.method == "sms",
            &BTreeMap::new(),
        )),
        _ => page(pages::notice(&p.texts, lang, "error_session")),
    }
}

/// The code form as posted.
#[derive(Debug, Default, serde::Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
}

/// The request's kind and, per kind, its ground (a restriction) or whether
/// it objects to direct marketing (an objection; its other purposes are
/// the session's).
fn kind_of(s: &Session) -> Option<(pb::Kind, pb::RestrictionGround, bool)> {
    use pb::RestrictionGround as G;
    Some(match s.right.as_str() {
        "access" => (pb::Kind::Access, G::Unspecified, false),
        "portability" => (pb::Kind::Portability, G::Unspecified, false),
        "erasure" => (pb::Kind::Erasure, G::Unspecified, false),
        "rectification" => (pb::Kind::Rectification, G::Unspecified, false),
        "objection" => (
            pb::Kind::Objection,
            G::Unspecified,
            s.purposes.iter().any(|p| p == "direct_marketing"),
        ),
        "restriction" => (
            pb::Kind::Restriction,
            match s.ground.as_str() {
                "accuracy" => G::AccuracyContested,
                "unlawful" => G::UnlawfulProcessing,
                "legal_claims" => G::NeededForLegalClaims,
                "objection" => G::ObjectionPending,
                _ => return None,
            },
            false,
        ),
        _ => return None,
    })
}

async fn code(
    State(p): State<Portal>,
    Path(lang): Path<String>,
    headers: HeaderMap,
    Form(f): Form<CodeForm>,
) -> Response {
    let Some(lang) = lang_of(&lang) else {
        return not_found();
    };
    let Some((key, s)) = session_key(&headers).and_then(|k| p.sessions.get(&k).map(|s| (k, s)))
    else {
        return page(pages::notice(&p.texts, lang, "error_session"));
    };
    let fetching = s.right == FETCH;
    if kind_of(&s).is_none() && !fetching {
        return page(pages::notice(&p.texts, lang, "error_session"));
    }
    let mut errors: BTreeMap<&'static str, &'static str> = BTreeMap::new();
    let code = f.code.trim();
    if code.is_empty() {
        errors.insert("code", "error_required");
        return page(pages::code(&p.texts, lang, s.method == "sms", &errors));
    }
    let token = match p.mesh.complete(&s.subject, &s.challenge_id, code).await {
        Ok(t) => t,
        Err(MeshError::Refused(r)) if r == "CODE_MISMATCH" => {
            errors.insert("code", "error_code");
            return page(pages::code(&p.texts, lang, s.method == "sms", &errors));
        }
        Err(MeshError::Invalid(_)) => {
            errors.insert("code", "error_code");
            return page(pages::code(&p.texts, lang, s.method == "sms", &errors));
        }
        Err(MeshError::Refused(_)) => {
            return page(pages::notice(&p.texts, lang, "error_code_expired"));
        }
        Err(MeshError::Unavailable) => {
            return page(pages::notice(&p.texts, lang, "error_unavailable"));
        }
    };
    if fetching {
        // Proven: the session now reads the requests filed under them.
        let Some(person) = person_subject(&p.person_key, &token) else {
            return page(pages::notice(&p.texts, lang, "error_session"));
        };
        p.sessions.update(&key, |s| {
            s.subject = person;
            s.proven = true;
        });
        return see_other(&format!("/{}/mine", lang.code()));
    }
    submit(&p, lang, &key, &s, token).await
}

/// The session's purpose while a person proves who they are to see their
/// earlier requests.
const FETCH: &str = "fetch";

/// The subject a person's requests are filed under: a keyed hash of the
/// first address their verification token vouches for (an email address,
/// else a phone, else a personnummer), never the identity itself. The
/// token's signature is the orchestrator's to check; it came from the
/// identity service just now.
fn person_subject(key: &[u8; 32], token: &str) -> Option<String> {
    use base64::Engine as _;
    use hmac::Mac as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let ids = claims.get("identities")?.as_array()?;
    let pick = |kind: &str| {
        ids.iter().find_map(|i| {
            (i.get("type")?.as_str()? == kind)
                .then(|| i.get("value")?.as_str().map(str::to_owned))
                .flatten()
        })
    };
    let (kind, value) = ["email", "phone", "personnummer"]
        .into_iter()
        .find_map(|k| pick(k).map(|v| (k, v)))?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).ok()?;
    mac.update(format!("{kind}:{value}").as_bytes());
    let digest = mac.finalize().into_bytes();
    Some(format!("person:{}", hex::encode(&digest[..16])))
}

/// Submits the session's request with the verification `token`; the
/// status page, or the reason it was not recorded.
async fn submit(p: &Portal, lang: Lang, key: &str, s: &Session, token: String) -> Response {
    let Some((kind, ground, direct_marketing)) = kind_of(s) else {
        return page(pages::notice(&p.texts, lang, "error_session"));
    };
    // Filed under the person, so that they find it again in another
    // session; the idempotency key stays this session's.
    let person = person_subject(&p.person_key, &token).unwrap_or_else(|| s.subject.clone());
    let submitted = p
        .mesh
        .submit(
            &person,
            NewRequest {
                kind,
                controller: s.controller.clone(),
                verification_token: token,
                language: lang.code().to_owned(),
                idempotency_key: format!(
                    "portal:{}:{}",
                    s.subject.trim_start_matches("person:"),
                    s.right
                ),
                ground,
                direct_marketing,
                purposes: s
                    .purposes
                    .iter()
                    .filter(|p| *p != "direct_marketing")
                    .cloned()
                    .collect(),
                corrections: s.corrections.clone(),
            },
        )
        .await;
    match submitted {
        Ok(id) => {
            p.sessions.update(key, |s| {
                s.request_id = id;
                s.corrections = Vec::new();
                s.proven = s.subject != person;
                s.subject = person;
            });
            see_other(&format!("/{}/status", lang.code()))
        }
        Err(e) => {
            tracing::warn!(error = %e, "submission failed");
            page(pages::notice(&p.texts, lang, "error_unavailable"))
        }
    }
}

fn date(d: Option<&dsr_proto::common::v1::Date>) -> String {
    d.map_or_else(String::new, |d| {
        format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)
    })
}

fn state_key(state: i32) -> (&'static str, bool) {
    use pb::State as S;
    match S::try_from(state).unwrap_or(S::Unspecified) {
        S::Verifying => ("state_verifying", true),
        S::AwaitingApproval | S::AwaitingReview => ("state_waiting", true),
        S::Completed => ("state_completed", false),
        S::CompletedWithRetained => ("state_completed_retained", false),
        S::Rejected => ("state_rejected", false),
        S::Cancelled => ("state_cancelled", false),
        S::Unspecified | S::Submitted | S::Locating | S::Exporting | S::Planning | S::Executing => {
            ("state_working", true)
        }
    }
}

/// The session's request, or the page to show instead.
async fn own_request(
    p: &Portal,
    lang: Lang,
    headers: &HeaderMap,
) -> Result<(Session, pb::DataSubjectRequest), Response> {
    let Some(s) = session_key(headers).and_then(|k| p.sessions.get(&k)) else {
        return Err(page(pages::notice(&p.texts, lang, "error_session")));
    };
    if s.request_id.is_empty() {
        return Err(page(pages::notice(&p.texts, lang, "error_session")));
    }
    match p.mesh.get(&s.subject, &s.request_id).await {
        Ok(r) => Ok((s, r)),
        Err(e) => {
            tracing::warn!(error = %e, "request could not be read");
            Err(page(pages::notice(&p.texts, lang, "error_unavailable")))
        }
    }
}

async fn status(State(p): State<Portal>, Path(lang): Path<String>, headers: HeaderMap) -> Response {
    let Some(lang) = lang_of(&lang) else {
        return not_found();
    };
    let (s, r) = match own_request(&p, lang, &headers).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    let (state_key, open) = state_key(r.state);
    let deadline = r.deadline.clone().unwrap_or_default();
    let mut view = pages::Status {
        right: s.right.clone(),
        company: p
            .controllers
            .iter()
            .find(|(o, _)| *o == s.controller)
            .map(|(_, n)| n.clone())
            .unwrap_or_default(),
        state_key,
        open,
        rejected: r.state == pb::State::Rejected as i32,
        received: date(deadline.received_on.as_ref()),
        due: date(deadline.due.as_ref()),
        extension: (deadline.extended_months > 0)
            .then(|| (deadline.extended_months, deadline.extension_reason.clone())),
        reference: r.id.clone(),
        ..pages::Status::default()
    };
    if !open && !r.package_id.is_empty() {
        match p.mesh.package(&s.subject, &r.package_id).await {
            Ok(pkg) => {
                view.report = pkg
                    .files
                    .iter()
                    .any(|f| f.media_type.starts_with("text/html"));
                view.files = pkg.files.iter().map(|f| f.name.clone()).collect();
                view.expires = pkg
                    .expire_time
                    .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                    .map(|t| t.date_naive().to_string())
                    .unwrap_or_default();
            }
            Err(e) => tracing::warn!(error = %e, "package could not be read"),
        }
    }
    page(pages::status(&p.texts, lang, &view))
}

/// A file of the session's package, streamed from export.
async fn serve_file(p: &Portal, lang: Lang, headers: &HeaderMap, name: Option<&str>) -> Response {
    let (s, r) = match own_request(p, lang, headers).await {
        Ok(x) => x,
        Err(page) => return page,
    };
    if r.package_id.is_empty() {
        return not_found();
    }
    let Ok(pkg) = p.mesh.package(&s.subject, &r.package_id).await else {
        return page(pages::notice(&p.texts, lang, "error_unavailable"));
    };
    let inline = name.is_none();
    let Some(f) = pkg
        .files
        .iter()
        .find(|f| name.map_or(f.media_type.starts_with("text/html"), |n| f.name == n))
    else {
        return not_found();
    };
    let stream = match p.mesh.download(&s.subject, &r.package_id, &f.name).await {
        Ok(s) => s,
        Err(_) => return page(pages::notice(&p.texts, lang, "error_unavailable")),
    };
    use futures_util::StreamExt as _;
    let body = Body::from_stream(stream.map(|m| m.map(|c| c.chunk)));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&f.media_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // The report is the mesh's own HTML: shown, never allowed to run
    // anything or reach anywhere.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'; style-src 'unsafe-inline'"),
    );
    if !inline
        && let Ok(v) = HeaderValue::from_str(&format!(
            "attachment; filename=\"{}\"",
            f.name.replace('"', "")
        ))
    {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    resp
}

async fn report(State(p): State<Portal>, Path(lang): Path<String>, headers: HeaderMap) -> Response {
    let Some(lang) = lang_of(&lang) else {
        return not_found();
    };
    serve_file(&p, lang, &headers, None).await
}

async fn file(
    State(p): State<Portal>,
    Path((lang, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(lang) = lang_of(&lang) else {
        return not_found();
    };
    serve_file(&p, lang, &headers, Some(&name)).await
}

/// A request's reference as the letters give it (a UUID).
fn looks_like_reference(s: &str) -> bool {
    s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// Who the privacy centre's public forms report as: no session, no person.
const FORM_SUBJECT: &str = "privacy-centre:form";

/// An incident report or complaint as posted.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ReportForm {
    #[serde(default)]
    text: String,
    #[serde(default)]
    controller: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    request: String,
}

async fn incident_form(State(p): State<Portal>, Path(lang): Path<String>) -> Response {
    let Some(lang) = lang_of(&lang) else {
        return not_found();
    };
    page(pages::incident_form(
        &p.texts,
        lang,
        &pages::Reported::default(),
        &BTreeMap::new(),
    ))
}

/// `POST /{lang}/incident`: anyone reports a personal-data incident; the
/// company is aware from now (the 72 hours run).
async fn incident(
    State(p): State<Portal>,
    Path(lang): Path<String>,
    Form(f): Form<ReportForm>,
) -> Response {
    let Some(lang) = lang_of(&lang) else {
        return not_found();
    };
    let text = f.text.trim();
    let mut errors: BTreeMap<&'static str, &'static str> = BTreeMap::new();
    if text.is_empty() {
        errors.insert("text", "error_required");
    } else if text.chars().count() > 5000 {
        errors.insert("text", "error_too_long_5000");
    }
    let entered = pages::Reported {
        text: text.to_owned(),
        ..pages::Reported::default()
    };
    if !errors.is_empty() {
        return page(pages::incident_form(&p.texts, lang, &entered, &errors));
    }
    let now = p.clock.now();
    let reported = p
        .mesh
        .report_incident(
            FORM_SUBJECT,
            dsr_proto::incident::v1::ReportRequest {
                summary: text.to_owned(),
                start_time: None,
                discovered_time: Some(prost_types::Timestamp {
                    seconds: now.timestamp(),
                    nanos: 0,
                }),
                system_ids: Vec::new(),
                category_ids: Vec::new(),
                approximate_people: 0,
                containment: String::new(),
                source: dsr_proto::incident::v1::Source::PublicForm as i32,
            },
        )
        .await;
    match reported {
        Ok(i) => page(pages::received(
            &p.texts,
            lang,
            "incident_title",
            p.texts.get("incident_received", lang),
            &i.id,
        )),
        Err(e) => {
            tracing::warn!(error = %e, "incident report not taken");
            errors.insert("text", "error_unavailable");
            page(pages::incident_form(&p.texts, lang, &entered, &errors))
        }
    }
}

async fn complaint_form(State(p): State<Portal>, Path(lang): Path<String>) -> Response {
    let Some(lang) = lang_of(&lang) else {
        return not_found();
    };
    page(pages::complaint_form(
        &p.texts,
        lang,
        &p.controllers,
        &pages::Reported::default(),
        &BTreeMap::new(),
    ))
}

/// `POST /{lang}/complaint`: a complaint to the DPO; the answer goes to
/// the email address given.
async fn complaint(
    State(p): State<Portal>,
    Path(lang): Path<String>,
    Form(f): Form<ReportForm>,
) -> Response {
    let Some(lang) = lang_of(&lang) else {
        return not_found();
    };
    let mut errors: BTreeMap<&'static str, &'static str> = BTreeMap::new();
    if !p.controllers.iter().any(|(org, _)| *org == f.controller) {
        errors.insert("controller", "error_choose");
    }
    let text = f.text.trim();
    if text.is_empty() {
        errors.insert("text", "error_required");
    } else if text.chars().count() > 5000 {
        errors.insert("text", "error_too_long_5000");
    }
    let email = Identity::parse(IdentityType::Email, &f.email);
    if email.is_err() {
        errors.insert("email", "error_email");
    }
    let request = f.request.trim();
    if !request.is_empty() && !looks_like_reference(request) {
        errors.insert("request", "error_request_reference");
    }
    let entered = pages::Reported {
        controller: f.controller.clone(),
        text: text.to_owned(),
        email: f.email.trim().to_owned(),
        request: request.to_owned(),
    };
    let Ok(email) = email else {
        return page(pages::complaint_form(
            &p.texts,
            lang,
            &p.controllers,
            &entered,
            &errors,
        ));
    };
    if !errors.is_empty() {
        return page(pages::complaint_form(
            &p.texts,
            lang,
            &p.controllers,
            &entered,
            &errors,
        ));
    }
    let filed = p
        .mesh
        .file_complaint(
            FORM_SUBJECT,
            dsr_proto::incident::v1::FileRequest {
                controller: Some(dsr_proto::common::v1::ControllerRef {
                    organisation_number: f.controller.clone(),
                }),
                text: text.to_owned(),
                reply_to: Some(dsr_connector::grpc::identity_to_pb(&email)),
                language: lang.code().to_owned(),
                request_ids: if request.is_empty() {
                    Vec::new()
                } else {
                    vec![request.to_owned()]
                },
            },
        )
        .await;
    match filed {
        Ok(c) => {
            let due = c
                .answer_due_time
                .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                .map(|t| t.date_naive().to_string())
                .unwrap_or_default();
            let next = format!("{} {due}.", p.texts.get("complaint_received", lang));
            page(pages::received(
                &p.texts,
                lang,
                "complaint_title",
                &next,
                &c.id,
            ))
        }
        Err(crate::mesh::MeshError::Invalid(fields)) => {
            if fields.iter().any(|f| f.starts_with("request_ids")) {
                errors.insert("request", "error_request_reference");
            } else {
                errors.insert("text", "error_unavailable");
            }
            page(pages::complaint_form(
                &p.texts,
                lang,
                &p.controllers,
                &entered,
                &errors,
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, "complaint not taken");
            errors.insert("text", "error_unavailable");
            page(pages::complaint_form(
                &p.texts,
                lang,
                &p.controllers,
                &entered,
                &errors,
            ))
        }
    }
}

/// The form to see one's earlier requests: an email address, for a code.
#[derive(Debug, Default, serde::Deserialize)]
pub struct FetchForm {
    #[serde(default)]
    email: String,
}

async fn fetch_form(State(p): State<Portal>, Path(lang): Path<String>) -> Response {
    let Some(lang) = lang_of(&lang) else {
        return not_found();
    };
    page(pages::fetch_form(&p.texts, lang, "", &BTreeMap::new()))
}

/// `POST /{lang}/fetch`: a code to the address the requests were made
/// with; once entered, the person's requests (`/{lang}/mine`).
async fn fetch(
    State(p): State<Portal>,
    Path(lang): Path<String>,
    Form(f): Form<FetchForm>,
) -> Response {
    let Some(lang) = lang_of(&lang) else {
        return not_found();
    };
    let mut errors: BTreeMap<&'static str, &'static str> = BTreeMap::new();
    let Ok(to) = Identity::parse(IdentityType::Email, &f.email) else {
        errors.insert("email", "error_email");
        return page(pages::fetch_form(&p.texts, lang, f.email.trim(), &errors));
    };
    let session = Session {
        right: FETCH.to_owned(),
        method: "email".to_owned(),
        ..Session::default()
    };
    send_code(&p, lang, session, &to, "error_email", |k| {
        errors.insert("email", k);
        page(pages::fetch_form(&p.texts, lang, f.email.trim(), &errors))
    })
    .await
}

/// The requests of the person this session proved to be (newest first).
async fn person_requests(
    p: &Portal,
    lang: Lang,
    headers: &HeaderMap,
) -> Result<(String, Vec<pb::DataSubjectRequest>), Response> {
    let Some((key, s)) = session_key(headers).and_then(|k| p.sessions.get(&k).map(|s| (k, s)))
    else {
        return Err(page(pages::notice(&p.texts, lang, "error_session")));
    };
    if !s.proven {
        return Err(page(pages::notice(&p.texts, lang, "error_session")));
    }
    let filter = crate::mesh::ListFilter::default();
    match p.mesh.list(&s.subject, &filter).await {
        Ok(list) => Ok((key, list)),
        Err(e) => {
            tracing::warn!(error = %e, "requests not read");
            Err(page(pages::notice(&p.texts, lang, "error_unavailable")))
        }
    }
}

/// `GET /{lang}/mine`: the person's requests, once they proved who they
/// are.
async fn mine(State(p): State<Portal>, Path(lang): Path<String>, headers: HeaderMap) -> Response {
    let Some(lang) = lang_of(&lang) else {
        return not_found();
    };
    let (_, list) = match person_requests(&p, lang, &headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let rows: Vec<pages::Mine> = list
        .iter()
        .map(|r| pages::Mine {
            id: r.id.clone(),
            right: kind_right(r.kind).to_owned(),
            received: date(r.deadline.as_ref().and_then(|d| d.received_on.as_ref())),
            state_key: state_key(r.state).0,
        })
        .collect();
    page(pages::mine(&p.texts, lang, &rows))
}

/// `GET /{lang}/mine/{id}`: one of the person's requests, on its status
/// page.
async fn open_mine(
    State(p): State<Portal>,
    Path((lang, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(lang) = lang_of(&lang) else {
        return not_found();
    };
    let (key, list) = match person_requests(&p, lang, &headers).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(r) = list.iter().find(|r| r.id == id) else {
        return not_found();
    };
    let right = kind_right(r.kind).to_owned();
    let controller = r
        .controller
        .as_ref()
        .map(|c| c.organisation_number.clone())
        .unwrap_or_default();
    p.sessions.update(&key, |s| {
        s.request_id = id.clone();
        s.right = right;
        s.controller = controller;
    });
    see_other(&format!("/{}/status", lang.code()))
}

/// The privacy centre's word for a kind of request.
fn kind_right(kind: i32) -> &'static str {
    match pb::Kind::try_from(kind).unwrap_or(pb::Kind::Unspecified) {
        pb::Kind::Access | pb::Kind::Unspecified => "access",
        pb::Kind::Portability => "portability",
        pb::Kind::Erasure => "erasure",
        pb::Kind::Rectification => "rectification",
        pb::Kind::Restriction => "restriction",
        pb::Kind::Objection => "objection",
    }
}
