//! The letters the mesh writes to a person about their request (Art. 12):
//! received, identity needed, extended (Art. 12(3)), completed, refused
//! (Art. 12(4)) and restriction lifted (Art. 18(3)), each in Swedish and
//! English from a TOML file the company edits (`data/letters.toml` is the
//! shipped one).
//!
//! A template names what it needs in braces (`{due}`, `{reason}`); a file
//! is refused when it reads: a letter or a language missing, an unknown
//! name in braces, or a letter leaving out what the law says it must tell
//! (the reason and the months of an extension; the reason, the authority
//! and the courts of a refusal; how to fetch the answer of a completed
//! request). A letter never carries the person's data: the answer is
//! fetched from the privacy centre.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::request::Kind;
use crate::text::{Lang, Text};

/// The letters shipped with the mesh.
pub const SHIPPED: &str = include_str!("../data/letters.toml");

/// A letter about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LetterKind {
    /// The request is recorded, with its due date.
    Received,
    /// The request waits for stronger identification.
    IdentityNeeded,
    /// The deadline is extended, with the reason (Art. 12(3)).
    Extended,
    /// The answer is ready (how to fetch it; never the data itself).
    Completed,
    /// The request is refused: the reason, the right to complain to the
    /// supervisory authority and to seek a judicial remedy (Art. 12(4)).
    Refused,
    /// A restriction is about to be lifted (Art. 18(3): told before).
    RestrictionLifted,
    /// A personal-data breach likely to result in a high risk (Art. 34(2)):
    /// its nature, the DPO, the likely consequences, the measures.
    BreachNotice,
    /// The DPO's answer to a complaint, with the right to complain to the
    /// supervisory authority.
    ComplaintAnswer,
}

impl LetterKind {
    /// Every letter.
    pub const ALL: [LetterKind; 8] = [
        Self::Received,
        Self::IdentityNeeded,
        Self::Extended,
        Self::Completed,
        Self::Refused,
        Self::RestrictionLifted,
        Self::BreachNotice,
        Self::ComplaintAnswer,
    ];

    /// Its name in the file and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::IdentityNeeded => "identity_needed",
            Self::Extended => "extended",
            Self::Completed => "completed",
            Self::Refused => "refused",
            Self::RestrictionLifted => "restriction_lifted",
            Self::BreachNotice => "breach_notice",
            Self::ComplaintAnswer => "complaint_answer",
        }
    }

    /// From its name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// What the letter must tell, by name.
    fn required(self) -> &'static [&'static str] {
        match self {
            Self::Received => &["reference", "due"],
            Self::IdentityNeeded => &["reference"],
            Self::Extended => &["reference", "due", "months", "reason"],
            Self::Completed => &["reference", "fetch"],
            Self::Refused => &["reference", "reason", "authority", "authority_url"],
            Self::RestrictionLifted => &["reference", "lift_on"],
            Self::BreachNotice => &["reference", "nature", "consequences", "measures", "dpo"],
            Self::ComplaintAnswer => &["reference", "answer", "authority", "authority_url"],
        }
    }
}

/// Every name a template may use.
pub const NAMES: &[&str] = &[
    "reference",
    "company",
    "kind",
    "received",
    "due",
    "months",
    "reason",
    "fetch",
    "dpo",
    "authority",
    "authority_url",
    "lift_on",
    "nature",
    "consequences",
    "measures",
    "answer",
];

/// The refusal reasons a letter explains, by their wire names.
pub const REASONS: &[&str] = &[
    "identity_insufficient",
    "manifestly_unfounded_or_excessive",
    "no_data",
    "other",
];

/// One letter's texts.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// The subject line.
    pub subject: Text,
    /// The body (plain text).
    pub body: Text,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    letters: BTreeMap<String, Template>,
    kinds: BTreeMap<String, Text>,
    reasons: BTreeMap<String, Text>,
    notification: BTreeMap<String, Text>,
}

/// The headings of a notification to the supervisory authority
/// (Art. 33(3)), each required in both languages.
pub const NOTIFICATION: &[&str] = &[
    "title",
    "controllers",
    "reference",
    "nature",
    "started",
    "discovered",
    "reported",
    "systems",
    "categories",
    "people",
    "records",
    "window",
    "dpo",
    "consequences",
    "measures",
    "containment",
    "risk",
    "people_told",
    "late",
    "missing",
    "unknown",
    "not_asked",
    "people_unit",
    "records_unit",
];

/// Why a letters file was refused (the letter and the language named).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LettersError(String);

/// A letter written out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The subject line.
    pub subject: String,
    /// The body.
    pub body: String,
}

/// Every letter, every request kind's and refusal reason's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Letters {
    letters: BTreeMap<LetterKind, Template>,
    kinds: BTreeMap<Kind, Text>,
    reasons: BTreeMap<String, Text>,
    notification: BTreeMap<String, Text>,
}

/// The names in braces in `s`; an unclosed brace is an error.
fn names(s: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| "a '{' without its '}'".to_owned())?;
        out.push(&after[..close]);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err("a '}' without its '{'".into());
    }
    Ok(out)
}

impl Letters {
    /// The shipped letters.
    pub fn shipped() -> Self {
        Self::from_toml(SHIPPED).expect("the shipped letters are valid")
    }

    /// Reads and checks a letters file.
    pub fn from_toml(text: &str) -> Result<Self, LettersError> {
        let f: File = toml::from_str(text).map_err(|e| LettersError(e.to_string()))?;
        let mut letters = BTreeMap::new();
        for (name, t) in f.letters {
            let kind = LetterKind::parse(&name).ok_or_else(|| {
                LettersError(format!("letters.{name}: not a letter the mesh sends"))
            })?;
            for lang in Lang::ALL {
                for (part, s) in [("subject", t.subject.get(lang)), ("body", t.body.get(lang))] {
                    let used = names(s).map_err(|e| {
                        LettersError(format!("letters.{name}.{part}.{}: {e}", lang.code()))
                    })?;
                    if let Some(bad) = used.iter().find(|n| !NAMES.contains(n)) {
                        return Err(LettersError(format!(
                            "letters.{name}.{part}.{}: unknown {{{bad}}} (known: {})",
                            lang.code(),
                            NAMES.join(", ")
                        )));
                    }
                }
                let all = format!("{} {}", t.subject.get(lang), t.body.get(lang));
                let used = names(&all).unwrap_or_default();
                if let Some(missing) = kind.required().iter().find(|n| !used.contains(n)) {
                    return Err(LettersError(format!(
                        "letters.{name}.{}: must tell {{{missing}}}",
                        lang.code()
                    )));
                }
            }
            letters.insert(kind, t);
        }
        if let Some(missing) = LetterKind::ALL.iter().find(|k| !letters.contains_key(k)) {
            return Err(LettersError(format!(
                "letters.{}: missing",
                missing.as_str()
            )));
        }
        let mut kinds = BTreeMap::new();
        for (name, t) in f.kinds {
            let kind = Kind::parse(&name)
                .ok_or_else(|| LettersError(format!("kinds.{name}: not a kind of request")))?;
            kinds.insert(kind, t);
        }
        for k in Kind::ALL {
            if !kinds.contains_key(&k) {
                return Err(LettersError(format!("kinds.{}: missing", k.as_str())));
            }
        }
        for r in REASONS {
            if !f.reasons.contains_key(*r) {
                return Err(LettersError(format!("reasons.{r}: missing")));
            }
        }
        if let Some(extra) = f.reasons.keys().find(|r| !REASONS.contains(&r.as_str())) {
            return Err(LettersError(format!(
                "reasons.{extra}: not a refusal reason"
            )));
        }
        if let Some(missing) = NOTIFICATION
            .iter()
            .find(|k| !f.notification.contains_key(**k))
        {
            return Err(LettersError(format!("notification.{missing}: missing")));
        }
        Ok(Self {
            letters,
            kinds,
            reasons: f.reasons,
            notification: f.notification,
        })
    }

    /// A heading of the notification to the supervisory authority in
    /// `lang` (see [`NOTIFICATION`]).
    pub fn notification(&self, key: &str, lang: Lang) -> &str {
        self.notification
            .get(key)
            .map_or("", |t| t.get(lang).as_str())
    }

    /// The words for a kind of request in `lang`.
    pub fn kind(&self, k: Kind, lang: Lang) -> &str {
        self.kinds.get(&k).map_or("", |t| t.get(lang).as_str())
    }

    /// The words for a refusal reason in `lang` (empty for an unknown one).
    pub fn reason(&self, r: &str, lang: Lang) -> &str {
        self.reasons.get(r).map_or("", |t| t.get(lang).as_str())
    }

    /// Letter `kind` in `lang`, with `values` (by name) in place of the
    /// names in braces; a name without a value is left out.
    pub fn write(&self, kind: LetterKind, lang: Lang, values: &BTreeMap<&str, String>) -> Written {
        let t = &self.letters[&kind];
        let fill = |s: &str| {
            let mut out = String::with_capacity(s.len() + 64);
            let mut rest = s;
            while let Some(open) = rest.find('{') {
                out.push_str(&rest[..open]);
                let after = &rest[open + 1..];
                let Some(close) = after.find('}') else {
                    out.push_str(&rest[open..]);
                    return out;
                };
                if let Some(v) = values.get(&after[..close]) {
                    out.push_str(v);
                }
                rest = &after[close + 1..];
            }
            out.push_str(rest);
            out
        };
        Written {
            subject: fill(t.subject.get(lang)),
            body: fill(t.body.get(lang)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("reference", "0f3c2a1e".to_owned()),
            ("company", "Intrum Sverige AB".to_owned()),
            ("due", "2027-01-04".to_owned()),
            ("months", "1".to_owned()),
            ("reason", "Uppgifter hos ombud utomlands".to_owned()),
            ("authority", "IMY".to_owned()),
            ("authority_url", "https://www.imy.se".to_owned()),
            ("fetch", "https://privacy.example.se/sv/status".to_owned()),
            ("lift_on", "2027-01-10".to_owned()),
            ("nature", "Ett obehörigt intrång i CRM-systemet".to_owned()),
            ("consequences", "Risk för identitetsstöld".to_owned()),
            ("measures", "Spärrade konton".to_owned()),
            ("answer", "Vi har rättat uppgiften".to_owned()),
        ])
    }

    #[test]
    fn the_shipped_letters_say_what_the_law_asks_in_both_languages() {
        let l = Letters::shipped();
        for kind in LetterKind::ALL {
            let sv = l.write(kind, Lang::Sv, &values());
            let en = l.write(kind, Lang::En, &values());
            assert!(sv.body.contains("0f3c2a1e") && en.body.contains("0f3c2a1e"));
            assert_ne!(sv.body, en.body, "{kind:?}");
            assert!(!sv.body.contains('{') && !en.subject.contains('{'));
        }
        let refused = l.write(LetterKind::Refused, Lang::Sv, &values());
        assert!(
            refused.body.contains("https://www.imy.se"),
            "{}",
            refused.body
        );
        let extended = l.write(LetterKind::Extended, Lang::En, &values());
        assert!(extended.body.contains("Uppgifter hos ombud utomlands"));
        assert!(!l.kind(Kind::Erasure, Lang::Sv).is_empty());
        assert!(!l.reason("no_data", Lang::En).is_empty());
    }

    #[test]
    fn a_file_missing_what_the_law_asks_or_naming_the_unknown_is_refused() {
        let bad = SHIPPED.replacen("{reason}", "", 100);
        let e = Letters::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("must tell {reason}"), "{e}");
        let bad = SHIPPED.replacen(
            "ärendenummer är {reference}",
            "ärendenummer är {referens}",
            1,
        );
        let e = Letters::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("unknown {referens}"), "{e}");
        let bad = SHIPPED.replacen("[letters.refused]", "[letters.refusd]", 1);
        let e = Letters::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("letters.refusd"), "{e}");
        let bad = SHIPPED.replacen("senast {due}.", "senast {due.", 1);
        assert!(Letters::from_toml(&bad).is_err());
    }
}
