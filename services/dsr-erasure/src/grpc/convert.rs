//! Erasure's records to and from the wire.

use dsr_connector::grpc as kit;
use dsr_domain::erasure::Action;
use dsr_domain::request::{Correction, RestrictionGround, WriteOrder};
use dsr_proto::common::v1 as common;
use dsr_proto::erasure::v1 as pb;
use dsr_proto::system::v1 as sys;
use prost::Message as _;

use crate::eraser::{Execution, SystemOutcome};
use crate::model::{Plan, RecordOutcome, RecordRef, RecordResult, RestrictionReason};
use crate::reconcile::{Discrepancy, Expected};
use crate::store::{
    Hold, HoldScope, Notification, StoredReceipt, Sweep, SweepTrigger, SweptState, TransferVerdict,
};

pub(super) fn action_to_pb(a: Action) -> pb::PlanAction {
    match a {
        Action::Erase => pb::PlanAction::Erase,
        Action::Anonymise => pb::PlanAction::Anonymise,
        Action::Retain => pb::PlanAction::Retain,
    }
}

pub(super) fn ref_to_pb(r: &RecordRef) -> sys::RecordRef {
    sys::RecordRef {
        store: r.store.clone(),
        key: r.key.clone(),
    }
}

pub(super) fn controller_pb(orgnr: &str) -> Option<common::ControllerRef> {
    Some(common::ControllerRef {
        organisation_number: orgnr.to_owned(),
    })
}

pub(super) fn discrepancy_to_pb(d: &Discrepancy) -> pb::Discrepancy {
    pb::Discrepancy {
        system_id: d.system_id.clone(),
        record: Some(ref_to_pb(&d.record)),
        phase: d.phase.clone(),
        expected: match d.expected {
            Expected::Removed => pb::Expectation::Removed,
            Expected::Retained => pb::Expectation::Retained,
        } as i32,
        observed: d
            .observed
            .map_or(sys::RecordResult::Unspecified, result_to_pb) as i32,
        restriction_reason: d
            .reason
            .as_deref()
            .and_then(RestrictionReason::parse)
            .map_or(sys::RestrictionReason::Unspecified, kit::restriction_to_pb)
            as i32,
        legal_ground: d.ground.clone().unwrap_or_default(),
        retain_until: d.until.map(kit::date_to_pb),
        receipt_id: d.receipt_id.clone(),
    }
}

pub(super) fn result_to_pb(r: RecordResult) -> sys::RecordResult {
    match r {
        RecordResult::Erased => sys::RecordResult::Erased,
        RecordResult::Anonymised => sys::RecordResult::Anonymised,
        RecordResult::Retained => sys::RecordResult::Retained,
        RecordResult::Refused => sys::RecordResult::Refused,
        RecordResult::NotFound => sys::RecordResult::NotFound,
        RecordResult::Applied => sys::RecordResult::Applied,
        RecordResult::Unchanged => sys::RecordResult::Unchanged,
    }
}

pub(super) fn result_from_pb(r: i32) -> Option<RecordResult> {
    Some(match sys::RecordResult::try_from(r).ok()? {
        sys::RecordResult::Unspecified => return None,
        sys::RecordResult::Erased => RecordResult::Erased,
        sys::RecordResult::Anonymised => RecordResult::Anonymised,
        sys::RecordResult::Retained => RecordResult::Retained,
        sys::RecordResult::Refused => RecordResult::Refused,
        sys::RecordResult::NotFound => RecordResult::NotFound,
        sys::RecordResult::Applied => RecordResult::Applied,
        sys::RecordResult::Unchanged => RecordResult::Unchanged,
    })
}

/// The per-record lines of a verified receipt, each kept record with the
/// ground, date and reason its retained item gives.
pub(super) fn records_from_pb(r: &sys::Receipt) -> Vec<RecordOutcome> {
    let kept: std::collections::BTreeMap<(&str, &str), &sys::RetainedItem> = r
        .retained
        .iter()
        .filter_map(|x| {
            x.record
                .as_ref()
                .map(|rr| ((rr.store.as_str(), rr.key.as_str()), x))
        })
        .collect();
    r.records
        .iter()
        .filter_map(|o| {
            let rr = o.record.as_ref()?;
            let result = result_from_pb(o.result)?;
            let item = kept.get(&(rr.store.as_str(), rr.key.as_str()));
            Some(RecordOutcome {
                record: RecordRef {
                    store: rr.store.clone(),
                    key: rr.key.clone(),
                },
                result,
                reason: item
                    .and_then(|x| kit::restriction_from_pb(x.reason, RestrictionReason::Retention))
                    .map(|x| x.as_str().to_owned()),
                ground: item.map(|x| x.legal_ground.clone()),
                until: item.and_then(|x| kit::date(x.retain_until)),
            })
        })
        .collect()
}

pub(super) fn plan_to_pb(p: &Plan, discrepancies: &[Discrepancy]) -> pb::Plan {
    let count = |a: Action| {
        u32::try_from(p.records.iter().filter(|r| r.decision.action == a).count())
            .unwrap_or(u32::MAX)
    };
    pb::Plan {
        request_id: p.request_id.clone(),
        controller: controller_pb(&p.controller),
        created_at: Some(kit::timestamp(p.created_at)),
        policy_version: p.policy_version.clone(),
        records: p
            .records
            .iter()
            .map(|r| pb::PlannedRecord {
                system_id: r.system_id.clone(),
                record: Some(ref_to_pb(&r.record)),
                category_ids: r.categories.clone(),
                action: action_to_pb(r.decision.action) as i32,
                legal_ground: r.decision.ground.clone(),
                legal_ground_sv: r.decision.ground_sv.clone(),
                retain_until: r.decision.retain_until.map(kit::date_to_pb),
                rule_id: r.decision.rule_id.clone(),
                restrict_to: r.decision.restrict_to.clone(),
                retention_anchor: r.anchor.map(kit::date_to_pb),
            })
            .collect(),
        erase_count: count(Action::Erase),
        anonymise_count: count(Action::Anonymise),
        retain_count: count(Action::Retain),
        next_deferred_on: p
            .records
            .iter()
            .filter(|r| r.decision.action == Action::Retain)
            .filter_map(|r| r.decision.retain_until)
            .min()
            .and_then(|d| d.succ_opt())
            .map(kit::date_to_pb),
        discrepancies: discrepancies.iter().map(discrepancy_to_pb).collect(),
    }
}

pub(super) fn execution_to_pb(e: &Execution) -> pb::Execution {
    pb::Execution {
        request_id: e.request_id.clone(),
        complete: e.complete(),
        retained_count: e.retained,
        next_deferred_on: e.next_deferred_on.map(kit::date_to_pb),
        discrepancies: e.discrepancies.iter().map(discrepancy_to_pb).collect(),
        systems: e
            .systems
            .iter()
            .map(|(id, o)| match o {
                SystemOutcome::Done(r) => pb::SystemExecution {
                    system_id: id.clone(),
                    state: pb::SystemState::Done as i32,
                    receipt_id: r.id.clone(),
                    affected: r.receipt.affected(),
                    refused: r.receipt.refused(),
                    retained: r.receipt.retained,
                    error: String::new(),
                },
                SystemOutcome::Failed(reason) => pb::SystemExecution {
                    system_id: id.clone(),
                    state: pb::SystemState::Failed as i32,
                    error: reason.clone(),
                    ..Default::default()
                },
                SystemOutcome::ReceiptInvalid(reason) => pb::SystemExecution {
                    system_id: id.clone(),
                    state: pb::SystemState::ReceiptInvalid as i32,
                    error: reason.clone(),
                    ..Default::default()
                },
            })
            .collect(),
    }
}

pub(super) fn receipt_to_pb(r: &StoredReceipt) -> pb::StoredReceipt {
    pb::StoredReceipt {
        id: r.id.clone(),
        request_id: r.request_id.clone(),
        system_id: r.system_id.clone(),
        phase: r.phase.clone(),
        signed: Some(sys::SignedReceipt {
            payload: r.receipt.payload.clone(),
            key_id: r.receipt.key_id.clone(),
            signature: r.receipt.signature.clone(),
        }),
        receipt: sys::Receipt::decode(r.receipt.payload.as_slice()).ok(),
        verified: r.verified,
        received_at: Some(kit::timestamp(r.received_at)),
    }
}

pub(super) fn notification_to_pb(n: &Notification) -> pb::Notification {
    pb::Notification {
        id: n.id.clone(),
        request_id: n.request_id.clone(),
        recipient_id: n.recipient_id.clone(),
        recipient_name: n.recipient_name.clone(),
        country: n.country.clone(),
        action: n.action.clone(),
        channel: if n.through.is_some() {
            pb::NotificationChannel::DataSystem
        } else {
            pb::NotificationChannel::Task
        } as i32,
        system_id: n.through.as_ref().map(|t| t.0.clone()).unwrap_or_default(),
        receipt_id: n.through.as_ref().map(|t| t.1.clone()).unwrap_or_default(),
        due_date: n.due_on.map(kit::date_to_pb),
        done_time: n.done_at.map(kit::timestamp),
        done_by: n.done_by.clone().unwrap_or_default(),
        transfer: match n.transfer {
            TransferVerdict::Lawful => pb::NotificationTransfer::Lawful,
            TransferVerdict::Refused => pb::NotificationTransfer::Refused,
            TransferVerdict::AwaitingApproval => pb::NotificationTransfer::AwaitingApproval,
            TransferVerdict::Approved => pb::NotificationTransfer::Approved,
        } as i32,
        transfer_reasons: n.transfer_reasons.clone(),
        approved_by: n.approval.as_ref().map(|a| a.0.clone()).unwrap_or_default(),
        approval_note: n.approval.as_ref().map(|a| a.1.clone()).unwrap_or_default(),
    }
}
/// The write order of an Apply request; violations name the field.
pub(super) fn order_from_pb(
    order: Option<pb::apply_request::Order>,
    v: &mut Vec<(String, String)>,
) -> Option<WriteOrder> {
    match order {
        None => {
            v.push((
                "order".into(),
                "required: rectify, restrict or object".into(),
            ));
            None
        }
        Some(pb::apply_request::Order::Rectify(r)) => {
            if r.corrections.is_empty() {
                v.push(("rectify.corrections".into(), "at least one".into()));
            }
            let corrections = r
                .corrections
                .into_iter()
                .enumerate()
                .map(|(i, c)| {
                    if c.category_id.is_empty() || c.value.trim().is_empty() {
                        v.push((
                            format!("rectify.corrections[{i}]"),
                            "category_id and value required".into(),
                        ));
                    }
                    Correction {
                        category: c.category_id,
                        value: c.value.trim().to_owned(),
                    }
                })
                .collect();
            Some(WriteOrder::Rectify { corrections })
        }
        Some(pb::apply_request::Order::Restrict(r)) if r.lift => {
            match kit::time(r.person_informed_time) {
                Some(t) => Some(WriteOrder::Lift {
                    person_informed_at: Some(t),
                }),
                None => {
                    v.push((
                        "restrict.person_informed_time".into(),
                        "required with lift (Art. 18(3))".into(),
                    ));
                    None
                }
            }
        }
        Some(pb::apply_request::Order::Restrict(r)) => {
            let ground = match pb::RestrictionGround::try_from(r.ground) {
                Ok(pb::RestrictionGround::AccuracyContested) => {
                    Some(RestrictionGround::AccuracyContested)
                }
                Ok(pb::RestrictionGround::UnlawfulProcessing) => {
                    Some(RestrictionGround::UnlawfulProcessing)
                }
                Ok(pb::RestrictionGround::NeededForLegalClaims) => {
                    Some(RestrictionGround::NeededForLegalClaims)
                }
                Ok(pb::RestrictionGround::ObjectionPending) => {
                    Some(RestrictionGround::ObjectionPending)
                }
                Ok(pb::RestrictionGround::Unspecified) | Err(_) => {
                    v.push(("restrict.ground".into(), "required unless lift".into()));
                    None
                }
            };
            ground.map(|ground| WriteOrder::Restrict { ground })
        }
        Some(pb::apply_request::Order::Object(o)) => {
            if o.purposes.is_empty() && !o.direct_marketing {
                v.push((
                    "object.purposes".into(),
                    "at least one purpose, or direct_marketing".into(),
                ));
            }
            Some(WriteOrder::Object {
                purposes: o.purposes,
                direct_marketing: o.direct_marketing,
            })
        }
    }
}

pub(super) fn sweep_to_pb(s: &Sweep) -> pb::Sweep {
    // `trigger` is deprecated for `trigger_kind` and still filled.
    #[allow(deprecated)]
    pb::Sweep {
        id: s.id.clone(),
        trigger: s.trigger.as_str().to_owned(),
        trigger_kind: match s.trigger {
            SweepTrigger::Manual => pb::SweepTrigger::Manual,
            SweepTrigger::Schedule => pb::SweepTrigger::Schedule,
        } as i32,
        started_by: s.started_by.clone(),
        dry_run: s.dry_run,
        systems: s
            .systems
            .iter()
            .map(|x| pb::SweptSystem {
                system_id: x.system_id.clone(),
                state: match x.state {
                    SweptState::Running => pb::SweepState::Running,
                    SweptState::Done => pb::SweepState::Done,
                    SweptState::Failed => pb::SweepState::Failed,
                } as i32,
                done: x.done,
                removed: x.removed,
                receipt_ids: x.receipt_ids.clone(),
                error: x.error.clone().unwrap_or_default(),
            })
            .collect(),
        start_time: Some(kit::timestamp(s.started_at)),
        end_time: s.finished_at.map(kit::timestamp),
    }
}

pub(super) fn hold_to_pb(h: &Hold) -> pb::Hold {
    let (kind, record) = match &h.scope {
        HoldScope::Person(_) => (pb::HoldKind::Person, None),
        HoldScope::Record { system_id, record } => (
            pb::HoldKind::Record,
            Some(pb::SystemRecord {
                system_id: system_id.clone(),
                record: Some(ref_to_pb(record)),
            }),
        ),
    };
    // `scope` is deprecated for `kind` and still filled.
    #[allow(deprecated)]
    pb::Hold {
        id: h.id.clone(),
        scope: match kind {
            pb::HoldKind::Record => "record",
            pb::HoldKind::Person | pb::HoldKind::Unspecified => "person",
        }
        .into(),
        kind: kind as i32,
        record,
        ground: h.ground.clone(),
        until: h.until.map(kit::date_to_pb),
        placed_by: h.placed_by.clone(),
        placed_at: Some(kit::timestamp(h.placed_at)),
        lifted_at: h.lifted_at.map(kit::timestamp),
        lifted_by: h.lifted_by.clone().unwrap_or_default(),
    }
}
