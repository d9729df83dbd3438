//! The retention policy as data: per processing activity, the categories it
//! covers, the event a period runs from, how many months, what happens at
//! the end (erase or anonymise), and the ground for keeping the data until
//! then. Compiled in from `data/retention.toml` (the seed policy, version
//! 2.1), replaceable by configuration; validated when loaded.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Deserialize;

use crate::deadline::add_months;
use crate::text::{Lang, Text};

/// What happens when a period ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtEnd {
    /// The data is deleted.
    Erase,
    /// The identifying values are replaced by values that relate to no one.
    Anonymise,
}

impl AtEnd {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Erase => "erase",
            Self::Anonymise => "anonymise",
        }
    }
}

/// One rule of the policy.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Stable id, e.g. "aml-kyc".
    pub id: String,
    /// The processing activity, in words (Swedish and English).
    pub activity: Text,
    /// The categories it covers (each in one rule only).
    pub categories: Vec<String>,
    /// The event the period runs from, e.g. "relationship_end".
    pub anchor: String,
    /// Months after the anchor (0: at the anchor).
    pub months: u32,
    /// What happens at the end.
    pub at_end: AtEnd,
    /// The ground for keeping the data while the anchor event has not
    /// happened (e.g. an open contract); absent when there is none.
    #[serde(default)]
    pub ground_while_anchor_open: Text,
    /// The law that sets the period, when one does: then the data is kept
    /// over an erasure request until the end (Art. 17(3)).
    #[serde(default)]
    pub legal_ground: Text,
    /// The only purpose the data may serve while kept over an erasure
    /// request (it is restricted to it).
    #[serde(default)]
    pub restrict_to: Text,
    /// Whether `ground_while_anchor_open` keeps the data over an erasure
    /// request (an open contract, a legal obligation, legal claims); a
    /// legitimate interest does not (Art. 17(1)(c)).
    #[serde(default)]
    pub open_ground_holds_over_erasure: bool,
}

impl Rule {
    /// The last day the data may be kept when the anchor event happened on
    /// `anchor`.
    pub fn retain_until(&self, anchor: NaiveDate) -> NaiveDate {
        add_months(anchor, self.months)
    }

    /// Whether a law, not the controller's choice, sets the period.
    pub fn set_by_law(&self) -> bool {
        !self.legal_ground.is_empty()
    }

    /// The anchor event in words, in `lang` (e.g. "the end of the business
    /// relationship").
    pub fn anchor_words(&self, lang: Lang) -> &'static str {
        let (sv, en) = match self.anchor.as_str() {
            "relationship_end" => (
                "att affärsrelationen upphört",
                "the end of the business relationship",
            ),
            "event_date" => ("eventet", "the event"),
            "last_interaction" => (
                "din senaste kontakt med oss",
                "your last interaction with us",
            ),
            "sent" => ("att brevet skickades", "the letter was sent"),
            "case_closed" => ("att ärendet avslutades", "the case was closed"),
            _ => ("insamlingen", "the data was collected"),
        };
        match lang {
            Lang::Sv => sv,
            Lang::En => en,
        }
    }
}

/// The policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// The privacy policy version it implements.
    pub policy_version: String,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
    by_category: BTreeMap<String, usize>,
}

/// Why a policy file was refused: the field and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    policy_version: String,
    rules: Vec<Rule>,
}

/// The anchor events a rule may run from.
pub const ANCHORS: &[&str] = &[
    "relationship_end",
    "event_date",
    "last_interaction",
    "sent",
    "case_closed",
    "collected_at",
];

fn slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn category_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

impl RetentionPolicy {
    /// The seed policy's rules.
    pub fn shipped() -> Self {
        Self::from_toml(include_str!("../data/retention.toml"))
            .expect("the shipped retention policy is valid")
    }

    /// Parses and checks a policy file.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let f: File = toml::from_str(text).map_err(|e| PolicyError(e.message().to_owned()))?;
        if f.policy_version.trim().is_empty() {
            return Err(PolicyError("policy_version is empty".into()));
        }
        if f.rules.is_empty() {
            return Err(PolicyError("no rules".into()));
        }
        let mut by_category = BTreeMap::new();
        let mut ids = std::collections::BTreeSet::new();
        for (i, r) in f.rules.iter().enumerate() {
            let at = |field: &str, what: &str| PolicyError(format!("rules[{i}].{field}: {what}"));
            if !slug(&r.id) {
                return Err(at("id", "lower-case letters, digits and -"));
            }
            if !ids.insert(r.id.as_str()) {
                return Err(at("id", "used twice"));
            }

            if r.categories.is_empty() {
                return Err(at("categories", "at least one"));
            }
            if !ANCHORS.contains(&r.anchor.as_str()) {
                return Err(at("anchor", &format!("one of {}", ANCHORS.join(", "))));
            }
            if r.months > 1200 {
                return Err(at("months", "at most 1200"));
            }
            if r.open_ground_holds_over_erasure && r.ground_while_anchor_open.is_empty() {
                return Err(at(
                    "open_ground_holds_over_erasure",
                    "needs ground_while_anchor_open",
                ));
            }
            if !r.restrict_to.is_empty() && r.legal_ground.is_empty() {
                return Err(at(
                    "restrict_to",
                    "only for data a law keeps over an erasure request (legal_ground)",
                ));
            }
            for (j, c) in r.categories.iter().enumerate() {
                if !category_id(c) {
                    return Err(at(&format!("categories[{j}]"), "not a category id"));
                }
                if by_category.insert(c.clone(), i).is_some() {
                    return Err(at(
                        &format!("categories[{j}]"),
                        "already covered by another rule",
                    ));
                }
            }
        }
        Ok(Self {
            policy_version: f.policy_version,
            rules: f.rules,
            by_category,
        })
    }

    /// The rule covering `category`, if any.
    pub fn rule_for(&self, category: &str) -> Option<&Rule> {
        self.by_category.get(category).map(|i| &self.rules[*i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn the_seed_policy_keeps_aml_data_five_years_by_law() {
        let p = RetentionPolicy::shipped();
        assert_eq!(p.policy_version, "2.1");
        let aml = p.rule_for("aml.pep_status").unwrap();
        assert_eq!(aml.id, "aml-kyc");
        assert!(aml.set_by_law());
        assert!(aml.legal_ground.en.contains("17(3)(b)") && aml.legal_ground.sv.contains("17.3 b"));
        assert_eq!(aml.retain_until(d("2023-11-23")), d("2028-11-23"));
        let contact = p.rule_for("contact.email").unwrap();
        assert!(!contact.set_by_law());
        assert_eq!(contact.retain_until(d("2024-02-29")), d("2026-02-28"));
        assert_eq!(
            p.rule_for("survey.ip_address").unwrap().at_end,
            AtEnd::Anonymise
        );
        assert!(p.rule_for("no.such").is_none());
    }

    #[test]
    fn bad_files_are_refused_naming_the_field() {
        let text = include_str!("../data/retention.toml");
        let cases = [
            (
                text.replacen(
                    "\"contact.name\",",
                    "\"contact.name\", \"aml.pep_status\",",
                    1,
                ),
                "already covered",
            ),
            (
                text.replacen("anchor = \"event_date\"", "anchor = \"birthday\"", 1),
                "anchor",
            ),
            (
                text.replacen("id = \"events\"", "id = \"aml-kyc\"", 1),
                "used twice",
            ),
            (
                text.replacen("at_end = \"anonymise\"", "at_end = \"shred\"", 1),
                "unknown variant",
            ),
            (text.replacen("months = 60", "months = 60000", 1), "months"),
        ];
        for (bad, expect) in cases {
            let err = RetentionPolicy::from_toml(&bad).unwrap_err().to_string();
            assert!(err.contains(expect), "{expect}: {err}");
        }
    }
}
