//! Identities of data subjects and controllers, validated and normalised
//! before any comparison.
//!
//! Error values name the identity type and what is wrong with it, never the
//! value itself: they end up in gRPC statuses and logs.

use std::fmt;

use chrono::{Datelike, NaiveDate};

/// The kinds of identity the mesh understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentityType {
    /// An email address.
    Email,
    /// A telephone number (E.164).
    Phone,
    /// A Swedish personnummer or samordningsnummer.
    Personnummer,
    /// A Swedish organisationsnummer.
    Organisationsnummer,
    /// A customer number issued by the controller.
    CustomerId,
}

impl IdentityType {
    /// Stable lower-case name, used in storage and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Personnummer => "personnummer",
            Self::Organisationsnummer => "organisationsnummer",
            Self::CustomerId => "customer_id",
        }
    }

    /// Parses [`IdentityType::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        [
            Self::Email,
            Self::Phone,
            Self::Personnummer,
            Self::Organisationsnummer,
            Self::CustomerId,
        ]
        .into_iter()
        .find(|t| t.as_str() == name)
    }
}

impl fmt::Display for IdentityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a value is not a valid identity of its type. Never carries the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIdentity {
    /// Nothing but white space.
    #[error("{0} is empty")]
    Empty(IdentityType),
    /// Longer than the type allows.
    #[error("{0} is too long")]
    TooLong(IdentityType),
    /// Characters or structure the type does not allow.
    #[error("{0} is malformed: {1}")]
    Malformed(IdentityType, &'static str),
    /// The check digit does not match.
    #[error("{0} has a wrong check digit")]
    CheckDigit(IdentityType),
    /// The digits do not form a real date of birth.
    #[error("{0} does not contain a valid date")]
    InvalidDate(IdentityType),
}

/// Longest accepted raw input of any identity type.
pub const MAX_IDENTITY_LEN: usize = 256;

/// A validated identity in its normal form. Two identities are the same
/// person's identifier exactly when they compare equal.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    kind: IdentityType,
    value: String,
}

impl Identity {
    /// Validates and normalises `raw` as an identity of type `kind`.
    pub fn parse(kind: IdentityType, raw: &str) -> Result<Self, InvalidIdentity> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(InvalidIdentity::Empty(kind));
        }
        if trimmed.len() > MAX_IDENTITY_LEN {
            return Err(InvalidIdentity::TooLong(kind));
        }
        let value = match kind {
            IdentityType::Email => normalise_email(trimmed)?,
            IdentityType::Phone => normalise_phone(trimmed)?,
            IdentityType::Personnummer => Personnummer::parse(trimmed)?.to_string(),
            IdentityType::Organisationsnummer => Organisationsnummer::parse(trimmed)?.to_string(),
            IdentityType::CustomerId => normalise_customer_id(trimmed)?,
        };
        Ok(Self { kind, value })
    }

    /// The identity's type.
    pub fn kind(&self) -> IdentityType {
        self.kind
    }

    /// The normalised value. Personal data: do not log it.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The value is personal data: Debug shows only the type.
        write!(f, "Identity({}, <redacted>)", self.kind)
    }
}

fn normalise_email(raw: &str) -> Result<String, InvalidIdentity> {
    const T: IdentityType = IdentityType::Email;
    let email = raw.to_lowercase();
    let (local, domain) = email
        .rsplit_once('@')
        .ok_or(InvalidIdentity::Malformed(T, "no @"))?;
    if local.is_empty() || local.len() > 64 {
        return Err(InvalidIdentity::Malformed(
            T,
            "local part empty or longer than 64",
        ));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(InvalidIdentity::Malformed(T, "contains white space"));
    }
    if local.contains('@') || local.starts_with('.') || local.ends_with('.') || local.contains("..")
    {
        return Err(InvalidIdentity::Malformed(T, "bad local part"));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err(InvalidIdentity::Malformed(T, "domain has no dot"));
    }
    for label in &labels {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_alphanumeric() || c == '-');
        if !ok {
            return Err(InvalidIdentity::Malformed(T, "bad domain"));
        }
    }
    Ok(email)
}

fn normalise_phone(raw: &str) -> Result<String, InvalidIdentity> {
    const T: IdentityType = IdentityType::Phone;
    if !raw
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | ' ' | '(' | ')' | '.' | '/'))
    {
        return Err(InvalidIdentity::Malformed(
            T,
            "only digits, +, -, space, ., / and () allowed",
        ));
    }
    // "00" is the international prefix dialled from Sweden.
    let prepared = match raw.strip_prefix("00") {
        Some(rest) => format!("+{rest}"),
        None => raw.to_owned(),
    };
    let number = phonenumber::parse(Some(phonenumber::country::Id::SE), &prepared)
        .map_err(|_| InvalidIdentity::Malformed(T, "not a telephone number"))?;
    if !phonenumber::is_valid(&number) {
        return Err(InvalidIdentity::Malformed(
            T,
            "not a valid number for its country",
        ));
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

fn normalise_customer_id(raw: &str) -> Result<String, InvalidIdentity> {
    const T: IdentityType = IdentityType::CustomerId;
    if raw.len() > 64 {
        return Err(InvalidIdentity::TooLong(T));
    }
    if !raw
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(InvalidIdentity::Malformed(
            T,
            "only letters, digits, -, _ and . allowed",
        ));
    }
    Ok(raw.to_owned())
}

/// Luhn (modulus 10, weights 2 and 1 from the left) over ten digits.
fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .enumerate()
        .map(|(i, &d)| {
            let p = u32::from(d) * if i % 2 == 0 { 2 } else { 1 };
            if p > 9 { p - 9 } else { p }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn digits_of(s: &str) -> Vec<u8> {
    s.bytes().map(|b| b - b'0').collect()
}

/// A Swedish personnummer or samordningsnummer, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Personnummer {
    birth_date: NaiveDate,
    coordination: bool,
    serial: u16,
    check: u8,
}

impl Personnummer {
    /// Parses the 10- or 12-digit forms, with or without `-` or `+`, relative
    /// to today's date (a 10-digit number is read as the most recent century
    /// in which the person is not yet born in the future; `+` adds 100
    /// years).
    pub fn parse(raw: &str) -> Result<Self, InvalidIdentity> {
        Self::parse_at(raw, chrono::Local::now().date_naive())
    }

    /// As [`Personnummer::parse`], with the reference date given.
    pub fn parse_at(raw: &str, today: NaiveDate) -> Result<Self, InvalidIdentity> {
        const T: IdentityType = IdentityType::Personnummer;
        let s = raw.trim();
        let (body, sep) = match s.find(['-', '+']) {
            Some(pos) => {
                let (l, r) = s.split_at(pos);
                if r.len() != 5 {
                    return Err(InvalidIdentity::Malformed(
                        T,
                        "separator in the wrong place",
                    ));
                }
                (format!("{l}{}", &r[1..]), Some(r.as_bytes()[0]))
            }
            None => (s.to_owned(), None),
        };
        if !body.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidIdentity::Malformed(
                T,
                "only digits, - and + allowed",
            ));
        }
        let (year, rest) = match body.len() {
            12 => {
                if sep == Some(b'+') {
                    return Err(InvalidIdentity::Malformed(
                        T,
                        "+ is only used with 10 digits",
                    ));
                }
                let year: i32 = body[..4]
                    .parse()
                    .map_err(|_| InvalidIdentity::Malformed(T, "year"))?;
                (year, &body[2..])
            }
            10 => {
                let yy: i32 = body[..2]
                    .parse()
                    .map_err(|_| InvalidIdentity::Malformed(T, "year"))?;
                let mut year = today.year() / 100 * 100 + yy;
                // The most recent year with that ending that is not after this year
                // (the exact date is checked below).
                if year > today.year() {
                    year -= 100;
                }
                if sep == Some(b'+') {
                    year -= 100;
                }
                (year, body.as_str())
            }
            _ => return Err(InvalidIdentity::Malformed(T, "must have 10 or 12 digits")),
        };
        let d = digits_of(rest);
        if !luhn_valid(&d) {
            return Err(InvalidIdentity::CheckDigit(T));
        }
        let month = u32::from(d[2]) * 10 + u32::from(d[3]);
        let mut day = u32::from(d[4]) * 10 + u32::from(d[5]);
        let coordination = day > 60;
        if coordination {
            day -= 60;
        }
        let mut birth_date =
            NaiveDate::from_ymd_opt(year, month, day).ok_or(InvalidIdentity::InvalidDate(T))?;
        if body.len() == 10 && sep != Some(b'+') && birth_date > today {
            birth_date = NaiveDate::from_ymd_opt(year - 100, month, day)
                .ok_or(InvalidIdentity::InvalidDate(T))?;
        }
        if birth_date > today {
            return Err(InvalidIdentity::InvalidDate(T));
        }
        let serial = u16::from(d[6]) * 100 + u16::from(d[7]) * 10 + u16::from(d[8]);
        Ok(Self {
            birth_date,
            coordination,
            serial,
            check: d[9],
        })
    }

    /// The date of birth.
    pub fn birth_date(&self) -> NaiveDate {
        self.birth_date
    }

    /// Whether this is a samordningsnummer (coordination number).
    pub fn is_coordination_number(&self) -> bool {
        self.coordination
    }
}

impl fmt::Display for Personnummer {
    /// The 12-digit register form, `YYYYMMDDNNNC`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let day = self.birth_date.day() + if self.coordination { 60 } else { 0 };
        write!(
            f,
            "{:04}{:02}{:02}{:03}{}",
            self.birth_date.year(),
            self.birth_date.month(),
            day,
            self.serial,
            self.check
        )
    }
}

/// A Swedish organisationsnummer, validated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Organisationsnummer(String);

impl Organisationsnummer {
    /// Parses `NNNNNN-NNNN`, `NNNNNNNNNN` or the 12-digit form prefixed `16`.
    pub fn parse(raw: &str) -> Result<Self, InvalidIdentity> {
        const T: IdentityType = IdentityType::Organisationsnummer;
        let s = raw.trim();
        let body: String = match s.find('-') {
            Some(pos) if s.len() - pos == 5 && s.matches('-').count() == 1 => s.replace('-', ""),
            Some(_) => {
                return Err(InvalidIdentity::Malformed(
                    T,
                    "separator in the wrong place",
                ));
            }
            None => s.to_owned(),
        };
        if !body.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidIdentity::Malformed(T, "only digits and - allowed"));
        }
        let ten = match body.len() {
            10 => body.as_str(),
            12 if body.starts_with("16") => &body[2..],
            12 => {
                return Err(InvalidIdentity::Malformed(
                    T,
                    "12-digit form must start with 16",
                ));
            }
            _ => return Err(InvalidIdentity::Malformed(T, "must have 10 digits")),
        };
        let d = digits_of(ten);
        if !matches!(d[0], 1 | 2 | 3 | 5 | 6 | 7 | 8 | 9) {
            return Err(InvalidIdentity::Malformed(T, "unknown group digit"));
        }
        if d[2] * 10 + d[3] < 20 {
            return Err(InvalidIdentity::Malformed(
                T,
                "third and fourth digits must be at least 20",
            ));
        }
        if !luhn_valid(&d) {
            return Err(InvalidIdentity::CheckDigit(T));
        }
        Ok(Self(format!("{}-{}", &ten[..6], &ten[6..])))
    }

    /// The normal form, `NNNNNN-NNNN`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Organisationsnummer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
    }

    #[test]
    fn personnummer_vectors() {
        let cases: &[(&str, Result<&str, InvalidIdentity>)] = &[
            ("811218-9876", Ok("198112189876")),
            ("8112189876", Ok("198112189876")),
            ("198112189876", Ok("198112189876")),
            ("19811218-9876", Ok("198112189876")),
            (
                "811218-9877",
                Err(InvalidIdentity::CheckDigit(IdentityType::Personnummer)),
            ),
            // samordningsnummer: day + 60
            ("811278-9873", Ok("198112789873")),
            // '+' marks a person aged 100 or more
            ("121212+1212", Ok("191212121212")),
            ("121212-1212", Ok("201212121212")),
            (
                "811232-9878",
                Err(InvalidIdentity::InvalidDate(IdentityType::Personnummer)),
            ),
            (
                "811218-987",
                Err(InvalidIdentity::Malformed(
                    IdentityType::Personnummer,
                    "separator in the wrong place",
                )),
            ),
            (
                "81121898761",
                Err(InvalidIdentity::Malformed(
                    IdentityType::Personnummer,
                    "must have 10 or 12 digits",
                )),
            ),
            (
                "8112a89876",
                Err(InvalidIdentity::Malformed(
                    IdentityType::Personnummer,
                    "only digits, - and + allowed",
                )),
            ),
        ];
        for (raw, want) in cases {
            let got = Personnummer::parse_at(raw, today()).map(|p| p.to_string());
            assert_eq!(
                got.as_deref().map_err(Clone::clone),
                want.clone(),
                "input {raw}"
            );
        }
    }

    fn with_check_digit(nine: &str) -> String {
        (0..10u8)
            .map(|c| format!("{nine}{c}"))
            .find(|s| luhn_valid(&digits_of(s)))
            .unwrap()
    }

    #[test]
    fn personnummer_dates() {
        // 2000-02-29 exists, 2001-02-29 does not
        let leap = format!("20{}", with_check_digit("000229123"));
        assert!(Personnummer::parse_at(&leap, today()).is_ok());
        let not_leap = format!("20{}", with_check_digit("010229123"));
        assert_eq!(
            Personnummer::parse_at(&not_leap, today()),
            Err(InvalidIdentity::InvalidDate(IdentityType::Personnummer))
        );
        // born in the future: refused in the 12-digit form
        let future = format!("20{}", with_check_digit("300101123"));
        assert_eq!(
            Personnummer::parse_at(&future, today()),
            Err(InvalidIdentity::InvalidDate(IdentityType::Personnummer))
        );
        // the 10-digit form of a date later this century is read as last century
        let ten = with_check_digit("300101123");
        assert_eq!(
            Personnummer::parse_at(&ten, today())
                .unwrap()
                .birth_date()
                .year(),
            1930
        );
    }

    #[test]
    fn coordination_flag() {
        let p = Personnummer::parse_at("811278-9873", today()).unwrap();
        assert!(p.is_coordination_number());
        assert_eq!(
            p.birth_date(),
            NaiveDate::from_ymd_opt(1981, 12, 18).unwrap()
        );
    }

    #[test]
    fn organisationsnummer_vectors() {
        let t = IdentityType::Organisationsnummer;
        let cases: &[(&str, Result<&str, InvalidIdentity>)] = &[
            ("556134-1248", Ok("556134-1248")),
            ("5561341248", Ok("556134-1248")),
            ("165561341248", Ok("556134-1248")),
            ("556134-1247", Err(InvalidIdentity::CheckDigit(t))),
            ("556036-0793", Ok("556036-0793")),
            ("212000-0142", Ok("212000-0142")),
            ("556885-5265", Ok("556885-5265")),
            ("556786-4854", Ok("556786-4854")),
            ("556397-1414", Ok("556397-1414")),
            // a personnummer is not an organisationsnummer (month < 20)
            (
                "811218-9876",
                Err(InvalidIdentity::Malformed(
                    t,
                    "third and fourth digits must be at least 20",
                )),
            ),
            (
                "456134-1248",
                Err(InvalidIdentity::Malformed(t, "unknown group digit")),
            ),
            (
                "175561341248",
                Err(InvalidIdentity::Malformed(
                    t,
                    "12-digit form must start with 16",
                )),
            ),
        ];
        for (raw, want) in cases {
            let got = Organisationsnummer::parse(raw).map(|o| o.to_string());
            assert_eq!(
                got.as_deref().map_err(Clone::clone),
                want.clone(),
                "input {raw}"
            );
        }
    }

    #[test]
    fn email_normalisation() {
        let t = IdentityType::Email;
        let ok = [
            (" Anna.Svensson@Example.SE ", "anna.svensson@example.se"),
            ("a+tag@sub.example.com", "a+tag@sub.example.com"),
            ("Åsa@exempel.se", "åsa@exempel.se"),
        ];
        for (raw, want) in ok {
            assert_eq!(
                Identity::parse(t, raw).unwrap().value(),
                want,
                "input {raw}"
            );
        }
        for bad in [
            "",
            "   ",
            "no-at.example.se",
            "@example.se",
            "a@b",
            "a b@example.se",
            "a..b@example.se",
            "a@-x.se",
            "a@x..se",
        ] {
            assert!(Identity::parse(t, bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn phone_normalisation() {
        let t = IdentityType::Phone;
        let ok = [
            ("070-123 45 67", "+46701234567"),
            ("0701234567", "+46701234567"),
            ("+46 70 123 45 67", "+46701234567"),
            ("0046701234567", "+46701234567"),
            ("08-123 456 78", "+46812345678"),
            ("+1 202 456 1111", "+12024561111"),
        ];
        for (raw, want) in ok {
            assert_eq!(
                Identity::parse(t, raw).unwrap().value(),
                want,
                "input {raw}"
            );
        }
        for bad in [
            "abc",
            "070-12",
            "+46 70 123 45 67 89 01 23",
            "070 123 45 67 x",
        ] {
            assert!(Identity::parse(t, bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn customer_id_rules() {
        let t = IdentityType::CustomerId;
        assert_eq!(Identity::parse(t, " C-1001 ").unwrap().value(), "C-1001");
        assert_eq!(
            Identity::parse(t, "a b"),
            Err(InvalidIdentity::Malformed(
                t,
                "only letters, digits, -, _ and . allowed"
            ))
        );
        assert_eq!(
            Identity::parse(t, &"x".repeat(65)),
            Err(InvalidIdentity::TooLong(t))
        );
    }

    #[test]
    fn errors_and_debug_never_show_the_value() {
        let err = Identity::parse(IdentityType::Email, "secret-person@@example.se").unwrap_err();
        assert!(!err.to_string().contains("secret-person"));
        let id = Identity::parse(IdentityType::Email, "secret-person@example.se").unwrap();
        assert!(!format!("{id:?}").contains("secret-person"));
    }

    mod props {
        use super::super::*;
        use super::with_check_digit;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn valid_personnummer_round_trips(
                year in 1900i32..2025, ordinal in 0u32..365, serial in 1u16..999, coord in any::<bool>()
            ) {
                let date = NaiveDate::from_yo_opt(year, ordinal + 1).unwrap();
                let day = date.day() + if coord { 60 } else { 0 };
                let nine = format!("{:02}{:02}{:02}{:03}", year % 100, date.month(), day, serial);
                let ten = with_check_digit(&nine);
                let twelve = format!("{}{}", year / 100, ten);
                let today = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
                let p = Personnummer::parse_at(&twelve, today).unwrap();
                prop_assert_eq!(p.to_string(), twelve.clone());
                prop_assert_eq!(p.is_coordination_number(), coord);
                // changing the check digit always breaks it
                let last = twelve.as_bytes()[11] - b'0';
                let broken = format!("{}{}", &twelve[..11], (last + 1) % 10);
                prop_assert!(Personnummer::parse_at(&broken, today).is_err());
            }

            #[test]
            fn parse_never_panics(kind in 0usize..5, s in ".{0,40}") {
                let kinds = [IdentityType::Email, IdentityType::Phone, IdentityType::Personnummer,
                             IdentityType::Organisationsnummer, IdentityType::CustomerId];
                let _ = Identity::parse(kinds[kind], &s);
            }
        }
    }
}
