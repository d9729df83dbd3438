//! The gRPC edge of erasure: the handlers (here), the conversions to and
//! from the wire (`convert`), the statuses of its errors (`status`), and the
//! tonic implementations of [`Systems`](crate::model::Systems) (`systems`: each data system called
//! with a service token of its own; receipts verified against the keys its
//! `Describe` publishes) and of [`Registry`](crate::model::Registry)
//! (`registry`).

mod convert;
mod registry;
mod status;
mod systems;

pub use registry::GrpcRegistry;
pub use systems::{GrpcSystems, SystemEndpoint};

use std::collections::BTreeSet;
use std::sync::Arc;

use dsr_auth::{AuthLayer, AuthService, Principal, ScopeRule, Validator};
use dsr_connector::grpc::{self as kit, identities_from_pb};
use dsr_proto::common::v1 as common;
use dsr_proto::erasure::v1 as pb;
use dsr_proto::erasure::v1::erasure_server::{Erasure, ErasureServer};
use tonic::{Code, Request, Response, Status};
use tower_layer::Layer;

use crate::eraser::{Eraser, SweepError};
use crate::model::{Header, RecordRef};
use crate::store::{HoldScope, StoreError, SweepTrigger};

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

use convert::{
    execution_to_pb, hold_to_pb, notification_to_pb, order_from_pb, plan_to_pb, receipt_to_pb,
    sweep_to_pb,
};
use status::{erase_status, notification_status, store_status};

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
                SweepTrigger::Manual,
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
