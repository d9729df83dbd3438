//! The gRPC edge of erasure: the handlers, and the tonic implementation of
//! [`Systems`] (each data system called with a service token of its own;
//! receipts verified against the keys its `Describe` publishes).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dsr_auth::{AuthLayer, AuthService, Principal, ScopeRule, TokenSigner, Validator};
use dsr_connector::grpc::{self as kit, identities_from_pb};
use dsr_domain::erasure::Action;
use dsr_domain::identity::Organisationsnummer;
use dsr_domain::request::{Correction, RestrictionGround, WriteOrder};
use dsr_mesh_client::client::{self, Calls, Outgoing, calls, failure_reason, lazy_channel};
use dsr_mesh_client::{DataSystems, SystemClient};
use dsr_proto::common::v1 as common;
use dsr_proto::erasure::v1 as pb;
use dsr_proto::erasure::v1::erasure_server::{Erasure, ErasureServer};
use dsr_proto::system::v1 as sys;
use dsr_proto::transfer::v1 as tr;
use dsr_proto::transfer::v1::transfer_registry_client::TransferRegistryClient;
use prost::Message as _;
use tonic::{Code, Request, Response, Status};
use tower_layer::Layer;

use crate::eraser::{EraseError, Eraser, Execution, NotificationError, SweepError, SystemOutcome};
use crate::model::{
    EraseOrder, Header, Plan, Receipt, Recipient, RecordInfo, RecordOutcome, RecordRef,
    RecordResult, Registry, RestrictionReason, StoreResult, SystemError, Systems, Write,
};
use crate::reconcile::{Discrepancy, Expected};
use crate::store::{
    Hold, HoldScope, Notification, StoreError, StoredReceipt, Sweep, TransferVerdict,
};

/// This service's statuses: ErrorInfo domain "erasure.dsr-mesh".
pub(crate) const ERR: kit::Errors = kit::Errors::new("erasure.dsr-mesh");

/// Scope of Plan, Execute, ExecuteDeferred (the orchestrator).
pub const SCOPE_EXECUTE: &str = "erasure:execute";
/// Scope of GetPlan and ListReceipts.
pub const SCOPE_READ: &str = "erasure:read";
/// Scope of the hold RPCs.
pub const SCOPE_HOLDS: &str = "erasure:holds";
/// Scope of ReplayErasures.
pub const SCOPE_REPLAY: &str = "erasure:replay";
/// Scope of the sweep RPCs.
pub const SCOPE_SWEEP: &str = "erasure:sweep";

/// Required scopes per RPC.
pub const SCOPES: &[ScopeRule] = &[
    ScopeRule {
        method: "Plan",
        scopes: &[SCOPE_EXECUTE],
    },
    ScopeRule {
        method: "Execute",
        scopes: &[SCOPE_EXECUTE],
    },
    ScopeRule {
        method: "ExecuteDeferred",
        scopes: &[SCOPE_EXECUTE],
    },
    ScopeRule {
        method: "GetPlan",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "ListReceipts",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "PlaceHold",
        scopes: &[SCOPE_HOLDS],
    },
    ScopeRule {
        method: "LiftHold",
        scopes: &[SCOPE_HOLDS],
    },
    ScopeRule {
        method: "ListHolds",
        scopes: &[SCOPE_HOLDS],
    },
    ScopeRule {
        method: "ReplayErasures",
        scopes: &[SCOPE_REPLAY],
    },
    ScopeRule {
        method: "Apply",
        scopes: &[SCOPE_EXECUTE],
    },
    ScopeRule {
        method: "ListNotifications",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "CompleteNotification",
        scopes: &[SCOPE_HOLDS],
    },
    ScopeRule {
        method: "ApproveNotification",
        scopes: &[SCOPE_HOLDS],
    },
    ScopeRule {
        method: "StartSweep",
        scopes: &[SCOPE_SWEEP],
    },
    ScopeRule {
        method: "GetSweep",
        scopes: &[SCOPE_SWEEP],
    },
    ScopeRule {
        method: "ListSweeps",
        scopes: &[SCOPE_SWEEP],
    },
];

/// The service.
pub type Service = AuthService<ErasureServer<Handlers>>;

/// Builds the service.
pub fn service(eraser: Eraser, validator: Arc<Validator>) -> Service {
    AuthLayer::new(validator, SCOPES).layer(ErasureServer::new(Handlers { eraser }))
}

/// The handlers.
#[derive(Debug)]
pub struct Handlers {
    eraser: Eraser,
}

fn erase_status(e: EraseError) -> Status {
    match e {
        EraseError::Partial => ERR.status(
            Code::FailedPrecondition,
            "the subject map is partial; locate again when every system answers",
            "SUBJECT_MAP_PARTIAL",
        ),
        EraseError::NoPlan => {
            ERR.status(Code::NotFound, "no plan for this request", "PLAN_NOT_FOUND")
        }
        EraseError::System(e) => {
            ERR.status(Code::Unavailable, &e.to_string(), "SYSTEM_UNAVAILABLE")
        }
        EraseError::Store(e) => store_status(&e),
    }
}

fn store_status(e: &StoreError) -> Status {
    match e {
        StoreError::NotFound => ERR.status(Code::NotFound, "not found", "NOT_FOUND"),
        StoreError::Db(_) | StoreError::Corrupt(_) => {
            tracing::error!(error = %e, "erasure store failed");
            ERR.status(Code::Unavailable, "erasure storage unavailable", "STORAGE")
        }
    }
}

fn action_to_pb(a: Action) -> pb::PlanAction {
    match a {
        Action::Erase => pb::PlanAction::Erase,
        Action::Anonymise => pb::PlanAction::Anonymise,
        Action::Retain => pb::PlanAction::Retain,
    }
}

fn ref_to_pb(r: &RecordRef) -> sys::RecordRef {
    sys::RecordRef {
        store: r.store.clone(),
        key: r.key.clone(),
    }
}

fn controller_pb(orgnr: &str) -> Option<common::ControllerRef> {
    Some(common::ControllerRef {
        organisation_number: orgnr.to_owned(),
    })
}

fn discrepancy_to_pb(d: &Discrepancy) -> pb::Discrepancy {
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

fn result_to_pb(r: RecordResult) -> sys::RecordResult {
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

fn result_from_pb(r: i32) -> Option<RecordResult> {
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
fn records_from_pb(r: &sys::Receipt) -> Vec<RecordOutcome> {
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

fn plan_to_pb(p: &Plan, discrepancies: &[Discrepancy]) -> pb::Plan {
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

fn execution_to_pb(e: &Execution) -> pb::Execution {
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

fn receipt_to_pb(r: &StoredReceipt) -> pb::StoredReceipt {
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

fn notification_to_pb(n: &Notification) -> pb::Notification {
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

fn notification_status(e: NotificationError) -> Status {
    match e {
        NotificationError::NotFound => ERR.status(
            Code::NotFound,
            "no such notification",
            "NOTIFICATION_NOT_FOUND",
        ),
        NotificationError::NotLawful(v) => ERR.status(
            Code::FailedPrecondition,
            &format!(
                "the transfer to this recipient is not lawful ({}): nothing may be sent",
                v.as_str()
            ),
            "TRANSFER_NOT_LAWFUL",
        ),
        NotificationError::Store(e) => store_status(&e),
    }
}

/// The write order of an Apply request; violations name the field.
fn order_from_pb(
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

fn sweep_to_pb(s: &Sweep) -> pb::Sweep {
    pb::Sweep {
        id: s.id.clone(),
        trigger: s.trigger.clone(),
        started_by: s.started_by.clone(),
        dry_run: s.dry_run,
        systems: s
            .systems
            .iter()
            .map(|x| pb::SweptSystem {
                system_id: x.system_id.clone(),
                state: match x.state.as_str() {
                    "done" => pb::SweepState::Done,
                    "failed" => pb::SweepState::Failed,
                    _ => pb::SweepState::Running,
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

fn hold_to_pb(h: &Hold) -> pb::Hold {
    let (scope, record) = match &h.scope {
        HoldScope::Person(_) => ("person", None),
        HoldScope::Record { system_id, record } => (
            "record",
            Some(pb::SystemRecord {
                system_id: system_id.clone(),
                record: Some(ref_to_pb(record)),
            }),
        ),
    };
    pb::Hold {
        id: h.id.clone(),
        scope: scope.into(),
        record,
        ground: h.ground.clone(),
        until: h.until.map(kit::date_to_pb),
        placed_by: h.placed_by.clone(),
        placed_at: Some(kit::timestamp(h.placed_at)),
        lifted_at: h.lifted_at.map(kit::timestamp),
        lifted_by: h.lifted_by.clone().unwrap_or_default(),
    }
}

fn required_request_id(id: &str) -> Result<(), Status> {
    let mut v = Vec::new();
    kit::check_request_id(id, &mut v);
    if v.is_empty() {
        Ok(())
    } else {
        Err(ERR.invalid_argument(v))
    }
}

#[tonic::async_trait]
impl Erasure for Handlers {
    async fn start_sweep(
        &self,
        req: Request<pb::StartSweepRequest>,
    ) -> Result<Response<pb::StartSweepResponse>, Status> {
        let started_by = req
            .extensions()
            .get::<dsr_auth::Principal>()
            .map(|p| p.subject.clone())
            .unwrap_or_default();
        let pb::StartSweepRequest {
            system_ids,
            dry_run,
            batch_size,
        } = req.into_inner();
        if batch_size > 10_000 {
            return Err(ERR.invalid_argument(vec![(
                "batch_size".into(),
                "1 to 10000, or 0 for 1000".into(),
            )]));
        }
        let only: BTreeSet<String> = system_ids.into_iter().collect();
        let started = self
            .eraser
            .start_sweep(
                uuid::Uuid::new_v4().to_string(),
                "manual",
                &started_by,
                &only,
                dry_run,
                batch_size,
            )
            .await
            .map_err(|e| match e {
                SweepError::UnknownSystem(_) => ERR.invalid_argument(vec![(
                    "system_ids".into(),
                    "not a configured system".into(),
                )]),
                SweepError::Store(e) => store_status(&e),
            })?
            .ok_or_else(|| ERR.status(Code::Aborted, "sweep id taken", "SWEEP_EXISTS"))?;
        Ok(Response::new(pb::StartSweepResponse {
            sweep: Some(sweep_to_pb(&started)),
        }))
    }

    async fn get_sweep(
        &self,
        req: Request<pb::GetSweepRequest>,
    ) -> Result<Response<pb::GetSweepResponse>, Status> {
        let id = req.into_inner().id;
        if !kit::valid_id(&id) {
            return Err(ERR.invalid_argument(vec![("id".into(), "required".into())]));
        }
        let s = self.eraser.store().sweep(&id).await.map_err(|e| match e {
            StoreError::NotFound => ERR.status(Code::NotFound, "no such sweep", "SWEEP_NOT_FOUND"),
            other @ (StoreError::Db(_) | StoreError::Corrupt(_)) => store_status(&other),
        })?;
        Ok(Response::new(pb::GetSweepResponse {
            sweep: Some(sweep_to_pb(&s)),
        }))
    }

    async fn list_sweeps(
        &self,
        req: Request<pb::ListSweepsRequest>,
    ) -> Result<Response<pb::ListSweepsResponse>, Status> {
        let limit = match req.into_inner().limit {
            0 => 20,
            n if n <= 100 => u64::from(n),
            _ => {
                return Err(
                    ERR.invalid_argument(vec![("limit".into(), "1 to 100, or 0 for 20".into())])
                );
            }
        };
        let sweeps = self
            .eraser
            .store()
            .sweeps(limit)
            .await
            .map_err(|e| store_status(&e))?;
        Ok(Response::new(pb::ListSweepsResponse {
            sweeps: sweeps.iter().map(sweep_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let pb::ApplyRequest {
            request_id,
            controller,
            due_date,
            subject_map,
            order,
        } = req.into_inner();
        let mut v = Vec::new();
        kit::check_request_id(&request_id, &mut v);
        let controller = kit::controller_from_pb(controller, &mut v);
        let due = kit::date(due_date);
        if due.is_none() {
            v.push(("due_date".into(), "required, a valid date".into()));
        }
        let map = match subject_map {
            Some(m) => Some(kit::subject_map_from_pb(m, &mut v)),
            None => {
                v.push(("subject_map".into(), "required".into()));
                None
            }
        };
        let order = order_from_pb(order, &mut v);
        let (Some(controller), Some(due_date), Some(map), Some(order), true) =
            (controller, due, map, order, v.is_empty())
        else {
            return Err(ERR.invalid_argument(v));
        };
        let h = Header {
            request_id,
            controller,
            due_date,
        };
        let (e, notifications) = self
            .eraser
            .apply(&h, &map, &order, self.eraser.clock().today())
            .await
            .map_err(erase_status)?;
        Ok(Response::new(pb::ApplyResponse {
            execution: Some(execution_to_pb(&e)),
            notifications: notifications.iter().map(notification_to_pb).collect(),
        }))
    }

    async fn list_notifications(
        &self,
        req: Request<pb::ListNotificationsRequest>,
    ) -> Result<Response<pb::ListNotificationsResponse>, Status> {
        let id = req.into_inner().request_id;
        required_request_id(&id)?;
        let ns = self
            .eraser
            .store()
            .notifications(&id)
            .await
            .map_err(|e| store_status(&e))?;
        Ok(Response::new(pb::ListNotificationsResponse {
            notifications: ns.iter().map(notification_to_pb).collect(),
        }))
    }

    async fn complete_notification(
        &self,
        req: Request<pb::CompleteNotificationRequest>,
    ) -> Result<Response<pb::CompleteNotificationResponse>, Status> {
        let by = Principal::subject_of(&req);
        let id = req.into_inner().id;
        if !kit::valid_id(&id) {
            return Err(ERR.invalid_argument(vec![("id".into(), "required".into())]));
        }
        let n = self
            .eraser
            .complete_notification(&id, &by)
            .await
            .map_err(notification_status)?;
        Ok(Response::new(pb::CompleteNotificationResponse {
            notification: Some(notification_to_pb(&n)),
        }))
    }

    async fn approve_notification(
        &self,
        req: Request<pb::ApproveNotificationRequest>,
    ) -> Result<Response<pb::ApproveNotificationResponse>, Status> {
        let by = Principal::subject_of(&req);
        let pb::ApproveNotificationRequest { id, note } = req.into_inner();
        let mut v = Vec::new();
        if !kit::valid_id(&id) {
            v.push(("id".into(), "required".into()));
        }
        let note = note.trim();
        if note.is_empty() || note.chars().count() > 1000 {
            v.push((
                "note".into(),
                "required: what the transfer rests on, at most 1 000 characters".into(),
            ));
        }
        if !v.is_empty() {
            return Err(ERR.invalid_argument(v));
        }
        let n = self
            .eraser
            .approve_notification(&id, &by, note)
            .await
            .map_err(notification_status)?;
        Ok(Response::new(pb::ApproveNotificationResponse {
            notification: Some(notification_to_pb(&n)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn plan(
        &self,
        req: Request<pb::PlanRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        let pb::PlanRequest {
            request_id,
            controller,
            due_date,
            subject_map,
        } = req.into_inner();
        let mut v = Vec::new();
        kit::check_request_id(&request_id, &mut v);
        let controller = kit::controller_from_pb(controller, &mut v);
        let due = kit::date(due_date);
        if due.is_none() {
            v.push(("due_date".into(), "required, a valid date".into()));
        }
        let map = match subject_map {
            Some(m) => Some(kit::subject_map_from_pb(m, &mut v)),
            None => {
                v.push(("subject_map".into(), "required".into()));
                None
            }
        };
        let (Some(controller), Some(due_date), Some(map), true) =
            (controller, due, map, v.is_empty())
        else {
            return Err(ERR.invalid_argument(v));
        };
        let h = Header {
            request_id,
            controller,
            due_date,
        };
        let plan = self
            .eraser
            .plan(&h, &map, self.eraser.clock().today())
            .await
            .map_err(erase_status)?;
        Ok(Response::new(pb::PlanResponse {
            plan: Some(plan_to_pb(&plan, &[])),
        }))
    }

    async fn get_plan(
        &self,
        req: Request<pb::GetPlanRequest>,
    ) -> Result<Response<pb::GetPlanResponse>, Status> {
        let id = req.into_inner().request_id;
        required_request_id(&id)?;
        let (plan, discrepancies) = self.eraser.reviewed_plan(&id).await.map_err(erase_status)?;
        Ok(Response::new(pb::GetPlanResponse {
            plan: Some(plan_to_pb(&plan, &discrepancies)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn execute(
        &self,
        req: Request<pb::ExecuteRequest>,
    ) -> Result<Response<pb::ExecuteResponse>, Status> {
        let pb::ExecuteRequest {
            request_id,
            due_date,
        } = req.into_inner();
        let h = self.header(request_id, due_date).await?;
        let e = self.eraser.execute(&h).await.map_err(erase_status)?;
        let notifications = self
            .eraser
            .store()
            .notifications(&h.request_id)
            .await
            .map_err(|e| store_status(&e))?;
        Ok(Response::new(pb::ExecuteResponse {
            execution: Some(execution_to_pb(&e)),
            notifications: notifications.iter().map(notification_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn execute_deferred(
        &self,
        req: Request<pb::ExecuteDeferredRequest>,
    ) -> Result<Response<pb::ExecuteDeferredResponse>, Status> {
        let pb::ExecuteDeferredRequest {
            request_id,
            as_of,
            due_date,
        } = req.into_inner();
        // Never a day ahead: a future date would erase records the law
        // still keeps.
        let as_of = match as_of {
            None => self.eraser.clock().today(),
            Some(d) => match kit::date(Some(d)) {
                Some(d) if d <= self.eraser.clock().today() => d,
                Some(_) | None => {
                    return Err(ERR.invalid_argument(vec![(
                        "as_of".into(),
                        "a valid date, not after today".into(),
                    )]));
                }
            },
        };
        let h = self.header(request_id, due_date).await?;
        let e = self
            .eraser
            .execute_deferred(&h, as_of)
            .await
            .map_err(erase_status)?;
        Ok(Response::new(pb::ExecuteDeferredResponse {
            execution: Some(execution_to_pb(&e)),
        }))
    }

    async fn list_receipts(
        &self,
        req: Request<pb::ListReceiptsRequest>,
    ) -> Result<Response<pb::ListReceiptsResponse>, Status> {
        let id = req.into_inner().request_id;
        required_request_id(&id)?;
        let receipts = self
            .eraser
            .store()
            .receipts(&id)
            .await
            .map_err(|e| store_status(&e))?;
        Ok(Response::new(pb::ListReceiptsResponse {
            receipts: receipts.iter().map(receipt_to_pb).collect(),
        }))
    }

    async fn place_hold(
        &self,
        req: Request<pb::PlaceHoldRequest>,
    ) -> Result<Response<pb::PlaceHoldResponse>, Status> {
        let by = Principal::subject_of(&req);
        let pb::PlaceHoldRequest {
            target,
            ground,
            until,
            controller,
        } = req.into_inner();
        let mut v = Vec::new();
        let controller = kit::controller_from_pb(controller, &mut v);
        let scope = match target.and_then(|t| t.target) {
            Some(pb::hold_target::Target::Identity(i)) => {
                match identities_from_pb(vec![i], "target.identity") {
                    Ok(ids) => ids.first().map(|i| {
                        HoldScope::Person(self.eraser.hasher().hash(i.kind().as_str(), i.value()))
                    }),
                    Err(bad) => {
                        v.extend(bad);
                        None
                    }
                }
            }
            Some(pb::hold_target::Target::Record(r)) => {
                let rec = r.record.unwrap_or_default();
                if !kit::valid_id(&r.system_id) {
                    v.push(("target.record.system_id".into(), "required".into()));
                }
                if rec.store.is_empty() || rec.key.is_empty() {
                    v.push((
                        "target.record.record".into(),
                        "store and key required".into(),
                    ));
                }
                Some(HoldScope::Record {
                    system_id: r.system_id,
                    record: RecordRef {
                        store: rec.store,
                        key: rec.key,
                    },
                })
            }
            None => {
                v.push(("target".into(), "required: an identity or a record".into()));
                None
            }
        };
        let ground = ground.trim().to_owned();
        if ground.is_empty() || ground.chars().count() > 500 {
            v.push(("ground".into(), "required, at most 500 characters".into()));
        }
        let until = match until {
            None => None,
            Some(d) => match kit::date(Some(d)) {
                Some(d) if d >= self.eraser.clock().today() => Some(d),
                Some(_) | None => {
                    v.push(("until".into(), "a valid date, not in the past".into()));
                    None
                }
            },
        };
        let (Some(controller), Some(scope), true) = (controller, scope, v.is_empty()) else {
            return Err(ERR.invalid_argument(v));
        };
        let hold = self
            .eraser
            .place_hold(controller.as_str(), scope, &ground, until, &by)
            .await
            .map_err(|e| store_status(&e))?;
        tracing::info!(hold = %hold.id, "legal hold placed");
        Ok(Response::new(pb::PlaceHoldResponse {
            hold: Some(hold_to_pb(&hold)),
        }))
    }

    async fn lift_hold(
        &self,
        req: Request<pb::LiftHoldRequest>,
    ) -> Result<Response<pb::LiftHoldResponse>, Status> {
        let by = Principal::subject_of(&req);
        let id = req.into_inner().id;
        if !kit::valid_id(&id) {
            return Err(ERR.invalid_argument(vec![("id".into(), "required".into())]));
        }
        let hold = self
            .eraser
            .store()
            .lift_hold(&id, &by)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => {
                    ERR.status(Code::NotFound, "no such hold", "HOLD_NOT_FOUND")
                }
                other @ (StoreError::Db(_) | StoreError::Corrupt(_)) => store_status(&other),
            })?;
        tracing::info!(hold = %hold.id, "legal hold lifted");
        Ok(Response::new(pb::LiftHoldResponse {
            hold: Some(hold_to_pb(&hold)),
        }))
    }

    async fn list_holds(
        &self,
        req: Request<pb::ListHoldsRequest>,
    ) -> Result<Response<pb::ListHoldsResponse>, Status> {
        let all = req.into_inner().include_lifted;
        let holds = self
            .eraser
            .store()
            .holds(all, self.eraser.clock().today())
            .await
            .map_err(|e| store_status(&e))?;
        Ok(Response::new(pb::ListHoldsResponse {
            holds: holds.iter().map(hold_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn replay_erasures(
        &self,
        req: Request<pb::ReplayErasuresRequest>,
    ) -> Result<Response<pb::ReplayErasuresResponse>, Status> {
        let pb::ReplayErasuresRequest {
            since,
            system_ids,
            dry_run,
        } = req.into_inner();
        let since = kit::time(since).ok_or_else(|| {
            ERR.invalid_argument(vec![("since".into(), "required, a timestamp".into())])
        })?;
        if since > self.eraser.clock().now() {
            return Err(ERR.invalid_argument(vec![("since".into(), "in the future".into())]));
        }
        let only: BTreeSet<String> = system_ids.into_iter().collect();
        let r = self
            .eraser
            .replay(since, &only, dry_run, self.eraser.clock().today())
            .await
            .map_err(erase_status)?;
        tracing::info!(replay = %r.id, tombstones = r.tombstones, dry_run, "erasures replayed");
        Ok(Response::new(pb::ReplayErasuresResponse {
            replay_id: r.id,
            tombstones: r.tombstones,
            systems: r
                .systems
                .into_iter()
                .map(|(id, s)| pb::ReplayedSystem {
                    system_id: id,
                    erasures: s.erasures,
                    erased_again: s.erased_again,
                    restricted_again: s.restricted_again,
                    error: s.error.unwrap_or_default(),
                })
                .collect(),
        }))
    }
}

impl Handlers {
    /// The header of an execution: the plan's controller, the request's
    /// due date.
    async fn header(
        &self,
        request_id: String,
        due_date: Option<common::Date>,
    ) -> Result<Header, Status> {
        let mut v = Vec::new();
        kit::check_request_id(&request_id, &mut v);
        let due = kit::date(due_date);
        if due.is_none() {
            v.push(("due_date".into(), "required, a valid date".into()));
        }
        let (Some(due_date), true) = (due, v.is_empty()) else {
            return Err(ERR.invalid_argument(v));
        };
        let plan = self
            .eraser
            .store()
            .plan(&request_id)
            .await
            .map_err(|e| erase_status(e.into()))?;
        let controller = dsr_domain::identity::Organisationsnummer::parse(&plan.controller)
            .map_err(|_| store_status(&StoreError::Corrupt("plan")))?;
        Ok(Header {
            request_id,
            controller,
            due_date,
        })
    }
}

pub use dsr_mesh_client::SystemEndpoint;
/// How long to wait for an asynchronous write before trying again later.
const OPERATION_WAIT: Duration = Duration::from_secs(120);
/// How long a system's sweep may run.
const SWEEP_WAIT: Duration = Duration::from_secs(6 * 3600);

/// What a finished operation must answer.
struct Expect<'a> {
    /// The instruction's idempotency key.
    key: &'a str,
    /// The receipt's action.
    action: sys::ReceiptAction,
    /// How long to wait for the operation.
    wait_at_most: Duration,
    /// Where to record its progress.
    progress: Option<&'a AtomicU64>,
}

/// The data systems over gRPC.
#[derive(Debug)]
pub struct GrpcSystems {
    systems: DataSystems,
}

/// What erasure keeps of a system's Describe.
#[derive(Clone, Debug)]
struct Described {
    keys: Vec<sys::SigningKey>,
    controllers: Vec<String>,
    rights: Vec<i32>,
}

impl GrpcSystems {
    /// Clients calling as `service:dsr-erasure`, with tokens from `signer`.
    pub fn new(systems: &[SystemEndpoint], signer: Arc<TokenSigner>) -> Result<Self, String> {
        Ok(Self {
            systems: DataSystems::new(
                crate::SERVICE_NAME,
                systems.to_vec(),
                signer,
                &["system:describe", "system:read", "system:write"],
            )?,
        })
    }

    fn system(&self, id: &str) -> Result<SystemClient, SystemError> {
        self.systems.client(id).map_err(|e| SystemError {
            system: id.to_owned(),
            reason: e.reason().to_owned(),
            receipt_invalid: false,
        })
    }

    /// The system's Describe (its keys and controllers), reused for a
    /// while unless `fresh` (a receipt signed by a key not yet seen).
    async fn described(&self, system: &str, fresh: bool) -> Result<Described, SystemError> {
        let d = self
            .systems
            .describe(system, fresh)
            .await
            .map_err(|e| SystemError {
                system: system.to_owned(),
                reason: e.reason().to_owned(),
                receipt_invalid: false,
            })?;
        Ok(Described {
            rights: d.supported_rights,
            keys: d.signing_keys,
            controllers: d
                .controllers
                .into_iter()
                .map(|c| c.organisation_number)
                .collect(),
        })
    }

    /// Waits up to `wait` for `op` to end (polling GetOperation with a
    /// growing delay, recording its progress), then verifies its receipt
    /// (with the cached keys, then fresh ones for a key rotated since) and
    /// checks it answers this instruction.
    async fn finish(
        &self,
        system: &str,
        h: &Header,
        expect: Expect<'_>,
        mut op: sys::Operation,
    ) -> Result<Receipt, SystemError> {
        let Expect {
            key,
            action,
            wait_at_most,
            progress,
        } = expect;
        let mut client = self.system(system)?;
        let err = |reason: &str, receipt_invalid: bool| SystemError {
            system: system.to_owned(),
            reason: reason.to_owned(),
            receipt_invalid,
        };
        let started = Instant::now();
        let mut wait = Duration::from_millis(100);
        loop {
            match sys::OperationState::try_from(op.state) {
                Ok(sys::OperationState::Succeeded) => break,
                Ok(sys::OperationState::Failed) => return Err(err("OPERATION_FAILED", false)),
                Ok(
                    sys::OperationState::Pending
                    | sys::OperationState::Running
                    | sys::OperationState::Unspecified,
                )
                | Err(_) => {
                    if let Some(p) = progress {
                        p.store(op.done, Ordering::Relaxed);
                    }
                    if started.elapsed() > wait_at_most {
                        return Err(err("OPERATION_PENDING", false));
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                    op = client
                        .get_operation(sys::GetOperationRequest { id: op.id.clone() })
                        .await
                        .map_err(|s| failed(system, &s))?
                        .into_inner()
                        .operation
                        .unwrap_or_default();
                }
            }
        }
        if let Some(p) = progress {
            p.store(op.done, Ordering::Relaxed);
        }
        let signed = op.receipt.ok_or_else(|| err("RECEIPT_MISSING", true))?;
        let mut decoded = kit::verify_receipt(&signed, &self.described(system, false).await?.keys);
        if decoded.is_err() {
            decoded = kit::verify_receipt(&signed, &self.described(system, true).await?.keys);
        }
        let r = decoded.map_err(|_| err("RECEIPT_SIGNATURE", true))?;
        if r.system_id != system || r.request_id != h.request_id || r.idempotency_key != key {
            return Err(err("RECEIPT_MISMATCH", true));
        }
        if r.action != action as i32 {
            return Err(err("RECEIPT_ACTION", true));
        }
        let records = records_from_pb(&r);
        Ok(Receipt {
            payload: signed.payload.clone(),
            key_id: signed.key_id.clone(),
            signature: signed.signature.clone(),
            system_id: r.system_id,
            request_id: r.request_id,
            idempotency_key: r.idempotency_key,
            stores: r
                .stores
                .iter()
                .map(|s| StoreResult {
                    store: s.store.clone(),
                    matched: s.matched,
                    affected: s.affected,
                    refused: s.refused,
                })
                .collect(),
            retained: r.retained.len() as u64,
            records,
        })
    }
}

fn failed(system: &str, s: &Status) -> SystemError {
    SystemError {
        system: system.to_owned(),
        reason: failure_reason(s),
        receipt_invalid: false,
    }
}

fn instruction(system: &str, h: &Header, key: &str) -> sys::Instruction {
    client::instruction(system, &h.request_id, &h.controller, h.due_date, key)
}

#[tonic::async_trait]
impl Systems for GrpcSystems {
    async fn read(
        &self,
        system: &str,
        h: &Header,
        refs: &[RecordRef],
    ) -> Result<Vec<RecordInfo>, SystemError> {
        let key = format!("erasure-read-{}", h.request_id);
        let mut stream = self
            .system(system)?
            .access(sys::AccessRequest {
                instruction: Some(instruction(system, h, &key)),
                records: refs.iter().map(ref_to_pb).collect(),
                portable_only: false,
            })
            .await
            .map_err(|s| failed(system, &s))?
            .into_inner();
        let mut out = Vec::with_capacity(refs.len());
        while let Some(batch) = stream.message().await.map_err(|s| failed(system, &s))? {
            for r in batch.records {
                let rf = r.r#ref.unwrap_or_default();
                out.push(RecordInfo {
                    record: RecordRef {
                        store: rf.store,
                        key: rf.key,
                    },
                    anchor: kit::date(r.retention_anchor),
                    // Names and categories only: values are not kept.
                    fields: r
                        .fields
                        .into_iter()
                        .map(|f| (f.name, f.category_id))
                        .collect(),
                });
            }
        }
        Ok(out)
    }

    async fn erase(
        &self,
        system: &str,
        h: &Header,
        idempotency_key: &str,
        order: &EraseOrder,
    ) -> Result<Receipt, SystemError> {
        let req = sys::EraseRequest {
            instruction: Some(instruction(system, h, idempotency_key)),
            records: order.records.iter().map(ref_to_pb).collect(),
            // Masking is pseudonymisation, not erasure: never acceptable.
            acceptable_methods: vec![
                sys::ErasureMethod::Delete as i32,
                sys::ErasureMethod::Anonymise as i32,
                sys::ErasureMethod::Nullify as i32,
                sys::ErasureMethod::CryptoShred as i32,
            ],
            retain: order
                .retain
                .iter()
                .map(|o| sys::RetentionOrder {
                    record: Some(ref_to_pb(&o.record)),
                    legal_ground: o.ground.clone(),
                    retain_until: o.until.map(kit::date_to_pb),
                    reason: if o.hold {
                        sys::RestrictionReason::Hold
                    } else {
                        sys::RestrictionReason::Retention
                    } as i32,
                })
                .collect(),
        };
        let op = self
            .system(system)?
            .erase(req)
            .await
            .map_err(|s| failed(system, &s))?
            .into_inner()
            .operation
            .unwrap_or_default();
        self.finish(
            system,
            h,
            Expect {
                key: idempotency_key,
                action: sys::ReceiptAction::Erase,
                wait_at_most: OPERATION_WAIT,
                progress: None,
            },
            op,
        )
        .await
    }

    async fn write(
        &self,
        system: &str,
        h: &Header,
        idempotency_key: &str,
        write: &Write,
    ) -> Result<Receipt, SystemError> {
        let mut client = self.system(system)?;
        let instruction = Some(instruction(system, h, idempotency_key));
        let (op, action) = match write {
            Write::Rectify(changes) => (
                client
                    .rectify(sys::RectifyRequest {
                        instruction,
                        changes: changes
                            .iter()
                            .map(|(r, field, value)| sys::FieldChange {
                                record: Some(ref_to_pb(r)),
                                field: field.clone(),
                                value: value.clone(),
                            })
                            .collect(),
                    })
                    .await
                    .map_err(|s| failed(system, &s))?
                    .into_inner()
                    .operation,
                sys::ReceiptAction::Rectify,
            ),
            Write::Restrict {
                records,
                lift,
                reason,
            } => (
                client
                    .restrict(sys::RestrictRequest {
                        instruction,
                        records: records.iter().map(ref_to_pb).collect(),
                        lift: *lift,
                        reason: reason.clone(),
                        basis: sys::RestrictionReason::Request as i32,
                    })
                    .await
                    .map_err(|s| failed(system, &s))?
                    .into_inner()
                    .operation,
                if *lift {
                    sys::ReceiptAction::LiftRestriction
                } else {
                    sys::ReceiptAction::Restrict
                },
            ),
            Write::Object {
                records,
                purposes,
                direct_marketing,
            } => (
                client
                    .object(sys::ObjectRequest {
                        instruction,
                        records: records.iter().map(ref_to_pb).collect(),
                        purposes: purposes.clone(),
                        direct_marketing: *direct_marketing,
                    })
                    .await
                    .map_err(|s| failed(system, &s))?
                    .into_inner()
                    .operation,
                sys::ReceiptAction::Object,
            ),
        };
        self.finish(
            system,
            h,
            Expect {
                key: idempotency_key,
                action,
                wait_at_most: OPERATION_WAIT,
                progress: None,
            },
            op.unwrap_or_default(),
        )
        .await
    }

    fn system_ids(&self) -> Vec<String> {
        self.systems.ids()
    }

    async fn controllers(&self, system: &str) -> Result<Vec<Organisationsnummer>, SystemError> {
        Ok(self
            .described(system, false)
            .await?
            .controllers
            .iter()
            .filter_map(|c| Organisationsnummer::parse(c).ok())
            .collect())
    }

    async fn sweep(
        &self,
        system: &str,
        h: &Header,
        idempotency_key: &str,
        dry_run: bool,
        batch_size: u32,
        progress: &AtomicU64,
    ) -> Result<Receipt, SystemError> {
        let op = self
            .system(system)?
            .sweep(sys::SweepRequest {
                instruction: Some(instruction(system, h, idempotency_key)),
                dry_run,
                batch_size: if batch_size == 0 { 1000 } else { batch_size },
            })
            .await
            .map_err(|s| failed(system, &s))?
            .into_inner()
            .operation
            .unwrap_or_default();
        self.finish(
            system,
            h,
            Expect {
                key: idempotency_key,
                action: sys::ReceiptAction::Sweep,
                wait_at_most: SWEEP_WAIT,
                progress: Some(progress),
            },
            op,
        )
        .await
    }

    async fn acts_on(&self, system: &str, write: &Write) -> Result<bool, SystemError> {
        let right = match write {
            Write::Rectify(_) => sys::Right::Rectification,
            Write::Restrict { .. } => sys::Right::Restriction,
            Write::Object { .. } => sys::Right::Objection,
        };
        Ok(self
            .described(system, false)
            .await?
            .rights
            .contains(&(right as i32)))
    }

    fn operator(&self, system: &str) -> Option<String> {
        self.systems
            .endpoints()
            .find(|e| e.id == system)
            .map(|e| e.operator_recipient_id.clone())
            .filter(|op| !op.is_empty())
    }
}

type RegistryClient = TransferRegistryClient<Calls>;

/// The transfer registry over gRPC.
#[derive(Debug)]
pub struct GrpcRegistry {
    client: RegistryClient,
}

impl GrpcRegistry {
    /// A client calling as `service:dsr-erasure` with `transfers:read`.
    pub fn new(endpoint: &str, audience: &str, signer: Arc<TokenSigner>) -> Result<Self, String> {
        let channel = lazy_channel(endpoint).map_err(|e| format!("transfer registry: {e}"))?;
        let out = Outgoing::new(signer, crate::SERVICE_NAME, audience, &["transfers:read"]);
        Ok(Self {
            client: TransferRegistryClient::new(calls(channel, out, "dsr-transfer-registry")),
        })
    }
}

#[tonic::async_trait]
impl Registry for GrpcRegistry {
    async fn recipients(
        &self,
        h: &Header,
        systems: &[String],
        categories: &[String],
    ) -> Result<Vec<Recipient>, SystemError> {
        let resp = self
            .client
            .clone()
            .list_disclosure_recipients(tr::ListDisclosureRecipientsRequest {
                controller: controller_pb(h.controller.as_str()),
                system_ids: systems.to_vec(),
                category_ids: categories.to_vec(),
            })
            .await
            .map_err(|s| failed("transfer-registry", &s))?
            .into_inner();
        Ok(resp
            .disclosures
            .into_iter()
            .filter_map(|d| {
                let a = d.assessment.unwrap_or_default();
                d.recipient.map(|r| Recipient {
                    id: r.id,
                    name: r.name,
                    country: r.country,
                    lawful: a.lawful,
                    blocking_reasons: a
                        .reasons
                        .into_iter()
                        .filter(|x| x.blocking)
                        .map(|x| format!("{}: {}", x.code, x.message))
                        .collect(),
                })
            })
            .collect())
    }
}
