//! Why a record's processing is restricted to storage, as the contract's
//! `RestrictionReason` names it, and the rule every system applies with it:
//! a record restricted only because it is retained over an erasure is
//! erased on its date; one under an Art. 18 request or a legal hold is not,
//! whatever the date, until that restriction is lifted.

use std::collections::BTreeSet;
use std::fmt;

/// One reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Kept over an erasure for a period set by law or an open contract;
    /// ends by itself on its date.
    Retention,
    /// The person's Art. 18 request; ends when lifted.
    Request,
    /// A legal hold; ends when the hold is lifted.
    Hold,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 3] = [Reason::Retention, Reason::Request, Reason::Hold];

    /// Stable lower-case name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retention => "retention",
            Self::Request => "request",
            Self::Hold => "hold",
        }
    }

    /// Parses [`Reason::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reasons that hold for one record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reasons(BTreeSet<Reason>);

impl Reasons {
    /// No restriction.
    pub fn none() -> Self {
        Self::default()
    }

    /// From a list.
    pub fn of(reasons: impl IntoIterator<Item = Reason>) -> Self {
        Self(reasons.into_iter().collect())
    }

    /// Decodes the stored form: names joined by `,` in order (unknown names
    /// are kept as the strictest reason, a hold: never erase what one does
    /// not understand).
    pub fn decode(stored: &str) -> Self {
        Self(
            stored
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Reason::parse(s).unwrap_or(Reason::Hold))
                .collect(),
        )
    }

    /// The stored form; `None` when no reason is left.
    pub fn encode(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| {
            self.0
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
    }

    /// Adds a reason.
    pub fn add(&mut self, r: Reason) {
        self.0.insert(r);
    }

    /// Removes a reason.
    pub fn remove(&mut self, r: Reason) {
        self.0.remove(&r);
    }

    /// Whether `r` holds.
    pub fn contains(&self, r: Reason) -> bool {
        self.0.contains(&r)
    }

    /// Whether no reason holds (the record is processed normally).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The reasons, in order.
    pub fn iter(&self) -> impl Iterator<Item = Reason> + '_ {
        self.0.iter().copied()
    }

    /// The reason that keeps the record from an erasure at its date: an
    /// Art. 18 request or a hold (a hold first). `None` when the record may
    /// be erased once its retention has ended.
    pub fn protecting(&self) -> Option<Reason> {
        [Reason::Hold, Reason::Request]
            .into_iter()
            .find(|r| self.0.contains(r))
    }

    /// The stored form of a record restricted only for retention: the one
    /// value a sweep may erase.
    pub fn retention_only() -> String {
        Reason::Retention.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_in_order_and_unknown_ones_protect() {
        let mut r = Reasons::of([Reason::Request, Reason::Retention]);
        assert_eq!(r.encode().as_deref(), Some("retention,request"));
        assert_eq!(Reasons::decode("retention,request"), r);
        assert_eq!(r.protecting(), Some(Reason::Request));
        r.remove(Reason::Request);
        assert_eq!(r.encode(), Some(Reasons::retention_only()));
        assert_eq!(r.protecting(), None);
        r.remove(Reason::Retention);
        assert_eq!(r.encode(), None);
        assert!(Reasons::decode(" ").is_empty());
        assert_eq!(
            Reasons::decode("retention,court-order").protecting(),
            Some(Reason::Hold)
        );
    }
}
