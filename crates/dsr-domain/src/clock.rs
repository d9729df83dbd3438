//! The time the mesh's rules run at: deadlines, retention dates, deferred
//! erasures, sweeps, package expiries. Time is an input: a [`Clock`] is the
//! system's time moved by an offset, set from configuration (`clock`, e.g.
//! `2031-06-01T00:00:00Z`: the clock starts there and runs on) or moved by a
//! test. Authentication times (token expiry, instruction windows) stay on
//! the machine's time: they protect against replay, not for the law.
//!
//! This is the one place that reads the system time for those rules.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

/// A clock: the system time plus an offset every holder of a clone shares.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ns: Arc<AtomicI64>,
}

/// A `clock` setting that is not a time.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the clock must be an RFC 3339 time (2031-06-01T00:00:00Z) or a date (2031-06-01)")]
pub struct BadClock;

impl Clock {
    /// The system's time.
    pub fn system() -> Self {
        Self::default()
    }

    /// A clock that reads `start` now and runs on from there.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        let c = Self::default();
        c.set(start);
        c
    }

    /// Parses a `clock` setting: empty for the system's time, an RFC 3339
    /// time, or a date (its midnight, UTC).
    pub fn parse(setting: &str) -> Result<Self, BadClock> {
        let s = setting.trim();
        if s.is_empty() {
            return Ok(Self::system());
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Ok(Self::starting_at(t.with_timezone(&Utc)));
        }
        let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| BadClock)?;
        let t = d.and_hms_opt(0, 0, 0).ok_or(BadClock)?.and_utc();
        Ok(Self::starting_at(t))
    }

    /// Now.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::nanoseconds(self.offset_ns.load(Ordering::Relaxed))
    }

    /// Today's date (UTC).
    pub fn today(&self) -> NaiveDate {
        self.now().date_naive()
    }

    /// Moves every clone of this clock so that it reads `t` now.
    pub fn set(&self, t: DateTime<Utc>) {
        // Nanoseconds, exact: a clock set to midnight reads midnight or
        // later, never the day before. (An i64 of nanoseconds spans 292
        // years either way.)
        let offset = (t - Utc::now()).num_nanoseconds().unwrap_or(i64::MAX);
        self.offset_ns.store(offset, Ordering::Relaxed);
    }

    /// Moves every clone of this clock by `by`.
    pub fn advance(&self, by: TimeDelta) {
        self.offset_ns
            .fetch_add(by.num_nanoseconds().unwrap_or(0), Ordering::Relaxed);
    }

    /// Whether the clock is the system's (no offset).
    pub fn is_system(&self) -> bool {
        self.offset_ns.load(Ordering::Relaxed) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_starts_the_clock_there_and_it_runs_on() {
        let c = Clock::parse("2031-06-01T12:00:00Z").unwrap();
        let a = c.now();
        assert_eq!(a.date_naive(), NaiveDate::from_ymd_opt(2031, 6, 1).unwrap());
        assert!((a - "2031-06-01T12:00:00Z".parse::<DateTime<Utc>>().unwrap()).num_seconds() < 5);
        assert!(c.now() >= a);
        let d = Clock::parse("2031-06-01").unwrap();
        assert_eq!(d.today(), NaiveDate::from_ymd_opt(2031, 6, 1).unwrap());
        assert!(Clock::parse("").unwrap().is_system());
        assert_eq!(Clock::parse("next tuesday").unwrap_err(), BadClock);
    }

    #[test]
    fn moving_a_clock_moves_its_clones() {
        let c = Clock::system();
        let other = c.clone();
        let before = other.today();
        c.advance(TimeDelta::days(400));
        assert!(other.today() >= before + chrono::Days::new(399));
        assert!(!other.is_system());
    }
}
