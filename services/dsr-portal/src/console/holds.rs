//! Legal holds and retention sweeps, through erasure's own API with the
//! handler's token: place a hold on a person or one record (nothing of
//! theirs is erased while it stands), lift it, and start a sweep or read
//! how the last ones went.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{Form, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use dsr_domain::text::Lang;
use dsr_proto::common::v1 as common;
use dsr_proto::erasure::v1 as era;
use dsr_proto::system::v1 as sys;

use super::{
    Done, console_page, date, handler, identity_type_select, nav, nav_with, other, radios,
    read_failed, table_head, text_field, timestamp, typed_identity,
};
use crate::mesh::MeshError;
use crate::pages::esc;
use crate::web::{Portal, page, see_other};

/// The hold form as posted.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct HoldForm {
    #[serde(default)]
    target: String,
    #[serde(default)]
    identity_type: String,
    #[serde(default)]
    identity_value: String,
    #[serde(default)]
    system_id: String,
    #[serde(default)]
    store: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    ground: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    controller: String,
    #[serde(default)]
    hold: String,
}

fn holds_page(
    p: &Portal,
    lang: Lang,
    holds: &[era::Hold],
    notice: Option<&str>,
    errors: &BTreeMap<String, &'static str>,
) -> Response {
    let t = &p.texts;
    let l = lang.code();
    let mut b = nav_with(p, lang, notice);
    let _ = write!(b, "<p>{}</p>", esc(t.get("console_holds_help", lang)));
    if holds.is_empty() {
        let _ = write!(b, "<p>{}</p>", esc(t.get("console_holds_none", lang)));
    } else {
        b.push_str(&table_head(
            p,
            lang,
            "holds",
            &[
                "console_hold_covers",
                "console_hold_ground",
                "console_hold_until",
                "console_hold_placed",
                "console_hold_state",
            ],
        ));
        for h in holds {
            let covers = match &h.record {
                Some(r) if h.kind() == era::HoldKind::Record => format!(
                    "{}: <span translate=\"no\">{} {} {}</span>",
                    esc(t.get("console_hold_record", lang)),
                    esc(&r.system_id),
                    esc(r.record.as_ref().map_or("", |x| x.store.as_str())),
                    esc(r.record.as_ref().map_or("", |x| x.key.as_str())),
                ),
                _ => esc(t.get("console_hold_person", lang)),
            };
            let state = if h.lifted_at.is_some() {
                format!(
                    "{} ({}, <span translate=\"no\">{}</span>)",
                    esc(t.get("console_hold_lifted", lang)),
                    esc(&timestamp(h.lifted_at.as_ref())),
                    esc(&h.lifted_by)
                )
            } else {
                format!(
                    "<form method=\"post\" action=\"/console/{l}/holds/lift\"><input type=\"hidden\" name=\"hold\" value=\"{id}\">\
<button type=\"submit\" style=\"margin:0\">{lift}</button></form>",
                    id = esc(&h.id),
                    lift = esc(t.get("console_hold_lift", lang)),
                )
            };
            let _ = write!(
                b,
                "<tr><td>{covers}</td><td>{}</td><td>{}</td><td><span translate=\"no\">{}</span>, {}</td><td>{state}</td></tr>",
                esc(&h.ground),
                if h.until.is_some() {
                    esc(&date(h.until.as_ref()))
                } else {
                    esc(t.get("console_hold_until_lifted", lang))
                },
                esc(&h.placed_by),
                esc(&timestamp(h.placed_at.as_ref())),
            );
        }
        b.push_str("</tbody></table>");
    }
    // Place a hold.
    let mut f = radios(
        p,
        lang,
        "target",
        "console_hold_covers",
        &[
            ("person", "console_hold_person"),
            ("record", "console_hold_record"),
        ],
        "person",
    );
    f.push_str(&identity_type_select(p, lang, "console_attest_type"));
    f.push_str(&text_field(
        p,
        lang,
        "identity_value",
        "console_hold_identity",
        errors,
    ));
    f.push_str(&text_field(
        p,
        lang,
        "system_id",
        "console_hold_system",
        errors,
    ));
    f.push_str(&text_field(p, lang, "store", "console_hold_store", errors));
    f.push_str(&text_field(p, lang, "key", "console_hold_key", errors));
    let _ = write!(
        f,
        "<label for=\"controller\">{}</label><select id=\"controller\" name=\"controller\">",
        esc(t.get("console_col_company", lang))
    );
    for (org, name) in &p.controllers {
        let _ = write!(f, "<option value=\"{}\">{}</option>", esc(org), esc(name));
    }
    f.push_str("</select>");
    f.push_str(&text_field(
        p,
        lang,
        "ground",
        "console_hold_ground_help",
        errors,
    ));
    f.push_str(&text_field(
        p,
        lang,
        "until",
        "console_hold_until_help",
        errors,
    ));
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/console/{l}/holds\" novalidate><h2>{title}</h2>{f}<button type=\"submit\">{title}</button></form>",
        title = esc(t.get("console_hold_place", lang)),
    );
    let title = t.get("console_holds", lang).to_owned();
    console_page(
        p,
        lang,
        &title,
        &format!("/console/{}/holds", other(lang)),
        &b,
    )
}

async fn show_holds(
    p: &Portal,
    lang: Lang,
    who: &str,
    console: &super::Console,
    notice: Option<&str>,
    errors: &BTreeMap<String, &'static str>,
) -> Response {
    match console.mesh.holds(who).await {
        Ok(h) => holds_page(p, lang, &h, notice, errors),
        Err(e) => read_failed(p, lang, "holds", &e),
    }
}

/// `GET /console/{lang}/holds`.
pub(super) async fn holds(
    State(p): State<Portal>,
    Path(lang): Path<String>,
    Query(done): Query<Done>,
    headers: HeaderMap,
) -> Response {
    let (lang, who, console) = match handler(&p, &lang, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let notice = done.done.is_some().then_some("console_done");
    show_holds(&p, lang, &who, &console, notice, &BTreeMap::new()).await
}

fn parse_date(s: &str) -> Option<common::Date> {
    let d = chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok()?;
    Some(dsr_connector::grpc::date_to_pb(d))
}

/// `POST /console/{lang}/holds`: places a hold.
pub(super) async fn place(
    State(p): State<Portal>,
    Path(lang): Path<String>,
    headers: HeaderMap,
    Form(f): Form<HoldForm>,
) -> Response {
    let (lang, who, console) = match handler(&p, &lang, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut errors: BTreeMap<String, &'static str> = BTreeMap::new();
    let target = if f.target == "record" {
        for (name, v) in [
            ("system_id", &f.system_id),
            ("store", &f.store),
            ("key", &f.key),
        ] {
            if v.trim().is_empty() {
                errors.insert(name.into(), "error_required");
            }
        }
        era::hold_target::Target::Record(era::SystemRecord {
            system_id: f.system_id.trim().to_owned(),
            record: Some(sys::RecordRef {
                store: f.store.trim().to_owned(),
                key: f.key.trim().to_owned(),
            }),
        })
    } else {
        let identity = typed_identity(&f.identity_type, &f.identity_value);
        if identity.is_none() {
            errors.insert("identity_value".into(), "error_identity");
        }
        era::hold_target::Target::Identity(identity.unwrap_or_default())
    };
    if f.ground.trim().is_empty() {
        errors.insert("ground".into(), "error_required");
    }
    let until = if f.until.trim().is_empty() {
        None
    } else {
        let d = parse_date(&f.until);
        if d.is_none() {
            errors.insert("until".into(), "error_date");
        }
        d
    };
    if !errors.is_empty() {
        return show_holds(&p, lang, &who, &console, None, &errors).await;
    }
    let placed = console
        .mesh
        .place_hold(
            &who,
            era::PlaceHoldRequest {
                target: Some(era::HoldTarget {
                    target: Some(target),
                }),
                ground: f.ground.trim().to_owned(),
                until,
                controller: Some(common::ControllerRef {
                    organisation_number: f.controller.clone(),
                }),
            },
        )
        .await;
    match placed {
        Ok(_) => see_other(&format!("/console/{}/holds?done=1", lang.code())),
        Err(MeshError::Invalid(fields)) => {
            for field in fields {
                let name = if field.starts_with("target.identity") {
                    "identity_value"
                } else if field == "target.record.system_id" {
                    "system_id"
                } else if field.starts_with("target.record") {
                    "key"
                } else if field == "until" {
                    "until"
                } else if field == "ground" {
                    "ground"
                } else {
                    continue;
                };
                errors.entry(name.into()).or_insert(if name == "until" {
                    "error_date"
                } else {
                    "error_required"
                });
            }
            show_holds(&p, lang, &who, &console, None, &errors).await
        }
        Err(e) => {
            tracing::info!(error = %e, "hold not placed");
            show_holds(&p, lang, &who, &console, Some("console_refused"), &errors).await
        }
    }
}

/// `POST /console/{lang}/holds/lift`.
pub(super) async fn lift(
    State(p): State<Portal>,
    Path(lang): Path<String>,
    headers: HeaderMap,
    Form(f): Form<HoldForm>,
) -> Response {
    let (lang, who, console) = match handler(&p, &lang, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match console.mesh.lift_hold(&who, &f.hold).await {
        Ok(()) => see_other(&format!("/console/{}/holds?done=1", lang.code())),
        Err(e) => {
            tracing::info!(error = %e, "hold not lifted");
            show_holds(
                &p,
                lang,
                &who,
                &console,
                Some("console_refused"),
                &BTreeMap::new(),
            )
            .await
        }
    }
}

/// The sweep form as posted.
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct SweepForm {
    #[serde(default)]
    dry_run: Option<String>,
}

/// `GET /console/{lang}/sweeps`: the latest sweeps and a form to start one.
pub(super) async fn sweeps(
    State(p): State<Portal>,
    Path(lang): Path<String>,
    Query(done): Query<Done>,
    headers: HeaderMap,
) -> Response {
    let (lang, who, console) = match handler(&p, &lang, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let list = match console.mesh.sweeps(&who).await {
        Ok(s) => s,
        Err(e) => return read_failed(&p, lang, "sweeps", &e),
    };
    let t = &p.texts;
    let l = lang.code();
    let mut b = nav(&p, lang);
    if done.done.is_some() {
        let _ = write!(
            b,
            "<p role=\"status\">{}</p>",
            esc(t.get("console_done", lang))
        );
    }
    let _ = write!(b, "<p>{}</p>", esc(t.get("console_sweeps_help", lang)));
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/console/{l}/sweeps\"><div class=\"choice\"><input type=\"checkbox\" id=\"dry_run\" name=\"dry_run\" value=\"1\" checked>\
<label for=\"dry_run\" style=\"margin:0;font-weight:400\">{}</label></div><button type=\"submit\">{}</button></form>",
        esc(t.get("console_sweep_dry_run", lang)),
        esc(t.get("console_sweep_start", lang)),
    );
    if list.is_empty() {
        let _ = write!(b, "<p>{}</p>", esc(t.get("console_sweeps_none", lang)));
    } else {
        b.push_str(&table_head(
            &p,
            lang,
            "sweeps",
            &[
                "console_sweep_started",
                "console_sweep_trigger",
                "console_disc_system",
                "console_sweep_state",
                "console_sweep_removed",
            ],
        ));
        for s in &list {
            for x in &s.systems {
                let state = super::casefile::enum_word(
                    era::SweepState::try_from(x.state)
                        .unwrap_or(era::SweepState::Unspecified)
                        .as_str_name(),
                    "SWEEP_STATE_",
                );
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}{}</td><td translate=\"no\">{}</td><td>{}{}</td><td>{}</td></tr>",
                    esc(&timestamp(s.start_time.as_ref())),
                    if s.started_by.is_empty() {
                        super::casefile::word(
                            &p,
                            lang,
                            "console_trigger",
                            &super::casefile::enum_word(
                                s.trigger_kind().as_str_name(),
                                "SWEEP_TRIGGER_",
                            ),
                        )
                    } else {
                        super::casefile::actor(&p, lang, &s.started_by)
                    },
                    if s.dry_run {
                        format!(" ({})", esc(t.get("console_sweep_dry", lang)))
                    } else {
                        String::new()
                    },
                    esc(&x.system_id),
                    super::casefile::word(&p, lang, "console_sweep_state", &state),
                    if x.error.is_empty() {
                        String::new()
                    } else {
                        format!(" (<span translate=\"no\">{}</span>)", esc(&x.error))
                    },
                    if s.dry_run { x.done } else { x.removed },
                );
            }
        }
        b.push_str("</tbody></table>");
    }
    let title = t.get("console_sweeps", lang).to_owned();
    console_page(
        &p,
        lang,
        &title,
        &format!("/console/{}/sweeps", other(lang)),
        &b,
    )
}

/// `POST /console/{lang}/sweeps`: starts a sweep over every system.
pub(super) async fn start_sweep(
    State(p): State<Portal>,
    Path(lang): Path<String>,
    headers: HeaderMap,
    Form(f): Form<SweepForm>,
) -> Response {
    let (lang, who, console) = match handler(&p, &lang, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    match console.mesh.start_sweep(&who, f.dry_run.is_some()).await {
        Ok(_) => see_other(&format!("/console/{}/sweeps?done=1", lang.code())),
        Err(e) => {
            tracing::info!(error = %e, "sweep not started");
            page(crate::pages::notice(&p.texts, lang, "console_refused"))
        }
    }
}
