//! The manual manifest: a vendor without an API, reached by email.
//!
//! ```yaml
//! system: { id: legal-representatives, display_name: { sv: Ombud, en: Legal representatives },
//!           role: processor, operator_recipient_id: legal-representatives,
//!           controllers: ["556134-1248"] }
//! categories: [ ... as in the SQL manifest ... ]
//! vendor:
//!   contact: { name: Maria Lind, email: dsr@advokatlind.example, language: sv }
//!   escalation: { name: Dataskyddsombud, email: dpo@intrum.example, language: sv }
//!   answer_days: 10        # the vendor's time to answer a task
//!   margin_days: 5         # answers are due this long before the request's own due date
//!   reminder_days: [3, 1]  # reminders this many days before a task is due
//!   keep_answered_days: 90 # answered tasks (with the records reported) are deleted after
//!   texts: /etc/dsr/manual-texts.toml  # optional: the company's own wording
//! identity_types: [email, se_personnummer]   # what the vendor searches by
//! stores:
//!   - name: cases
//!     fields:
//!       - { name: name, category: contact.name }
//!       - { name: case_ref, category: debt.case }
//! ```
//!
//! [`ManualManifest::load`] checks everything before the connector starts
//! and names the file, the field and the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use dsr_domain::identity::{Identity, IdentityType, Organisationsnummer};
use serde::Deserialize;

use crate::manifest::{CategorySpec, IdentityKind, ManifestError, SystemSpec, check_system};

/// A whole manual manifest.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualManifest {
    /// The system.
    pub system: SystemSpec,
    /// The categories of data the vendor holds.
    pub categories: Vec<CategorySpec>,
    /// Who answers, and how fast.
    pub vendor: VendorSpec,
    /// The identity types the vendor searches by; Locate passes on no
    /// others (data minimisation).
    pub identity_types: Vec<IdentityKind>,
    /// The vendor's registers (the contract's stores).
    pub stores: Vec<StoreSpec>,
}

/// Who answers tasks at the vendor, who hears of overdue ones, and when.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VendorSpec {
    /// The named contact who gets each task.
    pub contact: ContactSpec,
    /// Who is told when a task is overdue (the company's DPO or the vendor
    /// manager); the contact is told too.
    pub escalation: ContactSpec,
    /// Days the vendor has to answer a task.
    #[serde(default = "default_answer_days")]
    pub answer_days: u32,
    /// Days before the request's own due date that every answer is due.
    #[serde(default = "default_margin_days")]
    pub margin_days: u32,
    /// Reminders, in days before a task is due.
    #[serde(default = "default_reminders")]
    pub reminder_days: Vec<u32>,
    /// Days an answered task is kept (its records serve the access
    /// request's export) before it is deleted.
    #[serde(default = "default_keep_days")]
    pub keep_answered_days: u32,
    /// A TOML file with the emails' texts, replacing the built-in ones.
    #[serde(default)]
    pub texts: Option<String>,
}

fn default_answer_days() -> u32 {
    10
}

fn default_margin_days() -> u32 {
    5
}

fn default_reminders() -> Vec<u32> {
    vec![3, 1]
}

fn default_keep_days() -> u32 {
    90
}

/// A person reached by email.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactSpec {
    /// Their name.
    pub name: String,
    /// Their email address.
    pub email: String,
    /// The language they are written to in: sv or en.
    #[serde(default = "default_language")]
    pub language: String,
}

fn default_language() -> String {
    "sv".into()
}

impl ContactSpec {
    /// The address as an identity the notifier sends to.
    pub fn address(&self) -> Identity {
        Identity::parse(IdentityType::Email, &self.email)
            .expect("checked when the manifest was loaded")
    }
}

/// One register at the vendor.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSpec {
    /// Its name, e.g. "cases".
    pub name: String,
    /// Its fields.
    pub fields: Vec<FieldSpec>,
}

/// One field of a register.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Its name, as the vendor reports it.
    pub name: String,
    /// The category of the data.
    pub category: String,
}

impl ManualManifest {
    /// Reads and checks the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let (text, file) = crate::manifest::read(path)?;
        Self::parse(&text, &file)
    }

    /// Parses and checks manifest text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ManifestError> {
        let m: Self = crate::manifest::from_yaml(text, file)?;
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

    /// A store by name.
    pub fn store(&self, name: &str) -> Option<&StoreSpec> {
        self.stores.iter().find(|s| s.name == name)
    }

    /// The identity types the vendor searches by.
    pub fn accepted_identity_types(&self) -> BTreeSet<IdentityType> {
        self.identity_types.iter().map(|k| k.domain()).collect()
    }

    fn check(&self, file: &str) -> Result<(), ManifestError> {
        let err = |field: String, problem: &str| ManifestError {
            file: file.to_owned(),
            field,
            problem: problem.to_owned(),
        };
        let cats = check_system(&self.system, &self.categories, file)?;
        let v = &self.vendor;
        for (name, c) in [("contact", &v.contact), ("escalation", &v.escalation)] {
            if c.name.trim().is_empty() {
                return Err(err(format!("vendor.{name}.name"), "required"));
            }
            if Identity::parse(IdentityType::Email, &c.email).is_err() {
                return Err(err(format!("vendor.{name}.email"), "an email address"));
            }
            if !matches!(c.language.as_str(), "sv" | "en") {
                return Err(err(format!("vendor.{name}.language"), "sv or en"));
            }
        }
        if !(1..=30).contains(&v.answer_days) {
            return Err(err("vendor.answer_days".into(), "1 to 30"));
        }
        if v.margin_days >= 30 {
            return Err(err("vendor.margin_days".into(), "0 to 29"));
        }
        for (i, d) in v.reminder_days.iter().enumerate() {
            if *d == 0 || *d >= v.answer_days {
                return Err(err(
                    format!("vendor.reminder_days[{i}]"),
                    "at least 1 and fewer than answer_days",
                ));
            }
        }
        if v.keep_answered_days == 0 {
            return Err(err("vendor.keep_answered_days".into(), "at least 1"));
        }
        if self.identity_types.is_empty() {
            return Err(err("identity_types".into(), "at least one"));
        }
        if self.stores.is_empty() {
            return Err(err("stores".into(), "at least one"));
        }
        let mut names = BTreeMap::new();
        for (i, s) in self.stores.iter().enumerate() {
            if !dsr_domain::transfer::valid_slug(&s.name) {
                return Err(err(
                    format!("stores[{i}].name"),
                    "2-64 lower-case letters, digits and -",
                ));
            }
            if names.insert(s.name.as_str(), i).is_some() {
                return Err(err(format!("stores[{i}].name"), "used twice"));
            }
            if s.fields.is_empty() {
                return Err(err(format!("stores[{i}].fields"), "at least one"));
            }
            let mut fields = BTreeSet::new();
            for (j, f) in s.fields.iter().enumerate() {
                if f.name.trim().is_empty() || !fields.insert(f.name.as_str()) {
                    return Err(err(
                        format!("stores[{i}].fields[{j}].name"),
                        "required and unique in the store",
                    ));
                }
                if !cats.contains_key(f.category.as_str()) {
                    return Err(err(
                        format!("stores[{i}].fields[{j}].category"),
                        "not one of the manifest's categories",
                    ));
                }
            }
        }
        Ok(())
    }
}
