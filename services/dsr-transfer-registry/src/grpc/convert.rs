//! Proto ⇄ domain conversions. Messages are destructured without `..`, so a
//! new proto field is a compile error here until it is handled.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Datelike, NaiveDate, Utc};
use dsr_domain::identity::Organisationsnummer;
use dsr_domain::transfer::{
    self, Assessment, CountryCode, CountryStatus, CountryTables, DerogationGround, FieldViolation,
    RecipientRole, Safeguard, SccModule, TransferBasis,
};
use dsr_proto::common::v1 as common;
use dsr_proto::transfer::v1 as pb;
use tonic::Status;

use crate::registry::{Disclosure, RecipientDraft, StoredRecipient};

/// Collects field violations across a request, then answers them all at once.
#[derive(Debug, Default)]
pub(crate) struct Violations(Vec<FieldViolation>);

pub(crate) fn invalid(field: &str, description: &str) -> Status {
    super::error::invalid_argument(vec![FieldViolation::new(field, description)])
}

pub(crate) fn required_id(id: &str, field: &str) -> Result<String, Status> {
    let mut v = Violations::default();
    let id = v.id(id, field);
    v.finish()?;
    Ok(id)
}

impl Violations {
    pub(crate) fn push(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    pub(crate) fn finish(self) -> Result<(), Status> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(super::error::invalid_argument(self.0))
        }
    }

    pub(crate) fn id(&mut self, id: &str, field: &str) -> String {
        if !transfer::valid_slug(id) {
            self.push(field, "2-64 lower-case letters, digits and -");
        }
        id.to_owned()
    }

    pub(crate) fn slugs(&mut self, ids: Vec<String>, field: &str) -> BTreeSet<String> {
        for (i, id) in ids.iter().enumerate() {
            if !transfer::valid_slug(id) {
                self.push(
                    format!("{field}[{i}]"),
                    "2-64 lower-case letters, digits and -",
                );
            }
        }
        ids.into_iter().collect()
    }

    pub(crate) fn categories(&mut self, ids: Vec<String>, field: &str) -> BTreeSet<String> {
        for (i, id) in ids.iter().enumerate() {
            if !transfer::valid_category_id(id) {
                self.push(
                    format!("{field}[{i}]"),
                    "lower-case letters, digits, _ and ., at most 64",
                );
            }
        }
        ids.into_iter().collect()
    }

    pub(crate) fn controller(
        &mut self,
        c: Option<common::ControllerRef>,
        field: &str,
        required: bool,
    ) -> Option<Organisationsnummer> {
        match c {
            Some(common::ControllerRef {
                organisation_number,
            }) if !organisation_number.is_empty() => {
                match Organisationsnummer::parse(&organisation_number) {
                    Ok(o) => Some(o),
                    Err(e) => {
                        self.push(format!("{field}.organisation_number"), e.to_string());
                        None
                    }
                }
            }
            _ => {
                if required {
                    self.push(format!("{field}.organisation_number"), "required");
                }
                None
            }
        }
    }

    pub(crate) fn country(
        &mut self,
        raw: &str,
        field: &str,
        tables: &CountryTables,
    ) -> Option<CountryCode> {
        let code = tables.code(raw);
        if code.is_none() {
            self.push(field, "not an ISO 3166-1 alpha-2 code");
        }
        code
    }

    pub(crate) fn date(&mut self, d: Option<common::Date>, field: &str) -> Option<NaiveDate> {
        let common::Date { year, month, day } = d?;
        let date = u32::try_from(month)
            .ok()
            .zip(u32::try_from(day).ok())
            .and_then(|(m, dd)| NaiveDate::from_ymd_opt(year, m, dd));
        if date.is_none() {
            self.push(field, "not a valid date");
        }
        date
    }

    fn required_date(&mut self, d: Option<common::Date>, field: &str) -> Option<NaiveDate> {
        if d.is_none() {
            self.push(field, "required");
            return None;
        }
        self.date(d, field)
    }

    /// The day of a timestamp (UTC), or `today` when unset.
    pub(crate) fn day(
        &mut self,
        at: Option<prost_types::Timestamp>,
        field: &str,
        today: NaiveDate,
    ) -> NaiveDate {
        match at {
            None => today,
            Some(prost_types::Timestamp { seconds, nanos }) => {
                match chrono::DateTime::from_timestamp(seconds, u32::try_from(nanos).unwrap_or(0)) {
                    Some(t) => t.date_naive(),
                    None => {
                        self.push(field, "not a valid timestamp");
                        today
                    }
                }
            }
        }
    }

    /// Page size and the id to continue after.
    pub(crate) fn page(
        &mut self,
        page: Option<common::PageRequest>,
        default: usize,
        max: usize,
    ) -> (usize, Option<String>) {
        let common::PageRequest {
            page_size,
            page_token,
        } = page.unwrap_or_default();
        let size = match usize::try_from(page_size).unwrap_or(usize::MAX) {
            0 => default,
            n if n > max => {
                self.push("page.page_size", format!("at most {max}"));
                default
            }
            n => n,
        };
        let after = if page_token.is_empty() {
            None
        } else {
            match URL_SAFE_NO_PAD
                .decode(&page_token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
            {
                Some(id) if transfer::valid_slug(&id) => Some(id),
                _ => {
                    self.push("page.page_token", "not a token from this listing");
                    None
                }
            }
        };
        (size, after)
    }

    fn safeguard(&mut self, s: Option<pb::Safeguard>) -> Option<Safeguard> {
        let pb::Safeguard { mechanism } = s?;
        let p = "recipient.safeguard";
        match mechanism? {
            pb::safeguard::Mechanism::Scc(pb::StandardContractualClauses {
                module,
                signed_on,
                assessed_on,
                review_by,
            }) => {
                let module = match pb::SccModule::try_from(module) {
                    Ok(pb::SccModule::ControllerToController) => {
                        Some(SccModule::ControllerToController)
                    }
                    Ok(pb::SccModule::ControllerToProcessor) => {
                        Some(SccModule::ControllerToProcessor)
                    }
                    Ok(pb::SccModule::ProcessorToProcessor) => {
                        Some(SccModule::ProcessorToProcessor)
                    }
                    Ok(pb::SccModule::ProcessorToController) => {
                        Some(SccModule::ProcessorToController)
                    }
                    Ok(pb::SccModule::Unspecified) | Err(_) => {
                        self.push(format!("{p}.scc.module"), "required");
                        None
                    }
                };
                let signed_on = self.required_date(signed_on, &format!("{p}.scc.signed_on"));
                let assessed_on = self.date(assessed_on, &format!("{p}.scc.assessed_on"));
                let review_by = self.date(review_by, &format!("{p}.scc.review_by"));
                Some(Safeguard::Scc {
                    module: module?,
                    signed_on: signed_on?,
                    assessed_on,
                    review_by,
                })
            }
            pb::safeguard::Mechanism::Bcr(pb::BindingCorporateRules {
                approval_reference,
                review_by,
            }) => {
                let review_by = self.date(review_by, &format!("{p}.bcr.review_by"));
                Some(Safeguard::Bcr {
                    approval_reference,
                    review_by,
                })
            }
            pb::safeguard::Mechanism::Derogation(pb::Derogation {
                ground,
                justification,
            }) => {
                let ground = match pb::DerogationGround::try_from(ground) {
                    Ok(pb::DerogationGround::ExplicitConsent) => {
                        Some(DerogationGround::ExplicitConsent)
                    }
                    Ok(pb::DerogationGround::ContractWithSubject) => {
                        Some(DerogationGround::ContractWithSubject)
                    }
                    Ok(pb::DerogationGround::ContractInSubjectInterest) => {
                        Some(DerogationGround::ContractInSubjectInterest)
                    }
                    Ok(pb::DerogationGround::PublicInterest) => {
                        Some(DerogationGround::PublicInterest)
                    }
                    Ok(pb::DerogationGround::LegalClaims) => Some(DerogationGround::LegalClaims),
                    Ok(pb::DerogationGround::VitalInterests) => {
                        Some(DerogationGround::VitalInterests)
                    }
                    Ok(pb::DerogationGround::PublicRegister) => {
                        Some(DerogationGround::PublicRegister)
                    }
                    Ok(pb::DerogationGround::CompellingLegitimateInterests) => {
                        Some(DerogationGround::CompellingLegitimateInterests)
                    }
                    Ok(pb::DerogationGround::Unspecified) | Err(_) => {
                        self.push(format!("{p}.derogation.ground"), "required");
                        None
                    }
                };
                Some(Safeguard::Derogation {
                    ground: ground?,
                    justification,
                })
            }
            pb::safeguard::Mechanism::Dpf(pb::DataPrivacyFrameworkCertification {
                active,
                verified_on,
                review_by,
            }) => {
                let verified_on = self.required_date(verified_on, &format!("{p}.dpf.verified_on"));
                let review_by = self.required_date(review_by, &format!("{p}.dpf.review_by"));
                Some(Safeguard::Dpf {
                    active,
                    verified_on: verified_on?,
                    review_by: review_by?,
                })
            }
        }
    }
}

fn role_from_pb(role: i32) -> Option<RecipientRole> {
    match pb::RecipientRole::try_from(role).ok()? {
        pb::RecipientRole::Processor => Some(RecipientRole::Processor),
        pb::RecipientRole::SubProcessor => Some(RecipientRole::SubProcessor),
        pb::RecipientRole::IndependentController => Some(RecipientRole::IndependentController),
        pb::RecipientRole::Authority => Some(RecipientRole::Authority),
        pb::RecipientRole::GroupCompany => Some(RecipientRole::GroupCompany),
        pb::RecipientRole::Agent => Some(RecipientRole::Agent),
        pb::RecipientRole::Unspecified => None,
    }
}

fn role_to_pb(role: RecipientRole) -> pb::RecipientRole {
    match role {
        RecipientRole::Processor => pb::RecipientRole::Processor,
        RecipientRole::SubProcessor => pb::RecipientRole::SubProcessor,
        RecipientRole::IndependentController => pb::RecipientRole::IndependentController,
        RecipientRole::Authority => pb::RecipientRole::Authority,
        RecipientRole::GroupCompany => pb::RecipientRole::GroupCompany,
        RecipientRole::Agent => pb::RecipientRole::Agent,
    }
}

/// A recipient from the API (syntax checked; the rules between fields are
/// the registry's).
pub(crate) fn recipient(
    r: Option<pb::Recipient>,
    tables: &CountryTables,
) -> Result<transfer::Recipient, Status> {
    let Some(pb::Recipient {
        id,
        name,
        role,
        country,
        controllers,
        category_ids,
        system_ids,
        dpa_reference,
        safeguard,
        purpose,
        revision: _,
        create_time: _,
        update_time: _,
        standing: _,
        name_sv,
        purpose_sv,
    }) = r
    else {
        return Err(invalid("recipient", "required"));
    };
    let mut v = Violations::default();
    let safeguard = v.safeguard(safeguard);
    let draft = RecipientDraft {
        id,
        name,
        role: role_from_pb(role),
        country,
        controllers: controllers
            .into_iter()
            .map(
                |common::ControllerRef {
                     organisation_number,
                 }| organisation_number,
            )
            .collect(),
        categories: category_ids,
        systems: system_ids,
        dpa_reference,
        purpose,
        name_sv,
        purpose_sv,
        safeguard,
    };
    match draft.build(tables, "recipient") {
        Ok(r) => {
            v.finish()?;
            Ok(r)
        }
        Err(errors) => {
            v.0.extend(errors);
            Err(super::error::invalid_argument(v.0))
        }
    }
}

pub(crate) fn date_to_pb(d: NaiveDate) -> common::Date {
    common::Date {
        year: d.year(),
        month: i32::try_from(d.month()).unwrap_or(0),
        day: i32::try_from(d.day()).unwrap_or(0),
    }
}

fn timestamp(t: chrono::DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

fn safeguard_to_pb(s: &Safeguard) -> pb::Safeguard {
    use pb::safeguard::Mechanism;
    let mechanism = match s {
        Safeguard::Scc {
            module,
            signed_on,
            assessed_on,
            review_by,
        } => Mechanism::Scc(pb::StandardContractualClauses {
            module: match module {
                SccModule::ControllerToController => pb::SccModule::ControllerToController,
                SccModule::ControllerToProcessor => pb::SccModule::ControllerToProcessor,
                SccModule::ProcessorToProcessor => pb::SccModule::ProcessorToProcessor,
                SccModule::ProcessorToController => pb::SccModule::ProcessorToController,
            } as i32,
            signed_on: Some(date_to_pb(*signed_on)),
            assessed_on: assessed_on.map(date_to_pb),
            review_by: review_by.map(date_to_pb),
        }),
        Safeguard::Bcr {
            approval_reference,
            review_by,
        } => Mechanism::Bcr(pb::BindingCorporateRules {
            approval_reference: approval_reference.clone(),
            review_by: review_by.map(date_to_pb),
        }),
        Safeguard::Derogation {
            ground,
            justification,
        } => Mechanism::Derogation(pb::Derogation {
            ground: match ground {
                DerogationGround::ExplicitConsent => pb::DerogationGround::ExplicitConsent,
                DerogationGround::ContractWithSubject => pb::DerogationGround::ContractWithSubject,
                DerogationGround::ContractInSubjectInterest => {
                    pb::DerogationGround::ContractInSubjectInterest
                }
                DerogationGround::PublicInterest => pb::DerogationGround::PublicInterest,
                DerogationGround::LegalClaims => pb::DerogationGround::LegalClaims,
                DerogationGround::VitalInterests => pb::DerogationGround::VitalInterests,
                DerogationGround::PublicRegister => pb::DerogationGround::PublicRegister,
                DerogationGround::CompellingLegitimateInterests => {
                    pb::DerogationGround::CompellingLegitimateInterests
                }
            } as i32,
            justification: justification.clone(),
        }),
        Safeguard::Dpf {
            active,
            verified_on,
            review_by,
        } => Mechanism::Dpf(pb::DataPrivacyFrameworkCertification {
            active: *active,
            verified_on: Some(date_to_pb(*verified_on)),
            review_by: Some(date_to_pb(*review_by)),
        }),
    };
    pb::Safeguard {
        mechanism: Some(mechanism),
    }
}

/// A domain recipient in API form (without stored metadata).
pub fn recipient_to_pb(r: &transfer::Recipient) -> pb::Recipient {
    pb::Recipient {
        id: r.id.clone(),
        name: r.name.clone(),
        role: role_to_pb(r.role) as i32,
        country: r.country.as_str().to_owned(),
        controllers: r
            .controllers
            .iter()
            .map(|c| common::ControllerRef {
                organisation_number: c.as_str().to_owned(),
            })
            .collect(),
        category_ids: r.categories.iter().cloned().collect(),
        system_ids: r.systems.iter().cloned().collect(),
        dpa_reference: r.dpa_reference.clone(),
        safeguard: r.safeguard.as_ref().map(safeguard_to_pb),
        purpose: r.purpose.clone(),
        name_sv: r.name_sv.clone(),
        purpose_sv: r.purpose_sv.clone(),
        revision: 0,
        create_time: None,
        update_time: None,
        standing: None,
    }
}

pub(crate) fn stored_to_pb(s: &StoredRecipient, standing: &Assessment) -> pb::Recipient {
    pb::Recipient {
        revision: s.revision,
        standing: Some(assessment_to_pb(standing)),
        create_time: Some(timestamp(s.created_at)),
        update_time: Some(timestamp(s.updated_at)),
        ..recipient_to_pb(&s.recipient)
    }
}

pub(crate) fn basis_to_pb(b: TransferBasis) -> pb::TransferBasis {
    match b {
        TransferBasis::WithinEea => pb::TransferBasis::WithinEea,
        TransferBasis::Adequacy => pb::TransferBasis::Adequacy,
        TransferBasis::DataPrivacyFramework => pb::TransferBasis::DataPrivacyFramework,
        TransferBasis::Scc => pb::TransferBasis::StandardContractualClauses,
        TransferBasis::Bcr => pb::TransferBasis::BindingCorporateRules,
        TransferBasis::Derogation => pb::TransferBasis::Derogation,
        TransferBasis::None => pb::TransferBasis::None,
    }
}

pub(crate) fn assessment_to_pb(a: &Assessment) -> pb::TransferAssessment {
    pb::TransferAssessment {
        lawful: a.lawful,
        basis: basis_to_pb(a.basis) as i32,
        country: a.country.as_str().to_owned(),
        decision_reference: a.decision_reference.clone().unwrap_or_default(),
        reasons: a
            .reasons
            .iter()
            .map(|r| pb::Reason {
                code: r.code.as_str().to_owned(),
                message: r.message.clone(),
                blocking: r.blocking,
            })
            .collect(),
        safeguard_summary: a.safeguard_summary.clone(),
        safeguard_summary_sv: a.safeguard_summary_sv.clone(),
    }
}

pub(crate) fn disclosure_to_pb(d: &Disclosure, standing: &Assessment) -> pb::Disclosure {
    pb::Disclosure {
        recipient: Some(stored_to_pb(&d.recipient, standing)),
        matched_category_ids: d.matched_categories.iter().cloned().collect(),
        assessment: Some(assessment_to_pb(&d.assessment)),
    }
}

pub(crate) fn page_response(next_after: Option<String>) -> common::PageResponse {
    common::PageResponse {
        next_page_token: next_after
            .map(|id| URL_SAFE_NO_PAD.encode(id))
            .unwrap_or_default(),
    }
}

pub(crate) fn countries(tables: &CountryTables) -> Vec<pb::Country> {
    let eea = tables.eea().map(|code| pb::Country {
        name: tables.name(&code).to_owned(),
        code: code.as_str().to_owned(),
        status: pb::CountryStatus::Eea as i32,
        decision_reference: String::new(),
        decision_date: None,
        valid_until: None,
        scope: String::new(),
    });
    let adequate = tables.adequate().map(|(code, a)| pb::Country {
        name: tables.name(&code).to_owned(),
        code: code.as_str().to_owned(),
        status: match tables.status(&code) {
            CountryStatus::Eea => pb::CountryStatus::Eea,
            CountryStatus::Adequate(_) => pb::CountryStatus::Adequate,
            CountryStatus::ThirdCountry => pb::CountryStatus::ThirdCountry,
        } as i32,
        decision_reference: a.reference.clone(),
        decision_date: Some(date_to_pb(a.adopted_on)),
        valid_until: a.valid_until.map(date_to_pb),
        scope: a.scope.clone().unwrap_or_default(),
    });
    eea.chain(adequate).collect()
}
