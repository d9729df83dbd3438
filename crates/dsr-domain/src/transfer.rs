//! Recipients of personal data and the lawfulness of transfers outside the
//! EEA (GDPR Chapter V: Art. 44-49).
//!
//! [`assess`] is the whole rule: EEA (no transfer), an adequacy decision
//! (Art. 45, for the United States only with a Data Privacy Framework
//! certification), standard contractual clauses of the module that fits the
//! relationship (Art. 46(2)(c), Decision 2021/914), binding corporate rules
//! inside the group (Art. 47), or an Art. 49 derogation; anything else is
//! unlawful. Every outcome carries its reasons.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::identity::Organisationsnummer;
use crate::text::Text;

/// An ISO 3166-1 alpha-2 country code known to [`CountryTables`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode(String);

impl CountryCode {
    /// The upper-case code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An EU adequacy decision for a country.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdequacyDecision {
    /// The decision's reference, e.g. "(EU) 2019/419".
    pub reference: String,
    /// When it was adopted.
    pub adopted_on: NaiveDate,
    /// When it lapses, if it has a sunset.
    pub valid_until: Option<NaiveDate>,
    /// What it covers when not everything.
    pub scope: Option<String>,
    /// It covers only organisations certified under the EU-US Data Privacy
    /// Framework.
    pub dpf_only: bool,
}

/// How the GDPR sees a country.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountryStatus<'a> {
    /// A member of the European Economic Area.
    Eea,
    /// Covered by an adequacy decision.
    Adequate(&'a AdequacyDecision),
    /// A third country.
    ThirdCountry,
}

/// The ISO country list, the EEA and the adequacy decisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountryTables {
    names: BTreeMap<String, String>,
    eea: BTreeSet<String>,
    adequacy: BTreeMap<String, AdequacyDecision>,
}

/// Why a country table file is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("country tables are not valid: {0}")]
pub struct CountryTablesError(String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountriesFile {
    iso3166: Vec<(String, String)>,
    eea: Vec<String>,
    adequacy: Vec<AdequacyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdequacyEntry {
    country: String,
    reference: String,
    adopted_on: NaiveDate,
    valid_until: Option<NaiveDate>,
    scope: Option<String>,
    #[serde(default)]
    dpf_only: bool,
}

impl CountryTables {
    /// The tables shipped with DSR Mesh (`data/countries.toml`).
    pub fn shipped() -> Self {
        Self::from_toml(include_str!("../data/countries.toml"))
            .expect("shipped country tables are valid")
    }

    /// Reads tables in the format of `data/countries.toml`.
    pub fn from_toml(text: &str) -> Result<Self, CountryTablesError> {
        let file: CountriesFile =
            toml::from_str(text).map_err(|e| CountryTablesError(e.message().to_owned()))?;
        let names: BTreeMap<String, String> = file.iso3166.into_iter().collect();
        let known = |c: &str| names.contains_key(c);
        if let Some(bad) = file.eea.iter().find(|c| !known(c)) {
            return Err(CountryTablesError(format!(
                "EEA member {bad} is not an ISO 3166-1 code"
            )));
        }
        let mut adequacy = BTreeMap::new();
        for a in file.adequacy {
            if !known(&a.country) {
                return Err(CountryTablesError(format!(
                    "adequacy country {} is unknown",
                    a.country
                )));
            }
            if file.eea.contains(&a.country) {
                return Err(CountryTablesError(format!(
                    "{} is both EEA and adequate",
                    a.country
                )));
            }
            adequacy.insert(
                a.country,
                AdequacyDecision {
                    reference: a.reference,
                    adopted_on: a.adopted_on,
                    valid_until: a.valid_until,
                    scope: a.scope,
                    dpf_only: a.dpf_only,
                },
            );
        }
        Ok(Self {
            names,
            eea: file.eea.into_iter().collect(),
            adequacy,
        })
    }

    /// Validates a country code (upper-casing it).
    pub fn code(&self, raw: &str) -> Option<CountryCode> {
        let up = raw.trim().to_ascii_uppercase();
        self.names.contains_key(&up).then_some(CountryCode(up))
    }

    /// The English short name.
    pub fn name(&self, code: &CountryCode) -> &str {
        self.names.get(code.as_str()).map_or("", String::as_str)
    }

    /// The country's status.
    pub fn status(&self, code: &CountryCode) -> CountryStatus<'_> {
        if self.eea.contains(code.as_str()) {
            CountryStatus::Eea
        } else if let Some(a) = self.adequacy.get(code.as_str()) {
            CountryStatus::Adequate(a)
        } else {
            CountryStatus::ThirdCountry
        }
    }

    /// EEA members, ordered by code.
    pub fn eea(&self) -> impl Iterator<Item = CountryCode> + '_ {
        self.eea.iter().map(|c| CountryCode(c.clone()))
    }

    /// Adequate countries with their decisions, ordered by code.
    pub fn adequate(&self) -> impl Iterator<Item = (CountryCode, &AdequacyDecision)> + '_ {
        self.adequacy
            .iter()
            .map(|(c, a)| (CountryCode(c.clone()), a))
    }
}

/// The relationship between the group and a recipient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecipientRole {
    /// Processes on the controller's behalf (Art. 28).
    Processor,
    /// Engaged by one of the group's processors.
    SubProcessor,
    /// Decides its own purposes and means.
    IndependentController,
    /// A public authority.
    Authority,
    /// Another company of the group.
    GroupCompany,
    /// An agent acting for the controller (debt collection, legal
    /// representation).
    Agent,
}

impl RecipientRole {
    /// Stable lower-case name, used in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processor => "processor",
            Self::SubProcessor => "sub_processor",
            Self::IndependentController => "independent_controller",
            Self::Authority => "authority",
            Self::GroupCompany => "group_company",
            Self::Agent => "agent",
        }
    }

    /// Parses [`RecipientRole::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Processor,
            Self::SubProcessor,
            Self::IndependentController,
            Self::Authority,
            Self::GroupCompany,
            Self::Agent,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }

    /// Whether the recipient acts on the group's instructions and so needs a
    /// data processing agreement (Art. 28(3)) or an agency contract.
    pub fn needs_agreement(self) -> bool {
        matches!(self, Self::Processor | Self::SubProcessor | Self::Agent)
    }

    /// The SCC modules that fit a transfer from the group (as controller, or
    /// through its processor for a sub-processor) to this recipient.
    pub fn fitting_scc_modules(self) -> &'static [SccModule] {
        match self {
            Self::Processor => &[SccModule::ControllerToProcessor],
            Self::SubProcessor => &[SccModule::ProcessorToProcessor],
            Self::IndependentController | Self::Authority => &[SccModule::ControllerToController],
            // A group company or an agent may act as processor or as controller in
            // its own right; either module fits, the contract says which.
            Self::GroupCompany | Self::Agent => &[
                SccModule::ControllerToController,
                SccModule::ControllerToProcessor,
            ],
        }
    }
}

/// Modules of Decision (EU) 2021/914. Written as the module's number (1-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum SccModule {
    /// Module 1.
    ControllerToController,
    /// Module 2.
    ControllerToProcessor,
    /// Module 3.
    ProcessorToProcessor,
    /// Module 4.
    ProcessorToController,
}

impl SccModule {
    /// The module's number, 1 to 4.
    pub fn number(self) -> u8 {
        match self {
            Self::ControllerToController => 1,
            Self::ControllerToProcessor => 2,
            Self::ProcessorToProcessor => 3,
            Self::ProcessorToController => 4,
        }
    }

    /// The module with that number.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            1 => Some(Self::ControllerToController),
            2 => Some(Self::ControllerToProcessor),
            3 => Some(Self::ProcessorToProcessor),
            4 => Some(Self::ProcessorToController),
            _ => None,
        }
    }
}

/// The Art. 49(1) derogations. Written as "49-1-a" .. "49-1-g", or "49-1-2"
/// for the second subparagraph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum DerogationGround {
    /// (a)
    ExplicitConsent,
    /// (b)
    ContractWithSubject,
    /// (c)
    ContractInSubjectInterest,
    /// (d)
    PublicInterest,
    /// (e)
    LegalClaims,
    /// (f)
    VitalInterests,
    /// (g)
    PublicRegister,
    /// Second subparagraph.
    CompellingLegitimateInterests,
}

impl DerogationGround {
    /// Stable name, used in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExplicitConsent => "49-1-a",
            Self::ContractWithSubject => "49-1-b",
            Self::ContractInSubjectInterest => "49-1-c",
            Self::PublicInterest => "49-1-d",
            Self::LegalClaims => "49-1-e",
            Self::VitalInterests => "49-1-f",
            Self::PublicRegister => "49-1-g",
            Self::CompellingLegitimateInterests => "49-1-2",
        }
    }

    /// Parses [`DerogationGround::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::ExplicitConsent,
            Self::ContractWithSubject,
            Self::ContractInSubjectInterest,
            Self::PublicInterest,
            Self::LegalClaims,
            Self::VitalInterests,
            Self::PublicRegister,
            Self::CompellingLegitimateInterests,
        ]
        .into_iter()
        .find(|g| g.as_str() == s)
    }
}

impl TryFrom<u8> for SccModule {
    type Error = String;
    fn try_from(n: u8) -> Result<Self, String> {
        Self::from_number(n).ok_or_else(|| format!("SCC module {n} does not exist (1 to 4)"))
    }
}

impl From<SccModule> for u8 {
    fn from(m: SccModule) -> u8 {
        m.number()
    }
}

impl TryFrom<String> for DerogationGround {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
            .ok_or_else(|| format!("unknown derogation {s:?} (49-1-a .. 49-1-g or 49-1-2)"))
    }
}

impl From<DerogationGround> for &'static str {
    fn from(g: DerogationGround) -> &'static str {
        g.as_str()
    }
}

/// The date Decision 2021/914 took effect; earlier clauses are the repealed
/// 2001/2004/2010 sets.
pub fn scc_2021_effective() -> NaiveDate {
    NaiveDate::from_ymd_opt(2021, 6, 27).expect("valid date")
}

/// The safeguard for a transfer outside the EEA. Its serde form (used by the
/// registry's storage and seed files) is tagged by `kind`: `scc`, `bcr`,
/// `derogation` or `dpf`, with dates as "YYYY-MM-DD".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Safeguard {
    /// Standard contractual clauses.
    Scc {
        /// The module signed.
        module: SccModule,
        /// When both parties signed.
        signed_on: NaiveDate,
        /// When the transfer impact assessment was last done.
        #[serde(default)]
        assessed_on: Option<NaiveDate>,
        /// When to review next.
        #[serde(default)]
        review_by: Option<NaiveDate>,
    },
    /// Binding corporate rules.
    Bcr {
        /// The approving authority's reference.
        approval_reference: String,
        /// When to review next.
        #[serde(default)]
        review_by: Option<NaiveDate>,
    },
    /// An Art. 49 derogation.
    Derogation {
        /// Which one.
        ground: DerogationGround,
        /// Why it applies.
        justification: String,
    },
    /// A Data Privacy Framework certification.
    Dpf {
        /// Listed as active and covering the data.
        active: bool,
        /// When last checked.
        verified_on: NaiveDate,
        /// When to check again.
        review_by: NaiveDate,
    },
}

impl Safeguard {
    /// The basis this safeguard provides, and its review date if it has one.
    pub fn review(&self) -> Option<(TransferBasis, NaiveDate)> {
        match self {
            Self::Scc { review_by, .. } => review_by.map(|d| (TransferBasis::Scc, d)),
            Self::Bcr { review_by, .. } => review_by.map(|d| (TransferBasis::Bcr, d)),
            Self::Derogation { .. } => None,
            Self::Dpf { review_by, .. } => Some((TransferBasis::DataPrivacyFramework, *review_by)),
        }
    }
}

/// A recipient as the transfer rules see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// Stable id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Relationship.
    pub role: RecipientRole,
    /// Where it processes the data.
    pub country: CountryCode,
    /// The controllers it serves.
    pub controllers: BTreeSet<Organisationsnummer>,
    /// The categories it receives.
    pub categories: BTreeSet<String>,
    /// The systems through which it receives data.
    pub systems: BTreeSet<String>,
    /// Agreement reference.
    pub dpa_reference: String,
    /// Safeguard, if any.
    pub safeguard: Option<Safeguard>,
    /// Purpose in plain words.
    pub purpose: String,
    /// The name in Swedish (`name` is English): what a person reading in
    /// Swedish sees.
    pub name_sv: String,
    /// The purpose in Swedish.
    pub purpose_sv: String,
}

/// One invalid field of a recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path, as in the API (e.g. "recipient.safeguard.scc.signed_on").
    pub field: String,
    /// What is wrong, without personal data.
    pub description: String,
}

impl FieldViolation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Whether `id` is a valid recipient or system id.
pub fn valid_slug(id: &str) -> bool {
    (2..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-')
}

/// Whether `id` is a valid data category id.
pub fn valid_category_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
        && !id.starts_with('.')
        && !id.ends_with('.')
}

/// The checks of a recipient's id, name and lists that need no typed
/// field, under `recipient.`; part of [`Recipient::validate`], and usable on
/// input that did not parse.
pub fn basic_violations(
    id: &str,
    name: &str,
    controllers: usize,
    categories: usize,
) -> Vec<FieldViolation> {
    let mut v = Vec::new();
    if !valid_slug(id) {
        v.push(FieldViolation::new(
            "recipient.id",
            "2-64 lower-case letters, digits and -",
        ));
    }
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        v.push(FieldViolation::new(
            "recipient.name",
            "required, at most 200 characters",
        ));
    }
    if controllers == 0 {
        v.push(FieldViolation::new(
            "recipient.controllers",
            "at least one controller",
        ));
    }
    if categories == 0 {
        v.push(FieldViolation::new(
            "recipient.category_ids",
            "at least one category",
        ));
    }
    v
}

impl Recipient {
    /// The rules a recipient must meet beyond field syntax, checked on
    /// `today`. Field paths are prefixed with `recipient.`.
    pub fn validate(&self, today: NaiveDate) -> Vec<FieldViolation> {
        let mut v = basic_violations(
            &self.id,
            &self.name,
            self.controllers.len(),
            self.categories.len(),
        );
        if self.role.needs_agreement() && self.dpa_reference.trim().is_empty() {
            v.push(FieldViolation::new(
                "recipient.dpa_reference",
                "required for processors, sub-processors and agents (Art. 28(3))",
            ));
        }
        if self.dpa_reference.chars().count() > 200 {
            v.push(FieldViolation::new(
                "recipient.dpa_reference",
                "at most 200 characters",
            ));
        }
        if self.purpose.chars().count() > 500 {
            v.push(FieldViolation::new(
                "recipient.purpose",
                "at most 500 characters",
            ));
        }
        let name_sv = self.name_sv.trim();
        if name_sv.is_empty() || name_sv.chars().count() > 200 {
            v.push(FieldViolation::new(
                "recipient.name_sv",
                "required: the name in Swedish, at most 200 characters",
            ));
        }
        if self.purpose_sv.chars().count() > 500 {
            v.push(FieldViolation::new(
                "recipient.purpose_sv",
                "at most 500 characters",
            ));
        }
        if self.purpose.trim().is_empty() != self.purpose_sv.trim().is_empty() {
            v.push(FieldViolation::new(
                "recipient.purpose_sv",
                "the purpose is given in both Swedish and English, or in neither",
            ));
        }
        match &self.safeguard {
            None => {}
            Some(Safeguard::Scc {
                signed_on,
                assessed_on,
                ..
            }) => {
                if *signed_on < scc_2021_effective() {
                    v.push(FieldViolation::new(
                        "recipient.safeguard.scc.signed_on",
                        "clauses signed before 2021-06-27 are not the 2021/914 clauses",
                    ));
                }
                if *signed_on > today {
                    v.push(FieldViolation::new(
                        "recipient.safeguard.scc.signed_on",
                        "in the future",
                    ));
                }
                if assessed_on.is_some_and(|a| a > today) {
                    v.push(FieldViolation::new(
                        "recipient.safeguard.scc.assessed_on",
                        "in the future",
                    ));
                }
            }
            Some(Safeguard::Bcr {
                approval_reference, ..
            }) if approval_reference.trim().is_empty() => {
                v.push(FieldViolation::new(
                    "recipient.safeguard.bcr.approval_reference",
                    "required",
                ));
            }
            Some(Safeguard::Bcr { .. }) => {}
            Some(Safeguard::Derogation { justification, .. }) => {
                let j = justification.trim();
                if j.is_empty() || j.chars().count() > 2000 {
                    v.push(FieldViolation::new(
                        "recipient.safeguard.derogation.justification",
                        "required, at most 2000 characters",
                    ));
                }
            }
            Some(Safeguard::Dpf {
                verified_on,
                review_by,
                ..
            }) => {
                if self.country.as_str() != "US" {
                    v.push(FieldViolation::new(
                        "recipient.safeguard.dpf",
                        "the Data Privacy Framework applies only to recipients in the United States",
                    ));
                }
                if *verified_on > today {
                    v.push(FieldViolation::new(
                        "recipient.safeguard.dpf.verified_on",
                        "in the future",
                    ));
                }
                if review_by < verified_on {
                    v.push(FieldViolation::new(
                        "recipient.safeguard.dpf.review_by",
                        "before verified_on",
                    ));
                }
            }
        }
        v
    }
}

/// What a transfer rests on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransferBasis {
    /// No transfer: the recipient is in the EEA.
    WithinEea,
    /// An adequacy decision for the country.
    Adequacy,
    /// The EU-US adequacy decision, for a certified organisation.
    DataPrivacyFramework,
    /// Standard contractual clauses.
    Scc,
    /// Binding corporate rules.
    Bcr,
    /// An Art. 49 derogation.
    Derogation,
    /// Nothing.
    None,
}

/// Machine-readable reasons of an assessment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReasonCode {
    /// The recipient is in the EEA.
    WithinEea,
    /// An adequacy decision covers the country.
    AdequacyDecision,
    /// The adequacy decision covers only part of the country's organisations.
    AdequacyPartialScope,
    /// The adequacy decision has lapsed.
    AdequacyLapsed,
    /// Certified under the Data Privacy Framework.
    DpfCertified,
    /// A US recipient without an active certification.
    DpfNotCertified,
    /// The certification's review date has passed.
    DpfReviewOverdue,
    /// SCCs of a fitting module.
    SccInForce,
    /// SCCs of a module that does not fit the relationship.
    SccModuleMismatch,
    /// SCCs signed before they took effect or in the future.
    SccNotInForce,
    /// No transfer impact assessment recorded (Clause 14).
    SccAssessmentMissing,
    /// The SCC review date has passed.
    SccReviewOverdue,
    /// BCRs inside the group.
    BcrInForce,
    /// BCRs for a recipient outside the group.
    BcrNotGroup,
    /// The BCR review date has passed.
    BcrReviewOverdue,
    /// An Art. 49 derogation: occasional transfers only.
    DerogationOccasionalOnly,
    /// The residual derogation: the supervisory authority and the person
    /// must be informed.
    DerogationInformAuthority,
    /// No safeguard for a third country.
    NoSafeguard,
    /// A category the recipient's agreement does not cover.
    CategoryNotAgreed,
    /// A category that must stay in the EEA.
    EeaOnlyCategory,
    /// The recipient does not serve the controller.
    ControllerNotServed,
}

impl ReasonCode {
    /// The stable code string, e.g. "NO_SAFEGUARD".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WithinEea => "WITHIN_EEA",
            Self::AdequacyDecision => "ADEQUACY_DECISION",
            Self::AdequacyPartialScope => "ADEQUACY_PARTIAL_SCOPE",
            Self::AdequacyLapsed => "ADEQUACY_LAPSED",
            Self::DpfCertified => "DPF_CERTIFIED",
            Self::DpfNotCertified => "DPF_NOT_CERTIFIED",
            Self::DpfReviewOverdue => "DPF_REVIEW_OVERDUE",
            Self::SccInForce => "SCC_IN_FORCE",
            Self::SccModuleMismatch => "SCC_MODULE_MISMATCH",
            Self::SccNotInForce => "SCC_NOT_IN_FORCE",
            Self::SccAssessmentMissing => "SCC_ASSESSMENT_MISSING",
            Self::SccReviewOverdue => "SCC_REVIEW_OVERDUE",
            Self::BcrInForce => "BCR_IN_FORCE",
            Self::BcrNotGroup => "BCR_NOT_GROUP",
            Self::BcrReviewOverdue => "BCR_REVIEW_OVERDUE",
            Self::DerogationOccasionalOnly => "DEROGATION_OCCASIONAL_ONLY",
            Self::DerogationInformAuthority => "DEROGATION_INFORM_AUTHORITY",
            Self::NoSafeguard => "NO_SAFEGUARD",
            Self::CategoryNotAgreed => "CATEGORY_NOT_AGREED",
            Self::EeaOnlyCategory => "EEA_ONLY_CATEGORY",
            Self::ControllerNotServed => "CONTROLLER_NOT_SERVED",
        }
    }
}

/// One reason of an assessment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason {
    /// The code.
    pub code: ReasonCode,
    /// One sentence; never personal data.
    pub message: String,
    /// Whether it alone makes the transfer unlawful.
    pub blocking: bool,
}

/// The outcome of [`assess`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    /// May the transfer go ahead.
    pub lawful: bool,
    /// What it rests on.
    pub basis: TransferBasis,
    /// The recipient's country.
    pub country: CountryCode,
    /// The adequacy decision relied on.
    pub decision_reference: Option<String>,
    /// Reasons, blocking first.
    pub reasons: Vec<Reason>,
    /// Plain-language account of the safeguard (English).
    pub safeguard_summary: String,
    /// The same in Swedish.
    pub safeguard_summary_sv: String,
}

/// What is to be sent, to whom, when.
#[derive(Clone, Debug)]
pub struct TransferCheck<'a> {
    /// The categories to send.
    pub categories: &'a BTreeSet<String>,
    /// The sending controller, when known.
    pub controller: Option<&'a Organisationsnummer>,
    /// The day of the transfer.
    pub on: NaiveDate,
}

/// Rules that come from the controller's policy rather than the law.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransferPolicy {
    /// Categories that never leave the EEA, whatever the safeguard (the seed
    /// policy: customer-survey data). An entry covers the category of that id
    /// and every category below it: "survey" covers "survey.answers".
    pub eea_only_categories: BTreeSet<String>,
}

impl TransferPolicy {
    /// Whether `category` must stay in the EEA.
    pub fn is_eea_only(&self, category: &str) -> bool {
        self.eea_only_categories.iter().any(|p| {
            category == p
                || (category.starts_with(p.as_str())
                    && category.as_bytes().get(p.len()) == Some(&b'.'))
        })
    }
}

struct Reasons(Vec<Reason>);

impl Reasons {
    fn block(&mut self, code: ReasonCode, message: String) {
        self.0.push(Reason {
            code,
            message,
            blocking: true,
        });
    }
    fn note(&mut self, code: ReasonCode, message: String) {
        self.0.push(Reason {
            code,
            message,
            blocking: false,
        });
    }
}

/// Decides whether sending `check.categories` to `recipient` is lawful.
pub fn assess(
    recipient: &Recipient,
    check: &TransferCheck<'_>,
    tables: &CountryTables,
    policy: &TransferPolicy,
) -> Assessment {
    let mut r = Reasons(Vec::new());
    let on = check.on;
    if let Some(c) = check.controller
        && !recipient.controllers.contains(c)
    {
        r.block(
            ReasonCode::ControllerNotServed,
            format!("the recipient does not receive data from controller {c}"),
        );
    }
    for cat in check.categories.difference(&recipient.categories) {
        r.block(
            ReasonCode::CategoryNotAgreed,
            format!("category {cat} is not among the categories agreed with the recipient"),
        );
    }
    let country_name = tables.name(&recipient.country).to_owned();
    let mut decision_reference = None;
    let (basis, summary) = match tables.status(&recipient.country) {
        CountryStatus::Eea => {
            r.note(
                ReasonCode::WithinEea,
                format!("{country_name} is in the EEA: no transfer"),
            );
            (
                TransferBasis::WithinEea,
                Text::new(
                    "behandlas inom EES: ingen överföring till tredjeland",
                    format!("processed in {country_name}, inside the EEA"),
                ),
            )
        }
        CountryStatus::Adequate(decision) if !decision.dpf_only => {
            if decision.valid_until.is_some_and(|until| until < on) {
                r.note(
                    ReasonCode::AdequacyLapsed,
                    format!(
                        "the adequacy decision {} for {country_name} has lapsed",
                        decision.reference
                    ),
                );
                safeguard_basis(recipient, &country_name, on, &mut r)
            } else {
                r.note(
                    ReasonCode::AdequacyDecision,
                    format!(
                        "adequacy decision {} covers {country_name}",
                        decision.reference
                    ),
                );
                if let Some(scope) = &decision.scope {
                    r.note(
                        ReasonCode::AdequacyPartialScope,
                        format!("the decision covers only {scope}; confirm the recipient is one"),
                    );
                }
                decision_reference = Some(decision.reference.clone());
                (
                    TransferBasis::Adequacy,
                    Text::new(
                        format!(
                            "EU-kommissionens beslut om adekvat skyddsnivå {}",
                            decision.reference
                        ),
                        format!(
                            "{country_name}: EU adequacy decision {}",
                            decision.reference
                        ),
                    ),
                )
            }
        }
        CountryStatus::Adequate(decision) => {
            match &recipient.safeguard {
                Some(Safeguard::Dpf {
                    active: true,
                    verified_on,
                    review_by,
                }) if *review_by >= on => {
                    r.note(
                    ReasonCode::DpfCertified,
                    format!("certified under the EU-US Data Privacy Framework, verified {verified_on}"),
                );
                    decision_reference = Some(decision.reference.clone());
                    (
                        TransferBasis::DataPrivacyFramework,
                        Text::new(
                            format!(
                                "EU–US Data Privacy Framework, beslut om adekvat skyddsnivå {}, certifieringen kontrollerad {verified_on}",
                                decision.reference
                            ),
                            format!(
                                "{country_name}: EU-US Data Privacy Framework, adequacy decision {}, certification verified {verified_on}",
                                decision.reference
                            ),
                        ),
                    )
                }
                Some(Safeguard::Dpf {
                    active: true,
                    review_by,
                    ..
                }) => {
                    r.block(
                    ReasonCode::DpfReviewOverdue,
                    format!("the Data Privacy Framework certification was due for review on {review_by} and is unconfirmed"),
                );
                    (
                        TransferBasis::None,
                        Text::new("ingen bekräftad skyddsåtgärd", "no confirmed safeguard"),
                    )
                }
                Some(Safeguard::Dpf { active: false, .. }) => {
                    r.block(
                        ReasonCode::DpfNotCertified,
                        "the recipient is not certified under the EU-US Data Privacy Framework"
                            .to_owned(),
                    );
                    (
                        TransferBasis::None,
                        Text::new("ingen skyddsåtgärd", "no safeguard"),
                    )
                }
                _ => safeguard_basis(recipient, &country_name, on, &mut r),
            }
        }
        CountryStatus::ThirdCountry => safeguard_basis(recipient, &country_name, on, &mut r),
    };
    if basis != TransferBasis::WithinEea {
        for cat in check.categories.iter().filter(|c| policy.is_eea_only(c)) {
            r.block(
                ReasonCode::EeaOnlyCategory,
                format!("category {cat} may not leave the EEA under the controller's policy"),
            );
        }
    }
    let mut reasons = r.0;
    reasons.sort_by_key(|x| !x.blocking);
    let lawful = !reasons.iter().any(|x| x.blocking);
    Assessment {
        lawful,
        basis,
        country: recipient.country.clone(),
        decision_reference,
        reasons,
        safeguard_summary: summary.en,
        safeguard_summary_sv: summary.sv,
    }
}

/// Art. 46/47/49 for a recipient with no adequacy decision to rely on.
fn safeguard_basis(
    recipient: &Recipient,
    country_name: &str,
    on: NaiveDate,
    r: &mut Reasons,
) -> (TransferBasis, Text) {
    match &recipient.safeguard {
        None | Some(Safeguard::Dpf { .. }) => {
            r.block(
                ReasonCode::NoSafeguard,
                format!(
                    "{country_name} has no adequacy decision and no safeguard is recorded (Art. 46) for the recipient"
                ),
            );
            (
                TransferBasis::None,
                Text::new("ingen skyddsåtgärd", "no safeguard"),
            )
        }
        Some(Safeguard::Scc {
            module,
            signed_on,
            assessed_on,
            review_by,
        }) => {
            let fitting = recipient.role.fitting_scc_modules();
            if !fitting.contains(module) {
                let want: Vec<String> = fitting.iter().map(|m| m.number().to_string()).collect();
                r.block(
                    ReasonCode::SccModuleMismatch,
                    format!(
                        "SCC module {} does not fit a {} (expected module {})",
                        module.number(),
                        recipient.role.as_str().replace('_', "-"),
                        want.join(" or ")
                    ),
                );
            } else if *signed_on < scc_2021_effective() || *signed_on > on {
                r.block(
                    ReasonCode::SccNotInForce,
                    format!("the clauses signed {signed_on} are not the 2021/914 clauses in force"),
                );
            } else {
                r.note(
                    ReasonCode::SccInForce,
                    format!(
                        "EU standard contractual clauses 2021/914 module {} signed {signed_on}",
                        module.number()
                    ),
                );
            }
            if assessed_on.is_none() {
                r.note(
                    ReasonCode::SccAssessmentMissing,
                    "no transfer impact assessment is recorded (Clause 14)".to_owned(),
                );
            }
            if review_by.is_some_and(|d| d < on) {
                r.note(
                    ReasonCode::SccReviewOverdue,
                    "the clauses' review date has passed".to_owned(),
                );
            }
            (
                TransferBasis::Scc,
                Text::new(
                    format!(
                        "EU:s standardavtalsklausuler (beslut 2021/914), modul {}, undertecknade {signed_on}",
                        module.number()
                    ),
                    format!(
                        "{country_name}: EU standard contractual clauses (Decision 2021/914), module {}, signed {signed_on}",
                        module.number()
                    ),
                ),
            )
        }
        Some(Safeguard::Bcr {
            approval_reference,
            review_by,
        }) => {
            if recipient.role != RecipientRole::GroupCompany {
                r.block(
                    ReasonCode::BcrNotGroup,
                    "binding corporate rules cover only companies of the group".to_owned(),
                );
            } else {
                r.note(
                    ReasonCode::BcrInForce,
                    format!("binding corporate rules {approval_reference}"),
                );
            }
            if review_by.is_some_and(|d| d < on) {
                r.note(
                    ReasonCode::BcrReviewOverdue,
                    "the rules' review date has passed".to_owned(),
                );
            }
            (
                TransferBasis::Bcr,
                Text::new(
                    format!("bindande företagsbestämmelser ({approval_reference})"),
                    format!("{country_name}: binding corporate rules ({approval_reference})"),
                ),
            )
        }
        Some(Safeguard::Derogation { ground, .. }) => {
            r.note(
                ReasonCode::DerogationOccasionalOnly,
                format!(
                    "Art. {} derogation: for occasional transfers only, never systematic ones",
                    ground.as_str()
                ),
            );
            if *ground == DerogationGround::CompellingLegitimateInterests {
                r.note(
                    ReasonCode::DerogationInformAuthority,
                    "the supervisory authority and the person must be informed of the transfer"
                        .to_owned(),
                );
            }
            (
                TransferBasis::Derogation,
                Text::new(
                    format!(
                        "undantag för särskilda situationer enligt GDPR art. {}",
                        ground.as_str()
                    ),
                    format!(
                        "{country_name}: derogation under GDPR Art. {}",
                        ground.as_str()
                    ),
                ),
            )
        }
    }
}

/// A recipient's safeguard review, as listed by [`reviews_due`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewDue<'a> {
    /// The recipient.
    pub recipient: &'a Recipient,
    /// Which basis.
    pub basis: TransferBasis,
    /// The review date.
    pub review_by: NaiveDate,
    /// The date has passed.
    pub overdue: bool,
}

/// Recipients whose safeguard review falls on or before `today + within_days`,
/// earliest first.
pub fn reviews_due<'a>(
    recipients: impl IntoIterator<Item = &'a Recipient>,
    today: NaiveDate,
    within_days: u32,
) -> Vec<ReviewDue<'a>> {
    let horizon = today + chrono::Days::new(u64::from(within_days));
    let mut due: Vec<ReviewDue<'a>> = recipients
        .into_iter()
        .filter_map(|rec| {
            let (basis, review_by) = rec.safeguard.as_ref()?.review()?;
            (review_by <= horizon).then_some(ReviewDue {
                recipient: rec,
                basis,
                review_by,
                overdue: review_by < today,
            })
        })
        .collect();
    due.sort_by(|a, b| {
        a.review_by
            .cmp(&b.review_by)
            .then(a.recipient.id.cmp(&b.recipient.id))
    });
    due
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn recipient(country: &str, role: RecipientRole, safeguard: Option<Safeguard>) -> Recipient {
        let tables = CountryTables::shipped();
        Recipient {
            id: "r-1".into(),
            name: "Recipient".into(),
            role,
            country: tables.code(country).unwrap(),
            controllers: [Organisationsnummer::parse("556134-1248").unwrap()].into(),
            categories: [
                "contact.email".to_owned(),
                "contact.name".to_owned(),
                "survey.answers".to_owned(),
            ]
            .into(),
            systems: BTreeSet::new(),
            dpa_reference: "DPA-1".into(),
            safeguard,
            purpose: String::new(),
            name_sv: "Mottagare".into(),
            purpose_sv: String::new(),
        }
    }

    fn check(rec: &Recipient, cats: &[&str]) -> Assessment {
        let cats: BTreeSet<String> = cats.iter().map(|c| (*c).to_owned()).collect();
        let policy = TransferPolicy {
            eea_only_categories: ["survey".to_owned()].into(),
        };
        assess(
            rec,
            &TransferCheck {
                categories: &cats,
                controller: None,
                on: d("2026-11-23"),
            },
            &CountryTables::shipped(),
            &policy,
        )
    }

    fn codes(a: &Assessment) -> Vec<&'static str> {
        a.reasons.iter().map(|r| r.code.as_str()).collect()
    }

    fn scc(module: SccModule) -> Option<Safeguard> {
        Some(Safeguard::Scc {
            module,
            signed_on: d("2023-03-01"),
            assessed_on: Some(d("2023-02-15")),
            review_by: Some(d("2027-03-01")),
        })
    }

    fn dpf(active: bool, review_by: &str) -> Option<Safeguard> {
        Some(Safeguard::Dpf {
            active,
            verified_on: d("2026-06-01"),
            review_by: d(review_by),
        })
    }

    #[test]
    fn a_recipient_needs_its_swedish_name_and_purpose() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
        let ok = recipient("SE", RecipientRole::Processor, None);
        assert!(ok.validate(today).is_empty(), "{:?}", ok.validate(today));
        let fields = |r: &Recipient| -> Vec<String> {
            r.validate(today).into_iter().map(|v| v.field).collect()
        };
        let mut r = ok.clone();
        r.name_sv = " ".into();
        assert_eq!(fields(&r), ["recipient.name_sv"]);
        let mut r = ok.clone();
        r.purpose = "prints letters".into();
        assert_eq!(fields(&r), ["recipient.purpose_sv"]);
        r.purpose_sv = "skriver ut brev".into();
        assert!(fields(&r).is_empty());
    }

    #[test]
    fn a_safeguard_is_summed_up_in_swedish_and_english() {
        let tables = CountryTables::shipped();
        let policy = TransferPolicy::default();
        let on = NaiveDate::from_ymd_opt(2026, 12, 2).unwrap();
        let categories: BTreeSet<String> = ["contact.email".to_owned()].into();
        for country in ["SE", "GB", "IN"] {
            let r = recipient(country, RecipientRole::Processor, None);
            let a = assess(
                &r,
                &TransferCheck {
                    categories: &categories,
                    controller: None,
                    on,
                },
                &tables,
                &policy,
            );
            assert!(!a.safeguard_summary_sv.is_empty());
            assert_ne!(a.safeguard_summary, a.safeguard_summary_sv, "{country}");
        }
    }

    #[test]
    fn table_of_outcomes() {
        use RecipientRole::*;
        use TransferBasis as B;
        type Case<'a> = (
            &'a str,
            Recipient,
            &'a [&'a str],
            bool,
            TransferBasis,
            &'a [&'a str],
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "EEA",
                recipient("SE", Processor, None),
                &["contact.email"],
                true,
                B::WithinEea,
                &["WITHIN_EEA"],
            ),
            (
                "EEA, survey data may stay",
                recipient("DE", Processor, None),
                &["survey.answers"],
                true,
                B::WithinEea,
                &["WITHIN_EEA"],
            ),
            (
                "adequate country",
                recipient("JP", Processor, None),
                &["contact.email"],
                true,
                B::Adequacy,
                &["ADEQUACY_DECISION", "ADEQUACY_PARTIAL_SCOPE"],
            ),
            (
                "adequate UK",
                recipient("GB", Agent, None),
                &["contact.email"],
                true,
                B::Adequacy,
                &["ADEQUACY_DECISION"],
            ),
            (
                "adequate Brazil",
                recipient("BR", Agent, None),
                &["contact.email"],
                true,
                B::Adequacy,
                &["ADEQUACY_DECISION"],
            ),
            (
                "third country, nothing",
                recipient("IN", Processor, None),
                &["contact.email"],
                false,
                B::None,
                &["NO_SAFEGUARD"],
            ),
            (
                "third country, SCC module 2 for a processor",
                recipient("IN", Processor, scc(SccModule::ControllerToProcessor)),
                &["contact.email"],
                true,
                B::Scc,
                &["SCC_IN_FORCE"],
            ),
            (
                "SCC module 1 for a processor",
                recipient("IN", Processor, scc(SccModule::ControllerToController)),
                &["contact.email"],
                false,
                B::Scc,
                &["SCC_MODULE_MISMATCH"],
            ),
            (
                "SCC module 3 for a sub-processor",
                recipient("PH", SubProcessor, scc(SccModule::ProcessorToProcessor)),
                &["contact.email"],
                true,
                B::Scc,
                &["SCC_IN_FORCE"],
            ),
            (
                "US certified",
                recipient("US", Processor, dpf(true, "2027-06-01")),
                &["contact.email"],
                true,
                B::DataPrivacyFramework,
                &["DPF_CERTIFIED"],
            ),
            (
                "US not certified",
                recipient("US", Processor, dpf(false, "2027-06-01")),
                &["contact.email"],
                false,
                B::None,
                &["DPF_NOT_CERTIFIED"],
            ),
            (
                "US certification unconfirmed",
                recipient("US", Processor, dpf(true, "2026-11-01")),
                &["contact.email"],
                false,
                B::None,
                &["DPF_REVIEW_OVERDUE"],
            ),
            (
                "US nothing",
                recipient("US", Processor, None),
                &["contact.email"],
                false,
                B::None,
                &["NO_SAFEGUARD"],
            ),
            (
                "US uncertified but SCCs",
                recipient("US", Processor, scc(SccModule::ControllerToProcessor)),
                &["contact.email"],
                true,
                B::Scc,
                &["SCC_IN_FORCE"],
            ),
            (
                "survey data abroad",
                recipient("IN", Processor, scc(SccModule::ControllerToProcessor)),
                &["survey.answers"],
                false,
                B::Scc,
                &["EEA_ONLY_CATEGORY", "SCC_IN_FORCE"],
            ),
            (
                "category not agreed",
                recipient("SE", Processor, None),
                &["aml.identity_document"],
                false,
                B::WithinEea,
                &["CATEGORY_NOT_AGREED", "WITHIN_EEA"],
            ),
            (
                "BCR inside group",
                recipient(
                    "IN",
                    GroupCompany,
                    Some(Safeguard::Bcr {
                        approval_reference: "IMY-2020-1".into(),
                        review_by: None,
                    }),
                ),
                &["contact.email"],
                true,
                B::Bcr,
                &["BCR_IN_FORCE"],
            ),
            (
                "BCR outside group",
                recipient(
                    "IN",
                    Processor,
                    Some(Safeguard::Bcr {
                        approval_reference: "IMY-2020-1".into(),
                        review_by: None,
                    }),
                ),
                &["contact.email"],
                false,
                B::Bcr,
                &["BCR_NOT_GROUP"],
            ),
            (
                "legal-claims derogation",
                recipient(
                    "TR",
                    Agent,
                    Some(Safeguard::Derogation {
                        ground: DerogationGround::LegalClaims,
                        justification: "claim".into(),
                    }),
                ),
                &["contact.name"],
                true,
                B::Derogation,
                &["DEROGATION_OCCASIONAL_ONLY"],
            ),
        ];
        for (name, rec, cats, lawful, basis, want) in cases {
            let a = check(&rec, cats);
            assert_eq!(
                (a.lawful, a.basis),
                (lawful, basis),
                "{name}: {:?}",
                a.reasons
            );
            assert_eq!(codes(&a), want, "{name}");
        }
    }

    #[test]
    fn eea_only_patterns_cover_sub_categories() {
        let p = TransferPolicy {
            eea_only_categories: ["survey".to_owned()].into(),
        };
        assert!(p.is_eea_only("survey"));
        assert!(p.is_eea_only("survey.answers"));
        assert!(!p.is_eea_only("surveyor.name"));
        assert!(!p.is_eea_only("contact.email"));
    }

    #[test]
    fn controller_must_be_served() {
        let rec = recipient("SE", RecipientRole::Processor, None);
        let other = Organisationsnummer::parse("556885-5265").unwrap();
        let cats: BTreeSet<String> = ["contact.email".to_owned()].into();
        let a = assess(
            &rec,
            &TransferCheck {
                categories: &cats,
                controller: Some(&other),
                on: d("2026-11-23"),
            },
            &CountryTables::shipped(),
            &TransferPolicy::default(),
        );
        assert!(!a.lawful);
        assert_eq!(codes(&a), ["CONTROLLER_NOT_SERVED", "WITHIN_EEA"]);
    }

    #[test]
    fn overdue_reviews_warn_but_do_not_block_sccs() {
        let rec = recipient(
            "IN",
            RecipientRole::Processor,
            Some(Safeguard::Scc {
                module: SccModule::ControllerToProcessor,
                signed_on: d("2022-01-10"),
                assessed_on: None,
                review_by: Some(d("2026-01-01")),
            }),
        );
        let a = check(&rec, &["contact.email"]);
        assert!(a.lawful);
        assert_eq!(
            codes(&a),
            [
                "SCC_IN_FORCE",
                "SCC_ASSESSMENT_MISSING",
                "SCC_REVIEW_OVERDUE"
            ]
        );
    }

    #[test]
    fn validation_names_fields() {
        let mut rec = recipient(
            "SE",
            RecipientRole::Processor,
            Some(Safeguard::Scc {
                module: SccModule::ControllerToProcessor,
                signed_on: d("2020-01-01"),
                assessed_on: None,
                review_by: None,
            }),
        );
        rec.dpa_reference.clear();
        rec.id = "Bad Id".into();
        let fields: Vec<String> = rec
            .validate(d("2026-11-23"))
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(
            fields,
            [
                "recipient.id",
                "recipient.dpa_reference",
                "recipient.safeguard.scc.signed_on"
            ]
        );
        let dpf_abroad = recipient("IN", RecipientRole::Processor, dpf(true, "2027-01-01"));
        let fields: Vec<String> = dpf_abroad
            .validate(d("2026-11-23"))
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["recipient.safeguard.dpf"]);
    }

    #[test]
    fn reviews_due_orders_and_flags() {
        let a = recipient("US", RecipientRole::Processor, dpf(true, "2026-12-10"));
        let mut b = recipient(
            "IN",
            RecipientRole::Processor,
            Some(Safeguard::Scc {
                module: SccModule::ControllerToProcessor,
                signed_on: d("2022-01-10"),
                assessed_on: None,
                review_by: Some(d("2026-11-01")),
            }),
        );
        b.id = "r-2".into();
        let mut c = recipient(
            "IN",
            RecipientRole::Processor,
            Some(Safeguard::Scc {
                module: SccModule::ControllerToProcessor,
                signed_on: d("2022-01-10"),
                assessed_on: None,
                review_by: Some(d("2027-11-01")),
            }),
        );
        c.id = "r-3".into();
        let all = [a, b, c];
        let due = reviews_due(&all, d("2026-11-23"), 30);
        let got: Vec<(&str, bool)> = due
            .iter()
            .map(|r| (r.recipient.id.as_str(), r.overdue))
            .collect();
        assert_eq!(got, [("r-2", true), ("r-1", false)]);
    }

    #[test]
    fn safeguards_round_trip_through_their_serde_form() {
        let all = [
            scc(SccModule::ProcessorToProcessor).unwrap(),
            Safeguard::Bcr {
                approval_reference: "IMY-1".into(),
                review_by: None,
            },
            Safeguard::Derogation {
                ground: DerogationGround::LegalClaims,
                justification: "claim".into(),
            },
            dpf(true, "2027-01-01").unwrap(),
        ];
        for s in all {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(
                serde_json::from_str::<Safeguard>(&json).unwrap(),
                s,
                "{json}"
            );
        }
        let json = serde_json::to_string(&scc(SccModule::ControllerToProcessor).unwrap()).unwrap();
        assert!(json.contains(r#""kind":"scc","module":2"#), "{json}");
        let bad = serde_json::from_str::<Safeguard>(
            r#"{"kind":"scc","module":5,"signed_on":"2023-01-01"}"#,
        );
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("SCC module 5 does not exist")
        );
        let bad = serde_json::from_str::<Safeguard>(
            r#"{"kind":"derogation","ground":"49-1-z","justification":"x"}"#,
        );
        assert!(bad.is_err());
    }

    #[test]
    fn tables_hold_the_eea_and_adequacy() {
        let t = CountryTables::shipped();
        assert_eq!(t.eea().count(), 30);
        assert!(matches!(
            t.status(&t.code("no").unwrap()),
            CountryStatus::Eea
        ));
        assert!(matches!(
            t.status(&t.code("CH").unwrap()),
            CountryStatus::Adequate(_)
        ));
        assert!(matches!(
            t.status(&t.code("CN").unwrap()),
            CountryStatus::ThirdCountry
        ));
        assert!(t.code("XX").is_none());
        let bad = "iso3166 = [[\"SE\", \"Sweden\"]]\neea = [\"SE\", \"QQ\"]\nadequacy = []\n";
        assert!(CountryTables::from_toml(bad).is_err());
    }
}
