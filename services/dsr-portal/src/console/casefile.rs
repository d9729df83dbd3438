//! One request's case file as the console shows it: the identities claimed
//! and verified, where discovery found the person, the erasure receipts
//! with their verification, and the audit trail; and the machine words of
//! the API (step names, outcomes, audit actions) in the handler's language.

use std::fmt::Write as _;

use dsr_domain::text::Lang;
use dsr_proto::common::v1 as common;
use dsr_proto::erasure::v1 as era;
use dsr_proto::orchestrator::v1 as pb;
use dsr_proto::system::v1 as sys;

use super::{kind_key, state_name, table_head};
use crate::pages::esc;
use crate::web::Portal;

/// A word of the API in the handler's language: the text `prefix_word`
/// when the texts have it, else the word itself (a newer service's word
/// is shown rather than hidden).
pub(super) fn word(p: &Portal, lang: Lang, prefix: &str, w: &str) -> String {
    let key = format!("{prefix}_{w}");
    if p.texts.has(&key) {
        esc(p.texts.get(&key, lang))
    } else {
        format!("<span translate=\"no\">{}</span>", esc(w))
    }
}

/// The letters to the person about the request: which, where each is, to
/// which channel and when, a failure's reason.
pub(super) fn letters(p: &Portal, lang: Lang, letters: &[pb::Letter]) -> String {
    if letters.is_empty() {
        return String::new();
    }
    let t = &p.texts;
    let mut b = format!(
        "<h2>{}</h2><p class=\"help\">{}</p>",
        esc(t.get("console_letters", lang)),
        esc(t.get("console_letters_help", lang))
    );
    b.push_str(&table_head(
        p,
        lang,
        "letters",
        &[
            "console_letter",
            "console_letter_status",
            "console_letter_channel",
            "console_letter_sent",
            "console_last_error",
        ],
    ));
    let name = |prefix: &str, v: &str| v.trim_start_matches(prefix).to_ascii_lowercase();
    for l in letters {
        let kind = pb::LetterKind::try_from(l.kind)
            .map(|k| name("LETTER_KIND_", k.as_str_name()))
            .unwrap_or_default();
        let status = pb::LetterStatus::try_from(l.status)
            .map(|s| name("LETTER_STATUS_", s.as_str_name()))
            .unwrap_or_default();
        // "email (verified)": the channel and how the address was known.
        let channel = match l.channel.split_once(" (") {
            Some((how, known)) => format!(
                "{} ({})",
                word(p, lang, "console_channel", how),
                word(p, lang, "console_channel", known.trim_end_matches(')'))
            ),
            None => esc(&l.channel),
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td translate=\"no\">{}</td></tr>",
            word(p, lang, "console_letter_kind", &kind),
            word(p, lang, "console_letter_status", &status),
            channel,
            esc(&l
                .send_time
                .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_default()),
            esc(&l.last_error),
        );
    }
    b.push_str("</tbody></table>");
    b
}

/// A step's name ("verify", "locate", …).
pub(super) fn step_name(p: &Portal, lang: Lang, name: &str) -> String {
    word(p, lang, "console_step", name)
}

/// A step's status ("pending", "running", "waiting_retry", "done", "failed").
/// A wire enum value's name as the texts key it: `as_str_name()` without
/// its prefix, in lower case ("STEP_STATE_WAITING_RETRY" -> "waiting_retry").
pub(super) fn enum_word(name: &str, prefix: &str) -> String {
    name.trim_start_matches(prefix).to_ascii_lowercase()
}

pub(super) fn step_status(p: &Portal, lang: Lang, status: &str) -> String {
    word(p, lang, "console_status", status)
}

/// What a plan expected of a record ("removed", "retained").
pub(super) fn expected(p: &Portal, lang: Lang, e: &str) -> String {
    word(p, lang, "console_expected", e)
}

/// What a receipt says of a record ("erased", "retained", "not_reported", …).
pub(super) fn observed(p: &Portal, lang: Lang, o: &str) -> String {
    word(p, lang, "console_observed", o)
}

/// Who acted: a service, a case handler, or as recorded.
pub(super) fn actor(p: &Portal, lang: Lang, a: &str) -> String {
    let t = &p.texts;
    if let Some(s) = a.strip_prefix("service:") {
        format!(
            "{} <span translate=\"no\">{}</span>",
            esc(t.get("console_actor_service", lang)),
            esc(s)
        )
    } else if let Some(h) = a.strip_prefix("handler:") {
        format!(
            "{} <b translate=\"no\">{}</b>",
            esc(t.get("console_actor_handler", lang)),
            esc(h)
        )
    } else {
        format!("<span translate=\"no\">{}</span>", esc(a))
    }
}

/// An audit action ("submitted:access", "state:locating", "extended:1",
/// "rejected:no_data", "discrepancy:…") in words.
fn action(p: &Portal, lang: Lang, a: &str) -> String {
    let t = &p.texts;
    let (head, rest) = a.split_once(':').unwrap_or((a, ""));
    match head {
        "submitted" => {
            let kind = pb::Kind::from_str_name(&format!("KIND_{}", rest.to_ascii_uppercase()))
                .map_or(0, |k| k as i32);
            format!(
                "{}: {}",
                esc(t.get("console_audit_submitted", lang)),
                esc(t.get(kind_key(kind), lang))
            )
        }
        "state" => {
            let state = pb::State::from_str_name(&format!("STATE_{}", rest.to_ascii_uppercase()));
            match state {
                Some(s) => format!(
                    "{}: {}",
                    esc(t.get("console_audit_state", lang)),
                    esc(t.get(&format!("console_state_{}", state_name(s)), lang))
                ),
                None => format!("<span translate=\"no\">{}</span>", esc(a)),
            }
        }
        "extended" => format!(
            "{} {} {}",
            esc(t.get("console_audit_extended", lang)),
            esc(rest),
            esc(t.get("console_months_unit", lang))
        ),
        "rejected" => format!(
            "{}: {}",
            esc(t.get("console_audit_rejected", lang)),
            word(p, lang, "console_rejection", rest)
        ),
        "letter_sent" | "letter_failed" | "letter_undeliverable" => {
            // "<key> by <channel>" or "<key>: <reason>"; the key's kind
            // before any ":<months>".
            let (key, detail) = rest
                .split_once(" by ")
                .or_else(|| rest.split_once(": "))
                .unwrap_or((rest, ""));
            let kind = key.split(':').next().unwrap_or(key);
            format!(
                "{}: {} <span translate=\"no\">{}</span>",
                esc(t.get(&format!("console_audit_{head}"), lang)),
                word(p, lang, "console_letter_kind", kind),
                esc(detail)
            )
        }
        "approved" | "reviewed" | "identities_purged" | "cancelled" | "awaiting_stronger_proof" => {
            esc(t.get(&format!("console_audit_{head}"), lang))
        }
        "discrepancy" | "disclosure_withheld" => format!(
            "{}: <span translate=\"no\">{}</span>",
            esc(t.get(&format!("console_audit_{head}"), lang)),
            esc(rest.trim())
        ),
        _ => format!("<span translate=\"no\">{}</span>", esc(a)),
    }
}

fn identity_rows(p: &Portal, lang: Lang, label: &str, ids: &[common::Identity]) -> String {
    let t = &p.texts;
    let mut b = format!("<dt>{}</dt>", esc(t.get(label, lang)));
    if ids.is_empty() {
        let _ = write!(b, "<dd>{}</dd>", esc(t.get("console_none", lang)));
    }
    for i in ids {
        let kind = match common::IdentityType::try_from(i.r#type)
            .unwrap_or(common::IdentityType::Unspecified)
        {
            common::IdentityType::SePersonnummer => "identity_personnummer",
            common::IdentityType::Phone => "identity_phone",
            common::IdentityType::Email => "identity_email",
            common::IdentityType::Unspecified
            | common::IdentityType::SeOrganisationsnummer
            | common::IdentityType::CustomerId => "console_identity_other",
        };
        let _ = write!(
            b,
            "<dd>{}: <span translate=\"no\">{}</span></dd>",
            esc(t.get(kind, lang)),
            esc(&i.value)
        );
    }
    b
}

/// The person: identities claimed and verified, and where they were found.
pub(super) fn identities(p: &Portal, lang: Lang, f: &pb::GetCaseFileResponse) -> String {
    let t = &p.texts;
    let mut b = format!("<h2>{}</h2>", esc(t.get("console_identities", lang)));
    if f.identities_purged {
        let _ = write!(b, "<p>{}</p>", esc(t.get("console_purged", lang)));
        return b;
    }
    b.push_str("<dl id=\"identities\">");
    b.push_str(&identity_rows(
        p,
        lang,
        "console_claimed",
        &f.claimed_identities,
    ));
    b.push_str(&identity_rows(
        p,
        lang,
        "console_verified",
        &f.verified_identities,
    ));
    b.push_str("</dl>");
    if f.located_systems.is_empty() {
        return b;
    }
    let _ = write!(b, "<h2>{}</h2>", esc(t.get("console_located", lang)));
    if f.location_partial {
        let _ = write!(
            b,
            "<p class=\"error\">{}</p>",
            esc(t.get("console_loc_partial", lang))
        );
    }
    b.push_str(&table_head(
        p,
        lang,
        "located",
        &[
            "console_disc_system",
            "console_loc_outcome",
            "console_loc_store",
            "console_loc_records",
            "console_loc_categories",
        ],
    ));
    for s in &f.located_systems {
        let outcome = word(p, lang, "console_outcome", &s.outcome);
        if s.stores.is_empty() {
            let _ = write!(
                b,
                "<tr><td translate=\"no\">{}</td><td>{outcome}{}</td><td></td><td>0</td><td></td></tr>",
                esc(&s.system_id),
                if s.error_reason.is_empty() {
                    String::new()
                } else {
                    format!(" (<span translate=\"no\">{}</span>)", esc(&s.error_reason))
                },
            );
        }
        for st in &s.stores {
            let _ = write!(
                b,
                "<tr><td translate=\"no\">{}</td><td>{outcome}</td><td translate=\"no\">{}</td><td>{}</td><td translate=\"no\">{}</td></tr>",
                esc(&s.system_id),
                esc(&st.store),
                st.record_count,
                esc(&st.categories.join(", ")),
            );
        }
    }
    b.push_str("</tbody></table>");
    b
}

/// An erasure's plan, record by record, with what the systems' receipts
/// say was done to each (the latest receipt naming it).
pub(super) fn plan(p: &Portal, lang: Lang, plan: &era::Plan, rs: &[era::StoredReceipt]) -> String {
    let t = &p.texts;
    let mut b = format!(
        "<h2>{}</h2><p>{} {} · {} {} · {} {}</p>",
        esc(t.get("console_plan", lang)),
        plan.erase_count,
        esc(t.get("console_plan_erase", lang)),
        plan.anonymise_count,
        esc(t.get("console_plan_anonymise", lang)),
        plan.retain_count,
        esc(t.get("console_plan_retain", lang)),
    );
    b.push_str(&table_head(
        p,
        lang,
        "plan",
        &[
            "console_disc_system",
            "console_disc_record",
            "console_disc_expected",
            "console_disc_ground",
            "console_hold_until",
            "console_disc_observed",
        ],
    ));
    for r in &plan.records {
        let rec = r.record.clone().unwrap_or_default();
        let action = enum_word(
            era::PlanAction::try_from(r.action)
                .unwrap_or(era::PlanAction::Unspecified)
                .as_str_name(),
            "PLAN_ACTION_",
        );
        let outcome = rs
            .iter()
            .rev()
            .filter(|x| x.system_id == r.system_id)
            .filter_map(|x| x.receipt.as_ref())
            .flat_map(|x| &x.records)
            .find(|o| o.record.as_ref() == Some(&rec))
            .map(|o| {
                let w = enum_word(
                    sys::RecordResult::try_from(o.result)
                        .unwrap_or(sys::RecordResult::Unspecified)
                        .as_str_name(),
                    "RECORD_RESULT_",
                );
                observed(p, lang, &w)
            })
            .unwrap_or_else(|| esc(t.get("console_plan_no_receipt", lang)));
        let ground = if lang == Lang::Sv && !r.legal_ground_sv.is_empty() {
            &r.legal_ground_sv
        } else {
            &r.legal_ground
        };
        let _ = write!(
            b,
            "<tr><td translate=\"no\">{}</td><td translate=\"no\">{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.system_id),
            esc(&rec.store),
            esc(&rec.key),
            word(p, lang, "console_plan_action", &action),
            esc(ground),
            esc(&super::date(r.retain_until.as_ref())),
            outcome,
        );
    }
    b.push_str("</tbody></table>");
    b
}

/// The erasure receipts, each with whether its signature verified.
pub(super) fn receipts(p: &Portal, lang: Lang, rs: &[era::StoredReceipt]) -> String {
    let t = &p.texts;
    if rs.is_empty() {
        return String::new();
    }
    let mut b = format!(
        "<h2>{}</h2><p>{}</p>",
        esc(t.get("console_receipts", lang)),
        esc(t.get("console_receipts_help", lang))
    );
    b.push_str(&table_head(
        p,
        lang,
        "receipts",
        &[
            "console_disc_system",
            "console_rcpt_phase",
            "console_rcpt_action",
            "console_rcpt_affected",
            "console_rcpt_retained",
            "console_rcpt_signature",
        ],
    ));
    for r in rs {
        let c = r.receipt.clone().unwrap_or_default();
        let act = enum_word(
            sys::ReceiptAction::try_from(c.action)
                .unwrap_or(sys::ReceiptAction::Unspecified)
                .as_str_name(),
            "RECEIPT_ACTION_",
        );
        let affected: u64 = c.stores.iter().map(|s| s.affected).sum();
        let key = r.signed.as_ref().map(|s| s.key_id.as_str()).unwrap_or("");
        // Done by hand at a vendor without an API: who vouched for it.
        let attested = c.attestation.as_ref().map_or_else(String::new, |a| {
            format!(
                "<br>{} <span translate=\"no\">{} &lt;{}&gt;</span> {}",
                esc(t.get("console_rcpt_attested", lang)),
                esc(&a.name),
                esc(&a.contact),
                a.attested_at
                    .as_ref()
                    .and_then(|ts| chrono::DateTime::from_timestamp(ts.seconds, 0))
                    .map(|d| d.format("%Y-%m-%d").to_string())
                    .unwrap_or_default()
            )
        });
        let _ = write!(
            b,
            "<tr><td translate=\"no\">{}</td><td translate=\"no\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} <span translate=\"no\">{}</span>{attested}</td></tr>",
            esc(&r.system_id),
            esc(&r.phase),
            word(p, lang, "console_receipt", &act),
            affected,
            c.retained.len(),
            esc(t.get(
                if r.verified {
                    "console_rcpt_verified"
                } else {
                    "console_rcpt_unverified"
                },
                lang
            )),
            esc(key),
        );
    }
    b.push_str("</tbody></table>");
    b
}

/// The audit trail, oldest first.
pub(super) fn audit(p: &Portal, lang: Lang, f: &pb::GetCaseFileResponse) -> String {
    let t = &p.texts;
    let mut b = format!("<h2>{}</h2>", esc(t.get("console_audit", lang)));
    b.push_str(&table_head(
        p,
        lang,
        "audit",
        &[
            "console_audit_time",
            "console_audit_actor",
            "console_audit_action",
            "console_audit_hash",
        ],
    ));
    for e in &f.audit_entries {
        let at = e
            .time
            .as_ref()
            .and_then(|ts| chrono::DateTime::from_timestamp(ts.seconds, 0))
            .map(|d| d.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default();
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td translate=\"no\"><code title=\"{}\">{}</code></td></tr>",
            esc(&at),
            actor(p, lang, &e.actor),
            action(p, lang, &e.action),
            esc(&e.hash),
            esc(e.hash.get(..12).unwrap_or(&e.hash)),
        );
    }
    b.push_str("</tbody></table>");
    b
}
