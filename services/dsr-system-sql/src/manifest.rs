//! The manifest: how one relational schema maps onto the contract.
//!
//! ```yaml
//! system: { id: crm, display_name: { sv: Koncernens CRM, en: Group CRM }, role: controller, controllers: ["556134-1248"] }
//! categories:
//!   - id: contact.email
//!     display_name: { sv: E-postadress, en: Email address }
//!     purposes:
//!       sv: ["kommunicera med dig"]
//!       en: ["communicate with you"]
//!     legal_basis: contract
//!     retention:
//!       description: { sv: "24 månader efter att relationen upphört", en: "24 months after the relationship ends" }
//!       months: 24
//!       anchor: relationship_end
//!     source: { sv: "du eller företaget du företräder", en: "you or the company you represent" }
//! tables:
//!   - name: contacts
//!     primary_key: { column: id, type: integer }
//!     controller_column: controller_orgnr
//!     identities: [{ column: email, type: email }]
//!     columns: [{ name: email, category: contact.email }]
//!     erasure: delete
//!     restriction_column: restricted_at
//!     restriction_reasons_column: restriction_reasons
//!     retention: { anchor_column: relationship_ended_on, months: 24 }
//!   - name: letters
//!     primary_key: { column: id, type: integer }
//!     parent: { table: contacts, column: contact_id }
//!     ...
//! ```
//!
//! Every text a person reads (names, purposes, retention, source, the logic
//! of an automated decision) is given in Swedish and English
//! ([`dsr_domain::text`]); lists are YAML lists, quoted where an item holds
//! a comma.
//!
//! [`Manifest::load`] checks the manifest on its own (every reference
//! resolves, every category is declared); `schema::check` then checks it
//! against the live database. Errors name the file and the field.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use dsr_domain::text::{Text, TextList};

use dsr_domain::identity::{IdentityType, Organisationsnummer};
use serde::Deserialize;

/// Why a manifest is not usable. The message names the file and the field.
#[derive(Debug, thiserror::Error)]
#[error("manifest {file}: {field}: {problem}")]
pub struct ManifestError {
    /// The manifest file.
    pub file: String,
    /// The field, e.g. "tables[1].columns[2].name".
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

/// A whole manifest.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The system.
    pub system: SystemSpec,
    /// The categories of data it holds.
    pub categories: Vec<CategorySpec>,
    /// Its tables.
    pub tables: Vec<TableSpec>,
}

/// The system section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemSpec {
    /// Id, e.g. "crm".
    pub id: String,
    /// Name, in Swedish and English.
    pub display_name: Text,
    /// controller or processor.
    pub role: Role,
    /// The operator's recipient id in the transfer registry.
    #[serde(default)]
    pub operator_recipient_id: String,
    /// Controllers served (organisationsnummer).
    pub controllers: Vec<String>,
    /// How long an erasure usually takes, seconds.
    #[serde(default = "default_completion")]
    pub typical_completion_secs: u64,
    /// How long backups keep erased data, days.
    #[serde(default)]
    pub backup_retention_days: u32,
}

fn default_completion() -> u64 {
    60
}

/// Who runs the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The controller.
    Controller,
    /// A processor.
    Processor,
}

/// One category of data.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategorySpec {
    /// Id, e.g. "contact.email".
    pub id: String,
    /// Name, in Swedish and English.
    pub display_name: Text,
    /// ordinary, special_category, criminal or national_id.
    #[serde(default)]
    pub sensitivity: Sensitivity,
    /// Purposes in plain words, a list in each language (never split on
    /// commas).
    pub purposes: TextList,
    /// The legal basis.
    pub legal_basis: LegalBasis,
    /// The retention rule.
    pub retention: RetentionSpec,
    /// Where it came from (Art. 14(2)(f), 15(1)(g)): the person, the
    /// company they represent, public registers, or "derived by us from …".
    /// Required.
    pub source: Text,
    /// Given by the person.
    #[serde(default)]
    pub provided_by_subject: bool,
    /// In a portability export.
    #[serde(default)]
    pub portable: bool,
    /// Feeds an automated decision.
    #[serde(default)]
    pub automated_decision: bool,
    /// The logic, significance and consequences, in plain words.
    #[serde(default)]
    pub automated_decision_logic: Text,
}

pub use dsr_domain::category::{LegalBasis, Sensitivity};

/// A category's retention rule, as described to the person.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSpec {
    /// In words.
    pub description: Text,
    /// The law that sets the period, when it is set by law.
    #[serde(default)]
    pub legal_ground: Text,
    /// Months after the anchor event.
    #[serde(default)]
    pub months: Option<u32>,
    /// The anchor event.
    #[serde(default)]
    pub anchor: String,
}

/// One table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// Table name.
    pub name: String,
    /// Primary key.
    pub primary_key: KeySpec,
    /// The column naming the controller (organisationsnummer), on tables
    /// with identities, where the system serves several controllers.
    #[serde(default)]
    pub controller_column: Option<String>,
    /// The parent this table's rows belong to (a contact's letters).
    #[serde(default)]
    pub parent: Option<ParentSpec>,
    /// Columns holding identities of the person.
    #[serde(default)]
    pub identities: Vec<IdentityColumn>,
    /// Columns holding personal data, with their categories.
    pub columns: Vec<ColumnSpec>,
    /// What erasure does to the table's rows.
    pub erasure: ErasureAction,
    /// For `erasure: retain`: the ground and period.
    #[serde(default)]
    pub retain: Option<RetainSpec>,
    /// The sweep rule: rows whose anchor is older than the period are erased.
    #[serde(default)]
    pub retention: Option<SweepRule>,
    /// A nullable timestamp column recording restriction (Art. 18).
    pub restriction_column: String,
    /// A nullable text column recording why a row is restricted
    /// (`retention`, `request`, `hold`, joined by `,`): a retention ends by
    /// itself on its date (the deferred erasure, a sweep), an Art. 18
    /// request or a hold only when lifted.
    pub restriction_reasons_column: String,
    /// A nullable text column listing purposes objected to (Art. 21).
    #[serde(default)]
    pub objection_column: Option<String>,
    /// On a table with identities: a column holding the person's language
    /// ("sv", "en"), for a breach notice in it (Art. 34).
    #[serde(default)]
    pub language_column: Option<String>,
}

/// A primary key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// Column.
    pub column: String,
    /// integer or text.
    #[serde(rename = "type")]
    pub kind: KeyType,
}

/// Key column types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// A 64-bit integer.
    Integer,
    /// Text.
    Text,
}

/// A reference to the parent table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParentSpec {
    /// The parent table.
    pub table: String,
    /// This table's column holding the parent's primary key.
    pub column: String,
}

/// A column holding an identity, in its normal form.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityColumn {
    /// Column.
    pub column: String,
    /// email, phone, se_personnummer, se_organisationsnummer, customer_id.
    #[serde(rename = "type")]
    pub kind: IdentityKind,
}

/// Identity types in manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityKind {
    /// Email.
    Email,
    /// Phone (E.164).
    Phone,
    /// Personnummer (12 digits).
    SePersonnummer,
    /// Organisationsnummer.
    SeOrganisationsnummer,
    /// Customer id.
    CustomerId,
}

impl IdentityKind {
    /// The domain type.
    pub fn domain(self) -> IdentityType {
        match self {
            Self::Email => IdentityType::Email,
            Self::Phone => IdentityType::Phone,
            Self::SePersonnummer => IdentityType::Personnummer,
            Self::SeOrganisationsnummer => IdentityType::Organisationsnummer,
            Self::CustomerId => IdentityType::CustomerId,
        }
    }
}

/// A personal-data column.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Column.
    pub name: String,
    /// Category id.
    pub category: String,
    /// Keep this column when the table's erasure is `anonymise` (what stays
    /// no longer relates to anyone once the row is unlinked, e.g. survey
    /// answers).
    #[serde(default)]
    pub keep_when_anonymised: bool,
}

/// What erasure does to a table's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasureAction {
    /// Delete the rows.
    Delete,
    /// Set the personal-data columns to null (the row stays linked).
    Nullify,
    /// Set the personal-data columns and the parent link to null: what remains
    /// relates to no one.
    Anonymise,
    /// Keep the rows (a legal obligation), restricted.
    Retain,
}

/// Why and how long retained rows are kept.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetainSpec {
    /// The legal ground.
    pub legal_ground: String,
    /// A date column the period runs from (null: the period has not begun).
    pub anchor_column: String,
    /// Months after the anchor.
    pub months: u32,
}

/// A sweep rule.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepRule {
    /// A date column the period runs from (null: not yet).
    pub anchor_column: String,
    /// Months after the anchor.
    pub months: u32,
}

impl TableSpec {
    /// Every column the manifest names in this table.
    pub fn named_columns(&self) -> Vec<(String, &str)> {
        let mut v = vec![(
            "primary_key.column".to_owned(),
            self.primary_key.column.as_str(),
        )];
        if let Some(c) = &self.controller_column {
            v.push(("controller_column".into(), c));
        }
        if let Some(p) = &self.parent {
            v.push(("parent.column".into(), &p.column));
        }
        for (i, id) in self.identities.iter().enumerate() {
            v.push((format!("identities[{i}].column"), &id.column));
        }
        for (i, c) in self.columns.iter().enumerate() {
            v.push((format!("columns[{i}].name"), &c.name));
        }
        if let Some(r) = &self.retain {
            v.push(("retain.anchor_column".into(), &r.anchor_column));
        }
        if let Some(r) = &self.retention {
            v.push(("retention.anchor_column".into(), &r.anchor_column));
        }
        v.push(("restriction_column".into(), &self.restriction_column));
        v.push((
            "restriction_reasons_column".into(),
            &self.restriction_reasons_column,
        ));
        if let Some(c) = &self.objection_column {
            v.push(("objection_column".into(), c));
        }
        if let Some(c) = &self.language_column {
            v.push(("language_column".into(), c));
        }
        v
    }

    /// The categories of the table's columns.
    pub fn categories(&self) -> BTreeSet<&str> {
        self.columns.iter().map(|c| c.category.as_str()).collect()
    }

    /// The category of a column.
    pub fn category_of(&self, column: &str) -> Option<&str> {
        self.columns
            .iter()
            .find(|c| c.name == column)
            .map(|c| c.category.as_str())
    }
}

/// A store's name: a SQL table name, or an HTTP resource's.
pub(crate) fn valid_store_name(s: &str) -> bool {
    sql_name(s)
}

fn sql_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

impl Manifest {
    /// Reads and checks the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let (text, file) = read(path)?;
        Self::parse(&text, &file)
    }

    /// Parses and checks manifest text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ManifestError> {
        let m: Manifest = from_yaml(text, file)?;
        m.check(file)?;
        Ok(m)
    }

    /// The controllers, parsed.
    pub fn controllers(&self) -> BTreeSet<Organisationsnummer> {
        self.system
            .controllers
            .iter()
            .filter_map(|c| Organisationsnummer::parse(c).ok())
            .collect()
    }

    /// A table by name.
    pub fn table(&self, name: &str) -> Option<&TableSpec> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The tables whose parent is `name`.
    pub fn children(&self, name: &str) -> impl Iterator<Item = &TableSpec> {
        self.tables
            .iter()
            .filter(move |t| t.parent.as_ref().is_some_and(|p| p.table == name))
    }

    /// The identity types any table holds.
    pub fn accepted_identity_types(&self) -> BTreeSet<IdentityType> {
        self.tables
            .iter()
            .flat_map(|t| t.identities.iter().map(|i| i.kind.domain()))
            .collect()
    }

    /// Tables in an order where every child comes before its parent.
    pub fn children_first(&self) -> Vec<&TableSpec> {
        let depth = |t: &TableSpec| {
            let mut d = 0;
            let mut cur = t;
            while let Some(p) = cur.parent.as_ref().and_then(|p| self.table(&p.table)) {
                d += 1;
                cur = p;
                if d > self.tables.len() {
                    break;
                }
            }
            d
        };
        let mut v: Vec<&TableSpec> = self.tables.iter().collect();
        v.sort_by_key(|t| std::cmp::Reverse(depth(t)));
        v
    }

    fn check(&self, file: &str) -> Result<(), ManifestError> {
        let err = |field: String, problem: &str| ManifestError {
            file: file.to_owned(),
            field,
            problem: problem.to_owned(),
        };
        let s = &self.system;
        let cats = check_system(s, &self.categories, file)?;
        let names: BTreeSet<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
        if names.len() != self.tables.len() {
            return Err(err("tables".into(), "a table is listed twice"));
        }
        for (i, t) in self.tables.iter().enumerate() {
            let f = |x: &str| format!("tables[{i}].{x}");
            if !sql_name(&t.name) {
                return Err(err(f("name"), "lower-case letters, digits and _"));
            }
            for (field, col) in t.named_columns() {
                if !sql_name(col) {
                    return Err(err(f(&field), "lower-case letters, digits and _"));
                }
            }
            match (&t.parent, t.identities.is_empty()) {
                (Some(p), _) if !names.contains(p.table.as_str()) => {
                    return Err(err(f("parent.table"), "no such table in the manifest"));
                }
                (Some(p), _) if p.table == t.name => {
                    return Err(err(f("parent.table"), "a table cannot be its own parent"));
                }
                (None, true) => {
                    return Err(err(f("identities"), "a table needs identities or a parent"));
                }
                _ => {}
            }
            if t.parent.is_some() && t.controller_column.is_some() {
                return Err(err(
                    f("controller_column"),
                    "only tables with identities name the controller; children inherit it",
                ));
            }
            if t.parent.is_none() && s.controllers.len() > 1 && t.controller_column.is_none() {
                return Err(err(
                    f("controller_column"),
                    "required: the system serves several controllers",
                ));
            }
            for (j, c) in t.columns.iter().enumerate() {
                if !cats.contains_key(c.category.as_str()) {
                    return Err(err(
                        f(&format!("columns[{j}].category")),
                        "not declared in categories",
                    ));
                }
            }
            if t.columns.is_empty() {
                return Err(err(f("columns"), "at least one personal-data column"));
            }
            match (t.erasure, &t.retain) {
                (ErasureAction::Retain, None) => {
                    return Err(err(f("retain"), "required when erasure is retain"));
                }
                (ErasureAction::Anonymise, _) if t.parent.is_none() => {
                    return Err(err(
                        f("erasure"),
                        "anonymise unlinks a row from its parent; this table has none",
                    ));
                }
                _ => {}
            }
        }
        // Parents must form trees: no cycles.
        for (i, t) in self.tables.iter().enumerate() {
            let mut seen = BTreeSet::new();
            let mut cur = t;
            while let Some(p) = cur.parent.as_ref().and_then(|p| self.table(&p.table)) {
                if !seen.insert(p.name.as_str()) {
                    return Err(err(format!("tables[{i}].parent"), "parents form a cycle"));
                }
                cur = p;
            }
        }
        Ok(())
    }
}

/// Checks a manifest's `system` and `categories` sections (the SQL and the
/// HTTP connector's alike); answers the declared categories by id.
/// A manifest file's text and its name for errors.
pub(crate) fn read(path: &Path) -> Result<(String, String), ManifestError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ManifestError {
        file: file.clone(),
        field: "(file)".into(),
        problem: e.to_string(),
    })?;
    Ok((text, file))
}

/// Manifest text as `T`, a syntax error naming `file`.
pub(crate) fn from_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, ManifestError> {
    serde_saphyr::from_str(text).map_err(|e| ManifestError {
        file: file.to_owned(),
        field: "(syntax)".into(),
        problem: e.to_string(),
    })
}

pub(crate) fn check_system<'a>(
    s: &SystemSpec,
    categories: &'a [CategorySpec],
    file: &str,
) -> Result<BTreeMap<&'a str, usize>, ManifestError> {
    let err = |field: String, problem: &str| ManifestError {
        file: file.to_owned(),
        field,
        problem: problem.to_owned(),
    };
    if !dsr_domain::transfer::valid_slug(&s.id) {
        return Err(err(
            "system.id".into(),
            "2-64 lower-case letters, digits and -",
        ));
    }
    if s.controllers.is_empty() {
        return Err(err("system.controllers".into(), "at least one controller"));
    }
    for (i, c) in s.controllers.iter().enumerate() {
        if let Err(e) = Organisationsnummer::parse(c) {
            return Err(err(format!("system.controllers[{i}]"), &e.to_string()));
        }
    }
    let mut cats = BTreeMap::new();
    for (i, c) in categories.iter().enumerate() {
        if !dsr_domain::transfer::valid_category_id(&c.id) {
            return Err(err(
                format!("categories[{i}].id"),
                "lower-case letters, digits, _ and .",
            ));
        }
        if cats.insert(c.id.as_str(), i).is_some() {
            return Err(err(format!("categories[{i}].id"), "declared twice"));
        }
        if c.purposes.en.is_empty() {
            return Err(err(
                format!("categories[{i}].purposes"),
                "at least one purpose",
            ));
        }
        if c.automated_decision && c.automated_decision_logic.is_empty() {
            return Err(err(
                format!("categories[{i}].automated_decision_logic"),
                "required when automated_decision is true (Art. 15(1)(h))",
            ));
        }
    }
    Ok(cats)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
system: { id: demo, display_name: { same: Demo }, role: processor, controllers: ["556134-1248"] }
categories:
  - id: contact.email
    display_name: { sv: E-post, en: Email }
    purposes: { sv: ["förhindra, upptäcka och bevisa bedrägerier"], en: ["prevent, detect and prove fraud"] }
    legal_basis: contract
    retention: { description: { sv: "24 månader efter relationen", en: "24 months after the relationship" } }
    source: { sv: du, en: you }
tables:
  - name: people
    primary_key: { column: id, type: integer }
    identities: [{ column: email, type: email }]
    columns: [{ name: email, category: contact.email }]
    erasure: delete
    restriction_column: restricted_at
    restriction_reasons_column: restriction_reasons
  - name: notes
    primary_key: { column: id, type: integer }
    parent: { table: people, column: person_id }
    columns: [{ name: body, category: contact.email }]
    erasure: anonymise
    restriction_column: restricted_at
    restriction_reasons_column: restriction_reasons
"#;

    #[test]
    fn a_minimal_manifest_loads() {
        let m = Manifest::parse(MINIMAL, "demo.yaml").unwrap();
        assert_eq!(
            m.children("people")
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["notes"]
        );
        assert_eq!(m.children_first().first().unwrap().name, "notes");
    }

    #[test]
    fn texts_come_in_both_languages_and_lists_keep_their_commas() {
        let m = Manifest::parse(MINIMAL, "demo.yaml").unwrap();
        let c = &m.categories[0];
        assert_eq!(c.purposes.en, ["prevent, detect and prove fraud"]);
        assert_eq!(c.display_name.sv, "E-post");
        for (from, to) in [
            (
                "display_name: { sv: E-post, en: Email }",
                "display_name: Email",
            ),
            (
                "display_name: { sv: E-post, en: Email }",
                "display_name: { en: Email }",
            ),
            (
                "display_name: { sv: E-post, en: Email }",
                "display_name: { sv: Email, en: Email }",
            ),
            ("    source: { sv: du, en: you }\n", ""),
        ] {
            let text = MINIMAL.replace(from, to);
            assert_ne!(text, MINIMAL, "{from}");
            assert!(
                Manifest::parse(&text, "demo.yaml").is_err(),
                "accepted: {to}"
            );
        }
    }

    #[test]
    fn errors_name_file_and_field() {
        let cases = [
            (
                MINIMAL.replace(
                    "category: contact.email }]\n    erasure: anonymise",
                    "category: contact.phone }]\n    erasure: anonymise",
                ),
                "tables[1].columns[0].category",
            ),
            (
                MINIMAL.replace("table: people, column", "table: persons, column"),
                "tables[1].parent.table",
            ),
            (
                MINIMAL.replace("\"556134-1248\"", "\"556134-1247\""),
                "system.controllers[0]",
            ),
            (
                MINIMAL.replace("column: email, type: email", "column: e-mail, type: email"),
                "tables[0].identities[0].column",
            ),
            (
                MINIMAL.replace("erasure: delete", "erasure: retain"),
                "tables[0].retain",
            ),
            (
                MINIMAL.replace(
                    "restriction_reasons_column: restriction_reasons\n  - name",
                    "restriction_reasons_column: restriction_reasons\n    colour: red\n  - name",
                ),
                "(syntax)",
            ),
        ];
        for (text, field) in cases {
            let e = Manifest::parse(&text, "demo.yaml").unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.to_string().starts_with("manifest demo.yaml: "), "{e}");
        }
    }
}
