//! The registry's seed: the recipients named by the company's privacy policy
//! and the transfer policy (categories that never leave the EEA), in TOML.
//! `dsr up` loads the shipped seed (`seed/recipients.toml`); a deployment may
//! point to its own file. The same format describes one recipient for
//! `dsr transfers put`.

use chrono::NaiveDate;
use dsr_domain::text::Text;
use dsr_domain::transfer::{
    CountryTables, FieldViolation, Recipient, RecipientRole, Safeguard, TransferPolicy,
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
    /// Name, in Swedish and English (`{ sv = "…", en = "…" }`, or
    /// `{ same = "…" }` for a name that reads the same in both).
    pub name: Text,
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
    /// Purpose in plain words, in Swedish and English.
    #[serde(default)]
    pub purpose: Text,
    /// Safeguard, e.g. `{ kind = "scc", module = 2, signed_on = "2024-05-02" }`.
    pub safeguard: Option<Safeguard>,
}

impl RecipientSpec {
    /// Validates the syntax and builds the domain value (paths under `prefix`).
    pub fn build(
        self,
        tables: &CountryTables,
        prefix: &str,
    ) -> Result<Recipient, Vec<FieldViolation>> {
        let draft = RecipientDraft {
            id: self.id,
            name: self.name.en,
            name_sv: self.name.sv,
            purpose_sv: self.purpose.sv,
            role: RecipientRole::parse(&self.role),
            country: self.country,
            controllers: self.controllers,
            categories: self.categories,
            systems: self.systems,
            dpa_reference: self.dpa_reference,
            purpose: self.purpose.en,
            safeguard: self.safeguard,
        };
        draft.build(tables, prefix)
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

/// A date written relative to the day the seed is loaded: `today`, or
/// `today` plus or minus a number of days, months or years (`today-92d`,
/// `today+3m`, `today-2y`). `None` for anything else.
pub fn relative_date(s: &str, today: NaiveDate) -> Option<NaiveDate> {
    let rest = s.strip_prefix("today")?;
    if rest.is_empty() {
        return Some(today);
    }
    let (sign, rest) = rest.split_at(1);
    let (n, unit) = rest.split_at(rest.len().checked_sub(1)?);
    let n: u32 = n.parse().ok()?;
    let months = match unit {
        "d" => {
            let days = chrono::Days::new(u64::from(n));
            return match sign {
                "+" => today.checked_add_days(days),
                "-" => today.checked_sub_days(days),
                _ => None,
            };
        }
        "m" => n,
        "y" => n.checked_mul(12)?,
        _ => return None,
    };
    let months = chrono::Months::new(months);
    match sign {
        "+" => today.checked_add_months(months),
        "-" => today.checked_sub_months(months),
        _ => None,
    }
}

/// Replaces every relative date (see [`relative_date`]) in `v` by the
/// date it names.
fn resolve_dates(v: &mut toml::Value, today: NaiveDate) {
    match v {
        toml::Value::String(s) => {
            if let Some(d) = relative_date(s, today) {
                *s = d.format("%Y-%m-%d").to_string();
            }
        }
        toml::Value::Array(items) => items.iter_mut().for_each(|i| resolve_dates(i, today)),
        toml::Value::Table(t) => t.iter_mut().for_each(|(_, i)| resolve_dates(i, today)),
        toml::Value::Integer(_)
        | toml::Value::Float(_)
        | toml::Value::Boolean(_)
        | toml::Value::Datetime(_) => {}
    }
}

/// Parses and validates a seed file. Its dates may be written relative to
/// `today` (see [`relative_date`]): the shipped seed is, so that it loads
/// on whatever date the mesh starts; a company's own file names real
/// dates.
pub fn parse(text: &str, tables: &CountryTables, today: NaiveDate) -> Result<Seed, SeedError> {
    let mut value: toml::Value =
        toml::from_str(text).map_err(|e| SeedError::Syntax(e.to_string()))?;
    resolve_dates(&mut value, today);
    let file: SeedFile = value
        .try_into()
        .map_err(|e: toml::de::Error| SeedError::Syntax(e.to_string()))?;
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
    fn relative_dates_name_a_day_from_today() {
        let today = NaiveDate::from_ymd_opt(2026, 1, 31).unwrap();
        let d = |s| relative_date(s, today);
        assert_eq!(d("today"), Some(today));
        assert_eq!(d("today-31d"), NaiveDate::from_ymd_opt(2025, 12, 31));
        assert_eq!(d("today+1m"), NaiveDate::from_ymd_opt(2026, 2, 28));
        assert_eq!(d("today-2y"), NaiveDate::from_ymd_opt(2024, 1, 31));
        for bad in [
            "today-",
            "today*2d",
            "today-2w",
            "yesterday",
            "2026-01-01",
            "today-xd",
        ] {
            assert_eq!(d(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_shipped_seed_loads_on_any_date() {
        let tables = CountryTables::shipped();
        for day in ["2023-06-01", "2026-12-02", "2031-06-01", "2040-02-29"] {
            let today = NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap();
            let seed = parse(SHIPPED, &tables, today).unwrap_or_else(|e| panic!("{day}: {e}"));
            assert!(!seed.recipients.is_empty());
        }
    }

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
name = { sv = "Ett", en = "One" }
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
        // A name in one language only is refused, naming the field.
        let text = text
            .replace("{ sv = \"Ett\", en = \"One\" }", "\"One\"")
            .replace("wizard", "agent");
        let msg = parse(
            &text,
            &CountryTables::shipped(),
            NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains("name") && msg.contains("{ sv: …, en: … }"),
            "{msg}"
        );
    }
}
