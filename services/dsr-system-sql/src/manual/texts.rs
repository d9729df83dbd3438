//! The emails' texts, in Swedish and English, from a TOML file the company
//! can edit (`data/manual-texts.toml` is the built-in default).

use std::collections::BTreeMap;

use serde::Deserialize;

/// The built-in texts.
pub const DEFAULT: &str = include_str!("../../data/manual-texts.toml");

/// Messages a task's life sends.
pub const MESSAGES: &[&str] = &[
    "locate",
    "erase",
    "rectify",
    "restrict",
    "lift_restriction",
    "reminder",
    "escalation",
];

/// Words the messages' lists use: identity types and what to do.
pub const WORDS: &[&str] = &[
    "email",
    "phone",
    "personnummer",
    "organisationsnummer",
    "customer_id",
    "keep",
    "set_to",
];

/// The languages every message exists in.
pub const LANGUAGES: &[&str] = &["sv", "en"];

#[derive(Clone, Debug, Deserialize)]
struct Letter {
    subject: String,
    body: String,
}

#[derive(Clone, Debug, Deserialize)]
struct Answer {
    text: String,
}

#[derive(Clone, Debug, Deserialize)]
struct Language {
    kinds: BTreeMap<String, String>,
    words: BTreeMap<String, String>,
    answer: Answer,
    #[serde(flatten)]
    letters: BTreeMap<String, Letter>,
}

/// The texts of every language.
#[derive(Clone, Debug)]
pub struct Texts {
    languages: BTreeMap<String, Language>,
}

/// A subject and a body, placeholders filled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Email {
    /// The subject line.
    pub subject: String,
    /// The text.
    pub body: String,
}

impl Texts {
    /// Parses and checks `text`: every language has every message and the
    /// name of every task kind. The error names what is missing.
    pub fn parse(text: &str) -> Result<Self, String> {
        let languages: BTreeMap<String, Language> =
            toml::from_str(text).map_err(|e| e.message().to_owned())?;
        for lang in LANGUAGES {
            let l = languages
                .get(*lang)
                .ok_or_else(|| format!("no [{lang}] texts"))?;
            for m in MESSAGES {
                if !l.letters.contains_key(*m) {
                    return Err(format!("no [{lang}.{m}] subject and body"));
                }
            }
            for k in &MESSAGES[..5] {
                if !l.kinds.contains_key(*k) {
                    return Err(format!("no {k} in [{lang}.kinds]"));
                }
            }
            for w in WORDS {
                if !l.words.contains_key(*w) {
                    return Err(format!("no {w} in [{lang}.words]"));
                }
            }
        }
        Ok(Self { languages })
    }

    /// The built-in texts.
    pub fn builtin() -> Self {
        Self::parse(DEFAULT).expect("the built-in texts are complete")
    }

    /// What a task of `kind` asks, in `lang`.
    pub fn kind(&self, lang: &str, kind: &str) -> String {
        self.lang(lang).kinds.get(kind).cloned().unwrap_or_default()
    }

    /// A word of the lists in `lang`.
    pub fn word(&self, lang: &str, word: &str) -> String {
        self.lang(lang)
            .words
            .get(word)
            .cloned()
            .unwrap_or_else(|| word.to_owned())
    }

    /// `message` in `lang` with `{name}` placeholders replaced by `vars`
    /// (and `{answer}` by the how-to-answer paragraph).
    pub fn render(&self, lang: &str, message: &str, vars: &[(&str, String)]) -> Email {
        let l = self.lang(lang);
        let fill = |t: &str| {
            let mut out = t.to_owned();
            for (k, v) in vars {
                out = out.replace(&format!("{{{k}}}"), v);
            }
            out
        };
        let answer = fill(&l.answer.text);
        let letter = &l.letters[message];
        Email {
            subject: fill(&letter.subject),
            body: fill(&letter.body).replace("{answer}", &answer),
        }
    }

    fn lang(&self, lang: &str) -> &Language {
        self.languages
            .get(lang)
            .or_else(|| self.languages.get("en"))
            .expect("checked: en exists")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_texts_fill_every_placeholder_in_both_languages() {
        let t = Texts::builtin();
        let vars: Vec<(&str, String)> = [
            "contact",
            "system",
            "task",
            "request",
            "controller",
            "due",
            "items",
            "days",
            "kind",
        ]
        .iter()
        .map(|k| (*k, format!("<{k}>")))
        .collect();
        for lang in LANGUAGES {
            for m in MESSAGES {
                let e = t.render(lang, m, &vars);
                assert!(
                    !e.subject.contains('{') && !e.body.contains('{'),
                    "{lang}.{m}: {e:?}"
                );
                assert!(e.body.contains("<task>"), "{lang}.{m} names the task");
            }
        }
        assert_ne!(
            t.render("sv", "locate", &vars).subject,
            t.render("en", "locate", &vars).subject
        );
    }

    #[test]
    fn a_company_file_missing_a_message_is_refused_naming_it() {
        let cut = DEFAULT.replace("[en.reminder]", "[en.reminder_gone]");
        assert_eq!(
            Texts::parse(&cut).unwrap_err(),
            "no [en.reminder] subject and body"
        );
    }
}
