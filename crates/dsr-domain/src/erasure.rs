//! The erasure plan's rule: what happens to one record when the person asks
//! for erasure. A legal hold keeps it; a period set by law keeps it until
//! the period ends (Art. 17(3)(b), (e)); a ground that holds while the
//! anchor event has not happened (an open contract) keeps it while it
//! lasts; otherwise it is erased, or anonymised where the policy says so.
//! Pure: the caller brings the record's categories, its anchor date and
//! the holds that apply to it.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::retention::{AtEnd, RetentionPolicy};
use crate::text::Lang;

/// What the plan does with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Deleted (or its personal data nulled) at its system.
    Erase,
    /// Its identifying values replaced by values that relate to no one.
    Anonymise,
    /// Kept, restricted to storage, with a ground and (when known) a date.
    Retain,
}

impl Action {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Erase => "erase",
            Self::Anonymise => "anonymise",
            Self::Retain => "retain",
        }
    }

    /// Parses [`Action::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Erase, Self::Anonymise, Self::Retain]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// A legal hold that applies to a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldRef {
    /// The hold's id.
    pub id: String,
    /// Why, e.g. "litigation 2026-T-1234: preserve evidence".
    pub ground: String,
    /// Until when; `None` until it is lifted.
    pub until: Option<NaiveDate>,
}

/// The decision for one record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// What happens.
    pub action: Action,
    /// For a retained record: the legal ground (English, as case handlers
    /// and receipts read it).
    pub ground: String,
    /// The same in Swedish, for the person's answer.
    #[serde(default)]
    pub ground_sv: String,
    /// For a retained record: the last day it is kept; `None` while the
    /// period has not begun or the hold stands.
    pub retain_until: Option<NaiveDate>,
    /// The policy rule that decided, when one did.
    pub rule_id: String,
    /// For a retained record: the only purpose it may still serve.
    pub restrict_to: String,
    /// Retained because of a legal hold (it ends when the hold is lifted,
    /// not on a date set by law).
    #[serde(default)]
    pub hold: bool,
}

impl Decision {
    fn removal(action: Action, rule_id: String) -> Self {
        Self {
            action,
            ground: String::new(),
            ground_sv: String::new(),
            retain_until: None,
            rule_id,
            restrict_to: String::new(),
            hold: false,
        }
    }

    /// Whether a retention keeps the record longer than `other` (no date
    /// means no end yet).
    fn outlasts(&self, other: &Self) -> bool {
        match (self.retain_until, other.retain_until) {
            (None, Some(_)) => true,
            (Some(a), Some(b)) => a > b,
            (Some(_) | None, None) => false,
        }
    }
}

/// Decides what happens to a record of `categories` whose retention anchor
/// event happened on `anchor` (`None`: not yet), under `holds`, on `today`.
pub fn decide(
    policy: &RetentionPolicy,
    categories: &[String],
    anchor: Option<NaiveDate>,
    holds: &[HoldRef],
    today: NaiveDate,
) -> Decision {
    if !holds.is_empty() {
        let until = if holds.iter().any(|h| h.until.is_none()) {
            None
        } else {
            holds.iter().filter_map(|h| h.until).max()
        };
        let ground = holds
            .iter()
            .map(|h| format!("legal hold {}: {}", h.id, h.ground))
            .collect::<Vec<_>>()
            .join("; ");
        let ground_sv = holds
            .iter()
            .map(|h| format!("rättsligt kvarhållande {}: {}", h.id, h.ground))
            .collect::<Vec<_>>()
            .join("; ");
        return Decision {
            action: Action::Retain,
            ground,
            ground_sv,
            retain_until: until,
            rule_id: String::new(),
            restrict_to: "the legal claim the hold serves".into(),
            hold: true,
        };
    }
    let mut kept: Option<Decision> = None;
    let mut anonymise = false;
    let mut erase = false;
    let mut rule_ids = Vec::new();
    for c in categories {
        let Some(rule) = policy.rule_for(c) else {
            erase = true;
            continue;
        };
        if !rule_ids.contains(&rule.id) {
            rule_ids.push(rule.id.clone());
        }
        let keep = match anchor {
            Some(a) if rule.set_by_law() => {
                let until = rule.retain_until(a);
                (until >= today).then(|| Decision {
                    action: Action::Retain,
                    ground: rule.legal_ground.en.clone(),
                    ground_sv: rule.legal_ground.sv.clone(),
                    retain_until: Some(until),
                    rule_id: rule.id.clone(),
                    restrict_to: rule.restrict_to.en.clone(),
                    hold: false,
                })
            }
            None if rule.open_ground_holds_over_erasure => Some(Decision {
                action: Action::Retain,
                ground: if rule.set_by_law() {
                    format!(
                        "{}; then {} months from {} ({})",
                        rule.ground_while_anchor_open.en,
                        rule.months,
                        rule.anchor_words(Lang::En),
                        rule.legal_ground.en
                    )
                } else {
                    rule.ground_while_anchor_open.en.clone()
                },
                ground_sv: if rule.set_by_law() {
                    format!(
                        "{}; därefter {} månader från {} ({})",
                        rule.ground_while_anchor_open.sv,
                        rule.months,
                        rule.anchor_words(Lang::Sv),
                        rule.legal_ground.sv
                    )
                } else {
                    rule.ground_while_anchor_open.sv.clone()
                },
                retain_until: None,
                rule_id: rule.id.clone(),
                restrict_to: rule.restrict_to.en.clone(),
                hold: false,
            }),
            Some(_) | None => None,
        };
        match keep {
            Some(d) => {
                if kept.as_ref().is_none_or(|k| d.outlasts(k)) {
                    kept = Some(d);
                }
            }
            None => match rule.at_end {
                AtEnd::Anonymise => anonymise = true,
                AtEnd::Erase => erase = true,
            },
        }
    }
    if let Some(k) = kept {
        return k;
    }
    let action = if anonymise && !erase {
        Action::Anonymise
    } else {
        Action::Erase
    };
    Decision::removal(action, rule_ids.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn cats(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn aml_data_is_kept_five_years_from_the_end_of_the_relationship() {
        let p = RetentionPolicy::shipped();
        let today = d("2026-12-01");
        let dec = decide(
            &p,
            &cats(&["aml.identity_document"]),
            Some(d("2023-11-15")),
            &[],
            today,
        );
        assert_eq!(dec.action, Action::Retain);
        assert_eq!(dec.retain_until, Some(d("2028-11-15")));
        assert!(dec.ground.contains("17(3)(b)"), "{}", dec.ground);
        assert_eq!(dec.rule_id, "aml-kyc");
        // Past the five years: erased.
        let old = decide(
            &p,
            &cats(&["aml.pep_status"]),
            Some(d("2020-01-10")),
            &[],
            today,
        );
        assert_eq!(old.action, Action::Erase);
        // Relationship still open: kept, no date yet.
        let open = decide(&p, &cats(&["aml.pep_status"]), None, &[], today);
        assert_eq!(open.action, Action::Retain);
        assert_eq!(open.retain_until, None);
        assert!(open.ground.contains("6(1)(c)"), "{}", open.ground);
    }

    #[test]
    fn contact_data_is_kept_only_while_the_contract_is_open() {
        let p = RetentionPolicy::shipped();
        let today = d("2026-12-01");
        let c = cats(&["contact.name", "contact.email", "identity.personnummer"]);
        let open = decide(&p, &c, None, &[], today);
        assert_eq!(open.action, Action::Retain);
        assert!(open.ground.contains("6(1)(b)"), "{}", open.ground);
        // Ended a year ago: the 24 months are the controller's choice, not
        // a law, so the erasure request wins.
        let ended = decide(&p, &c, Some(d("2025-12-01")), &[], today);
        assert_eq!(ended.action, Action::Erase);
    }

    #[test]
    fn surveys_are_anonymised_and_a_legitimate_interest_does_not_keep_them() {
        let p = RetentionPolicy::shipped();
        let dec = decide(
            &p,
            &cats(&["survey.answers", "survey.ip_address"]),
            None,
            &[],
            d("2026-12-01"),
        );
        assert_eq!(dec.action, Action::Anonymise);
        let events = decide(
            &p,
            &cats(&["event.registration"]),
            Some(d("2026-11-01")),
            &[],
            d("2026-12-01"),
        );
        assert_eq!(events.action, Action::Erase);
    }

    #[test]
    fn a_hold_keeps_anything_and_the_longest_retention_wins() {
        let p = RetentionPolicy::shipped();
        let today = d("2026-12-01");
        let hold = HoldRef {
            id: "h1".into(),
            ground: "dispute 2026-T-1".into(),
            until: Some(d("2027-06-30")),
        };
        let dec = decide(
            &p,
            &cats(&["event.registration"]),
            Some(d("2026-11-01")),
            std::slice::from_ref(&hold),
            today,
        );
        assert_eq!(dec.action, Action::Retain);
        assert_eq!(dec.retain_until, Some(d("2027-06-30")));
        assert!(dec.ground.starts_with("legal hold h1"));
        let open = HoldRef {
            until: None,
            ..hold.clone()
        };
        let dec = decide(&p, &cats(&["contact.name"]), None, &[hold, open], today);
        assert_eq!(dec.retain_until, None);
        // A record holding both contact and AML categories: the AML period
        // (dated) loses to the open contract (undated, lasts longer).
        let dec = decide(
            &p,
            &cats(&["contact.name", "aml.pep_status"]),
            None,
            &[],
            today,
        );
        assert_eq!(dec.action, Action::Retain);
        assert_eq!(dec.retain_until, None);
    }

    #[test]
    fn a_category_without_a_rule_is_erased() {
        let p = RetentionPolicy::shipped();
        let dec = decide(&p, &cats(&["unknown.thing"]), None, &[], d("2026-12-01"));
        assert_eq!(dec.action, Action::Erase);
    }
}
