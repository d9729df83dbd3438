//! Texts a person reads, in every language the mesh answers in: Swedish
//! (the seed policy's language, the default) and English.
//!
//! In a manifest, a seed or a policy file, a text is written either in
//! both languages, `{ sv: "Namn", en: "Name" }`, or, when it truly reads the
//! same in both (a proper name, an e-mail address), declared so with
//! `{ same: "Intrum Sverige AB" }`. A plain string, a missing or empty
//! language, or the same words given twice as `sv` and `en` is refused when
//! the file is read, so a missing translation stops the start rather than
//! showing a person a text in the wrong language.

use serde::{Deserialize, Deserializer, Serialize};

/// `s` made safe inside HTML, attribute values included: how every page
/// and report the mesh renders shows a text.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A language the mesh answers in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lang {
    /// Swedish.
    Sv,
    /// English.
    En,
}

impl Lang {
    /// Every language, Swedish first.
    pub const ALL: [Lang; 2] = [Lang::Sv, Lang::En];

    /// The ISO 639-1 code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Sv => "sv",
            Self::En => "en",
        }
    }

    /// From an ISO 639-1 code.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.code() == code)
    }

    /// The language a request asks for: its code, or none given for
    /// Swedish (the default); `None` for a language the mesh does not
    /// answer in.
    pub fn requested(code: &str) -> Option<Self> {
        if code.is_empty() {
            Some(Self::Sv)
        } else {
            Self::parse(code)
        }
    }
}

/// A text (or a list of texts) in Swedish and English.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Texts<T> {
    /// Swedish.
    pub sv: T,
    /// English.
    pub en: T,
    /// Declared the same in every language (`{ same: … }`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub same: bool,
}

/// One text in both languages.
pub type Text = Texts<String>;
/// A list of texts (purposes, say) in both languages.
pub type TextList = Texts<Vec<String>>;

impl<T> Texts<T> {
    /// The text in `lang`.
    pub fn get(&self, lang: Lang) -> &T {
        match lang {
            Lang::Sv => &self.sv,
            Lang::En => &self.en,
        }
    }
}

impl<T: Clone> Texts<T> {
    /// Declared the same in every language.
    pub fn same(t: T) -> Self {
        Self {
            sv: t.clone(),
            en: t,
            same: true,
        }
    }
}

impl Text {
    /// A text in both languages (not checked: see [`Texts::check`]).
    pub fn new(sv: impl Into<String>, en: impl Into<String>) -> Self {
        Self {
            sv: sv.into(),
            en: en.into(),
            same: false,
        }
    }

    /// Nothing in either language.
    pub fn is_empty(&self) -> bool {
        self.sv.is_empty() && self.en.is_empty()
    }
}

/// Something that is empty in a language.
pub trait Blank {
    /// Empty (or only blanks).
    fn blank(&self) -> bool;
}

impl Blank for String {
    fn blank(&self) -> bool {
        self.trim().is_empty()
    }
}

impl Blank for Vec<String> {
    fn blank(&self) -> bool {
        self.is_empty() || self.iter().any(|s| s.trim().is_empty())
    }
}

impl<T: Blank + PartialEq> Texts<T> {
    /// Why the texts are unusable: a language empty, or both the same
    /// without being declared so.
    pub fn check(&self) -> Result<(), &'static str> {
        for lang in Lang::ALL {
            if self.get(lang).blank() {
                return Err(match lang {
                    Lang::Sv => "the Swedish text (sv) is missing or empty",
                    Lang::En => "the English text (en) is missing or empty",
                });
            }
        }
        if !self.same && self.sv == self.en {
            return Err(
                "sv and en are the same words: translate it, or write { same: … } when it truly reads the same in both",
            );
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Both<T> {
    sv: Option<T>,
    en: Option<T>,
    same: Option<T>,
}

impl<'de, T> Deserialize<'de> for Texts<T>
where
    T: Deserialize<'de> + Clone + Default + Blank + PartialEq,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let both = Both::<T>::deserialize(d).map_err(|e| {
            D::Error::custom(format!(
                "{e}; a text a person reads is written {{ sv: …, en: … }} (or {{ same: … }} when it reads the same in both languages)"
            ))
        })?;
        let t = match both {
            Both {
                same: Some(t),
                sv: None,
                en: None,
            } => Self::same(t),
            Both { same: Some(_), .. } => {
                return Err(D::Error::custom("same goes alone, without sv or en"));
            }
            Both { sv, en, same: None } => Self {
                sv: sv.unwrap_or_default(),
                en: en.unwrap_or_default(),
                same: false,
            },
        };
        t.check().map_err(D::Error::custom)?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_in_no_language_is_answered_in_swedish_and_only_sv_and_en_are_known() {
        assert_eq!(Lang::requested(""), Some(Lang::Sv));
        assert_eq!(Lang::requested("sv"), Some(Lang::Sv));
        assert_eq!(Lang::requested("en"), Some(Lang::En));
        assert_eq!(Lang::requested("EN"), None);
        assert_eq!(Lang::requested("de"), None);
        assert_eq!(Lang::parse(""), None);
    }

    #[test]
    fn html_is_escaped_in_text_and_attributes() {
        assert_eq!(
            html_escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    fn parse(s: &str) -> Result<Text, String> {
        #[derive(Deserialize)]
        struct W {
            t: Text,
        }
        toml::from_str::<W>(s)
            .map(|w| w.t)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_text_is_given_in_both_languages_or_declared_the_same() {
        let t = parse("t = { sv = \"Namn\", en = \"Name\" }").unwrap();
        assert_eq!(
            (t.get(Lang::Sv).as_str(), t.get(Lang::En).as_str()),
            ("Namn", "Name")
        );
        let t = parse("t = { same = \"Intrum Sverige AB\" }").unwrap();
        assert!(t.same);
        assert_eq!(t.get(Lang::Sv), t.get(Lang::En));
    }

    #[test]
    fn a_missing_or_untranslated_text_is_refused() {
        for (text, why) in [
            ("t = \"Name\"", "{ sv: …, en: … }"),
            ("t = { en = \"Name\" }", "Swedish"),
            ("t = { sv = \"Namn\", en = \" \" }", "English"),
            ("t = { sv = \"Name\", en = \"Name\" }", "same words"),
            ("t = { same = \"X\", sv = \"X\" }", "alone"),
            (
                "t = { sv = \"a\", en = \"b\", fr = \"c\" }",
                "unknown field",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn lists_are_lists_in_both_languages() {
        #[derive(Deserialize)]
        struct W {
            t: TextList,
        }
        let w: W = toml::from_str(
            "t = { sv = [\"förhindra, upptäcka och bevisa bedrägerier\"], en = [\"prevent, detect and prove fraud\"] }",
        )
        .unwrap();
        assert_eq!(w.t.en, ["prevent, detect and prove fraud"]);
        assert!(
            toml::from_str::<W>("t = { sv = [], en = [\"x\"] }").is_err(),
            "an empty list"
        );
    }
}
