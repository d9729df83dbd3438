//! A case handler's decisions on one request (approve, refuse, extend,
//! cancel, attest the person, complete an Art. 19 task, approve a transfer
//! held for review), each through the services' own API with the handler's
//! token; a refused one shows the request again with the reason next to
//! the field it concerns.

use std::collections::BTreeMap;

use axum::extract::{Form, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use dsr_proto::orchestrator::v1 as pb;

use super::{handler, show_request, typed_identity, valid_id};
use crate::mesh::{Decision, MeshError};
use crate::web::{Portal, not_found, see_other};

/// An action's form as posted (each action reads its own fields).
#[derive(Debug, Default, serde::Deserialize)]
pub(super) struct ActionForm {
    #[serde(default)]
    notification: String,
    #[serde(default)]
    identity_type: String,
    #[serde(default)]
    identity_value: String,
    #[serde(default)]
    evidence: String,
    #[serde(default)]
    attest_note: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    reject_note: String,
    #[serde(default)]
    months: String,
    #[serde(default)]
    extend_reason: String,
    #[serde(default)]
    cancel_reason: String,
    #[serde(default)]
    transfer_note: String,
}

pub(super) async fn act(
    State(p): State<Portal>,
    Path((lang, id, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    Form(f): Form<ActionForm>,
) -> Response {
    if !valid_id(&id) {
        return not_found();
    }
    let (lang, who, console) = match handler(&p, &lang, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let mut errors: BTreeMap<String, &'static str> = BTreeMap::new();
    let decision = match action.as_str() {
        "approve" => Decision::Approve {
            id: id.clone(),
            note: f.note.trim().to_owned(),
        },
        "reject" => Decision::Reject {
            id: id.clone(),
            reason: match f.reason.as_str() {
                "identity" => pb::RejectionReason::IdentityInsufficient,
                "unfounded" => pb::RejectionReason::ManifestlyUnfoundedOrExcessive,
                "no_data" => pb::RejectionReason::NoData,
                _ => pb::RejectionReason::Other,
            },
            note: f.reject_note.trim().to_owned(),
        },
        "extend" => {
            if f.extend_reason.trim().is_empty() {
                errors.insert("extend_reason".into(), "error_required");
            }
            Decision::Extend {
                id: id.clone(),
                months: f.months.parse().unwrap_or(1),
                reason: f.extend_reason.trim().to_owned(),
            }
        }
        "attest" => {
            let Some(identity) = typed_identity(&f.identity_type, &f.identity_value) else {
                errors.insert("identity_value".into(), "error_identity");
                return show_request(&p, lang, &console, &who, &id, None, &errors).await;
            };
            let evidence = if f.evidence == "document" {
                dsr_proto::identity::v1::AttestationEvidence::Document
            } else {
                dsr_proto::identity::v1::AttestationEvidence::InPerson
            };
            let attested = console
                .mesh
                .attest(&who, &id, identity, evidence, f.attest_note.trim())
                .await;
            return match attested {
                Ok(()) => see_other(&format!("/console/{}/requests/{id}?done=1", lang.code())),
                Err(e) => {
                    tracing::info!(error = %e, "attestation not taken");
                    let notice = match &e {
                        MeshError::Invalid(_) => {
                            errors.insert("identity_value".into(), "error_identity");
                            None
                        }
                        MeshError::Refused(reason) if reason == "VERIFICATION_NOT_THE_PERSON" => {
                            errors.insert("identity_value".into(), "error_identity");
                            None
                        }
                        MeshError::Refused(_) => Some("console_refused"),
                        MeshError::Unavailable => Some("error_unavailable"),
                    };
                    show_request(&p, lang, &console, &who, &id, notice, &errors).await
                }
            };
        }
        "notify" => {
            if !valid_id(&f.notification) {
                return not_found();
            }
            return match console
                .mesh
                .complete_notification(&who, &f.notification)
                .await
            {
                Ok(()) => see_other(&format!("/console/{}/requests/{id}?done=1", lang.code())),
                Err(e) => {
                    tracing::warn!(error = %e, "notification not completed");
                    show_request(
                        &p,
                        lang,
                        &console,
                        &who,
                        &id,
                        Some("console_refused"),
                        &errors,
                    )
                    .await
                }
            };
        }
        "approve_transfer" => {
            if !valid_id(&f.notification) {
                return not_found();
            }
            let field = format!("transfer_note-{}", f.notification);
            if f.transfer_note.trim().is_empty() {
                errors.insert(field, "console_transfer_note_required");
                return show_request(&p, lang, &console, &who, &id, None, &errors).await;
            }
            return match console
                .mesh
                .approve_notification(&who, &f.notification, f.transfer_note.trim())
                .await
            {
                Ok(()) => see_other(&format!("/console/{}/requests/{id}?done=1", lang.code())),
                Err(e) => {
                    tracing::info!(error = %e, "transfer not approved");
                    let notice = match e {
                        MeshError::Invalid(_) => {
                            errors.insert(field, "console_transfer_note_required");
                            None
                        }
                        MeshError::Unavailable => Some("error_unavailable"),
                        MeshError::Refused(_) => Some("console_refused"),
                    };
                    show_request(&p, lang, &console, &who, &id, notice, &errors).await
                }
            };
        }
        "cancel" => {
            if f.cancel_reason.trim().is_empty() {
                errors.insert("cancel_reason".into(), "error_required");
            }
            Decision::Cancel {
                id: id.clone(),
                reason: f.cancel_reason.trim().to_owned(),
            }
        }
        _ => return not_found(),
    };
    let outcome = if errors.is_empty() {
        console.mesh.decide(&who, decision).await
    } else {
        Err(MeshError::Invalid(Vec::new()))
    };
    match outcome {
        Ok(()) => see_other(&format!("/console/{}/requests/{id}?done=1", lang.code())),
        Err(e) => {
            let notice = match &e {
                MeshError::Invalid(fields) => {
                    // The API's field, next to the form's.
                    for field in fields {
                        let name = match (action.as_str(), field.as_str()) {
                            ("extend", "reason") => "extend_reason",
                            ("cancel", "reason") => "cancel_reason",
                            ("reject", "note") => "reject_note",
                            (_, "note") => "note",
                            _ => continue,
                        };
                        errors.entry(name.into()).or_insert("error_required");
                    }
                    None
                }
                MeshError::Refused(_) => Some("console_refused"),
                MeshError::Unavailable => Some("error_unavailable"),
            };
            show_request(&p, lang, &console, &who, &id, notice, &errors).await
        }
    }
}
