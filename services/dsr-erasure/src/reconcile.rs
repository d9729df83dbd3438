//! The outcome of an erasure is what the systems' receipts say, never the
//! plan alone. This module compares them record by record: each phase
//! (the erasure, then each deferred erasure) expected every record it sent
//! to be removed or kept; any other answer is a [`Discrepancy`] a case
//! handler resolves. What is still retained, and when the next deferred
//! erasure is due, come from the receipts too.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use dsr_domain::erasure::Action;
use serde::{Deserialize, Serialize};

use crate::model::{Plan, PlannedRecord, RecordOutcome, RecordRef, RecordResult};
use crate::store::StoredReceipt;

/// What a phase expected of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expected {
    /// Erased or anonymised.
    Removed,
    /// Kept, restricted.
    Retained,
}

/// A record whose receipt differs from the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discrepancy {
    /// The system.
    pub system_id: String,
    /// The record.
    pub record: RecordRef,
    /// "erase" or "deferred:<date>".
    pub phase: String,
    /// What the plan expected.
    pub expected: Expected,
    /// What the receipt says (`None`: it says nothing of the record).
    pub observed: Option<RecordResult>,
    /// When kept: the system's reason, ground and date.
    pub reason: Option<String>,
    /// The ground the system gave.
    pub ground: Option<String>,
    /// Until when.
    pub until: Option<NaiveDate>,
    /// The receipt.
    pub receipt_id: String,
}

/// Where one record stands after every phase so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing<'a> {
    /// The plan's line.
    pub planned: &'a PlannedRecord,
    /// The last receipt's word on it, and that receipt's phase.
    pub last: Option<(&'a str, &'a RecordOutcome)>,
}

impl Standing<'_> {
    /// Whether the record is kept now: the last receipt kept it, or (no
    /// receipt yet) the plan keeps it.
    pub fn retained(&self) -> bool {
        match self.last {
            Some((_, o)) => o.result == RecordResult::Retained,
            None => self.planned.decision.action == Action::Retain,
        }
    }

    /// The date its retention ends, when it is kept for a period that ends
    /// by itself (not under an Art. 18 request or a hold).
    pub fn retained_until(&self) -> Option<NaiveDate> {
        if !self.retained() {
            return None;
        }
        match self.last {
            Some((_, o)) => match o.reason.as_deref() {
                None | Some("retention") => o.until.or(self.planned.decision.retain_until),
                Some(_) => None,
            },
            None if self.planned.decision.hold => None,
            None => self.planned.decision.retain_until,
        }
    }
}

/// Every planned record with the last receipt's word on it (receipts in
/// the order they were stored).
pub fn standings<'a>(plan: &'a Plan, receipts: &'a [StoredReceipt]) -> Vec<Standing<'a>> {
    let mut last: BTreeMap<(&str, &RecordRef), (&str, &RecordOutcome)> = BTreeMap::new();
    for r in receipts.iter().filter(|r| is_erasure_phase(&r.phase)) {
        for o in &r.receipt.records {
            last.insert((r.system_id.as_str(), &o.record), (r.phase.as_str(), o));
        }
    }
    plan.records
        .iter()
        .map(|p| Standing {
            planned: p,
            last: last.get(&(p.system_id.as_str(), &p.record)).copied(),
        })
        .collect()
}

fn is_erasure_phase(phase: &str) -> bool {
    phase == "erase" || phase.starts_with("deferred:")
}

/// The discrepancies of the receipts of `phases` (every erasure phase when
/// `None`) against the plan.
pub fn discrepancies(
    plan: &Plan,
    receipts: &[StoredReceipt],
    phases: Option<&[String]>,
) -> Vec<Discrepancy> {
    let mut out = Vec::new();
    for r in receipts {
        if !is_erasure_phase(&r.phase) || phases.is_some_and(|p| !p.contains(&r.phase)) {
            continue;
        }
        let said: BTreeMap<&RecordRef, &RecordOutcome> =
            r.receipt.records.iter().map(|o| (&o.record, o)).collect();
        // The records this phase sent the system: all of its records for
        // the erasure; those retained until the day before for a deferred
        // erasure (what the receipt names, since the plan alone cannot say
        // which a system kept with its own date).
        let sent: Vec<&PlannedRecord> = plan
            .records
            .iter()
            .filter(|p| p.system_id == r.system_id)
            .filter(|p| r.phase == "erase" || said.contains_key(&p.record))
            .collect();
        for p in sent {
            let expected = match (r.phase.as_str(), p.decision.action) {
                ("erase", Action::Retain) => Expected::Retained,
                _ => Expected::Removed,
            };
            let o = said.get(&p.record).copied();
            let agrees = match (expected, o.map(|o| o.result)) {
                (Expected::Removed, Some(RecordResult::Erased | RecordResult::Anonymised))
                | (Expected::Retained, Some(RecordResult::Retained)) => true,
                (_, None | Some(_)) => false,
            };
            if !agrees {
                out.push(Discrepancy {
                    system_id: r.system_id.clone(),
                    record: p.record.clone(),
                    phase: r.phase.clone(),
                    expected,
                    observed: o.map(|o| o.result),
                    reason: o.and_then(|o| o.reason.clone()),
                    ground: o.and_then(|o| o.ground.clone()),
                    until: o.and_then(|o| o.until),
                    receipt_id: r.id.clone(),
                });
            }
        }
    }
    out
}

/// Records still kept, and the day the next deferred erasure is due (the
/// day after the earliest retention end still to come, or past and not yet
/// run).
pub fn remaining(standings: &[Standing<'_>]) -> (u32, Option<NaiveDate>) {
    let kept = standings.iter().filter(|s| s.retained()).count();
    let next = standings
        .iter()
        .filter_map(Standing::retained_until)
        .min()
        .and_then(|d| d.succ_opt());
    (u32::try_from(kept).unwrap_or(u32::MAX), next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Receipt;
    use chrono::{TimeZone, Utc};
    use dsr_domain::erasure::Decision;

    fn rec(key: &str) -> RecordRef {
        RecordRef {
            store: "t".into(),
            key: key.into(),
        }
    }

    fn planned(key: &str, action: Action, until: Option<NaiveDate>) -> PlannedRecord {
        PlannedRecord {
            system_id: "crm".into(),
            record: rec(key),
            categories: vec![],
            anchor: None,
            decision: Decision {
                action,
                ground: if action == Action::Retain {
                    "AML".into()
                } else {
                    String::new()
                },
                ground_sv: String::new(),
                retain_until: until,
                rule_id: String::new(),
                restrict_to: String::new(),
                hold: false,
            },
        }
    }

    fn said(key: &str, result: RecordResult, reason: Option<&str>) -> RecordOutcome {
        RecordOutcome {
            record: rec(key),
            result,
            reason: reason.map(str::to_owned),
            ground: reason.map(|_| "a ground".to_owned()),
            until: None,
        }
    }

    fn receipt(id: &str, phase: &str, records: Vec<RecordOutcome>) -> StoredReceipt {
        StoredReceipt {
            id: id.into(),
            request_id: "r".into(),
            system_id: "crm".into(),
            phase: phase.into(),
            receipt: Receipt {
                payload: vec![],
                key_id: String::new(),
                signature: vec![],
                system_id: "crm".into(),
                request_id: "r".into(),
                idempotency_key: String::new(),
                stores: vec![],
                retained: 0,
                records,
            },
            verified: true,
            received_at: Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
        }
    }

    fn plan(records: Vec<PlannedRecord>) -> Plan {
        Plan {
            request_id: "r".into(),
            controller: "556134-1248".into(),
            created_at: Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
            policy_version: "2.1".into(),
            records,
            identity_hashes: vec![],
        }
    }

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    /// Each row: the plan's action for record "1", what the erase phase's
    /// receipt says, and whether that is a discrepancy.
    #[test]
    fn the_erase_phase_agrees_only_when_the_receipt_does_what_the_plan_says() {
        use RecordResult::*;
        let rows: &[(Action, Option<RecordResult>, bool)] = &[
            (Action::Erase, Some(Erased), false),
            (Action::Erase, Some(Anonymised), false),
            (Action::Anonymise, Some(Anonymised), false),
            (Action::Erase, Some(Retained), true),
            (Action::Erase, Some(NotFound), true),
            (Action::Erase, Some(Refused), true),
            (Action::Erase, None, true),
            (Action::Retain, Some(Retained), false),
            (Action::Retain, Some(Erased), true),
            (Action::Retain, Some(NotFound), true),
        ];
        for (action, result, differs) in rows {
            let until = (*action == Action::Retain).then(|| d(2030, 1, 1));
            let p = plan(vec![planned("1", *action, until)]);
            let records = result.map(|r| vec![said("1", r, None)]).unwrap_or_default();
            let receipts = vec![receipt("rc1", "erase", records)];
            let found = discrepancies(&p, &receipts, None);
            assert_eq!(!found.is_empty(), *differs, "{action:?} {result:?}");
            if let Some(x) = found.first() {
                assert_eq!(x.observed, *result);
                assert_eq!(x.receipt_id, "rc1");
                assert_eq!(x.phase, "erase");
            }
        }
    }

    #[test]
    fn counts_and_the_next_deferred_date_follow_the_receipts() {
        // The plan erases "1" and keeps "2" until 2030-01-01; the system
        // kept "1" too, for its own period until 2029-06-30.
        let p = plan(vec![
            planned("1", Action::Erase, None),
            planned("2", Action::Retain, Some(d(2030, 1, 1))),
        ]);
        let mut kept = said("1", RecordResult::Retained, Some("retention"));
        kept.until = Some(d(2029, 6, 30));
        let receipts = vec![receipt(
            "rc1",
            "erase",
            vec![kept, said("2", RecordResult::Retained, Some("retention"))],
        )];
        let s = standings(&p, &receipts);
        assert_eq!(remaining(&s), (2, Some(d(2029, 7, 1))));
        assert_eq!(discrepancies(&p, &receipts, None).len(), 1);

        // The deferred erasures: "1" erased; "2" kept under an Art. 18
        // request, which has no date (and is a discrepancy).
        let mut all = receipts.clone();
        all.push(receipt(
            "rc2",
            "deferred:2029-06-30",
            vec![said("1", RecordResult::Erased, None)],
        ));
        all.push(receipt(
            "rc3",
            "deferred:2030-01-01",
            vec![said("2", RecordResult::Retained, Some("request"))],
        ));
        let s = standings(&p, &all);
        assert_eq!(remaining(&s), (1, None));
        let phases = vec![
            "deferred:2029-06-30".to_owned(),
            "deferred:2030-01-01".to_owned(),
        ];
        let found = discrepancies(&p, &all, Some(&phases));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].record, rec("2"));
        assert_eq!(found[0].expected, Expected::Removed);
        assert_eq!(found[0].reason.as_deref(), Some("request"));
    }

    #[test]
    fn a_deferred_erasure_that_matches_nothing_is_a_discrepancy() {
        let p = plan(vec![planned("2", Action::Retain, Some(d(2030, 1, 1)))]);
        let receipts = vec![
            receipt(
                "rc1",
                "erase",
                vec![said("2", RecordResult::Retained, Some("retention"))],
            ),
            receipt(
                "rc2",
                "deferred:2030-01-01",
                vec![said("2", RecordResult::NotFound, None)],
            ),
        ];
        let found = discrepancies(&p, &receipts, None);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].observed, Some(RecordResult::NotFound));
        assert_eq!(remaining(&standings(&p, &receipts)), (0, None));
    }
}
