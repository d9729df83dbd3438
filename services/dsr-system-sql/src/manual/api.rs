//! `dsr.manual.v1.ManualTasks`: the vendor's answers come in here. The
//! handlers parse, call [`ManualSystem`], and map.

use std::sync::Arc;

use dsr_auth::{AuthLayer, AuthService, ScopeRule, Validator};
use dsr_connector::grpc::{identity_type_to_pb, timestamp};
use dsr_domain::identity::IdentityType;
use dsr_proto::common::v1 as common;
use dsr_proto::manual::v1 as pb;
use dsr_proto::manual::v1::manual_tasks_server::{ManualTasks, ManualTasksServer};
use dsr_proto::system::v1 as sys;
use tonic::{Code, Request, Response, Status};
use tower_layer::Layer as _;

use super::tasks::{Kept, Kind, Task, TaskRecord};
use super::{Answer, AnswerError, ManualSystem};

/// The ErrorInfo domain of this API.
pub const DOMAIN: &str = "manual.dsr-mesh";

/// Scope of ListTasks and GetTask.
pub const SCOPE_READ: &str = "tasks:read";
/// Scope of AnswerTask.
pub const SCOPE_ANSWER: &str = "tasks:answer";

/// Required scopes per RPC.
pub const SCOPES: &[ScopeRule] = &[
    ScopeRule {
        method: "ListTasks",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "GetTask",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "AnswerTask",
        scopes: &[SCOPE_ANSWER],
    },
];

/// The authenticated service.
pub type Service = AuthService<ManualTasksServer<Handlers>>;

/// Builds the service over `system`.
pub fn service(system: ManualSystem, validator: Arc<Validator>) -> Service {
    AuthLayer::new(validator, SCOPES).layer(ManualTasksServer::new(Handlers { system }))
}

/// The handlers.
#[derive(Clone, Debug)]
pub struct Handlers {
    system: ManualSystem,
}

/// This API's statuses.
const ERR: dsr_connector::grpc::Errors = dsr_connector::grpc::Errors::new(DOMAIN);

fn status(code: Code, message: &str, reason: &str) -> Status {
    ERR.status(code, message, reason)
}

fn invalid(violations: Vec<(String, String)>) -> Status {
    ERR.invalid_argument(violations)
}

impl From<AnswerError> for Status {
    fn from(e: AnswerError) -> Self {
        match e {
            AnswerError::NotFound => status(Code::NotFound, "task not found", "TASK_NOT_FOUND"),
            AnswerError::Answered => status(
                Code::FailedPrecondition,
                "the task was answered already",
                "TASK_ANSWERED",
            ),
            AnswerError::Invalid(v) => invalid(v),
            AnswerError::System(e) => {
                tracing::error!(error = e.log_kind(), "manual task storage failure");
                status(Code::Internal, "internal error", "INTERNAL")
            }
        }
    }
}

fn kind_to_pb(k: Kind) -> pb::TaskKind {
    match k {
        Kind::Locate => pb::TaskKind::Locate,
        Kind::Erase => pb::TaskKind::Erase,
        Kind::Rectify => pb::TaskKind::Rectify,
        Kind::Restrict => pb::TaskKind::Restrict,
        Kind::LiftRestriction => pb::TaskKind::LiftRestriction,
    }
}

fn record_to_pb(r: TaskRecord) -> pb::TaskRecord {
    pb::TaskRecord {
        store: r.store,
        key: r.key,
        fields: r
            .fields
            .into_iter()
            .map(|(name, value)| pb::TaskField { name, value })
            .collect(),
    }
}

fn record_from_pb(r: pb::TaskRecord) -> TaskRecord {
    TaskRecord {
        store: r.store.trim().to_owned(),
        key: r.key.trim().to_owned(),
        fields: r.fields.into_iter().map(|f| (f.name, f.value)).collect(),
    }
}

fn kept_to_pb(k: Kept) -> pb::KeptRecord {
    pb::KeptRecord {
        store: k.store,
        key: k.key,
        legal_ground: k.legal_ground,
    }
}

/// A task on the wire.
pub fn task_to_pb(t: Task) -> pb::Task {
    let answered = t.answered;
    pb::Task {
        id: t.id,
        system_id: t.system_id,
        kind: kind_to_pb(t.kind) as i32,
        state: if answered {
            pb::TaskState::Answered
        } else {
            pb::TaskState::Open
        } as i32,
        request_id: t.request_id,
        controller: Some(common::ControllerRef {
            organisation_number: t.controller,
        }),
        identities: t
            .body
            .identities
            .into_iter()
            .filter_map(|(kind, value)| {
                Some(common::Identity {
                    r#type: identity_type_to_pb(IdentityType::parse(&kind)?) as i32,
                    format: common::IdentityFormat::Raw as i32,
                    value,
                    hmac_key_id: String::new(),
                })
            })
            .collect(),
        records: t.body.records.into_iter().map(record_to_pb).collect(),
        created_at: Some(timestamp(t.created_at)),
        due_at: Some(timestamp(t.due_at)),
        reminders_sent: t.reminders_sent,
        escalated_at: t.escalated_at.map(timestamp),
        attestation: t.body.attested.map(|a| sys::Attestation {
            name: a.name,
            contact: a.contact,
            attested_at: Some(timestamp(a.at)),
            statement: a.statement,
        }),
        not_found: t.body.not_found,
        done: t.body.done,
        kept: t.body.kept.into_iter().map(kept_to_pb).collect(),
        keep: t
            .body
            .orders
            .into_iter()
            .map(|o| pb::KeptRecord {
                store: o.store,
                key: o.key,
                legal_ground: o.legal_ground,
            })
            .collect(),
    }
}

fn required_id(id: &str) -> Result<(), Status> {
    if id.trim().is_empty() || id.len() > 64 {
        return Err(invalid(vec![(
            "id".into(),
            "required: a task id from ListTasks".into(),
        )]));
    }
    Ok(())
}

#[tonic::async_trait]
impl ManualTasks for Handlers {
    #[tracing::instrument(skip_all)]
    async fn list_tasks(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let pb::ListTasksRequest { state, request_id } = req.into_inner();
        let answered = match pb::TaskState::try_from(state) {
            Ok(pb::TaskState::Unspecified | pb::TaskState::Open) => Some(false),
            Ok(pb::TaskState::Answered) => Some(true),
            Ok(pb::TaskState::All) => None,
            Err(_) => {
                return Err(invalid(vec![(
                    "state".into(),
                    "one of OPEN, ANSWERED, ALL".into(),
                )]));
            }
        };
        let request = (!request_id.is_empty()).then_some(request_id.as_str());
        let tasks = self
            .system
            .tasks()
            .list(answered, request)
            .await
            .map_err(|e| AnswerError::System(e.into()))?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: tasks.into_iter().map(task_to_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_task(
        &self,
        req: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::GetTaskResponse>, Status> {
        let pb::GetTaskRequest { id } = req.into_inner();
        required_id(&id)?;
        let task = self
            .system
            .tasks()
            .get(&id)
            .await
            .map_err(|e| AnswerError::System(e.into()))?
            .ok_or(AnswerError::NotFound)?;
        Ok(Response::new(pb::GetTaskResponse {
            task: Some(task_to_pb(task)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn answer_task(
        &self,
        req: Request<pb::AnswerTaskRequest>,
    ) -> Result<Response<pb::AnswerTaskResponse>, Status> {
        let pb::AnswerTaskRequest {
            id,
            found,
            not_found,
            done,
            kept,
            attested_by,
            contact,
            statement,
        } = req.into_inner();
        required_id(&id)?;
        let answer = Answer {
            found: found.into_iter().map(record_from_pb).collect(),
            not_found,
            done,
            kept: kept
                .into_iter()
                .map(|k| Kept {
                    store: k.store.trim().to_owned(),
                    key: k.key.trim().to_owned(),
                    legal_ground: k.legal_ground.trim().to_owned(),
                })
                .collect(),
            attested_by,
            contact,
            statement,
        };
        let task = self.system.answer(&id, answer).await?;
        Ok(Response::new(pb::AnswerTaskResponse {
            task: Some(task_to_pb(task)),
        }))
    }
}
