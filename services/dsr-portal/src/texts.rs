//! The privacy centre's texts, in Swedish and English, from a TOML file a
//! company edits (`[texts]`, each `{ sv = "…", en = "…" }`). Every key the
//! pages use must be there in both languages: a gap stops the start.

use std::collections::BTreeMap;

use dsr_domain::text::{Lang, Text};

/// The texts shipped with the mesh.
pub const BUILT_IN: &str = include_str!("../data/texts.toml");

/// Keys the pages use, each required.
pub const KEYS: &[&str] = &[
    "lang_name",
    "other_lang_link",
    "site_title",
    "skip_to_content",
    "home_intro",
    "home_choose",
    "home_dpo",
    "home_imy",
    "start",
    "right_access",
    "right_access_help",
    "right_portability",
    "right_portability_help",
    "right_erasure",
    "right_erasure_help",
    "right_restriction",
    "right_restriction_help",
    "right_objection",
    "right_objection_help",
    "form_title",
    "field_company",
    "field_company_help",
    "field_email",
    "field_email_help",
    "field_ground",
    "ground_accuracy",
    "ground_unlawful",
    "ground_legal_claims",
    "ground_objection",
    "continue",
    "errors_title",
    "error_required",
    "error_choose",
    "error_email",
    "error_code",
    "error_code_expired",
    "error_too_many",
    "error_unavailable",
    "error_session",
    "code_title",
    "code_sent",
    "field_code",
    "send_request",
    "status_title",
    "status_kind",
    "status_company",
    "status_state",
    "status_received",
    "status_due",
    "status_extended",
    "status_months",
    "status_refresh",
    "status_reference",
    "state_working",
    "state_verifying",
    "state_waiting",
    "state_completed",
    "state_completed_retained",
    "state_rejected",
    "state_cancelled",
    "status_rejected_help",
    "package_title",
    "package_report",
    "package_files",
    "package_expires",
    "start_again",
    "console_title",
    "console_login_title",
    "console_login_help",
    "field_handler",
    "error_handler",
    "console_sign_in",
    "console_signed_in_as",
    "console_queue",
    "console_filter_state",
    "console_filter_all",
    "console_filter_overdue",
    "console_show",
    "console_col_reference",
    "console_col_kind",
    "console_col_state",
    "console_col_company",
    "console_col_due",
    "console_empty",
    "console_overdue",
    "console_days_left",
    "console_request_title",
    "console_received",
    "console_extension",
    "console_rejection",
    "console_discrepancies",
    "console_disc_help",
    "console_disc_system",
    "console_disc_record",
    "console_disc_expected",
    "console_disc_observed",
    "console_disc_ground",
    "console_withheld",
    "console_steps",
    "console_step",
    "console_step_status",
    "console_step_attempts",
    "console_actions",
    "console_approve",
    "console_note",
    "console_reject",
    "console_reject_reason",
    "reason_identity",
    "reason_unfounded",
    "reason_no_data",
    "reason_other",
    "console_reject_note",
    "console_extend",
    "console_extend_months",
    "console_extend_reason",
    "console_cancel",
    "console_cancel_reason",
    "console_done",
    "console_back",
    "console_refused",
    "console_state_submitted",
    "console_state_verifying",
    "console_state_locating",
    "console_state_awaiting_approval",
    "console_state_exporting",
    "console_state_completed",
    "console_state_rejected",
    "console_state_cancelled",
    "console_state_planning",
    "console_state_executing",
    "console_state_awaiting_review",
    "console_state_completed_with_retained",
    "console_notifications",
    "console_notif_recipient",
    "console_notif_country",
    "console_notif_how",
    "console_notif_system",
    "console_notif_task",
    "console_notif_due",
    "console_notif_transfer",
    "console_notif_lawful",
    "console_notif_refused",
    "console_notif_awaiting",
    "console_notif_done",
    "console_notif_open",
    "console_mark_done",
    "console_notif_approved",
    "console_kind_access",
    "console_kind_portability",
    "console_kind_erasure",
    "console_kind_rectification",
    "console_kind_restriction",
    "console_kind_objection",
    "console_attest",
    "console_attest_help",
    "console_attest_type",
    "console_attest_value",
    "console_attest_evidence",
    "evidence_in_person",
    "evidence_document",
    "identity_email",
    "identity_personnummer",
    "identity_phone",
    "error_identity",
    "console_required_assurance",
];

/// Why a text file is refused.
#[derive(Debug, thiserror::Error)]
pub enum TextsError {
    /// Not TOML of the expected shape.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A key the pages use is missing.
    #[error("{file}: texts.{key} is missing")]
    Missing {
        /// The file.
        file: String,
        /// The key.
        key: String,
    },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    texts: BTreeMap<String, Text>,
}

/// Every text, by key.
#[derive(Clone, Debug)]
pub struct Texts {
    texts: BTreeMap<String, Text>,
}

impl Texts {
    /// Parses `text` (named `file` in errors); every key of [`KEYS`] must be
    /// there, and one explanation per controller in `controllers`
    /// (`company_<organisation number>`).
    pub fn parse(text: &str, file: &str, controllers: &[String]) -> Result<Self, TextsError> {
        let parsed: File = toml::from_str(text).map_err(|e| TextsError::Parse {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        let company_keys = controllers.iter().map(|c| format!("company_{c}"));
        for key in KEYS.iter().map(|k| (*k).to_owned()).chain(company_keys) {
            if !parsed.texts.contains_key(&key) {
                return Err(TextsError::Missing {
                    file: file.to_owned(),
                    key,
                });
            }
        }
        Ok(Self {
            texts: parsed.texts,
        })
    }

    /// The text `key` in `lang` (every key the pages use is checked at
    /// start; an unknown one is a defect, logged, and shows nothing).
    pub fn get(&self, key: &str, lang: Lang) -> &str {
        match self.texts.get(key) {
            Some(t) => t.get(lang).as_str(),
            None => {
                tracing::error!(key, "no such text");
                ""
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_texts_have_every_key_in_both_languages() {
        let controllers: Vec<String> = ["556134-1248", "556885-5265", "556786-4854", "556397-1414"]
            .map(str::to_owned)
            .into();
        let t = Texts::parse(BUILT_IN, "texts.toml", &controllers).unwrap();
        for key in KEYS {
            if !t.texts[*key].same {
                assert_ne!(t.get(key, Lang::Sv), t.get(key, Lang::En), "{key}");
            }
        }
        let gap = BUILT_IN.replace("home_imy = ", "home_imx = ");
        assert!(matches!(
            Texts::parse(&gap, "texts.toml", &controllers),
            Err(TextsError::Missing { key, .. }) if key == "home_imy"
        ));
        let untranslated = BUILT_IN.replace(
            "start = { sv = \"Börja\", en = \"Start\" }",
            "start = { sv = \"Start\", en = \"Start\" }",
        );
        assert!(Texts::parse(&untranslated, "texts.toml", &controllers).is_err());
        let more = [controllers.clone(), vec!["559000-0001".to_owned()]].concat();
        assert!(Texts::parse(BUILT_IN, "texts.toml", &more).is_err());
    }
}
