//! The register of personal-data breaches and the DPO's complaints, as the
//! console shows them: every incident with its 72 hours (overdue marked),
//! a report form; one incident with who is affected per controller and
//! category, its steps (ask the systems, assess, notify IMY, notify the
//! people or record an exception, close) and the notification drafted for
//! IMY as a download; the complaints with their targets and an answer form.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse as _, Response};
use dsr_domain::text::Lang;
use dsr_proto::incident::v1 as inc;

use super::{
    Done, console_page, handler, nav_with, other, read_failed, table_head, timestamp, valid_id,
};
use crate::mesh::{IncidentStep, MeshError};
use crate::pages::esc;
use crate::web::{Portal, not_found, see_other};

fn lower(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

fn risk_word(p: &Portal, lang: Lang, risk: i32) -> String {
    let r = lower(
        inc::Risk::try_from(risk)
            .unwrap_or(inc::Risk::Unspecified)
            .as_str_name(),
        "RISK_",
    );
    super::casefile::word(p, lang, "console_risk", &r)
}

/// The 72 hours as a handler reads them.
fn clock(p: &Portal, lang: Lang, i: &inc::Incident) -> String {
    let t = &p.texts;
    if i.authority_notified_time.is_some() {
        format!(
            "{} {}",
            esc(t.get("console_inc_notified", lang)),
            esc(&timestamp(i.authority_notified_time.as_ref()))
        )
    } else if i.authority_overdue {
        format!(
            "<b class=\"error\">{} ({} {})</b>",
            esc(t.get("console_inc_overdue", lang)),
            -i.hours_left,
            esc(t.get("console_inc_hours_ago", lang))
        )
    } else {
        format!(
            "{} {} ({} {})",
            esc(t.get("console_inc_due", lang)),
            esc(&timestamp(i.authority_due_time.as_ref())),
            i.hours_left,
            esc(t.get("console_inc_hours_left", lang))
        )
    }
}

/// The report form's fields as posted.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct ReportForm {
    #[serde(default)]
    summary: String,
    #[serde(default)]
    discovered_hours_ago: String,
    #[serde(default)]
    systems: String,
    #[serde(default)]
    categories: String,
    #[serde(default)]
    containment: String,
}

fn words(s: &str) -> Vec<String> {
    s.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn field(
    p: &Portal,
    lang: Lang,
    name: &str,
    label: &str,
    area: bool,
    errors: &BTreeMap<String, &'static str>,
) -> String {
    if !area {
        return super::text_field(p, lang, name, label, errors);
    }
    let err = errors.get(name).map_or_else(String::new, |k| {
        format!(
            "<p class=\"error\" id=\"{name}-error\">{}</p>",
            esc(p.texts.get(k, lang))
        )
    });
    format!(
        "<label for=\"{name}\">{}</label>{err}<textarea id=\"{name}\" name=\"{name}\" rows=\"3\" aria-describedby=\"{name}-error\"{}></textarea>",
        esc(p.texts.get(label, lang)),
        if errors.contains_key(name) {
            " aria-invalid=\"true\""
        } else {
            ""
        }
    )
}

async fn register(
    p: &Portal,
    lang: Lang,
    who: &str,
    console: &super::Console,
    notice: Option<&str>,
    errors: &BTreeMap<String, &'static str>,
) -> Response {
    let list = match console.mesh.incidents(who).await {
        Ok(l) => l,
        Err(e) => return read_failed(p, lang, "incidents", &e),
    };
    let t = &p.texts;
    let l = lang.code();
    let mut b = nav_with(p, lang, notice);
    let _ = write!(b, "<p>{}</p>", esc(t.get("console_inc_help", lang)));
    if list.is_empty() {
        let _ = write!(b, "<p>{}</p>", esc(t.get("console_inc_none", lang)));
    } else {
        b.push_str(&table_head(
            p,
            lang,
            "incidents",
            &[
                "console_inc_discovered",
                "console_inc_summary",
                "console_inc_risk",
                "console_inc_people",
                "console_inc_authority",
            ],
        ));
        for i in &list {
            let _ = write!(
                b,
                "<tr><td><a href=\"/console/{l}/incidents/{id}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&timestamp(i.discovered_time.as_ref())),
                esc(&i.summary.chars().take(80).collect::<String>()),
                risk_word(p, lang, i.risk),
                i.affected.as_ref().map_or_else(
                    || format!("~{}", i.approximate_people),
                    |a| a.people.to_string()
                ),
                clock(p, lang, i),
                id = esc(&i.id),
            );
        }
        b.push_str("</tbody></table>");
    }
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/console/{l}/incidents\" novalidate><h2>{}</h2>{}{}{}{}{}<button type=\"submit\">{}</button></form>",
        esc(t.get("console_inc_report", lang)),
        field(p, lang, "summary", "console_inc_summary", true, errors),
        field(
            p,
            lang,
            "discovered_hours_ago",
            "console_inc_discovered_hours_ago",
            false,
            errors
        ),
        field(p, lang, "systems", "console_inc_systems", false, errors),
        field(
            p,
            lang,
            "categories",
            "console_inc_categories",
            false,
            errors
        ),
        field(
            p,
            lang,
            "containment",
            "console_inc_containment",
            true,
            errors
        ),
        esc(t.get("console_inc_report", lang)),
    );
    console_page(
        p,
        lang,
        t.get("console_incidents", lang),
        &format!("/console/{}/incidents", other(lang)),
        &b,
    )
}

/// `GET /console/{lang}/incidents`.
pub(super) async fn incidents(
    State(p): State<Portal>,
    Path(lang): Path<String>,
    Query(done): Query<Done>,
    headers: HeaderMap,
) -> Response {
    let (lang, who, console) = match handler(&p, &lang, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let notice = done.done.as_ref().map(|_| "console_done");
    register(&p, lang, &who, &console, notice, &BTreeMap::new()).await
}

/// `POST /console/{lang}/incidents`: a staff member's report.
pub(super) async fn report(
    State(p): State<Portal>,
    Path(lang): Path<String>,
    headers: HeaderMap,
    Form(f): Form<ReportForm>,
) -> Response {
    let (lang, who, console) = match handler(&p, &lang, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut errors: BTreeMap<String, &'static str> = BTreeMap::new();
    if f.summary.trim().is_empty() {
        errors.insert("summary".into(), "error_required");
    }
    let hours: i64 = match f.discovered_hours_ago.trim() {
        "" => 0,
        h => h.parse().unwrap_or_else(|_| {
            errors.insert("discovered_hours_ago".into(), "error_number");
            0
        }),
    };
    if !errors.is_empty() {
        return register(&p, lang, &who, &console, None, &errors).await;
    }
    let discovered = p.clock.now() - chrono::TimeDelta::hours(hours.max(0));
    let done = console
        .mesh
        .report_incident(
            &who,
            inc::ReportRequest {
                summary: f.summary.trim().to_owned(),
                start_time: None,
                discovered_time: Some(prost_types::Timestamp {
                    seconds: discovered.timestamp(),
                    nanos: 0,
                }),
                system_ids: words(&f.systems),
                category_ids: words(&f.categories),
                approximate_people: 0,
                containment: f.containment.trim().to_owned(),
                source: inc::Source::Staff as i32,
            },
        )
        .await;
    match done {
        Ok(i) => see_other(&format!("/console/{}/incidents/{}", lang.code(), i.id)),
        Err(e) => {
            if let MeshError::Invalid(fields) = &e {
                for f in fields {
                    let name = f.split('[').next().unwrap_or(f).replace("_ids", "s");
                    errors.insert(name, "error_invalid");
                }
            }
            let notice = match e {
                MeshError::Invalid(_) => None,
                MeshError::Refused(_) => Some("console_refused"),
                MeshError::Unavailable => Some("error_unavailable"),
            };
            register(&p, lang, &who, &console, notice, &errors).await
        }
    }
}

async fn incident_page(
    p: &Portal,
    lang: Lang,
    who: &str,
    console: &super::Console,
    id: &str,
    notice: Option<&str>,
    errors: &BTreeMap<String, &'static str>,
) -> Response {
    let i = match console.mesh.incident(who, id).await {
        Ok(i) => i,
        Err(MeshError::Refused(r)) if r == "NOT_FOUND" => return not_found(),
        Err(e) => return read_failed(p, lang, "incident", &e),
    };
    let t = &p.texts;
    let l = lang.code();
    let mut b = nav_with(p, lang, notice);
    let row = |k: &str, v: String| format!("<dt>{}</dt><dd>{v}</dd>", esc(t.get(k, lang)));
    b.push_str("<dl>");
    b.push_str(&row(
        "console_col_reference",
        format!("<span translate=\"no\">{}</span>", esc(&i.id)),
    ));
    b.push_str(&row("console_inc_summary", esc(&i.summary)));
    b.push_str(&row(
        "console_inc_discovered",
        esc(&timestamp(i.discovered_time.as_ref())),
    ));
    let _ = write!(
        b,
        "<dt>{}</dt><dd id=\"clock\">{}</dd>",
        esc(t.get("console_inc_authority", lang)),
        clock(p, lang, &i)
    );
    b.push_str(&row("console_inc_systems", esc(&i.system_ids.join(", "))));
    b.push_str(&row(
        "console_inc_categories",
        format!(
            "<span translate=\"no\">{}</span>",
            esc(&i.category_ids.join(", "))
        ),
    ));
    b.push_str(&row("console_inc_containment", esc(&i.containment)));
    b.push_str(&row(
        "console_inc_risk",
        format!(
            "{}{}",
            risk_word(p, lang, i.risk),
            if i.risk_reasoning.is_empty() {
                String::new()
            } else {
                format!(": {}", esc(&i.risk_reasoning))
            }
        ),
    ));
    if !i.consequences.is_empty() {
        b.push_str(&row("console_inc_consequences", esc(&i.consequences)));
        b.push_str(&row("console_inc_measures", esc(&i.measures)));
    }
    if let Some(n) = &i.notices {
        b.push_str(&row(
            "console_inc_notices",
            format!(
                "<span id=\"notices\">{} {}, {} {}, {} {}</span>",
                n.queued,
                esc(t.get("console_inc_queued", lang)),
                n.sent,
                esc(t.get("console_inc_sent", lang)),
                n.failed,
                esc(t.get("console_inc_failed", lang))
            ),
        ));
    }
    if !i.notice_exception_explanation.is_empty() {
        b.push_str(&row(
            "console_inc_exception",
            esc(&i.notice_exception_explanation),
        ));
    }
    if i.close_time.is_some() {
        b.push_str(&row("console_inc_closed", esc(&i.remedial_action)));
    }
    b.push_str("</dl>");
    match &i.affected {
        None => {
            let _ = write!(b, "<p>{}</p>", esc(t.get("console_inc_not_asked", lang)));
        }
        Some(a) => {
            let _ = write!(
                b,
                "<h2>{}</h2><p id=\"affected\">{} {}, {} {}, {} {}</p>",
                esc(t.get("console_inc_affected", lang)),
                a.people,
                esc(t.get("console_inc_people_unit", lang)),
                a.records,
                esc(t.get("console_inc_records_unit", lang)),
                a.reachable,
                esc(t.get("console_inc_reachable", lang)),
            );
            b.push_str(&table_head(
                p,
                lang,
                "counts",
                &[
                    "console_col_controller",
                    "console_inc_category",
                    "console_inc_people",
                    "console_inc_records",
                ],
            ));
            for c in &a.counts {
                let org = c
                    .controller
                    .as_ref()
                    .map(|c| c.organisation_number.clone())
                    .unwrap_or_default();
                let name = p
                    .controllers
                    .iter()
                    .find(|(o, _)| *o == org)
                    .map_or(org.clone(), |(_, n)| n.clone());
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td translate=\"no\">{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&name),
                    esc(&c.category_id),
                    c.people,
                    c.records
                );
            }
            b.push_str("</tbody></table>");
            for f in &a.failed_systems {
                let _ = write!(
                    b,
                    "<p class=\"error\">{}: <span translate=\"no\">{}</span></p>",
                    esc(t.get("console_inc_not_answered", lang)),
                    esc(f)
                );
            }
        }
    }
    let _ = write!(
        b,
        "<p><a href=\"/console/{l}/incidents/{id}/draft\">{}</a></p>",
        esc(t.get("console_inc_draft", lang)),
        id = esc(&i.id)
    );
    if i.close_time.is_none() {
        let _ = write!(b, "<h2>{}</h2>", esc(t.get("console_actions", lang)));
        let form = |action: &str, title: &str, fields: String| {
            format!(
                "<form method=\"post\" action=\"/console/{l}/incidents/{id}/{action}\" novalidate><h3>{title}</h3>{fields}<button type=\"submit\">{title}</button></form>",
                id = esc(&i.id),
                title = esc(t.get(title, lang)),
            )
        };
        b.push_str(&form(
            "affected",
            "console_inc_find_affected",
            String::new(),
        ));
        b.push_str(&form(
            "assess",
            "console_inc_assess",
            super::radios(
                p,
                lang,
                "risk",
                "console_inc_risk",
                &[
                    ("none", "console_risk_none"),
                    ("risk", "console_risk_risk"),
                    ("high", "console_risk_high"),
                ],
                "high",
            ) + &field(p, lang, "reasoning", "console_inc_reasoning", true, errors)
                + &field(
                    p,
                    lang,
                    "consequences",
                    "console_inc_consequences",
                    true,
                    errors,
                )
                + &field(p, lang, "measures", "console_inc_measures", true, errors),
        ));
        if i.authority_notified_time.is_none() {
            b.push_str(&form(
                "notified",
                "console_inc_record_notified",
                field(p, lang, "reference", "console_inc_reference", false, errors)
                    + &field(
                        p,
                        lang,
                        "late_reason",
                        "console_inc_late_reason",
                        true,
                        errors,
                    ),
            ));
        }
        if i.notices.is_none() && i.notice_exception == 0 {
            b.push_str(&form("notify", "console_inc_notify_people", String::new()));
            b.push_str(&form(
                "exception",
                "console_inc_record_exception",
                super::radios(
                    p,
                    lang,
                    "exception",
                    "console_inc_exception",
                    &[
                        ("unintelligible", "console_exception_unintelligible"),
                        (
                            "risk_no_longer_likely",
                            "console_exception_risk_no_longer_likely",
                        ),
                        (
                            "public_communication",
                            "console_exception_public_communication",
                        ),
                    ],
                    "unintelligible",
                ) + &field(
                    p,
                    lang,
                    "explanation",
                    "console_inc_explanation",
                    true,
                    errors,
                ),
            ));
        }
        b.push_str(&form(
            "close",
            "console_inc_close",
            field(p, lang, "remedial", "console_inc_remedial", true, errors),
        ));
    }
    console_page(
        p,
        lang,
        t.get("console_incident", lang),
        &format!("/console/{}/incidents/{}", other(lang), i.id),
        &b,
    )
}

/// `GET /console/{lang}/incidents/{id}`.
pub(super) async fn incident(
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
    let notice = done.done.as_ref().map(|_| "console_done");
    incident_page(&p, lang, &who, &console, &id, notice, &BTreeMap::new()).await
}

/// `GET /console/{lang}/incidents/{id}/draft`: the notification to IMY as
/// a text file in the page's language.
pub(super) async fn draft(
    State(p): State<Portal>,
    Path((lang, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    let (lang, who, console) = match handler(&p, &lang, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match console.mesh.incident_draft(&who, &id, lang.code()).await {
        Ok(d) => {
            let mut r = d.text.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            if let Ok(v) = HeaderValue::from_str(&format!(
                "attachment; filename=\"incident-{id}-{}.txt\"",
                lang.code()
            )) {
                r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            r
        }
        Err(e) => read_failed(&p, lang, "draft", &e),
    }
}

/// A step's fields as posted.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct StepForm {
    #[serde(default)]
    risk: String,
    #[serde(default)]
    reasoning: String,
    #[serde(default)]
    consequences: String,
    #[serde(default)]
    measures: String,
    #[serde(default)]
    reference: String,
    #[serde(default)]
    late_reason: String,
    #[serde(default)]
    exception: String,
    #[serde(default)]
    explanation: String,
    #[serde(default)]
    remedial: String,
}

/// `POST /console/{lang}/incidents/{id}/{step}`.
pub(super) async fn step(
    State(p): State<Portal>,
    Path((lang, id, step)): Path<(String, String, String)>,
    headers: HeaderMap,
    Form(f): Form<StepForm>,
) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    let (lang, who, console) = match handler(&p, &lang, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let s = match step.as_str() {
        "affected" => IncidentStep::FindAffected,
        "assess" => IncidentStep::Assess {
            risk: match f.risk.as_str() {
                "none" => inc::Risk::None,
                "risk" => inc::Risk::Risk,
                _ => inc::Risk::High,
            },
            reasoning: f.reasoning,
            consequences: f.consequences,
            measures: f.measures,
        },
        "notified" => IncidentStep::Notified {
            at: p.clock.now(),
            reference: f.reference,
            late_reason: f.late_reason,
        },
        "notify" => IncidentStep::NotifyPeople,
        "exception" => IncidentStep::Exception {
            exception: match f.exception.as_str() {
                "risk_no_longer_likely" => inc::NoticeException::RiskNoLongerLikely,
                "public_communication" => inc::NoticeException::PublicCommunication,
                _ => inc::NoticeException::Unintelligible,
            },
            explanation: f.explanation,
        },
        "close" => IncidentStep::Close {
            remedial: f.remedial,
        },
        _ => return not_found(),
    };
    match console.mesh.incident_step(&who, &id, s).await {
        Ok(()) => see_other(&format!("/console/{}/incidents/{id}?done=1", lang.code())),
        Err(e) => {
            tracing::info!(error = %e, step, "incident step not taken");
            let mut errors: BTreeMap<String, &'static str> = BTreeMap::new();
            let notice = match &e {
                MeshError::Invalid(fields) => {
                    for f in fields {
                        let name = if f == "remedial_action" {
                            "remedial"
                        } else if f == "authority_reference" {
                            "reference"
                        } else {
                            f.as_str()
                        };
                        errors.insert(name.to_owned(), "error_required");
                    }
                    None
                }
                MeshError::Refused(reason) => Some(match reason.as_str() {
                    "RISK_NOT_HIGH" => "console_inc_needs_high_risk",
                    "AFFECTED_NOT_FOUND" | "NO_CATEGORIES" => "console_inc_needs_affected",
                    _ => "console_refused",
                }),
                MeshError::Unavailable => Some("error_unavailable"),
            };
            incident_page(&p, lang, &who, &console, &id, notice, &errors).await
        }
    }
}

/// `GET /console/{lang}/complaints`: the DPO's queue.
pub(super) async fn complaints(
    State(p): State<Portal>,
    Path(lang): Path<String>,
    Query(done): Query<Done>,
    headers: HeaderMap,
) -> Response {
    let (lang, who, console) = match handler(&p, &lang, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let notice = done.done.as_ref().map(|_| "console_done");
    complaints_page(&p, lang, &who, &console, notice).await
}

async fn complaints_page(
    p: &Portal,
    lang: Lang,
    who: &str,
    console: &super::Console,
    notice: Option<&str>,
) -> Response {
    let list = match console.mesh.complaints(who).await {
        Ok(l) => l,
        Err(e) => return read_failed(p, lang, "complaints", &e),
    };
    let t = &p.texts;
    let l = lang.code();
    let mut b = nav_with(p, lang, notice);
    let _ = write!(b, "<p>{}</p>", esc(t.get("console_cmp_help", lang)));
    if list.is_empty() {
        let _ = write!(b, "<p>{}</p>", esc(t.get("console_cmp_none", lang)));
    }
    for c in &list {
        let _ = write!(
            b,
            "<section class=\"complaint\" id=\"c-{id}\"><h2>{} {}</h2><p>{}</p><p>{}: {}{}</p>",
            esc(t.get("console_cmp_filed", lang)),
            esc(&timestamp(c.file_time.as_ref())),
            esc(&c.text),
            esc(t.get("console_cmp_answer_by", lang)),
            esc(&timestamp(c.answer_due_time.as_ref())),
            if c.overdue {
                format!(
                    " <b class=\"error\">{}</b>",
                    esc(t.get("console_overdue", lang))
                )
            } else {
                String::new()
            },
            id = esc(&c.id),
        );
        if !c.request_ids.is_empty() {
            let links: Vec<String> = c
                .request_ids
                .iter()
                .map(|r| {
                    format!(
                        "<a href=\"/console/{l}/requests/{r}\" translate=\"no\">{r}</a>",
                        r = esc(r)
                    )
                })
                .collect();
            let _ = write!(
                b,
                "<p>{}: {}</p>",
                esc(t.get("console_cmp_requests", lang)),
                links.join(", ")
            );
        }
        if c.answer_time.is_some() {
            let _ = write!(
                b,
                "<p>{} {}: {}</p><p>{}: {}</p>",
                esc(t.get("console_cmp_answered", lang)),
                esc(&timestamp(c.answer_time.as_ref())),
                esc(&c.answer),
                esc(t.get("console_cmp_letter", lang)),
                super::casefile::word(p, lang, "console_letter_status", &c.letter_status),
            );
        } else {
            let _ = write!(
                b,
                "<form method=\"post\" action=\"/console/{l}/complaints/{id}/answer\" novalidate><label for=\"answer-{id}\">{}</label><textarea id=\"answer-{id}\" name=\"answer\" rows=\"4\"></textarea><button type=\"submit\">{}</button></form>",
                esc(t.get("console_cmp_answer", lang)),
                esc(t.get("console_cmp_send", lang)),
                id = esc(&c.id),
            );
        }
        b.push_str("</section>");
    }
    console_page(
        p,
        lang,
        t.get("console_complaints", lang),
        &format!("/console/{}/complaints", other(lang)),
        &b,
    )
}

/// The answer as posted.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct AnswerForm {
    #[serde(default)]
    answer: String,
}

/// `POST /console/{lang}/complaints/{id}/answer`.
pub(super) async fn answer(
    State(p): State<Portal>,
    Path((lang, id)): Path<(String, String)>,
    headers: HeaderMap,
    Form(f): Form<AnswerForm>,
) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    let (lang, who, console) = match handler(&p, &lang, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if f.answer.trim().is_empty() {
        return complaints_page(
            &p,
            lang,
            &who,
            &console,
            Some("console_cmp_answer_required"),
        )
        .await;
    }
    match console
        .mesh
        .answer_complaint(&who, &id, f.answer.trim())
        .await
    {
        Ok(()) => see_other(&format!("/console/{}/complaints?done=1", lang.code())),
        Err(e) => read_failed(&p, lang, "complaint", &e),
    }
}
