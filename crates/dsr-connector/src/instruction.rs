//! The header every instruction carries, and the checks a system makes
//! before acting on it: routing, the validity window, the controller.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use dsr_domain::identity::Organisationsnummer;

/// Longest validity window an instruction may have.
pub const MAX_WINDOW: Duration = Duration::minutes(15);
/// Clock skew tolerated on `issued_at`.
pub const SKEW: Duration = Duration::seconds(30);

/// A validated instruction header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instruction {
    /// The orchestrator's request id.
    pub request_id: String,
    /// The controller.
    pub controller: Organisationsnummer,
    /// The system it is for.
    pub system_id: String,
    /// The statutory due date.
    pub due_date: NaiveDate,
    /// Issued.
    pub issued_at: DateTime<Utc>,
    /// Expires.
    pub expires_at: DateTime<Utc>,
    /// Idempotency key.
    pub idempotency_key: String,
}

/// Why an instruction is refused before anything is done.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Addressed to another system.
    #[error("instruction is addressed to another system")]
    Misrouted,
    /// Past `expires_at`.
    #[error("instruction has expired")]
    Expired,
    /// `issued_at` is in the future (beyond the clock skew).
    #[error("instruction is not valid yet")]
    NotYetValid,
    /// The window is longer than [`MAX_WINDOW`] or ends before it starts.
    #[error("instruction window is invalid")]
    BadWindow,
    /// The system does not hold data for this controller.
    #[error("controller not served by this system")]
    ControllerNotServed,
}

impl Refusal {
    /// Stable reason for `google.rpc.ErrorInfo`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Misrouted => "INSTRUCTION_MISROUTED",
            Self::Expired => "INSTRUCTION_EXPIRED",
            Self::NotYetValid => "INSTRUCTION_NOT_YET_VALID",
            Self::BadWindow => "INSTRUCTION_WINDOW",
            Self::ControllerNotServed => "CONTROLLER_NOT_SERVED",
        }
    }
}

/// Whether an idempotency key is well formed: 8 to 128 of `[A-Za-z0-9._:-]`.
pub fn valid_idempotency_key(key: &str) -> bool {
    (8..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

impl Instruction {
    /// Checks routing, window and controller against this system at `now`.
    pub fn check(
        &self,
        system_id: &str,
        controllers: &BTreeSet<Organisationsnummer>,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        if self.system_id != system_id {
            return Err(Refusal::Misrouted);
        }
        if self.expires_at <= self.issued_at || self.expires_at - self.issued_at > MAX_WINDOW {
            return Err(Refusal::BadWindow);
        }
        if self.issued_at > now + SKEW {
            return Err(Refusal::NotYetValid);
        }
        if now > self.expires_at {
            return Err(Refusal::Expired);
        }
        if !controllers.contains(&self.controller) {
            return Err(Refusal::ControllerNotServed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instr(
        system: &str,
        issued: DateTime<Utc>,
        expires: DateTime<Utc>,
        org: &str,
    ) -> Instruction {
        Instruction {
            request_id: "r1".into(),
            controller: Organisationsnummer::parse(org).unwrap(),
            system_id: system.into(),
            due_date: NaiveDate::from_ymd_opt(2026, 12, 23).unwrap(),
            issued_at: issued,
            expires_at: expires,
            idempotency_key: "key-00001".into(),
        }
    }

    #[test]
    fn refusals() {
        let now = Utc::now();
        let served: BTreeSet<_> = [Organisationsnummer::parse("556134-1248").unwrap()].into();
        let m = Duration::minutes(1);
        let cases = [
            (instr("crm", now - m, now + m, "556134-1248"), Ok(())),
            (
                instr("legal", now - m, now + m, "556134-1248"),
                Err(Refusal::Misrouted),
            ),
            (
                instr("crm", now - m * 3, now - m, "556134-1248"),
                Err(Refusal::Expired),
            ),
            (
                instr("crm", now + m * 2, now + m * 3, "556134-1248"),
                Err(Refusal::NotYetValid),
            ),
            (
                instr("crm", now - m, now + m * 20, "556134-1248"),
                Err(Refusal::BadWindow),
            ),
            (
                instr("crm", now, now - m, "556134-1248"),
                Err(Refusal::BadWindow),
            ),
            (
                instr("crm", now - m, now + m, "556885-5265"),
                Err(Refusal::ControllerNotServed),
            ),
        ];
        for (i, want) in cases {
            assert_eq!(i.check("crm", &served, now), want, "{i:?}");
        }
    }

    #[test]
    fn idempotency_keys() {
        assert!(valid_idempotency_key("req-1:crm:erase"));
        assert!(!valid_idempotency_key("short"));
        assert!(!valid_idempotency_key("has space in it"));
        assert!(!valid_idempotency_key(&"k".repeat(129)));
    }
}
