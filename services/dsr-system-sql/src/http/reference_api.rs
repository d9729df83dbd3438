//! The reference REST system: a customer-survey platform (the policy's
//! customer surveys, section 2; recipient `survey-platform`) that
//! knows the group's contacts by email address and phone, and their
//! answers. It is a vendor's API, not part of the mesh: the HTTP connector
//! reaches it through `reference/survey-http.yaml`, the tests and `dsr up`
//! run it (`dsr reference-api`).
//!
//! ```text
//! GET    /v1/respondents?email=…|phone=…|controller=…&cursor=…   {items, next_cursor}
//! GET    /v1/respondents/{id}
//! PATCH  /v1/respondents/{id}                      JSON fields to change
//! DELETE /v1/respondents/{id}                      (its answers too)
//! PUT    /v1/respondents/{id}/restrictions/{basis} request, hold or retention
//! DELETE /v1/respondents/{id}/restrictions/{basis}
//! GET    /v1/respondents/{id}/answers?cursor=…     {items, next_cursor}
//! GET|DELETE /v1/answers/{id}, PUT|DELETE /v1/answers/{id}/restrictions/{basis}
//! ```
//!
//! Every call needs the `X-Api-Key` header. Lists come in pages of
//! `page_size` items. The data is seeded from the same synthetic people as
//! the SQL reference systems (every third one took a survey) and kept in a
//! JSON file, written after each change.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// The controller the surveys are run for (the policy, 2.1).
pub const SURVEY_CONTROLLER: &str = "556134-1248";

/// One respondent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Respondent {
    /// Id.
    pub id: String,
    /// The controller (organisation number) the survey was run for.
    pub controller: String,
    /// Name.
    pub name: String,
    /// Email address.
    pub email: Option<String>,
    /// Phone.
    pub phone: Option<String>,
    /// Preferred language.
    pub language: String,
    /// Restrictions of processing: request, hold, retention.
    #[serde(default)]
    pub restrictions: Vec<String>,
}

/// One answer to a survey.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Answer {
    /// Id.
    pub id: String,
    /// The respondent.
    pub respondent: String,
    /// The controller.
    pub controller: String,
    /// Which survey.
    pub survey: String,
    /// When.
    pub answered_on: String,
    /// 0 to 10.
    pub score: u8,
    /// Free text.
    pub comment: String,
    /// Restrictions of processing.
    #[serde(default)]
    pub restrictions: Vec<String>,
}

/// The platform's data.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Data {
    /// Respondents by id.
    pub respondents: BTreeMap<String, Respondent>,
    /// Answers by id.
    pub answers: BTreeMap<String, Answer>,
}

impl Data {
    /// The synthetic data: every third of `n` people (seed `seed`) who deal
    /// with Intrum Sverige AB (the surveys' controller) answered one or two
    /// surveys.
    pub fn seeded(n: usize, seed: u64) -> Self {
        let mut d = Self::default();
        for p in crate::reference::people(n, seed)
            .into_iter()
            .filter(|p| p.idx % 3 == 0 && p.controller == SURVEY_CONTROLLER)
        {
            let id = format!("R{:06}", p.idx);
            for j in 0..(1 + p.idx % 2) {
                let aid = format!("A{:06}-{j}", p.idx);
                d.answers.insert(
                    aid.clone(),
                    Answer {
                        id: aid,
                        respondent: id.clone(),
                        controller: p.controller.to_owned(),
                        survey: if j == 0 { "nps-2026" } else { "service-2026" }.into(),
                        answered_on: format!("2026-{:02}-{:02}", 1 + p.idx % 12, 1 + p.idx % 28),
                        score: u8::try_from(p.idx % 11).unwrap_or(0),
                        comment: if p.idx % 2 == 0 {
                            "Snabb och trevlig service".into()
                        } else {
                            "Svårt att nå er på telefon".into()
                        },
                        restrictions: vec![],
                    },
                );
            }
            d.respondents.insert(
                id.clone(),
                Respondent {
                    id,
                    controller: p.controller.to_owned(),
                    name: p.name(),
                    email: Some(p.email.clone()),
                    phone: Some(p.phone.clone()),
                    language: p.language.to_owned(),
                    restrictions: vec![],
                },
            );
        }
        d
    }
}

/// How the API runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The key every call must carry in `X-Api-Key`.
    pub api_key: String,
    /// Items per page.
    pub page_size: usize,
    /// Where the data is kept (none: in memory only).
    pub file: Option<PathBuf>,
}

#[derive(Clone)]
struct App {
    data: Arc<Mutex<Data>>,
    settings: Arc<Settings>,
}

/// Loads the data from `settings.file` when it exists, else `seed`.
pub fn load(settings: &Settings, seed: impl FnOnce() -> Data) -> std::io::Result<Data> {
    match &settings.file {
        Some(f) if f.exists() => serde_json::from_slice(&std::fs::read(f)?)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        _ => Ok(seed()),
    }
}

/// The API's routes over `data`.
pub fn router(data: Data, settings: Settings) -> Router {
    let app = App {
        data: Arc::new(Mutex::new(data)),
        settings: Arc::new(settings),
    };
    Router::new()
        .route("/v1/respondents", get(list_respondents))
        .route(
            "/v1/respondents/{id}",
            get(get_respondent)
                .patch(patch_respondent)
                .delete(delete_respondent),
        )
        .route(
            "/v1/respondents/{id}/restrictions/{basis}",
            put(restrict_respondent).delete(lift_respondent),
        )
        .route("/v1/respondents/{id}/answers", get(list_answers))
        .route("/v1/answers/{id}", get(get_answer).delete(delete_answer))
        .route(
            "/v1/answers/{id}/restrictions/{basis}",
            put(restrict_answer).delete(lift_answer),
        )
        .with_state(app)
}

fn error(status: StatusCode, why: &str) -> Response {
    (status, Json(json!({ "error": why }))).into_response()
}

impl App {
    fn authorised(&self, headers: &HeaderMap) -> bool {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|k| k == self.settings.api_key)
    }

    async fn save(&self, data: &Data) {
        if let Some(f) = &self.settings.file {
            let tmp = f.with_extension("tmp");
            let bytes = serde_json::to_vec(data).unwrap_or_default();
            if std::fs::write(&tmp, bytes).is_ok() {
                let _ = std::fs::rename(&tmp, f);
            }
        }
    }

    fn page<T: Serialize>(&self, items: Vec<&T>, cursor: Option<&str>) -> Response {
        let start: usize = cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
        let size = self.settings.page_size.max(1);
        let page: Vec<&&T> = items.iter().skip(start).take(size).collect();
        let next = (start + size < items.len()).then(|| (start + size).to_string());
        Json(json!({ "items": page, "next_cursor": next })).into_response()
    }
}

fn unauthorised() -> Response {
    error(StatusCode::UNAUTHORIZED, "a valid X-Api-Key is required")
}

fn valid_basis(b: &str) -> bool {
    matches!(b, "request" | "hold" | "retention")
}

async fn list_respondents(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if !app.authorised(&headers) {
        return unauthorised();
    }
    let d = app.data.lock().await;
    let items: Vec<&Respondent> = d
        .respondents
        .values()
        .filter(|r| {
            q.get("email")
                .is_none_or(|e| r.email.as_deref() == Some(e.as_str()))
        })
        .filter(|r| {
            q.get("phone")
                .is_none_or(|p| r.phone.as_deref() == Some(p.as_str()))
        })
        .filter(|r| q.get("controller").is_none_or(|c| r.controller == *c))
        .collect();
    app.page(items, q.get("cursor").map(String::as_str))
}

async fn get_respondent(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !app.authorised(&headers) {
        return unauthorised();
    }
    let d = app.data.lock().await;
    match d.respondents.get(&id) {
        Some(r) => Json(r).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such respondent"),
    }
}

async fn patch_respondent(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(change): Json<Value>,
) -> Response {
    if !app.authorised(&headers) {
        return unauthorised();
    }
    let mut d = app.data.lock().await;
    let Some(r) = d.respondents.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, "no such respondent");
    };
    let Value::Object(fields) = change else {
        return error(StatusCode::BAD_REQUEST, "a JSON object of fields");
    };
    for (k, v) in fields {
        let v = v.as_str().map(str::to_owned);
        match (k.as_str(), v) {
            ("name", Some(v)) => r.name = v,
            ("email", v) => r.email = v,
            ("phone", v) => r.phone = v,
            ("language", Some(v)) => r.language = v,
            _ => return error(StatusCode::BAD_REQUEST, "unknown or read-only field"),
        }
    }
    let out = Json(r.clone()).into_response();
    app.save(&d).await;
    out
}

async fn delete_respondent(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !app.authorised(&headers) {
        return unauthorised();
    }
    let mut d = app.data.lock().await;
    if d.respondents.remove(&id).is_none() {
        return error(StatusCode::NOT_FOUND, "no such respondent");
    }
    d.answers.retain(|_, a| a.respondent != id);
    app.save(&d).await;
    Json(json!({ "deleted": id })).into_response()
}

fn change_restriction(list: &mut Vec<String>, basis: &str, on: bool) {
    list.retain(|b| b != basis);
    if on {
        list.push(basis.to_owned());
        list.sort();
    }
}

async fn restriction(
    app: App,
    headers: HeaderMap,
    id: String,
    basis: String,
    answer: bool,
    on: bool,
) -> Response {
    if !app.authorised(&headers) {
        return unauthorised();
    }
    if !valid_basis(&basis) {
        return error(StatusCode::BAD_REQUEST, "basis: request, hold or retention");
    }
    let mut d = app.data.lock().await;
    let list = if answer {
        d.answers.get_mut(&id).map(|a| &mut a.restrictions)
    } else {
        d.respondents.get_mut(&id).map(|r| &mut r.restrictions)
    };
    let Some(list) = list else {
        return error(StatusCode::NOT_FOUND, "no such record");
    };
    change_restriction(list, &basis, on);
    let out = Json(json!({ "restrictions": list.clone() })).into_response();
    app.save(&d).await;
    out
}

async fn restrict_respondent(
    State(app): State<App>,
    headers: HeaderMap,
    Path((id, basis)): Path<(String, String)>,
) -> Response {
    restriction(app, headers, id, basis, false, true).await
}

async fn lift_respondent(
    State(app): State<App>,
    headers: HeaderMap,
    Path((id, basis)): Path<(String, String)>,
) -> Response {
    restriction(app, headers, id, basis, false, false).await
}

async fn restrict_answer(
    State(app): State<App>,
    headers: HeaderMap,
    Path((id, basis)): Path<(String, String)>,
) -> Response {
    restriction(app, headers, id, basis, true, true).await
}

async fn lift_answer(
    State(app): State<App>,
    headers: HeaderMap,
    Path((id, basis)): Path<(String, String)>,
) -> Response {
    restriction(app, headers, id, basis, true, false).await
}

async fn list_answers(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    if !app.authorised(&headers) {
        return unauthorised();
    }
    let d = app.data.lock().await;
    if !d.respondents.contains_key(&id) {
        return error(StatusCode::NOT_FOUND, "no such respondent");
    }
    let items: Vec<&Answer> = d.answers.values().filter(|a| a.respondent == id).collect();
    app.page(items, q.get("cursor").map(String::as_str))
}

async fn get_answer(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !app.authorised(&headers) {
        return unauthorised();
    }
    let d = app.data.lock().await;
    match d.answers.get(&id) {
        Some(a) => Json(a).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such answer"),
    }
}

async fn delete_answer(
    State(app): State<App>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !app.authorised(&headers) {
        return unauthorised();
    }
    let mut d = app.data.lock().await;
    if d.answers.remove(&id).is_none() {
        return error(StatusCode::NOT_FOUND, "no such answer");
    }
    app.save(&d).await;
    Json(json!({ "deleted": id })).into_response()
}
