//! The case handlers' console: the queue of requests with their deadlines,
//! one request with its steps and its plan/outcome differences, and the
//! handler's decisions (approve, refuse with a typed reason, extend with a
//! reason, cancel), each through the orchestrator's own API with a token
//! naming the handler, so each lands in the request's trail under their id.
//!
//! Sign-in: through the company's identity provider (OpenID Connect, the
//! handler's roles giving their scopes), or under `dsr up` a development
//! sign-in (the handler's id typed in). Either way the console's own key
//! signs a short token per call naming the handler ("handler:<id>") with
//! only the scopes they hold, so each service checks the handler's rights
//! and records their id.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use dsr_domain::text::Lang;
use dsr_proto::erasure::v1 as era;
use dsr_proto::orchestrator::v1 as pb;

use crate::mesh::{Mesh, MeshError};
use crate::oidc::Provider;
use crate::pages::{esc, layout};
use crate::web::{Portal, not_found, page, see_other, session_key};

mod actions;
mod casefile;
mod holds;
mod incidents;
mod signin;
mod transfers;

use actions::act;
use signin::{login, login_form, login_oidc, logout, oidc_callback};

/// The scopes a case handler may hold: reading and deciding requests,
/// attesting a person, erasure's receipts, holds, tasks and sweeps, and
/// reading the transfer registry.
pub const CASE_HANDLER_SCOPES: &[&str] = &[
    "requests:read",
    "requests:manage",
    "requests:submit",
    "identity:verify",
    "identity:attest",
    "erasure:read",
    "erasure:holds",
    "erasure:sweep",
    "transfers:read",
    "incidents:report",
    "incidents:manage",
];

/// How case handlers sign in.
#[derive(Clone, Debug)]
pub enum SignIn {
    /// Under `dsr up` only: the handler's id typed in, every case handler
    /// scope.
    Development,
    /// The company's identity provider (OpenID Connect).
    Oidc {
        /// The provider.
        provider: Arc<Provider>,
        /// The claim with the handler's roles, e.g. "roles", "groups" or
        /// "realm_access.roles".
        roles_claim: String,
        /// The claim naming the handler in the trail, e.g.
        /// "preferred_username" (else `sub`).
        handler_claim: String,
        /// The scopes each role gives (the union over the handler's roles);
        /// a handler with none is not let in.
        role_scopes: BTreeMap<String, Vec<String>>,
    },
}

/// The console: its calls to the mesh, signed for the handler, and its
/// sign-in.
#[derive(Clone, Debug)]
pub struct Console {
    /// The mesh, with the console's signer (tokens naming the handler).
    pub mesh: Mesh,
    /// How handlers sign in.
    pub sign_in: SignIn,
}

/// The console's routes, under `/console/{lang}/`.
pub fn router() -> Router<Portal> {
    Router::new()
        .route("/console/{lang}/login", get(login_form).post(login))
        .route("/console/{lang}/login/oidc", post(login_oidc))
        .route("/console/oidc/callback", get(oidc_callback))
        .route("/console/{lang}/logout", post(logout))
        .route("/console/{lang}/", get(queue))
        .route("/console/{lang}/requests/{id}", get(request))
        .route("/console/{lang}/requests/{id}/{action}", post(act))
        .route(
            "/console/{lang}/holds",
            get(holds::holds).post(holds::place),
        )
        .route("/console/{lang}/holds/lift", post(holds::lift))
        .route(
            "/console/{lang}/sweeps",
            get(holds::sweeps).post(holds::start_sweep),
        )
        .route("/console/{lang}/transfers", get(transfers::transfers))
        .route(
            "/console/{lang}/incidents",
            get(incidents::incidents).post(incidents::report),
        )
        .route("/console/{lang}/incidents/{id}", get(incidents::incident))
        .route(
            "/console/{lang}/incidents/{id}/draft",
            get(incidents::draft),
        )
        .route(
            "/console/{lang}/incidents/{id}/{step}",
            post(incidents::step),
        )
        .route("/console/{lang}/complaints", get(incidents::complaints))
        .route(
            "/console/{lang}/complaints/{id}/answer",
            post(incidents::answer),
        )
}

/// The console's navigation, at the top of every page after sign-in.
fn nav(p: &Portal, lang: Lang) -> String {
    let l = lang.code();
    let mut b = format!(
        "<nav aria-label=\"{}\"><ul class=\"nav\">",
        esc(p.texts.get("console_nav", lang))
    );
    for (path, key) in [
        ("", "console_queue"),
        ("holds", "console_holds"),
        ("transfers", "console_transfers"),
        ("sweeps", "console_sweeps"),
        ("incidents", "console_incidents"),
        ("complaints", "console_complaints"),
    ] {
        let _ = write!(
            b,
            "<li><a href=\"/console/{l}/{path}\">{}</a></li>",
            esc(p.texts.get(key, lang))
        );
    }
    let _ = write!(
        b,
        "<li><form method=\"post\" action=\"/console/{l}/logout\" style=\"display:inline\"><button type=\"submit\" style=\"margin:0;padding:.1rem .6rem\">{}</button></form></li>",
        esc(p.texts.get("console_sign_out", lang))
    );
    b.push_str("</ul></nav>");
    b
}

/// The navigation, then what the last action did (`notice`, a text key)
/// for a screen reader to announce.
fn nav_with(p: &Portal, lang: Lang, notice: Option<&str>) -> String {
    let mut b = nav(p, lang);
    if let Some(k) = notice {
        let _ = write!(b, "<p role=\"status\">{}</p>", esc(p.texts.get(k, lang)));
    }
    b
}

/// The page for a read the mesh did not answer: refused (the handler's
/// roles do not give the scope it needs), or unavailable.
fn read_failed(p: &Portal, lang: Lang, what: &str, e: &MeshError) -> Response {
    tracing::warn!(error = %e, what, "could not be read");
    let key = match e {
        MeshError::Refused(_) => "console_refused",
        MeshError::Invalid(_) | MeshError::Unavailable => "error_unavailable",
    };
    page(crate::pages::notice(&p.texts, lang, key))
}

/// A fieldset of radio buttons named `name`: (value, text key) pairs, the
/// one `checked` chosen.
fn radios(
    p: &Portal,
    lang: Lang,
    name: &str,
    legend: &str,
    options: &[(&str, &str)],
    checked: &str,
) -> String {
    let mut f = format!(
        "<fieldset><legend>{}</legend>",
        esc(p.texts.get(legend, lang))
    );
    for (value, key) in options {
        let _ = write!(
            f,
            "<div class=\"choice\"><input type=\"radio\" name=\"{name}\" id=\"{name}-{value}\" value=\"{value}\"{c}>\
<label for=\"{name}-{value}\" style=\"margin:0;font-weight:400\">{}</label></div>",
            esc(p.texts.get(key, lang)),
            c = if *value == checked { " checked" } else { "" },
        );
    }
    f.push_str("</fieldset>");
    f
}

/// The identity kinds a handler types in (attesting a person, a hold on a
/// person): the select, labelled `label`.
fn identity_type_select(p: &Portal, lang: Lang, label: &str) -> String {
    let mut f = format!(
        "<label for=\"identity_type\">{}</label><select id=\"identity_type\" name=\"identity_type\">",
        esc(p.texts.get(label, lang)),
    );
    for kind in ["email", "personnummer", "phone"] {
        let _ = write!(
            f,
            "<option value=\"{kind}\">{}</option>",
            esc(p.texts.get(&format!("identity_{kind}"), lang))
        );
    }
    f.push_str("</select>");
    f
}

/// An identity typed in a console form: `value` checked as the kind chosen
/// in the select (email when none), on the wire as raw; `None` when it is
/// not one.
fn typed_identity(kind: &str, value: &str) -> Option<dsr_proto::common::v1::Identity> {
    use dsr_domain::identity::{Identity, IdentityType};
    use dsr_proto::common::v1 as common;
    let (kind, wire) = match kind {
        "personnummer" => (
            IdentityType::Personnummer,
            common::IdentityType::SePersonnummer,
        ),
        "phone" => (IdentityType::Phone, common::IdentityType::Phone),
        _ => (IdentityType::Email, common::IdentityType::Email),
    };
    let i = Identity::parse(kind, value).ok()?;
    Some(common::Identity {
        r#type: wire as i32,
        format: common::IdentityFormat::Raw as i32,
        value: i.value().to_owned(),
        hmac_key_id: String::new(),
    })
}

/// A timestamp as the console prints it (UTC).
fn timestamp(ts: Option<&prost_types::Timestamp>) -> String {
    ts.and_then(|ts| chrono::DateTime::from_timestamp(ts.seconds, 0))
        .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

fn valid_id(s: &str) -> bool {
    s.len() == 36 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

fn console_page(p: &Portal, lang: Lang, title: &str, other: &str, body: &str) -> Response {
    page(layout(&p.texts, lang, title, other, body, false))
}

fn other(lang: Lang) -> &'static str {
    match lang {
        Lang::Sv => "en",
        Lang::En => "sv",
    }
}

/// The page's language and the signed-in handler with their console, or
/// the answer instead: not found (no such language, no console), or the
/// sign-in page.
fn handler(
    p: &Portal,
    lang: &str,
    headers: &HeaderMap,
) -> Result<(Lang, String, Console), Box<Response>> {
    let (Some(lang), Some(console)) = (Lang::parse(lang), p.console.clone()) else {
        return Err(Box::new(not_found()));
    };
    match session_key(headers).and_then(|k| p.sessions.get(&k)) {
        Some(s) if !s.handler.is_empty() => Ok((
            lang,
            format!("handler:{}", s.handler),
            Console {
                mesh: console.mesh.limited_to(&s.scopes),
                ..console
            },
        )),
        _ => Err(Box::new(see_other(&format!(
            "/console/{}/login",
            lang.code()
        )))),
    }
}

/// The queue's filter.
#[derive(Debug, Default, serde::Deserialize)]
pub struct QueueFilter {
    #[serde(default)]
    state: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    controller: String,
    #[serde(default)]
    due_within: String,
    #[serde(default)]
    overdue: Option<String>,
}

const KINDS: [pb::Kind; 6] = [
    pb::Kind::Access,
    pb::Kind::Portability,
    pb::Kind::Erasure,
    pb::Kind::Rectification,
    pb::Kind::Restriction,
    pb::Kind::Objection,
];

/// A `<select>` named `name` with an "all" option first; `options` are
/// (value, label) pairs, `chosen` the value selected.
fn select(
    p: &Portal,
    lang: Lang,
    name: &str,
    label: &str,
    options: &[(String, String)],
    chosen: &str,
) -> String {
    let mut b = format!(
        "<label for=\"{name}\">{}</label><select id=\"{name}\" name=\"{name}\"><option value=\"\">{}</option>",
        esc(p.texts.get(label, lang)),
        esc(p.texts.get("console_filter_all", lang)),
    );
    for (value, text) in options {
        let _ = write!(
            b,
            "<option value=\"{v}\"{sel}>{t}</option>",
            v = esc(value),
            sel = if value == chosen { " selected" } else { "" },
            t = esc(text),
        );
    }
    b.push_str("</select>");
    b
}

const STATES: [pb::State; 12] = [
    pb::State::Submitted,
    pb::State::Verifying,
    pb::State::Locating,
    pb::State::AwaitingApproval,
    pb::State::Exporting,
    pb::State::Planning,
    pb::State::Executing,
    pb::State::AwaitingReview,
    pb::State::Completed,
    pb::State::CompletedWithRetained,
    pb::State::Rejected,
    pb::State::Cancelled,
];

fn state_name(s: pb::State) -> String {
    casefile::enum_word(s.as_str_name(), "STATE_")
}

fn kind_name(k: pb::Kind) -> String {
    casefile::enum_word(k.as_str_name(), "KIND_")
}

fn kind_key(k: i32) -> &'static str {
    match pb::Kind::try_from(k).unwrap_or(pb::Kind::Unspecified) {
        pb::Kind::Portability => "console_kind_portability",
        pb::Kind::Erasure => "console_kind_erasure",
        pb::Kind::Rectification => "console_kind_rectification",
        pb::Kind::Restriction => "console_kind_restriction",
        pb::Kind::Objection => "console_kind_objection",
        pb::Kind::Access | pb::Kind::Unspecified => "console_kind_access",
    }
}

fn date(d: Option<&dsr_proto::common::v1::Date>) -> String {
    d.map_or_else(String::new, |d| {
        format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)
    })
}

async fn queue(
    State(p): State<Portal>,
    Path(lang): Path<String>,
    Query(f): Query<QueueFilter>,
    headers: HeaderMap,
) -> Response {
    let (lang, who, console) = match handler(&p, &lang, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let state = STATES
        .into_iter()
        .find(|s| state_name(*s) == f.state)
        .unwrap_or(pb::State::Unspecified);
    let kind = KINDS
        .into_iter()
        .find(|k| kind_name(*k) == f.kind)
        .unwrap_or(pb::Kind::Unspecified);
    let controller = p
        .controllers
        .iter()
        .find(|(o, _)| *o == f.controller)
        .map(|(o, _)| o.clone())
        .unwrap_or_default();
    let due_within: u32 = f.due_within.trim().parse().unwrap_or(0).min(366);
    let filter = crate::mesh::ListFilter {
        state,
        kind,
        controller: controller.clone(),
        overdue: f.overdue.is_some(),
        due_within_days: due_within,
    };
    let listed = match console.mesh.list(&who, &filter).await {
        Ok(l) => l,
        Err(e) => return read_failed(&p, lang, "requests", &e),
    };
    let t = &p.texts;
    let l = lang.code();
    let mut b = nav(&p, lang);
    let _ = write!(
        b,
        "<p>{} <b>{}</b></p><form method=\"get\" action=\"/console/{l}/\">",
        esc(t.get("console_signed_in_as", lang)),
        esc(who.trim_start_matches("handler:")),
    );
    let states: Vec<(String, String)> = STATES
        .iter()
        .map(|s| {
            let n = state_name(*s);
            let label = t.get(&format!("console_state_{n}"), lang).to_owned();
            (n, label)
        })
        .collect();
    b.push_str(&select(
        &p,
        lang,
        "state",
        "console_filter_state",
        &states,
        &f.state,
    ));
    let kinds: Vec<(String, String)> = KINDS
        .iter()
        .map(|k| (kind_name(*k), t.get(kind_key(*k as i32), lang).to_owned()))
        .collect();
    b.push_str(&select(
        &p,
        lang,
        "kind",
        "console_col_kind",
        &kinds,
        &f.kind,
    ));
    b.push_str(&select(
        &p,
        lang,
        "controller",
        "console_col_company",
        &p.controllers,
        &controller,
    ));
    let windows: Vec<(String, String)> = [3u32, 7, 14, 30, 60]
        .iter()
        .map(|d| {
            (
                d.to_string(),
                format!("{d} {}", t.get("console_days", lang)),
            )
        })
        .collect();
    b.push_str(&select(
        &p,
        lang,
        "due_within",
        "console_filter_due_within",
        &windows,
        &due_within.to_string(),
    ));
    let _ = write!(
        b,
        "<div class=\"choice\"><input type=\"checkbox\" id=\"overdue\" name=\"overdue\" value=\"1\"{}>\
<label for=\"overdue\" style=\"margin:0;font-weight:400\">{}</label></div><button type=\"submit\">{}</button></form>",
        if filter.overdue { " checked" } else { "" },
        esc(t.get("console_filter_overdue", lang)),
        esc(t.get("console_show", lang)),
    );
    if listed.is_empty() {
        let _ = write!(b, "<p>{}</p>", esc(t.get("console_empty", lang)));
    } else {
        b.push_str(&table_head(
            &p,
            lang,
            "",
            &[
                "console_col_reference",
                "console_col_kind",
                "console_col_state",
                "console_col_company",
                "console_col_due",
            ],
        ));
        for r in &listed {
            let st = pb::State::try_from(r.state).unwrap_or(pb::State::Unspecified);
            let d = r.deadline.clone().unwrap_or_default();
            let company = r
                .controller
                .as_ref()
                .and_then(|c| {
                    p.controllers
                        .iter()
                        .find(|(o, _)| *o == c.organisation_number)
                })
                .map(|(_, n)| n.clone())
                .unwrap_or_default();
            let _ = write!(
                b,
                "<tr><td><a href=\"/console/{l}/requests/{id}\" translate=\"no\">{short}</a></td><td>{kind}</td><td>{state}</td><td>{company}</td><td>{due}{late}</td></tr>",
                id = esc(&r.id),
                short = esc(r.id.get(..8).unwrap_or(&r.id)),
                kind = esc(t.get(kind_key(r.kind), lang)),
                state = esc(t.get(&format!("console_state_{}", state_name(st)), lang)),
                company = esc(&company),
                due = esc(&date(d.due.as_ref())),
                late = if d.overdue {
                    format!(" <b>({})</b>", esc(t.get("console_overdue", lang)))
                } else if let Some(n) = days_left(&p, &r.state, d.due.as_ref()) {
                    format!(" ({n} {})", esc(t.get("console_days_left", lang)))
                } else {
                    String::new()
                },
            );
        }
        b.push_str("</tbody></table>");
    }
    let title = t.get("console_title", lang).to_owned();
    console_page(&p, lang, &title, &format!("/console/{}/", other(lang)), &b)
}

/// Days until an open request's deadline, by the portal's clock (`None`
/// once answered).
fn days_left(p: &Portal, state: &i32, due: Option<&dsr_proto::common::v1::Date>) -> Option<i64> {
    let open = !matches!(
        pb::State::try_from(*state).unwrap_or(pb::State::Unspecified),
        pb::State::Completed
            | pb::State::CompletedWithRetained
            | pb::State::Rejected
            | pb::State::Cancelled
    );
    let d = due?;
    let due = chrono::NaiveDate::from_ymd_opt(
        d.year,
        u32::try_from(d.month).ok()?,
        u32::try_from(d.day).ok()?,
    )?;
    open.then(|| (due - p.clock.today()).num_days())
}

/// A table's opening with its column headers (the texts `columns`).
fn table_head(p: &Portal, lang: Lang, id: &str, columns: &[&str]) -> String {
    let mut h = if id.is_empty() {
        "<table><thead><tr>".to_owned()
    } else {
        format!("<table id=\"{id}\"><thead><tr>")
    };
    for c in columns {
        let _ = write!(h, "<th scope=\"col\">{}</th>", esc(p.texts.get(c, lang)));
    }
    h.push_str("</tr></thead><tbody>");
    h
}

fn action_form(
    p: &Portal,
    lang: Lang,
    id: &str,
    action: &str,
    title: &str,
    fields: &str,
) -> String {
    format!(
        "<form method=\"post\" action=\"/console/{l}/requests/{id}/{action}\" novalidate><h3>{title}</h3>{fields}\
<button type=\"submit\">{title}</button></form>",
        l = lang.code(),
        id = esc(id),
        title = esc(p.texts.get(title, lang)),
    )
}

fn text_field(
    p: &Portal,
    lang: Lang,
    name: &str,
    label: &str,
    errors: &BTreeMap<String, &'static str>,
) -> String {
    let err = errors.get(name).map_or_else(String::new, |k| {
        format!(
            "<p class=\"error\" id=\"{name}-error\">{}</p>",
            esc(p.texts.get(k, lang))
        )
    });
    format!(
        "<label for=\"{name}\">{label}</label>{err}<input type=\"text\" id=\"{name}\" name=\"{name}\" aria-describedby=\"{name}-error\"{inv}>",
        label = esc(p.texts.get(label, lang)),
        inv = if errors.contains_key(name) {
            " aria-invalid=\"true\""
        } else {
            ""
        },
    )
}

fn notifications_table(
    p: &Portal,
    lang: Lang,
    id: &str,
    notes: &[era::Notification],
    errors: &BTreeMap<String, &'static str>,
) -> String {
    let t = &p.texts;
    if notes.is_empty() {
        return String::new();
    }
    let mut b = format!("<h2>{}</h2>", esc(t.get("console_notifications", lang)));
    b.push_str(&table_head(
        p,
        lang,
        "notifications",
        &[
            "console_notif_recipient",
            "console_notif_country",
            "console_notif_how",
            "console_notif_due",
            "console_notif_transfer",
            "console_notif_done",
        ],
    ));
    for n in notes {
        let task = n.channel == era::NotificationChannel::Task as i32;
        let transfer = era::NotificationTransfer::try_from(n.transfer)
            .unwrap_or(era::NotificationTransfer::Unspecified);
        let lawful = matches!(
            transfer,
            era::NotificationTransfer::Lawful | era::NotificationTransfer::Approved
        );
        let verdict = match transfer {
            era::NotificationTransfer::Lawful | era::NotificationTransfer::Unspecified => {
                "console_notif_lawful"
            }
            era::NotificationTransfer::Refused => "console_notif_refused",
            era::NotificationTransfer::AwaitingApproval => "console_notif_awaiting",
            era::NotificationTransfer::Approved => "console_notif_approved",
        };
        let done = if n.done_time.is_some() {
            format!(
                "{} ({})",
                esc(t.get("console_notif_done", lang)),
                esc(&n.done_by)
            )
        } else if task && lawful {
            format!(
                "<form method=\"post\" action=\"/console/{l}/requests/{id}/notify\"><input type=\"hidden\" name=\"notification\" value=\"{nid}\">\
<button type=\"submit\" style=\"margin:0\" aria-label=\"{label}: {who}\">{label}</button></form>",
                l = lang.code(),
                id = esc(id),
                nid = esc(&n.id),
                label = esc(t.get("console_mark_done", lang)),
                who = esc(&n.recipient_name),
            )
        } else if transfer == era::NotificationTransfer::AwaitingApproval {
            format!(
                "<form method=\"post\" action=\"/console/{l}/requests/{id}/approve_transfer\"><input type=\"hidden\" name=\"notification\" value=\"{nid}\">\
<label for=\"transfer_note-{nid}\">{label}</label>{err}<input type=\"text\" id=\"transfer_note-{nid}\" name=\"transfer_note\" aria-describedby=\"transfer_note-{nid}-error\"{inv}>\
<button type=\"submit\" style=\"margin:0\">{go}</button></form>",
                l = lang.code(),
                id = esc(id),
                nid = esc(&n.id),
                label = esc(t.get("console_transfer_note", lang)),
                err = errors.get(&format!("transfer_note-{}", n.id)).map_or_else(
                    String::new,
                    |k| format!(
                        "<p class=\"error\" id=\"transfer_note-{}-error\">{}</p>",
                        esc(&n.id),
                        esc(t.get(k, lang))
                    )
                ),
                inv = if errors.contains_key(&format!("transfer_note-{}", n.id)) {
                    " aria-invalid=\"true\""
                } else {
                    ""
                },
                go = esc(t.get("console_approve_transfer", lang)),
            )
        } else {
            esc(t.get("console_notif_open", lang))
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td></tr>",
            esc(&n.recipient_name),
            esc(&n.country),
            esc(t.get(
                if task {
                    "console_notif_task"
                } else {
                    "console_notif_system"
                },
                lang
            )),
            esc(&date(n.due_date.as_ref())),
            esc(t.get(verdict, lang)),
            if n.transfer_reasons.is_empty() {
                String::new()
            } else {
                format!(": {}", esc(&n.transfer_reasons.join("; ")))
            },
            done,
        );
    }
    b.push_str("</tbody></table>");
    b
}

/// One request as the console shows it.
struct Case {
    r: pb::DataSubjectRequest,
    /// The case file; `None` when it could not be read (the rest helps).
    file: Option<pb::GetCaseFileResponse>,
    notes: Vec<era::Notification>,
    receipts: Vec<era::StoredReceipt>,
    /// An erasure's plan, once planned.
    plan: Option<era::Plan>,
}

/// Reads request `id` and its case file, notifications and receipts.
async fn load(console: &Console, who: &str, id: &str) -> Result<Case, MeshError> {
    let m = &console.mesh;
    let r = m.get(who, id).await?;
    let erasure = r.kind == pb::Kind::Erasure as i32;
    let (file, notes, receipts, plan) = tokio::join!(
        m.case_file(who, id),
        m.notifications(who, id),
        m.receipts(who, id),
        async {
            if erasure {
                m.plan(who, id).await
            } else {
                Ok(None)
            }
        }
    );
    let or_empty = |what: &str, e: MeshError| {
        tracing::warn!(error = %e, what, "could not be read");
    };
    Ok(Case {
        r,
        file: file.map_err(|e| or_empty("case file", e)).ok(),
        notes: notes
            .map_err(|e| or_empty("notifications", e))
            .unwrap_or_default(),
        receipts: receipts
            .map_err(|e| or_empty("receipts", e))
            .unwrap_or_default(),
        plan: plan.map_err(|e| or_empty("plan", e)).ok().flatten(),
    })
}

fn request_page(
    p: &Portal,
    lang: Lang,
    case: &Case,
    notice: Option<&str>,
    errors: &BTreeMap<String, &'static str>,
) -> Response {
    let r = &case.r;
    let t = &p.texts;
    let st = pb::State::try_from(r.state).unwrap_or(pb::State::Unspecified);
    let d = r.deadline.clone().unwrap_or_default();
    let mut b = nav_with(p, lang, notice);
    let _ = write!(
        b,
        "<dl><dt>{k_ref}</dt><dd translate=\"no\">{id}</dd><dt>{k_kind}</dt><dd>{kind}</dd>\
<dt>{k_state}</dt><dd id=\"state\">{state}</dd><dt>{k_received}</dt><dd>{received}</dd><dt>{k_due}</dt><dd>{due}</dd>",
        k_ref = esc(t.get("console_col_reference", lang)),
        id = esc(&r.id),
        k_kind = esc(t.get("console_col_kind", lang)),
        kind = esc(t.get(kind_key(r.kind), lang)),
        k_state = esc(t.get("console_col_state", lang)),
        state = esc(t.get(&format!("console_state_{}", state_name(st)), lang)),
        k_received = esc(t.get("console_received", lang)),
        received = esc(&date(d.received_on.as_ref())),
        k_due = esc(t.get("console_col_due", lang)),
        due = esc(&date(d.due.as_ref())),
    );
    if !r.required_assurance.is_empty() {
        let _ = write!(
            b,
            "<dt>{}</dt><dd>{}</dd>",
            esc(t.get("console_required_assurance", lang)),
            casefile::word(p, lang, "console_assurance", &r.required_assurance)
        );
    }
    if d.extended_months > 0 {
        let _ = write!(
            b,
            "<dt>{}</dt><dd id=\"extension\">{} {} – {}</dd>",
            esc(t.get("console_extension", lang)),
            d.extended_months,
            esc(t.get("console_months_unit", lang)),
            esc(&d.extension_reason)
        );
    }
    b.push_str("</dl>");
    if let Some(f) = &case.file {
        b.push_str(&casefile::identities(p, lang, f));
    }
    if !r.discrepancies.is_empty() {
        let _ = write!(
            b,
            "<h2>{}</h2><p>{}</p>",
            esc(t.get("console_discrepancies", lang)),
            esc(t.get("console_disc_help", lang)),
        );
        b.push_str(&table_head(
            p,
            lang,
            "discrepancies",
            &[
                "console_disc_system",
                "console_disc_record",
                "console_disc_expected",
                "console_disc_observed",
                "console_disc_ground",
            ],
        ));
        for x in &r.discrepancies {
            let _ = write!(
                b,
                "<tr><td>{}</td><td translate=\"no\">{} {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&x.system_id),
                esc(&x.store),
                esc(&x.key),
                casefile::expected(p, lang, &x.expected),
                casefile::observed(p, lang, &x.observed),
                esc(&x.legal_ground),
            );
        }
        b.push_str("</tbody></table>");
    }
    if !r.steps.is_empty() {
        let _ = write!(b, "<h2>{}</h2>", esc(t.get("console_steps", lang)));
        b.push_str(&table_head(
            p,
            lang,
            "",
            &[
                "console_step",
                "console_step_status",
                "console_step_attempts",
                "console_last_error",
            ],
        ));
        for s in &r.steps {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td translate=\"no\">{}</td></tr>",
                casefile::step_name(p, lang, &s.name),
                casefile::step_status(
                    p,
                    lang,
                    &casefile::enum_word(s.state().as_str_name(), "STEP_STATE_"),
                ),
                s.attempts,
                esc(&s.last_error),
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str(&casefile::letters(p, lang, &r.letters));
    if let Some(plan) = &case.plan {
        b.push_str(&casefile::plan(p, lang, plan, &case.receipts));
    }
    b.push_str(&casefile::receipts(p, lang, &case.receipts));
    b.push_str(&notifications_table(p, lang, &r.id, &case.notes, errors));
    let open = !matches!(
        st,
        pb::State::Completed
            | pb::State::CompletedWithRetained
            | pb::State::Rejected
            | pb::State::Cancelled
    );
    if open {
        let _ = write!(b, "<h2>{}</h2>", esc(t.get("console_actions", lang)));
        if st == pb::State::Verifying {
            let mut f = format!(
                "<p class=\"help\">{}</p>{}",
                esc(t.get("console_attest_help", lang)),
                identity_type_select(p, lang, "console_attest_type"),
            );
            f.push_str(&text_field(
                p,
                lang,
                "identity_value",
                "console_attest_value",
                errors,
            ));
            f.push_str(&radios(
                p,
                lang,
                "evidence",
                "console_attest_evidence",
                &[
                    ("in_person", "evidence_in_person"),
                    ("document", "evidence_document"),
                ],
                "in_person",
            ));
            f.push_str(&text_field(p, lang, "attest_note", "console_note", errors));
            b.push_str(&action_form(p, lang, &r.id, "attest", "console_attest", &f));
        }
        if matches!(st, pb::State::AwaitingApproval | pb::State::AwaitingReview) {
            b.push_str(&action_form(
                p,
                lang,
                &r.id,
                "approve",
                "console_approve",
                &text_field(p, lang, "note", "console_note", errors),
            ));
        }
        let mut reasons = radios(
            p,
            lang,
            "reason",
            "console_reject_reason",
            &[
                ("identity", "reason_identity"),
                ("unfounded", "reason_unfounded"),
                ("no_data", "reason_no_data"),
                ("other", "reason_other"),
            ],
            "other",
        );
        reasons.push_str(&text_field(
            p,
            lang,
            "reject_note",
            "console_reject_note",
            errors,
        ));
        b.push_str(&action_form(
            p,
            lang,
            &r.id,
            "reject",
            "console_reject",
            &reasons,
        ));
        let months = format!(
            "<label for=\"months\">{}</label><select id=\"months\" name=\"months\"><option>1</option><option>2</option></select>{}",
            esc(t.get("console_extend_months", lang)),
            text_field(p, lang, "extend_reason", "console_extend_reason", errors),
        );
        b.push_str(&action_form(
            p,
            lang,
            &r.id,
            "extend",
            "console_extend",
            &months,
        ));
        b.push_str(&action_form(
            p,
            lang,
            &r.id,
            "cancel",
            "console_cancel",
            &text_field(p, lang, "cancel_reason", "console_cancel_reason", errors),
        ));
    }
    if let Some(f) = &case.file {
        b.push_str(&casefile::audit(p, lang, f));
    }
    let _ = write!(
        b,
        "<p><a href=\"/console/{}/\">{}</a></p>",
        lang.code(),
        esc(t.get("console_back", lang))
    );
    let title = t.get("console_request_title", lang).to_owned();
    console_page(
        p,
        lang,
        &title,
        &format!("/console/{}/requests/{}", other(lang), r.id),
        &b,
    )
}

/// `?done` after an action went through.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Done {
    #[serde(default)]
    done: Option<String>,
}

async fn request(
    State(p): State<Portal>,
    Path((lang, id)): Path<(String, String)>,
    Query(done): Query<Done>,
    headers: HeaderMap,
) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    let (lang, who, console) = match handler(&p, &lang, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match load(&console, &who, &id).await {
        Ok(case) => request_page(
            &p,
            lang,
            &case,
            done.done.is_some().then_some("console_done"),
            &BTreeMap::new(),
        ),
        Err(MeshError::Refused(_)) => not_found(),
        Err(_) => page(crate::pages::notice(&p.texts, lang, "error_unavailable")),
    }
}

/// The request's page again, with `notice` and the fields' `errors`, after
/// an action that did not go through.
async fn show_request(
    p: &Portal,
    lang: Lang,
    console: &Console,
    who: &str,
    id: &str,
    notice: Option<&str>,
    errors: &BTreeMap<String, &'static str>,
) -> Response {
    match load(console, who, id).await {
        Ok(case) => request_page(p, lang, &case, notice, errors),
        Err(_) => page(crate::pages::notice(&p.texts, lang, "error_unavailable")),
    }
}
