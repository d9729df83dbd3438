//! The message with a one-time code, in Swedish and English, from a file a
//! company edits (`data/code-message.toml` is the shipped one).

use serde::Deserialize;

/// The shipped message.
const SHIPPED: &str = include_str!("../data/code-message.toml");

/// One language's subject and body.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct Text {
    subject: String,
    body: String,
}

/// The code message in both languages.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CodeMessage {
    sv: Text,
    en: Text,
}

impl Default for CodeMessage {
    fn default() -> Self {
        Self::shipped()
    }
}

impl CodeMessage {
    /// The shipped message.
    pub fn shipped() -> Self {
        // The shipped file is checked by this crate's tests.
        Self::from_toml(SHIPPED).unwrap_or_else(|e| panic!("shipped code-message.toml: {e}"))
    }

    /// Reads and checks a message file: both languages, a one-line subject,
    /// a body with `{code}`, and no name but `{code}` and `{minutes}`.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let m: Self = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        for (lang, t) in [("sv", &m.sv), ("en", &m.en)] {
            if t.subject.trim().is_empty() || t.subject.contains('\n') {
                return Err(format!("{lang}.subject: one line of text"));
            }
            if !t.body.contains("{code}") {
                return Err(format!("{lang}.body: must carry the code, {{code}}"));
            }
            for (field, s) in [("subject", &t.subject), ("body", &t.body)] {
                let mut rest = s.as_str();
                while let Some(at) = rest.find('{') {
                    let name = rest[at + 1..].split('}').next().unwrap_or_default();
                    if !matches!(name, "code" | "minutes") {
                        return Err(format!(
                            "{lang}.{field}: unknown name {{{name}}} (only {{code}} and {{minutes}})"
                        ));
                    }
                    rest = &rest[at + 1..];
                }
            }
        }
        Ok(m)
    }

    /// The subject and body in `language` ("en", else Swedish) with the
    /// code and its minutes filled in.
    pub fn write(&self, language: &str, code: &str, minutes: i64) -> (String, String) {
        let t = if language == "en" { &self.en } else { &self.sv };
        let fill = |s: &str| {
            s.replace("{code}", code)
                .replace("{minutes}", &minutes.to_string())
        };
        (fill(&t.subject), fill(&t.body))
    }
}

#[cfg(test)]
mod tests {
    use super::CodeMessage;

    #[test]
    fn the_shipped_message_reads_and_a_broken_one_is_named() {
        let m = CodeMessage::shipped();
        let (subject, body) = m.write("en", "123456", 10);
        assert_eq!(subject, "Your verification code");
        assert!(
            body.contains("123456") && body.contains("10 minutes"),
            "{body}"
        );
        let (subject, body) = m.write("sv", "654321", 15);
        assert_eq!(subject, "Din verifieringskod");
        assert!(
            body.contains("654321") && body.contains("15 minuter"),
            "{body}"
        );
        let ok = "[sv]\nsubject = \"Kod\"\nbody = \"{code}\"\n[en]\nsubject = \"Code\"\nbody = \"{code} ({minutes} min)\"\n";
        assert!(CodeMessage::from_toml(ok).is_ok());
        let no_code = ok.replace("body = \"{code}\"", "body = \"din kod\"");
        assert!(
            CodeMessage::from_toml(&no_code)
                .unwrap_err()
                .contains("sv.body")
        );
        let unknown = ok.replace("{minutes}", "{name}");
        assert!(
            CodeMessage::from_toml(&unknown)
                .unwrap_err()
                .contains("{name}")
        );
        let one_language = "[sv]\nsubject = \"Kod\"\nbody = \"{code}\"\n";
        assert!(
            CodeMessage::from_toml(one_language)
                .unwrap_err()
                .contains("en")
        );
    }
}
