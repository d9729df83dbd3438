//! The registry's seed: the recipients named by the company's privacy policy
//! and the transfer policy (categories that never leave the EEA), in TOML.
//! `dsr up` loads the shipped seed (`seed/recipients.toml`); a deployment may
//! point to its own file. The same format describes one recipient for
//! `dsr transfers put`.

use chrono::NaiveDate;
use dsr_domain::transfer::{
    CountryTables, DerogationGround, FieldViolation, Recipient, RecipientRole, Safeguard,
    SccModule, TransferPolicy,
};
use serde::Deserialize;

use crate::registry::RecipientDraft;

/// The shipped seed.
pub const SHIPPED: &str = include_str!("../seed/recipients.toml");

/// Why a seed file is not usable.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// Not valid TOML for this format.
    #[error("{0}")]
    Syntax(String),
    /// A recipient breaks the rules.
    #[error("{}", format_violations(.0))]
    Invalid(Vec<FieldViolation>),
}

fn format_violations(v: &[FieldViolation]) -> String {
    v.iter()
        .map(|x| format!("{}: {}", x.field, x.description))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A seed file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    /// The transfer policy.
    #[serde(default)]
    pub policy: PolicySpec,
    /// Recipients.
    #[serde(default, rename = "recipient")]
    pub recipients: Vec<RecipientSpec>,
}

/// The transfer policy section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Categories (and the categories below them) that never leave the EEA.
    #[serde(default)]
    pub eea_only_categories: Vec<String>,
}

/// One recipient in TOML.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientSpec {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// processor, sub_processor, independent_controller, authority, group_company or agent.
    pub role: String,
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// Controllers' organisationsnummer.
    pub controllers: Vec<String>,
    /// Categories.
    pub categories: Vec<String>,
    /// Systems.
    #[serde(default)]
    pub systems: Vec<String>,
    /// Agreement reference.
    #[serde(default)]
    pub dpa_reference: String,
    /// Purpose in plain words.
    #[serde(default)]
    pub purpose: String,
    /// Safeguard.
    pub safeguard: Option<SafeguardSpec>,
}

/// A safeguard in TOML.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SafeguardSpec {
    /// SCCs.
    Scc {
        /// 1 to 4.
        module: u8,
        /// Signing date.
        signed_on: NaiveDate,
        /// Transfer impact assessment date.
        assessed_on: Option<NaiveDate>,
        /// Review date.
        review_by: Option<NaiveDate>,
    },
    /// BCRs.
    Bcr {
        /// Approval reference.
        approval_reference: String,
        /// Review date.
        review_by: Option<NaiveDate>,
    },
    /// Art. 49 derogation.
    Derogation {
        /// "49-1-a" .. "49-1-g" or "49-1-2".
        ground: String,
        /// Why.
        justification: String,
    },
    /// Data Privacy Framework.
    Dpf {
        /// Active.
        active: bool,
        /// Verified.
        verified_on: NaiveDate,
        /// Review.
        review_by: NaiveDate,
    },
}

impl RecipientSpec {
    /// Validates the syntax and builds the domain value (paths under `prefix`).
    pub fn build(
        self,
        tables: &CountryTables,
        prefix: &str,
    ) -> Result<Recipient, Vec<FieldViolation>> {
        let mut early = Vec::new();
        let role = RecipientRole::parse(&self.role);
        if role.is_none() {
            early.push(FieldViolation::new(
                format!("{prefix}.role"),
                "unknown role",
            ));
        }
        let safeguard = match self.safeguard {
            None => None,
            Some(SafeguardSpec::Scc {
                module,
                signed_on,
                assessed_on,
                review_by,
            }) => match SccModule::from_number(module) {
                Some(module) => Some(Safeguard::Scc {
                    module,
                    signed_on,
                    assessed_on,
                    review_by,
                }),
                None => {
                    early.push(FieldViolation::new(
                        format!("{prefix}.safeguard.module"),
                        "1 to 4",
                    ));
                    None
                }
            },
            Some(SafeguardSpec::Bcr {
                approval_reference,
                review_by,
            }) => Some(Safeguard::Bcr {
                approval_reference,
                review_by,
            }),
            Some(SafeguardSpec::Derogation {
                ground,
                justification,
            }) => match DerogationGround::parse(&ground) {
                Some(ground) => Some(Safeguard::Derogation {
                    ground,
                    justification,
                }),
                None => {
                    early.push(FieldViolation::new(
                        format!("{prefix}.safeguard.ground"),
                        "49-1-a .. 49-1-g or 49-1-2",
                    ));
                    None
                }
            },
            Some(SafeguardSpec::Dpf {
                active,
                verified_on,
                review_by,
            }) => Some(Safeguard::Dpf {
                active,
                verified_on,
                review_by,
            }),
        };
        let draft = RecipientDraft {
            id: self.id,
            name: self.name,
            role,
            country: self.country,
            controllers: self.controllers,
            categories: self.categories,
            systems: self.systems,
            dpa_reference: self.dpa_reference,
            purpose: self.purpose,
            safeguard,
        };
        let built = draft.build(tables, prefix);
        match built {
            Ok(r) if early.is_empty() => Ok(r),
            Ok(_) => Err(early),
            Err(mut v) => {
                v.extend(early.into_iter().filter(|e| !e.field.ends_with(".role")));
                Err(v)
            }
        }
    }
}

/// A parsed and validated seed.
#[derive(Debug)]
pub struct Seed {
    /// The transfer policy.
    pub policy: TransferPolicy,
    /// The recipients, each valid on `today`.
    pub recipients: Vec<Recipient>,
}

/// Parses and validates a seed file.
pub fn parse(text: &str, tables: &CountryTables, today: NaiveDate) -> Result<Seed, SeedError> {
    let file: SeedFile = toml::from_str(text).map_err(|e| SeedError::Syntax(e.to_string()))?;
    let mut violations = Vec::new();
    let mut recipients = Vec::new();
    for (i, spec) in file.recipients.into_iter().enumerate() {
        let prefix = format!("recipient[{i}]");
        match spec.build(tables, &prefix) {
            Ok(r) => {
                violations.extend(r.validate(today).into_iter().map(|v| FieldViolation {
                    field: v.field.replacen("recipient", &prefix, 1),
                    description: v.description,
                }));
                recipients.push(r);
            }
            Err(v) => violations.extend(v),
        }
    }
    if !violations.is_empty() {
        return Err(SeedError::Invalid(violations));
    }
    Ok(Seed {
        policy: TransferPolicy {
            eea_only_categories: file.policy.eea_only_categories.into_iter().collect(),
        },
        recipients,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_seed_is_valid() {
        let seed = parse(
            SHIPPED,
            &CountryTables::shipped(),
            NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
        )
        .unwrap();
        assert!(seed.recipients.len() >= 8);
        assert!(seed.policy.is_eea_only("survey.answers"));
        // the policy's recipients outside the EEA: an agent and a storage provider
        let abroad: Vec<&str> = seed
            .recipients
            .iter()
            .filter(|r| !["SE", "IE", "DE", "FI", "NO", "DK"].contains(&r.country.as_str()))
            .map(|r| r.id.as_str())
            .collect();
        assert!(abroad.len() >= 2, "{abroad:?}");
    }

    #[test]
    fn errors_name_the_recipient_and_field() {
        let text = r#"
[[recipient]]
id = "x-1"
name = "X"
role = "wizard"
country = "ZZ"
controllers = ["556134-1247"]
categories = ["Bad Category"]
"#;
        let err = parse(
            text,
            &CountryTables::shipped(),
            NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
        )
        .unwrap_err();
        let msg = err.to_string();
        for want in [
            "recipient[0].role",
            "recipient[0].country",
            "recipient[0].controllers[0]",
            "recipient[0].category_ids[0]",
        ] {
            assert!(msg.contains(want), "{want} missing in {msg}");
        }
    }
}
