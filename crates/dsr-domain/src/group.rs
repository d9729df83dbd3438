//! The controller group: its legal entities, its data protection officer,
//! the supervisory authority and the privacy policy version in force. Data,
//! compiled in from `data/group.toml`, replaceable by configuration.

use chrono::NaiveDate;
use serde::Deserialize;

use crate::identity::Organisationsnummer;

/// One controller entity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Controller {
    /// Its organisationsnummer.
    pub organisation_number: Organisationsnummer,
    /// Its registered name.
    pub name: String,
}

/// The privacy policy in force.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Policy {
    /// E.g. "2.1".
    pub version: String,
    /// When it was published.
    pub published: NaiveDate,
}

/// The supervisory authority complaints go to (Art. 15(1)(f), Art. 77).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Authority {
    /// Its name in Swedish.
    pub name_sv: String,
    /// Its name in English.
    pub name_en: String,
    /// Its web site.
    pub url: String,
}

/// The group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The controllers.
    pub controllers: Vec<Controller>,
    /// The data protection officer's address.
    pub dpo_email: String,
    /// The supervisory authority.
    pub authority: Authority,
    /// The policy in force.
    pub policy: Policy,
}

/// Why a group file was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// Not valid TOML of the expected shape.
    #[error("{0}")]
    Syntax(String),
    /// Valid shape, wrong content.
    #[error("{0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    policy: Policy,
    dpo: Dpo,
    authority: Authority,
    controllers: Vec<ControllerEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Dpo {
    email: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ControllerEntry {
    organisation_number: String,
    name: String,
}

impl Group {
    /// The group of the seed policy.
    pub fn shipped() -> Self {
        Self::from_toml(include_str!("../data/group.toml"))
            .expect("the shipped group file is valid")
    }

    /// Parses a group file.
    pub fn from_toml(text: &str) -> Result<Self, GroupError> {
        let f: File =
            toml::from_str(text).map_err(|e| GroupError::Syntax(e.message().to_owned()))?;
        if f.controllers.is_empty() {
            return Err(GroupError::Invalid("no controllers".into()));
        }
        let mut controllers = Vec::with_capacity(f.controllers.len());
        for (i, c) in f.controllers.into_iter().enumerate() {
            let organisation_number =
                Organisationsnummer::parse(&c.organisation_number).map_err(|e| {
                    GroupError::Invalid(format!("controllers[{i}].organisation_number: {e}"))
                })?;
            if c.name.trim().is_empty() {
                return Err(GroupError::Invalid(format!(
                    "controllers[{i}].name is empty"
                )));
            }
            if controllers
                .iter()
                .any(|x: &Controller| x.organisation_number == organisation_number)
            {
                return Err(GroupError::Invalid(format!(
                    "controllers[{i}].organisation_number is listed twice"
                )));
            }
            controllers.push(Controller {
                organisation_number,
                name: c.name,
            });
        }
        if !f.dpo.email.contains('@') {
            return Err(GroupError::Invalid("dpo.email is not an address".into()));
        }
        Ok(Self {
            controllers,
            dpo_email: f.dpo.email,
            authority: f.authority,
            policy: f.policy,
        })
    }

    /// The controller with this number, if it belongs to the group.
    pub fn controller(&self, number: &Organisationsnummer) -> Option<&Controller> {
        self.controllers
            .iter()
            .find(|c| &c.organisation_number == number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_group_lists_the_four_controllers_and_policy_2_1() {
        let g = Group::shipped();
        assert_eq!(g.controllers.len(), 4);
        let sverige = Organisationsnummer::parse("5561341248").unwrap();
        assert_eq!(g.controller(&sverige).unwrap().name, "Intrum Sverige AB");
        assert_eq!(g.policy.version, "2.1");
        assert_eq!(
            g.policy.published,
            NaiveDate::from_ymd_opt(2024, 2, 27).unwrap()
        );
        let other = Organisationsnummer::parse("556016-0680").unwrap();
        assert!(g.controller(&other).is_none());
    }

    #[test]
    fn bad_files_are_refused_with_the_field() {
        let text = include_str!("../data/group.toml").replace("556397-1414", "556397-1415");
        let err = Group::from_toml(&text).unwrap_err();
        assert!(
            err.to_string()
                .contains("controllers[3].organisation_number"),
            "{err}"
        );
        let dup = include_str!("../data/group.toml").replace("556397-1414", "556134-1248");
        assert!(
            Group::from_toml(&dup)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }
}
