//! What a data system declares about a category of personal data: how
//! sensitive it is and on which Art. 6(1) basis it is processed. Closed
//! sets, with the names they carry in manifests and in the access document.

use serde::{Deserialize, Serialize};

/// How sensitive a category is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    /// Ordinary personal data.
    #[default]
    Ordinary,
    /// Special categories (Art. 9): health, beliefs, union membership, ...
    SpecialCategory,
    /// Criminal convictions and offences (Art. 10).
    Criminal,
    /// A national identification number (Art. 87; in Sweden the
    /// personnummer, 3 kap. 10 § dataskyddslagen).
    NationalId,
}

impl Sensitivity {
    /// Every value, in order.
    pub const ALL: [Self; 4] = [
        Self::Ordinary,
        Self::SpecialCategory,
        Self::Criminal,
        Self::NationalId,
    ];

    /// Its name in manifests and documents, e.g. "special_category".
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ordinary => "ordinary",
            Self::SpecialCategory => "special_category",
            Self::Criminal => "criminal",
            Self::NationalId => "national_id",
        }
    }
}

/// The legal basis of a processing (Art. 6(1)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegalBasis {
    /// (a) consent.
    Consent,
    /// (b) a contract with the person, or steps before one.
    Contract,
    /// (c) a legal obligation of the controller.
    LegalObligation,
    /// (d) the vital interests of a person.
    VitalInterests,
    /// (e) a task in the public interest or official authority.
    PublicTask,
    /// (f) legitimate interests.
    LegitimateInterests,
}

impl LegalBasis {
    /// Every value, in the order of Art. 6(1).
    pub const ALL: [Self; 6] = [
        Self::Consent,
        Self::Contract,
        Self::LegalObligation,
        Self::VitalInterests,
        Self::PublicTask,
        Self::LegitimateInterests,
    ];

    /// Its name in manifests and documents, e.g. "legal_obligation".
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Consent => "consent",
            Self::Contract => "contract",
            Self::LegalObligation => "legal_obligation",
            Self::VitalInterests => "vital_interests",
            Self::PublicTask => "public_task",
            Self::LegitimateInterests => "legitimate_interests",
        }
    }

    /// Its point of Art. 6(1): 'a' to 'f'.
    #[must_use]
    pub fn point(self) -> char {
        match self {
            Self::Consent => 'a',
            Self::Contract => 'b',
            Self::LegalObligation => 'c',
            Self::VitalInterests => 'd',
            Self::PublicTask => 'e',
            Self::LegitimateInterests => 'f',
        }
    }

    /// Whether data processed on it is portable (Art. 20(1)(a): consent or
    /// contract).
    #[must_use]
    pub fn portable(self) -> bool {
        matches!(self, Self::Consent | Self::Contract)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_are_the_ones_serde_reads_and_writes() {
        for s in Sensitivity::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<Sensitivity>(&json).unwrap(), s);
        }
        for b in LegalBasis::ALL {
            let json = serde_json::to_string(&b).unwrap();
            assert_eq!(json, format!("\"{}\"", b.as_str()));
            assert_eq!(serde_json::from_str::<LegalBasis>(&json).unwrap(), b);
        }
        let points: String = LegalBasis::ALL.iter().map(|b| b.point()).collect();
        assert_eq!(points, "abcdef");
        assert!(serde_json::from_str::<LegalBasis>("\"legitimate_interest\"").is_err());
    }

    #[test]
    fn only_consent_and_contract_make_data_portable() {
        let portable: Vec<LegalBasis> = LegalBasis::ALL
            .into_iter()
            .filter(|b| b.portable())
            .collect();
        assert_eq!(portable, [LegalBasis::Consent, LegalBasis::Contract]);
    }
}
