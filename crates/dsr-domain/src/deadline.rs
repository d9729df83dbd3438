//! Art. 12(3) deadlines: one month from receipt, extendable by at most two
//! further months, with a reason given inside the first month.
//!
//! Month arithmetic follows Regulation (EEC, Euratom) No 1182/71 Art. 3 as the
//! EDPB applies it (Guidelines 01/2022): the period ends on the same date of
//! the following month, or on that month's last day when it has no such date;
//! a period ending on a Saturday, Sunday or public holiday ends on the next
//! working day. Public holidays are data ([`HolidayCalendar`]), not code.

use std::collections::BTreeSet;

use chrono::{Datelike, Months, NaiveDate, Weekday};
use serde::Deserialize;

/// Why a deadline cannot be computed or extended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeadlineError {
    /// The holiday calendar does not cover the date.
    #[error("holiday calendar covers {first}..={last}, not {year}")]
    OutsideCalendar {
        /// First year covered.
        first: i32,
        /// Last year covered.
        last: i32,
        /// The year asked for.
        year: i32,
    },
    /// An extension needs a reason (Art. 12(3): the person is told why).
    #[error("an extension needs a reason")]
    ReasonRequired,
    /// Extensions add one or two months, and at most two in all.
    #[error("an extension adds 1 or 2 months, at most 2 in all")]
    TooLong,
    /// The extension was decided after the first month had ended.
    #[error("an extension must be decided within the first month")]
    OutsideFirstMonth,
    /// The decision date is before the request was received.
    #[error("the decision date is before the request was received")]
    BeforeReceipt,
}

/// Non-working days other than Saturdays and Sundays, for a range of years.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HolidayCalendar {
    first_year: i32,
    last_year: i32,
    days: BTreeSet<NaiveDate>,
}

/// Why a holiday calendar file is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    /// Not valid TOML or a missing field.
    #[error("holiday calendar is not valid: {0}")]
    Syntax(String),
    /// A day outside the declared years, or years in the wrong order.
    #[error("holiday calendar is inconsistent: {0}")]
    Inconsistent(&'static str),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarFile {
    #[allow(dead_code)]
    country: String,
    first_year: i32,
    last_year: i32,
    days: Vec<CalendarDay>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalendarDay {
    date: NaiveDate,
    #[allow(dead_code)]
    name: String,
}

impl HolidayCalendar {
    /// The Swedish calendar shipped with DSR Mesh (`data/holidays-se.toml`).
    pub fn swedish() -> Self {
        Self::from_toml(include_str!("../data/holidays-se.toml"))
            .expect("the shipped holiday calendar is valid")
    }

    /// Reads a calendar in the format of `data/holidays-se.toml`.
    pub fn from_toml(text: &str) -> Result<Self, CalendarError> {
        let file: CalendarFile =
            toml::from_str(text).map_err(|e| CalendarError::Syntax(e.message().to_owned()))?;
        if file.first_year > file.last_year {
            return Err(CalendarError::Inconsistent("first_year after last_year"));
        }
        let days: BTreeSet<NaiveDate> = file.days.into_iter().map(|d| d.date).collect();
        if days
            .iter()
            .any(|d| d.year() < file.first_year || d.year() > file.last_year)
        {
            return Err(CalendarError::Inconsistent(
                "a day outside first_year..=last_year",
            ));
        }
        Ok(Self {
            first_year: file.first_year,
            last_year: file.last_year,
            days,
        })
    }

    /// Whether a period may end on `date`.
    pub fn is_working_day(&self, date: NaiveDate) -> Result<bool, DeadlineError> {
        if date.year() < self.first_year || date.year() > self.last_year {
            return Err(DeadlineError::OutsideCalendar {
                first: self.first_year,
                last: self.last_year,
                year: date.year(),
            });
        }
        Ok(!matches!(date.weekday(), Weekday::Sat | Weekday::Sun) && !self.days.contains(&date))
    }

    /// `date` if it is a working day, else the next one.
    pub fn next_working_day(&self, mut date: NaiveDate) -> Result<NaiveDate, DeadlineError> {
        while !self.is_working_day(date)? {
            date = date
                .succ_opt()
                .expect("dates in the calendar range have a successor");
        }
        Ok(date)
    }
}

/// `date` plus `months` calendar months: the same day of the month, or the
/// last day of the target month when it is shorter.
pub fn add_months(date: NaiveDate, months: u32) -> NaiveDate {
    // chrono clamps to the last day of the month, which is the EDPB rule.
    date.checked_add_months(Months::new(months))
        .expect("date within chrono's range")
}

/// An Art. 12(3) extension, as decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extension {
    /// Further months added: 1 or 2.
    pub months: u32,
    /// Why, as told to the person.
    pub reason: String,
    /// When the extension was decided.
    pub decided_on: NaiveDate,
}

/// The answer deadline of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deadline {
    received_on: NaiveDate,
    original_due: NaiveDate,
    extension: Option<Extension>,
    due: NaiveDate,
}

impl Deadline {
    /// The deadline of a request received on `received_on` (the controller's
    /// local date).
    pub fn for_request(
        received_on: NaiveDate,
        cal: &HolidayCalendar,
    ) -> Result<Self, DeadlineError> {
        let due = cal.next_working_day(add_months(received_on, 1))?;
        Ok(Self {
            received_on,
            original_due: due,
            extension: None,
            due,
        })
    }

    /// Extends the deadline by `months` (total extension at most two
    /// months), decided on `decided_on` with `reason`. Refused after the
    /// first month, without a reason, or beyond three months in all.
    pub fn extend(
        &self,
        months: u32,
        reason: &str,
        decided_on: NaiveDate,
        cal: &HolidayCalendar,
    ) -> Result<Self, DeadlineError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(DeadlineError::ReasonRequired);
        }
        let already = self.extension.as_ref().map_or(0, |e| e.months);
        let total = already + months;
        if months == 0 || total > 2 {
            return Err(DeadlineError::TooLong);
        }
        if decided_on < self.received_on {
            return Err(DeadlineError::BeforeReceipt);
        }
        if decided_on > self.original_due {
            return Err(DeadlineError::OutsideFirstMonth);
        }
        let due = cal.next_working_day(add_months(self.received_on, 1 + total))?;
        Ok(Self {
            received_on: self.received_on,
            original_due: self.original_due,
            extension: Some(Extension {
                months: total,
                reason: reason.to_owned(),
                decided_on,
            }),
            due,
        })
    }

    /// The date the request was received.
    pub fn received_on(&self) -> NaiveDate {
        self.received_on
    }

    /// The one-month deadline, before any extension.
    pub fn original_due(&self) -> NaiveDate {
        self.original_due
    }

    /// The deadline in force: the last day on which the answer is in time.
    pub fn due(&self) -> NaiveDate {
        self.due
    }

    /// The extension, if any.
    pub fn extension(&self) -> Option<&Extension> {
        self.extension.as_ref()
    }

    /// Whether the request is overdue on `today`.
    pub fn is_overdue(&self, today: NaiveDate) -> bool {
        today > self.due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn add_months_follows_the_edpb_rule() {
        let cases = [
            ("2026-03-05", 1, "2026-04-05"),
            ("2026-01-31", 1, "2026-02-28"),
            ("2028-01-31", 1, "2028-02-29"),
            ("2026-03-31", 1, "2026-04-30"),
            ("2026-12-15", 1, "2027-01-15"),
            ("2026-11-30", 3, "2027-02-28"),
            ("2026-08-31", 3, "2026-11-30"),
        ];
        for (from, n, want) in cases {
            assert_eq!(add_months(d(from), n), d(want), "{from} + {n}");
        }
    }

    #[test]
    fn due_dates_move_past_weekends_and_holidays() {
        let cal = HolidayCalendar::swedish();
        let cases = [
            // received -> due
            ("2026-11-23", "2026-12-23"), // a Wednesday
            ("2026-11-24", "2026-12-28"), // Dec 24-27: julafton, juldagen, annandag jul, Sunday
            ("2026-10-10", "2026-11-10"),
            ("2026-01-31", "2026-03-02"), // Feb 28 is a Saturday
            ("2026-05-06", "2026-06-08"), // Jun 6 nationaldagen is a Saturday
            ("2026-03-01", "2026-04-01"),
            ("2026-03-03", "2026-04-07"), // Apr 3 långfredagen, 4-5 weekend/påskdagen, 6 annandag påsk
        ];
        for (received, want) in cases {
            let dl = Deadline::for_request(d(received), &cal).unwrap();
            assert_eq!(dl.due(), d(want), "received {received}");
            assert_eq!(dl.original_due(), dl.due());
        }
    }

    #[test]
    fn extension_rules() {
        let cal = HolidayCalendar::swedish();
        let dl = Deadline::for_request(d("2026-11-23"), &cal).unwrap();
        assert_eq!(
            dl.extend(2, "  ", d("2026-11-30"), &cal),
            Err(DeadlineError::ReasonRequired)
        );
        assert_eq!(
            dl.extend(3, "many systems", d("2026-11-30"), &cal),
            Err(DeadlineError::TooLong)
        );
        assert_eq!(
            dl.extend(0, "many systems", d("2026-11-30"), &cal),
            Err(DeadlineError::TooLong)
        );
        assert_eq!(
            dl.extend(1, "many systems", d("2026-12-24"), &cal),
            Err(DeadlineError::OutsideFirstMonth)
        );
        assert_eq!(
            dl.extend(1, "x", d("2026-11-22"), &cal),
            Err(DeadlineError::BeforeReceipt)
        );

        let once = dl.extend(1, "many systems", d("2026-12-23"), &cal).unwrap();
        assert_eq!(once.due(), d("2027-01-25")); // Jan 23 2027 is a Saturday
        assert_eq!(once.original_due(), d("2026-12-23"));
        let twice = once
            .extend(1, "a processor abroad", d("2026-12-01"), &cal)
            .unwrap();
        assert_eq!(twice.due(), d("2027-02-23"));
        assert_eq!(twice.extension().unwrap().months, 2);
        assert_eq!(
            twice.extend(1, "more", d("2026-12-01"), &cal),
            Err(DeadlineError::TooLong)
        );
        assert!(twice.is_overdue(d("2027-02-24")));
        assert!(!twice.is_overdue(d("2027-02-23")));
    }

    #[test]
    fn calendar_bounds_and_validation() {
        let cal = HolidayCalendar::swedish();
        assert!(matches!(
            Deadline::for_request(d("2040-01-10"), &cal),
            Err(DeadlineError::OutsideCalendar { year: 2040, .. })
        ));
        let bad = "country = \"SE\"\nfirst_year = 2030\nlast_year = 2029\ndays = []\n";
        assert_eq!(
            HolidayCalendar::from_toml(bad),
            Err(CalendarError::Inconsistent("first_year after last_year"))
        );
        let outside = "country = \"SE\"\nfirst_year = 2026\nlast_year = 2026\ndays = [{ date = \"2027-01-01\", name = \"x\" }]\n";
        assert!(matches!(
            HolidayCalendar::from_toml(outside),
            Err(CalendarError::Inconsistent(_))
        ));
        assert!(matches!(
            HolidayCalendar::from_toml("nonsense"),
            Err(CalendarError::Syntax(_))
        ));
    }
}
