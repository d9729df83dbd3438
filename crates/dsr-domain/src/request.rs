//! The life of a data-subject request: its states, the moves between them,
//! and the audit trail that records every move in a hash chain.
//!
//! The orchestrator's ledger stores these; the rules live here so that they
//! are the same whichever process, replica or database runs them.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What the person asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Art. 15.
    Access,
    /// Art. 20.
    Portability,
    /// Art. 17.
    Erasure,
    /// Art. 16.
    Rectification,
    /// Art. 18.
    Restriction,
    /// Art. 21.
    Objection,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] = [
        Self::Access,
        Self::Portability,
        Self::Erasure,
        Self::Rectification,
        Self::Restriction,
        Self::Objection,
    ];

    /// Stable lower-case name, for storage and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access",
            Self::Portability => "portability",
            Self::Erasure => "erasure",
            Self::Rectification => "rectification",
            Self::Restriction => "restriction",
            Self::Objection => "objection",
        }
    }

    /// Whether it is a write other than erasure (rectification, restriction,
    /// objection): it carries a [`WriteOrder`] and is applied in one step.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Self::Rectification | Self::Restriction | Self::Objection
        )
    }

    /// Whether the answer is a package (access, portability) rather than a
    /// change in the systems.
    pub fn exports(self) -> bool {
        matches!(self, Self::Access | Self::Portability)
    }

    /// Parses [`Kind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Why processing is restricted (Art. 18(1)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestrictionGround {
    /// (a) accuracy contested.
    AccuracyContested,
    /// (b) unlawful processing, restriction instead of erasure.
    UnlawfulProcessing,
    /// (c) needed by the person for legal claims.
    NeededForLegalClaims,
    /// (d) an objection being verified.
    ObjectionPending,
}

impl RestrictionGround {
    /// The reason as the systems record it.
    pub fn reason(self) -> &'static str {
        match self {
            Self::AccuracyContested => "Art. 18(1)(a): accuracy contested",
            Self::UnlawfulProcessing => "Art. 18(1)(b): unlawful processing, restriction requested",
            Self::NeededForLegalClaims => "Art. 18(1)(c): needed by the person for legal claims",
            Self::ObjectionPending => "Art. 18(1)(d): objection pending verification",
        }
    }
}

/// One correction: every field of `category` gets `value`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Correction {
    /// The category.
    pub category: String,
    /// The correct value.
    pub value: String,
}

/// What a rectification, restriction or objection asks of the systems.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "order", rename_all = "snake_case")]
pub enum WriteOrder {
    /// Art. 16.
    Rectify {
        /// The corrections.
        corrections: Vec<Correction>,
    },
    /// Art. 18: restrict on `ground`.
    Restrict {
        /// Why.
        ground: RestrictionGround,
    },
    /// Art. 18(3): lift, the person told at `person_informed_at`; `None`
    /// until the mesh has told them itself (its restriction-lifted letter
    /// is sent before the lift is applied).
    Lift {
        /// When the person was told.
        person_informed_at: Option<DateTime<Utc>>,
    },
    /// Art. 21.
    Object {
        /// The purposes.
        purposes: Vec<String>,
        /// Direct marketing (absolute).
        direct_marketing: bool,
    },
}

impl WriteOrder {
    /// The request kind it belongs to.
    pub fn kind(&self) -> Kind {
        match self {
            Self::Rectify { .. } => Kind::Rectification,
            Self::Restrict { .. } | Self::Lift { .. } => Kind::Restriction,
            Self::Object { .. } => Kind::Objection,
        }
    }
}

/// Where a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Recorded.
    Submitted,
    /// Waiting for the identity verification.
    Verifying,
    /// Finding the data.
    Locating,
    /// Waiting for a case handler.
    AwaitingApproval,
    /// Building the answer.
    Exporting,
    /// Erasure: planning what happens to every record.
    Planning,
    /// Erasure: the systems are erasing.
    Executing,
    /// Answered.
    Completed,
    /// Erasure answered, with records retained on a legal ground; their
    /// deferred erasure is scheduled when their date is known.
    CompletedWithRetained,
    /// Erasure: what the systems did (their receipts) differs from the
    /// plan; a case handler reviews the differences before the request is
    /// completed.
    AwaitingReview,
    /// Rejected by a case handler.
    Rejected,
    /// Cancelled.
    Cancelled,
}

impl State {
    /// Stable lower-case name, for storage and the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submitted => "submitted",
            Self::Verifying => "verifying",
            Self::Locating => "locating",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Exporting => "exporting",
            Self::Planning => "planning",
            Self::Executing => "executing",
            Self::Completed => "completed",
            Self::CompletedWithRetained => "completed_with_retained",
            Self::AwaitingReview => "awaiting_review",
            Self::Rejected => "rejected",
            Self::Cancelled => "cancelled",
        }
    }

    /// Every state.
    pub const ALL: [State; 12] = [
        Self::Submitted,
        Self::Verifying,
        Self::Locating,
        Self::AwaitingApproval,
        Self::Exporting,
        Self::Planning,
        Self::Executing,
        Self::Completed,
        Self::CompletedWithRetained,
        Self::AwaitingReview,
        Self::Rejected,
        Self::Cancelled,
    ];

    /// Parses [`State::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether nothing follows.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Rejected | Self::Cancelled)
    }

    /// Whether the person has their answer (the deadline no longer runs).
    pub fn is_answered(self) -> bool {
        self.is_final() || self == Self::CompletedWithRetained
    }

    /// Whether the request may still be cancelled: before the answer is
    /// built (for an access request, building the package is the
    /// irreversible work: data has left the systems).
    pub fn cancellable(self) -> bool {
        matches!(
            self,
            Self::Submitted
                | Self::Verifying
                | Self::Locating
                | Self::AwaitingApproval
                | Self::Planning
        )
    }

    /// Whether a case handler may approve it now (a request awaiting
    /// approval may also be rejected; approving one awaiting review accepts
    /// the outcome the receipts show).
    pub fn awaits_decision(self) -> bool {
        matches!(self, Self::AwaitingApproval | Self::AwaitingReview)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A move refused by the state machine.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a request cannot move from {from} to {to}")]
pub struct IllegalMove {
    /// From.
    pub from: State,
    /// To.
    pub to: State,
}

/// Checks a move. The work moves forward one state at a time (approval may
/// be skipped when the controller does not require it); a case handler may
/// reject a request awaiting approval or still being verified; anything not
/// final may be cancelled while [`State::cancellable`].
pub fn check_move(from: State, to: State) -> Result<(), IllegalMove> {
    use State::*;
    let ok = match (from, to) {
        (Submitted, Verifying | Locating)
        | (Verifying, Locating)
        | (Locating, AwaitingApproval | Exporting | Planning | Executing)
        | (AwaitingApproval, Exporting | Executing)
        | (Exporting, Completed)
        | (Planning, AwaitingApproval | Executing)
        | (Executing | CompletedWithRetained, Completed | CompletedWithRetained)
        | (Executing | CompletedWithRetained, AwaitingReview)
        | (AwaitingReview, Completed | CompletedWithRetained)
        | (Verifying | AwaitingApproval, Rejected) => true,
        (f, Cancelled) => f.cancellable(),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(IllegalMove { from, to })
    }
}

/// One entry of the audit trail. It names who did what to which request
/// and when; it never holds personal data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    /// Position in the trail, from 1.
    pub seq: u64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who: a service ("service:orchestrator") or a case handler's subject.
    pub actor: String,
    /// The request.
    pub request_id: String,
    /// What happened, e.g. "submitted", "state:locating", "extended:1".
    pub action: String,
    /// The previous event's hash (64 hex digits; zeros for the first).
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

/// The hash of the first event's predecessor.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn field(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

/// The hash of an event: SHA-256 over the previous hash and every field,
/// each length-prefixed so no two events hash alike by shifting text.
pub fn event_hash(
    prev_hash: &str,
    seq: u64,
    at: DateTime<Utc>,
    actor: &str,
    request_id: &str,
    action: &str,
) -> String {
    let mut h = Sha256::new();
    field(&mut h, prev_hash);
    h.update(seq.to_be_bytes());
    field(
        &mut h,
        &at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    );
    field(&mut h, actor);
    field(&mut h, request_id);
    field(&mut h, action);
    hex::encode(h.finalize())
}

/// Makes the event that follows `prev` (or the first one).
pub fn next_event(
    prev: Option<&AuditEvent>,
    at: DateTime<Utc>,
    actor: &str,
    request_id: &str,
    action: &str,
) -> AuditEvent {
    match prev {
        Some(p) => event_after(p.seq, &p.hash, at, actor, request_id, action),
        None => event_after(0, GENESIS, at, actor, request_id, action),
    }
}

/// Makes the event that follows the chain's head: the last event's
/// sequence number and hash (0 and [`GENESIS`] before the first event).
pub fn event_after(
    head_seq: u64,
    head_hash: &str,
    at: DateTime<Utc>,
    actor: &str,
    request_id: &str,
    action: &str,
) -> AuditEvent {
    let (seq, prev_hash) = (head_seq + 1, head_hash.to_owned());
    // Stored times have microsecond precision: hash what will be read back.
    let at = DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at);
    let hash = event_hash(&prev_hash, seq, at, actor, request_id, action);
    AuditEvent {
        seq,
        at,
        actor: actor.to_owned(),
        request_id: request_id.to_owned(),
        action: action.to_owned(),
        prev_hash,
        hash,
    }
}

/// Where a trail is broken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// An event's sequence number is not the one expected.
    #[error("event {found} found where {expected} was expected")]
    Gap {
        /// Expected.
        expected: u64,
        /// Found.
        found: u64,
    },
    /// An event does not point at its predecessor's hash.
    #[error("event {0} does not follow its predecessor")]
    Unlinked(u64),
    /// An event's hash does not match its content.
    #[error("event {0} was altered")]
    Altered(u64),
}

/// Checks a whole trail, in order. Returns the number of events.
pub fn verify_chain<'a>(
    events: impl IntoIterator<Item = &'a AuditEvent>,
) -> Result<u64, ChainError> {
    let mut prev_hash = GENESIS.to_owned();
    let mut expected = 1;
    for e in events {
        if e.seq != expected {
            return Err(ChainError::Gap {
                expected,
                found: e.seq,
            });
        }
        if e.prev_hash != prev_hash {
            return Err(ChainError::Unlinked(e.seq));
        }
        if event_hash(
            &e.prev_hash,
            e.seq,
            e.at,
            &e.actor,
            &e.request_id,
            &e.action,
        ) != e.hash
        {
            return Err(ChainError::Altered(e.seq));
        }
        prev_hash = e.hash.clone();
        expected += 1;
    }
    Ok(expected - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use State::*;

    #[test]
    fn moves() {
        let all = [
            Submitted,
            Verifying,
            Locating,
            AwaitingApproval,
            Exporting,
            Planning,
            Executing,
            Completed,
            CompletedWithRetained,
            AwaitingReview,
            Rejected,
            Cancelled,
        ];
        let allowed = [
            (Submitted, Verifying),
            (Submitted, Locating),
            (Submitted, Cancelled),
            (Verifying, Locating),
            (Verifying, Rejected),
            (Verifying, Cancelled),
            (Locating, AwaitingApproval),
            (Locating, Exporting),
            (Locating, Cancelled),
            (AwaitingApproval, Exporting),
            (AwaitingApproval, Rejected),
            (AwaitingApproval, Cancelled),
            (Exporting, Completed),
            (Locating, Planning),
            (Locating, Executing),
            (Planning, AwaitingApproval),
            (Planning, Executing),
            (Planning, Cancelled),
            (AwaitingApproval, Executing),
            (Executing, Completed),
            (Executing, CompletedWithRetained),
            (CompletedWithRetained, CompletedWithRetained),
            (CompletedWithRetained, Completed),
            (Executing, AwaitingReview),
            (CompletedWithRetained, AwaitingReview),
            (AwaitingReview, Completed),
            (AwaitingReview, CompletedWithRetained),
        ];
        for from in all {
            for to in all {
                assert_eq!(
                    check_move(from, to).is_ok(),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        assert!(
            all.iter()
                .filter(|s| s.is_final())
                .all(|s| !s.cancellable())
        );
        for s in all {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn the_chain_detects_every_kind_of_tampering() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-23T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut trail: Vec<AuditEvent> = Vec::new();
        for (i, action) in [
            "submitted",
            "state:verifying",
            "state:locating",
            "state:exporting",
            "state:completed",
        ]
        .iter()
        .enumerate()
        {
            let e = next_event(
                trail.last(),
                t0 + chrono::Duration::seconds(i as i64),
                "service:orchestrator",
                "req-1",
                action,
            );
            trail.push(e);
        }
        assert_eq!(verify_chain(&trail), Ok(5));

        let mut altered = trail.clone();
        altered[2].action = "state:cancelled".into();
        assert_eq!(verify_chain(&altered), Err(ChainError::Altered(3)));

        let mut removed = trail.clone();
        removed.remove(1);
        assert_eq!(
            verify_chain(&removed),
            Err(ChainError::Gap {
                expected: 2,
                found: 3
            })
        );

        let mut rehashed = trail.clone();
        rehashed[1].actor = "intruder".into();
        rehashed[1].hash = event_hash(
            &rehashed[1].prev_hash,
            2,
            rehashed[1].at,
            "intruder",
            "req-1",
            &rehashed[1].action,
        );
        assert_eq!(
            verify_chain(&rehashed),
            Err(ChainError::Unlinked(3)),
            "rewriting one event breaks the next link"
        );
    }

    #[test]
    fn length_prefixes_keep_fields_apart() {
        let t = Utc::now();
        assert_ne!(
            event_hash(GENESIS, 1, t, "ab", "c", "d"),
            event_hash(GENESIS, 1, t, "a", "bc", "d")
        );
    }
}
