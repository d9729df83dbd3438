//! What export works with, free of the wire types: the subject map it is
//! given, what the systems and the registry say, and the sources it reads
//! them from (gRPC in production, test doubles in tests).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use dsr_domain::category::{LegalBasis, Sensitivity};
use dsr_domain::identity::Organisationsnummer;
use serde::{Deserialize, Serialize};

/// Access or portability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Art. 15.
    Access,
    /// Art. 20.
    Portability,
}

impl Kind {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Portability => "portability",
        }
    }

    /// Parses [`Kind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Access, Self::Portability]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// The language of the report: the mesh's.
pub use dsr_domain::text::Lang as Language;

pub use dsr_connector::subject::{MapStore, MapSystem, SubjectMap};

/// What to build.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildRequest {
    /// The orchestrator's request id.
    pub request_id: String,
    /// Access or portability.
    pub kind: Kind,
    /// The controller.
    pub controller: Organisationsnummer,
    /// The due date.
    pub due_date: NaiveDate,
    /// The language.
    pub language: Language,
    /// Where the data is.
    pub map: SubjectMap,
    /// Who submitted the request (issuer and subject): the one portal that
    /// may fetch the package besides case handlers.
    pub submitted_by: Option<String>,
}

/// What a system declares about a category (Describe).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Category {
    /// Id, e.g. "contact.email".
    pub id: String,
    /// Name for people.
    pub display_name: String,
    /// Ordinary, special (Art. 9), criminal (Art. 10) or a national id
    /// (Art. 87); "ordinary" when a system declares none.
    pub sensitivity: Sensitivity,
    /// Purposes (Art. 15(1)(a)).
    pub purposes: Vec<String>,
    /// Legal basis, e.g. contract (Art. 6(1)(b)); none when the system
    /// declared none it knows (written "" in the document).
    #[serde(serialize_with = "basis_or_empty")]
    pub legal_basis: Option<LegalBasis>,
    /// Retention in words (Art. 15(1)(d)).
    pub retention: String,
    /// The law setting the period, when one does.
    pub retention_legal_ground: String,
    /// Where it came from when not from the person (Art. 15(1)(g)).
    pub source: String,
    /// Provided by the person.
    pub provided_by_subject: bool,
    /// Portable (Art. 20).
    pub portable: bool,
    /// Feeds an automated decision (Art. 22).
    pub automated_decision: bool,
    /// The logic, significance and consequences (Art. 15(1)(h)).
    pub automated_decision_logic: String,
    /// The texts above in every language the system gives, by ISO 639-1
    /// code (the plain fields are English); see [`Category::localized`].
    #[serde(skip)]
    pub texts: BTreeMap<String, CategoryText>,
}

/// A category's person-facing texts in one language.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CategoryText {
    /// Name.
    pub display_name: String,
    /// Purposes.
    pub purposes: Vec<String>,
    /// Retention in words.
    pub retention: String,
    /// The law setting the period.
    pub retention_legal_ground: String,
    /// Where it came from.
    pub source: String,
    /// The logic of an automated decision.
    pub automated_decision_logic: String,
}

impl Category {
    /// The category with its texts in `lang`; `None` when the system does
    /// not give them in that language (a person is never answered in
    /// another).
    pub fn localized(&self, lang: Language) -> Option<Category> {
        let t = self.texts.get(lang.code())?;
        Some(Category {
            display_name: t.display_name.clone(),
            purposes: t.purposes.clone(),
            retention: t.retention.clone(),
            retention_legal_ground: t.retention_legal_ground.clone(),
            source: t.source.clone(),
            automated_decision_logic: t.automated_decision_logic.clone(),
            texts: BTreeMap::new(),
            ..self.clone()
        })
    }
}

/// What a system declares about itself (Describe).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemInfo {
    /// Id.
    pub id: String,
    /// Name for people (English).
    pub display_name: String,
    /// The name in every language the system gives, by ISO 639-1 code.
    pub display_names: BTreeMap<String, String>,
    /// "processor" or "controller".
    pub role: String,
    /// The operator's recipient id (empty when the controller runs it).
    pub operator_recipient_id: String,
    /// Its categories.
    pub categories: Vec<Category>,
}

/// One field of a record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// The name.
    pub name: String,
    /// Its category.
    pub category: String,
    /// The value; `None` for no value.
    pub value: Option<String>,
}

/// One record, as its system returned it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The store.
    pub store: String,
    /// The key.
    pub key: String,
    /// Its personal data.
    pub fields: Vec<Field>,
    /// Processing restricted to storage (Art. 18).
    pub restricted: bool,
    /// Purposes objected to (Art. 21).
    pub objected_purposes: Vec<String>,
    /// Reported by a person at a vendor without an API (a manual system):
    /// who attested it, not read from a system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attested_by: Option<AttestedBy>,
}

/// Who at a vendor without an API reported a record, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestedBy {
    /// Their name.
    pub name: String,
    /// The day they attested it (YYYY-MM-DD).
    pub on: String,
}

/// A recipient the person's data is disclosed to, with its transfer
/// assessment (Art. 15(1)(c), 15(2)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Disclosure {
    /// Registry id.
    pub recipient_id: String,
    /// Name.
    pub name: String,
    /// "processor", "agent", "authority", ...
    pub role: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// Why it receives data.
    pub purpose: String,
    /// The person's categories it receives.
    pub categories: Vec<String>,
    /// Outside the EEA.
    pub outside_eea: bool,
    /// The transfer is lawful.
    pub lawful: bool,
    /// "within_eea", "adequacy", "standard_contractual_clauses", ...
    pub transfer_basis: String,
    /// The safeguard in words (e.g. the SCC module and date), or the
    /// adequacy decision.
    pub safeguard: String,
    /// The adequacy decision or framework, when one applies.
    pub decision_reference: String,
    /// Name, purpose and safeguard in Swedish (the fields above are
    /// English); see [`Disclosure::localized`].
    #[serde(skip)]
    pub sv: DisclosureText,
}

/// A recipient's person-facing texts in Swedish.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DisclosureText {
    /// Name.
    pub name: String,
    /// Purpose.
    pub purpose: String,
    /// The safeguard in words.
    pub safeguard: String,
}

impl Disclosure {
    /// The disclosure with its texts in `lang`; `None` when the registry
    /// has no Swedish name for it (recorded before names were bilingual).
    pub fn localized(&self, lang: Language) -> Option<Disclosure> {
        match lang {
            Language::En => Some(Disclosure {
                sv: DisclosureText::default(),
                ..self.clone()
            }),
            Language::Sv if self.sv.name.is_empty() => None,
            Language::Sv => Some(Disclosure {
                name: self.sv.name.clone(),
                purpose: self.sv.purpose.clone(),
                safeguard: self.sv.safeguard.clone(),
                sv: DisclosureText::default(),
                ..self.clone()
            }),
        }
    }
}

/// Why a source failed. No personal data: a stable reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct SourceError {
    /// Which source, e.g. "system crm" or "transfer registry".
    pub what: String,
    /// E.g. "UNAVAILABLE".
    pub reason: String,
}

/// The header of an Access instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The request.
    pub request_id: String,
    /// The controller.
    pub controller: Organisationsnummer,
    /// The due date.
    pub due_date: NaiveDate,
}

/// A system's records as they arrive, batch by batch.
pub type RecordBatches = futures_util::stream::BoxStream<'static, Result<Vec<Record>, SourceError>>;

/// Where export reads from.
#[tonic::async_trait]
pub trait Sources: Send + Sync {
    /// What a system declares.
    async fn describe(&self, system: &str) -> Result<SystemInfo, SourceError>;
    /// The records of `stores` (their keys are moved into the call, not
    /// copied), as their system streams them: the exporter spools each
    /// batch as it comes, never holding them all.
    async fn access(
        &self,
        system: &str,
        header: &Header,
        stores: Vec<MapStore>,
        portable_only: bool,
    ) -> Result<RecordBatches, SourceError>;
    /// The recipients of these systems and categories, for the controller.
    async fn disclosures(
        &self,
        controller: &Organisationsnummer,
        systems: &[String],
        categories: &[String],
    ) -> Result<Vec<Disclosure>, SourceError>;
}

/// A legal basis in the document: its name, or "" when none was declared.
fn basis_or_empty<S: serde::Serializer>(b: &Option<LegalBasis>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(b.map_or("", LegalBasis::as_str))
}
