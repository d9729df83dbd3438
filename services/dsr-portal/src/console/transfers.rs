//! The transfer registry as a case handler reads it: every recipient with
//! its standing today (lawful, or NOT LAWFUL with the blocking reasons),
//! and the safeguard reviews coming due.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use dsr_domain::text::Lang;
use dsr_proto::transfer::v1 as tr;

use super::casefile::word;
use super::{console_page, date, handler, nav, other, read_failed, table_head};
use crate::pages::esc;
use crate::web::Portal;

/// Days ahead the reviews list looks.
const REVIEW_WINDOW_DAYS: u32 = 60;

fn lower(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

/// `GET /console/{lang}/transfers`.
pub(super) async fn transfers(
    State(p): State<Portal>,
    Path(lang): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (lang, who, console) = match handler(&p, &lang, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let (recipients, due) = match console.mesh.recipients(&who, REVIEW_WINDOW_DAYS).await {
        Ok(x) => x,
        Err(e) => return read_failed(&p, lang, "registry", &e),
    };
    let t = &p.texts;
    let mut b = nav(&p, lang);
    let _ = write!(b, "<p>{}</p>", esc(t.get("console_transfers_help", lang)));
    b.push_str(&table_head(
        &p,
        lang,
        "recipients",
        &[
            "console_notif_recipient",
            "console_tr_role",
            "console_notif_country",
            "console_tr_basis",
            "console_notif_transfer",
        ],
    ));
    for r in &recipients {
        let s = r.standing.clone().unwrap_or_default();
        let name = if lang == Lang::Sv && !r.name_sv.is_empty() {
            &r.name_sv
        } else {
            &r.name
        };
        let role = lower(
            tr::RecipientRole::try_from(r.role)
                .unwrap_or(tr::RecipientRole::Unspecified)
                .as_str_name(),
            "RECIPIENT_ROLE_",
        );
        let basis = lower(
            tr::TransferBasis::try_from(s.basis)
                .unwrap_or(tr::TransferBasis::Unspecified)
                .as_str_name(),
            "TRANSFER_BASIS_",
        );
        let summary = if lang == Lang::Sv && !s.safeguard_summary_sv.is_empty() {
            &s.safeguard_summary_sv
        } else {
            &s.safeguard_summary
        };
        let mut verdict = if s.lawful {
            format!("<b>{}</b>", esc(t.get("console_tr_lawful", lang)))
        } else {
            format!(
                "<b class=\"error\">{}</b>",
                esc(t.get("console_tr_unlawful", lang))
            )
        };
        let reasons: Vec<String> = s
            .reasons
            .iter()
            .filter(|x| x.blocking || s.lawful)
            .map(|x| word(&p, lang, "console_reason", &x.code.to_ascii_lowercase()))
            .collect();
        if !reasons.is_empty() {
            let _ = write!(verdict, ": {}", reasons.join("; "));
        }
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td translate=\"no\">{}</td><td>{}{}</td><td>{verdict}</td></tr>",
            esc(name),
            word(&p, lang, "console_role", &role),
            esc(&r.country),
            word(&p, lang, "console_basis", &basis),
            if summary.is_empty() {
                String::new()
            } else {
                format!("<br><small>{}</small>", esc(summary))
            },
        );
    }
    b.push_str("</tbody></table>");
    let _ = write!(
        b,
        "<h2>{} ({} {})</h2>",
        esc(t.get("console_reviews", lang)),
        REVIEW_WINDOW_DAYS,
        esc(t.get("console_days", lang))
    );
    if due.is_empty() {
        let _ = write!(b, "<p>{}</p>", esc(t.get("console_reviews_none", lang)));
    } else {
        b.push_str(&table_head(
            &p,
            lang,
            "reviews",
            &[
                "console_notif_recipient",
                "console_tr_basis",
                "console_review_by",
            ],
        ));
        for d in &due {
            let basis = lower(
                tr::TransferBasis::try_from(d.basis)
                    .unwrap_or(tr::TransferBasis::Unspecified)
                    .as_str_name(),
                "TRANSFER_BASIS_",
            );
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}{}</td></tr>",
                esc(&d.recipient_name),
                word(&p, lang, "console_basis", &basis),
                esc(&date(d.review_by.as_ref())),
                if d.overdue {
                    format!(" <b>({})</b>", esc(t.get("console_overdue", lang)))
                } else {
                    String::new()
                },
            );
        }
        b.push_str("</tbody></table>");
    }
    let title = t.get("console_transfers", lang).to_owned();
    console_page(
        &p,
        lang,
        &title,
        &format!("/console/{}/transfers", other(lang)),
        &b,
    )
}
