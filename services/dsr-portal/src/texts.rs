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
    "console_none",
    "console_identities",
    "console_claimed",
    "console_verified",
    "console_identity_other",
    "console_purged",
    "console_located",
    "console_loc_partial",
    "console_loc_outcome",
    "console_loc_store",
    "console_loc_records",
    "console_loc_categories",
    "console_outcome_found",
    "console_outcome_not_found",
    "console_outcome_no_accepted_identity",
    "console_outcome_failed",
    "console_outcome_timed_out",
    "console_receipts",
    "console_receipts_help",
    "console_rcpt_phase",
    "console_rcpt_action",
    "console_rcpt_affected",
    "console_rcpt_retained",
    "console_rcpt_signature",
    "console_rcpt_verified",
    "console_rcpt_unverified",
    "console_receipt_erase",
    "console_receipt_rectify",
    "console_receipt_restrict",
    "console_receipt_lift_restriction",
    "console_receipt_object",
    "console_receipt_sweep",
    "console_audit",
    "console_audit_time",
    "console_audit_actor",
    "console_audit_action",
    "console_audit_hash",
    "console_actor_service",
    "console_actor_handler",
    "console_audit_submitted",
    "console_audit_state",
    "console_audit_extended",
    "console_audit_rejected",
    "console_audit_approved",
    "console_audit_reviewed",
    "console_audit_identities_purged",
    "console_audit_cancelled",
    "console_audit_discrepancy",
    "console_audit_disclosure_withheld",
    "console_months_unit",
    "console_rejection_identity_insufficient",
    "console_rejection_manifestly_unfounded_or_excessive",
    "console_rejection_no_data",
    "console_rejection_other",
    "console_step_verify",
    "console_step_locate",
    "console_step_export",
    "console_step_plan",
    "console_step_execute",
    "console_step_deferred",
    "console_step_apply",
    "console_letters",
    "console_letters_help",
    "console_letter",
    "console_letter_status",
    "console_letter_channel",
    "console_letter_sent",
    "console_letter_kind_received",
    "console_letter_kind_identity_needed",
    "console_letter_kind_extended",
    "console_letter_kind_completed",
    "console_letter_kind_refused",
    "console_letter_kind_restriction_lifted",
    "console_letter_status_pending",
    "console_letter_status_sent",
    "console_letter_status_failed",
    "console_letter_status_undeliverable",
    "console_channel_email",
    "console_channel_phone",
    "console_channel_verified",
    "console_channel_claimed",
    "console_audit_awaiting_stronger_proof",
    "console_audit_letter_sent",
    "console_audit_letter_failed",
    "console_audit_letter_undeliverable",
    "console_status_pending",
    "console_status_running",
    "console_status_waiting_retry",
    "console_status_done",
    "console_status_failed",
    "console_expected_removed",
    "console_expected_retained",
    "console_observed_erased",
    "console_observed_anonymised",
    "console_observed_retained",
    "console_observed_refused",
    "console_observed_not_found",
    "console_observed_not_reported",
    "console_last_error",
    "field_objection",
    "field_objection_help",
    "objection_direct_marketing",
    "objection_customer_surveys",
    "error_objection_none",
    "method_sms",
    "field_phone",
    "field_phone_help",
    "code_sent_sms",
    "console_plan",
    "console_plan_erase",
    "console_plan_anonymise",
    "console_plan_retain",
    "console_plan_no_receipt",
    "console_plan_action_erase",
    "console_plan_action_anonymise",
    "console_plan_action_retain",
    "console_observed_applied",
    "console_filter_due_within",
    "console_role_agent",
    "console_assurance_low",
    "console_assurance_substantial",
    "console_assurance_high",
    "console_assurance_attested",
    "console_oidc_help",
    "console_oidc_sign_in",
    "console_oidc_refused",
    "console_oidc_no_role",
    "console_sign_out",
    "field_method",
    "method_email",
    "method_bankid",
    "error_identification",
    "right_rectification",
    "right_rectification_help",
    "field_corrections",
    "field_corrections_help",
    "field_fix_name",
    "field_fix_address",
    "field_fix_phone",
    "field_fix_email",
    "field_fix_job_title",
    "error_correction_none",
    "error_too_long",
    "error_phone",
    "console_nav",
    "console_holds",
    "console_holds_help",
    "console_holds_none",
    "console_hold_covers",
    "console_hold_person",
    "console_hold_record",
    "console_hold_ground",
    "console_hold_ground_help",
    "console_hold_until",
    "console_hold_until_help",
    "console_hold_until_lifted",
    "console_hold_placed",
    "console_hold_state",
    "console_hold_lifted",
    "console_hold_lift",
    "console_hold_place",
    "console_hold_identity",
    "console_hold_system",
    "console_hold_store",
    "console_hold_key",
    "error_date",
    "console_sweeps",
    "console_sweeps_help",
    "console_sweeps_none",
    "console_sweep_dry_run",
    "console_sweep_start",
    "console_sweep_started",
    "console_sweep_trigger",
    "console_sweep_state",
    "console_sweep_removed",
    "console_sweep_dry",
    "console_trigger_manual",
    "console_trigger_schedule",
    "console_sweep_state_running",
    "console_sweep_state_done",
    "console_sweep_state_failed",
    "console_transfers",
    "console_transfers_help",
    "console_tr_role",
    "console_tr_basis",
    "console_tr_lawful",
    "console_tr_unlawful",
    "console_reviews",
    "console_reviews_none",
    "console_review_by",
    "console_days",
    "console_role_processor",
    "console_role_sub_processor",
    "console_role_independent_controller",
    "console_role_authority",
    "console_role_group_company",
    "console_basis_within_eea",
    "console_basis_adequacy",
    "console_basis_data_privacy_framework",
    "console_basis_standard_contractual_clauses",
    "console_basis_binding_corporate_rules",
    "console_basis_derogation",
    "console_basis_none",
    "console_reason_adequacy_lapsed",
    "console_reason_adequacy_partial_scope",
    "console_reason_dpf_not_certified",
    "console_reason_dpf_review_overdue",
    "console_reason_scc_module_mismatch",
    "console_reason_scc_not_in_force",
    "console_reason_scc_assessment_missing",
    "console_reason_scc_review_overdue",
    "console_reason_bcr_not_group",
    "console_reason_bcr_review_overdue",
    "console_reason_derogation_occasional_only",
    "console_reason_derogation_inform_authority",
    "console_reason_no_safeguard",
    "console_reason_category_not_agreed",
    "console_reason_eea_only_category",
    "console_reason_controller_not_served",
    "console_reason_within_eea",
    "console_reason_adequacy_decision",
    "console_reason_dpf_certified",
    "console_reason_scc_in_force",
    "console_reason_bcr_in_force",
    "console_transfer_note",
    "console_approve_transfer",
    "console_transfer_note_required",
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

    /// Whether the texts have `key` (for the API's words, shown as they
    /// come when a newer service sends one the texts do not know yet).
    pub fn has(&self, key: &str) -> bool {
        self.texts.contains_key(key)
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
