//! The `dsr.incident.v1` handlers: the register of personal-data breaches
//! (Incidents) and the DPO's complaints (Complaints), served by the
//! orchestrator beside the requests.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use dsr_auth::{AuthLayer, AuthService, Principal, ScopeRule, Validator};
use dsr_connector::grpc::{self as kit, identities_from_pb, invalid_argument};
use dsr_domain::group::Group;
use dsr_domain::letters::Letters;
use dsr_domain::text::Lang;
use dsr_proto::common::v1 as common;
use dsr_proto::incident::v1 as pb;
use dsr_proto::incident::v1::complaints_server::{Complaints, ComplaintsServer};
use dsr_proto::incident::v1::incidents_server::{Incidents, IncidentsServer};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};
use tower_layer::Layer as _;

use crate::complaints::{Complaint, Filing};
use crate::incidents::{self, Error, Incident, NoticeException, Report, Risk};
use crate::ledger::Ledger;
use crate::mesh::Discovery;

/// Scope of Report.
pub const SCOPE_REPORT: &str = "incidents:report";
/// Scope of the rest of Incidents.
pub const SCOPE_MANAGE: &str = "incidents:manage";

/// Required scopes per RPC of Incidents.
pub const INCIDENT_SCOPES: &[ScopeRule] = &[
    ScopeRule {
        method: "Report",
        scopes: &[SCOPE_REPORT],
    },
    ScopeRule {
        method: "Get",
        scopes: &[SCOPE_MANAGE],
    },
    ScopeRule {
        method: "List",
        scopes: &[SCOPE_MANAGE],
    },
    ScopeRule {
        method: "FindAffected",
        scopes: &[SCOPE_MANAGE],
    },
    ScopeRule {
        method: "Assess",
        scopes: &[SCOPE_MANAGE],
    },
    ScopeRule {
        method: "DraftNotification",
        scopes: &[SCOPE_MANAGE],
    },
    ScopeRule {
        method: "RecordAuthorityNotified",
        scopes: &[SCOPE_MANAGE],
    },
    ScopeRule {
        method: "NotifyPeople",
        scopes: &[SCOPE_MANAGE],
    },
    ScopeRule {
        method: "RecordNoticeException",
        scopes: &[SCOPE_MANAGE],
    },
    ScopeRule {
        method: "Close",
        scopes: &[SCOPE_MANAGE],
    },
];

/// Required scopes per RPC of Complaints: filed as a request is submitted,
/// handled as requests are managed.
pub const COMPLAINT_SCOPES: &[ScopeRule] = &[
    ScopeRule {
        method: "File",
        scopes: &[super::SCOPE_SUBMIT],
    },
    ScopeRule {
        method: "GetComplaint",
        scopes: &[super::SCOPE_MANAGE],
    },
    ScopeRule {
        method: "ListComplaints",
        scopes: &[super::SCOPE_MANAGE],
    },
    ScopeRule {
        method: "Answer",
        scopes: &[super::SCOPE_MANAGE],
    },
];

/// The ErrorInfo domain of these services' errors.
pub const DOMAIN: &str = "incident.dsr-mesh";

/// What the handlers need.
#[derive(Clone)]
pub struct IncidentDeps {
    /// The ledger (incidents, complaints, letters, the audit trail).
    pub ledger: Ledger,
    /// Asks the systems who a breach touches.
    pub discovery: Arc<dyn Discovery>,
    /// The letters, for the notification's headings.
    pub letters: Arc<Letters>,
    /// The controllers, the DPO.
    pub group: Arc<Group>,
    /// The DPO's response target for a complaint.
    pub complaint_response: TimeDelta,
    /// Deadline of the systems' answers about a breach.
    pub call_timeout: Duration,
}

impl std::fmt::Debug for IncidentDeps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IncidentDeps(..)")
    }
}

/// The Incidents service.
pub type IncidentsService = AuthService<IncidentsServer<IncidentHandlers>>;
/// The Complaints service.
pub type ComplaintsService = AuthService<ComplaintsServer<IncidentHandlers>>;

/// Builds both services.
pub fn services(
    deps: IncidentDeps,
    validator: Arc<Validator>,
) -> (IncidentsService, ComplaintsService) {
    let h = IncidentHandlers { d: deps };
    (
        AuthLayer::new(validator.clone(), INCIDENT_SCOPES).layer(IncidentsServer::new(h.clone())),
        AuthLayer::new(validator, COMPLAINT_SCOPES).layer(ComplaintsServer::new(h)),
    )
}

/// The handlers.
#[derive(Clone, Debug)]
pub struct IncidentHandlers {
    d: IncidentDeps,
}

fn status(code: Code, message: &str, reason: &str) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, DOMAIN, []),
    )
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound => status(Code::NotFound, "not found", "NOT_FOUND"),
            Error::Invalid(v) => invalid_argument(v),
            Error::Precondition(reason) => status(
                Code::FailedPrecondition,
                "not possible in the incident's or complaint's present state",
                reason,
            ),
            Error::Unavailable(reason) => status(
                Code::Unavailable,
                "discovery could not ask the systems; try again",
                &reason,
            ),
            Error::Storage(e) => {
                tracing::error!(error = %e, "incident storage failed");
                status(Code::Unavailable, "the ledger is unavailable", "STORAGE")
            }
        }
    }
}

/// A required text of at most `max` characters, trimmed.
fn text(field: &str, v: String, max: usize, errs: &mut Vec<(String, String)>) -> String {
    let t = v.trim().to_owned();
    if t.is_empty() {
        errs.push((field.into(), "required".into()));
    } else if t.chars().count() > max {
        errs.push((field.into(), format!("at most {max} characters")));
    }
    t
}

/// A list of ids, each 1 to 100 characters, at most 50.
fn ids(field: &str, v: Vec<String>, errs: &mut Vec<(String, String)>) -> Vec<String> {
    if v.len() > 50 {
        errs.push((field.into(), "at most 50".into()));
    }
    let out: Vec<String> = v.into_iter().map(|s| s.trim().to_owned()).collect();
    for (i, s) in out.iter().enumerate() {
        if s.is_empty() || s.len() > 100 {
            errs.push((format!("{field}[{i}]"), "1 to 100 characters".into()));
        }
    }
    out
}

fn lang(field: &str, v: &str, errs: &mut Vec<(String, String)>) -> Lang {
    match v {
        "" => Lang::Sv,
        other => Lang::parse(other).unwrap_or_else(|| {
            errs.push((field.into(), "\"sv\" or \"en\"".into()));
            Lang::Sv
        }),
    }
}

fn page(token: &str, size: u32) -> Result<(u64, u64), Status> {
    let offset = if token.is_empty() {
        0
    } else {
        token.parse::<u64>().map_err(|_| {
            invalid_argument(vec![(
                "page_token".into(),
                "not a token from this list".into(),
            )])
        })?
    };
    let limit = match size {
        0 => 100,
        1..=500 => u64::from(size),
        _ => {
            return Err(invalid_argument(vec![(
                "page_size".into(),
                "1 to 500".into(),
            )]));
        }
    };
    Ok((offset, limit))
}

fn risk_to_pb(r: Risk) -> pb::Risk {
    match r {
        Risk::None => pb::Risk::None,
        Risk::Risk => pb::Risk::Risk,
        Risk::High => pb::Risk::High,
    }
}

fn exception_to_pb(e: NoticeException) -> pb::NoticeException {
    match e {
        NoticeException::Unintelligible => pb::NoticeException::Unintelligible,
        NoticeException::RiskNoLongerLikely => pb::NoticeException::RiskNoLongerLikely,
        NoticeException::PublicCommunication => pb::NoticeException::PublicCommunication,
    }
}

/// The wire form of an incident at `now`.
pub fn incident_to_pb(i: &Incident, now: DateTime<Utc>) -> pb::Incident {
    let due = i.authority_due();
    pb::Incident {
        id: i.id.clone(),
        summary: i.summary.clone(),
        start_time: i.started_at.map(kit::timestamp),
        discovered_time: Some(kit::timestamp(i.discovered_at)),
        report_time: Some(kit::timestamp(i.reported_at)),
        source: if i.source == "public_form" {
            pb::Source::PublicForm
        } else {
            pb::Source::Staff
        } as i32,
        system_ids: i.systems.clone(),
        category_ids: i.categories.clone(),
        approximate_people: i.approximate_people,
        containment: i.containment.clone(),
        authority_due_time: Some(kit::timestamp(due)),
        authority_overdue: i.authority_overdue(now),
        hours_left: (due - now).num_hours(),
        risk: i.risk.map_or(pb::Risk::Unspecified, risk_to_pb) as i32,
        risk_reasoning: i.risk_reasoning.clone().unwrap_or_default(),
        consequences: i.consequences.clone().unwrap_or_default(),
        measures: i.measures.clone().unwrap_or_default(),
        affected: i.affected.as_ref().map(|a| pb::Affected {
            counts: a
                .counts
                .iter()
                .map(|c| pb::AffectedCount {
                    controller: Some(common::ControllerRef {
                        organisation_number: c.controller.clone(),
                    }),
                    category_id: c.category.clone(),
                    people: c.people,
                    records: c.records,
                })
                .collect(),
            people: a.people,
            records: a.records,
            reachable: a.reachable,
            systems_answered: a.systems_answered.clone(),
            failed_systems: a.failed_systems.clone(),
            window_applied: a.window_applied,
            found_time: Some(kit::timestamp(a.found_at)),
        }),
        authority_notified_time: i.authority_notified_at.map(kit::timestamp),
        authority_reference: i.authority_reference.clone().unwrap_or_default(),
        late_reason: i.late_reason.clone().unwrap_or_default(),
        notices: i.notices_started_at.map(|t| pb::Notices {
            queued: i.notices.queued,
            sent: i.notices.sent,
            failed: i.notices.failed,
            start_time: Some(kit::timestamp(t)),
        }),
        notice_exception: i
            .notice_exception
            .as_ref()
            .map_or(pb::NoticeException::Unspecified, |(e, _)| {
                exception_to_pb(*e)
            }) as i32,
        notice_exception_explanation: i
            .notice_exception
            .as_ref()
            .map(|(_, why)| why.clone())
            .unwrap_or_default(),
        remedial_action: i.remedial_action.clone().unwrap_or_default(),
        close_time: i.closed_at.map(kit::timestamp),
        reported_by: i.reported_by.clone(),
    }
}

/// The wire form of a complaint at `now`.
pub fn complaint_to_pb(c: &Complaint, now: DateTime<Utc>) -> pb::Complaint {
    pb::Complaint {
        id: c.id.clone(),
        controller: Some(common::ControllerRef {
            organisation_number: c.controller.clone(),
        }),
        text: c.text.clone(),
        language: c.language.clone(),
        request_ids: c.request_ids.clone(),
        file_time: Some(kit::timestamp(c.filed_at)),
        answer_due_time: Some(kit::timestamp(c.answer_due)),
        overdue: c.overdue(now),
        answer: c.answer.clone().unwrap_or_default(),
        answer_time: c.answered_at.map(kit::timestamp),
        letter_status: c
            .letter_status
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        filed_by: c.filed_by.clone(),
        answered_by: c.answered_by.clone().unwrap_or_default(),
    }
}

impl IncidentHandlers {
    fn now(&self) -> DateTime<Utc> {
        self.d.ledger.clock().now()
    }

    fn one(&self, i: &Incident) -> Option<pb::Incident> {
        Some(incident_to_pb(i, self.now()))
    }

    fn id(id: &str) -> Result<(), Status> {
        let mut v = Vec::new();
        kit::check_request_id(id, &mut v);
        if v.is_empty() {
            Ok(())
        } else {
            Err(invalid_argument(vec![("id".into(), "a UUID".into())]))
        }
    }
}

#[tonic::async_trait]
impl Incidents for IncidentHandlers {
    #[tracing::instrument(skip_all)]
    async fn report(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        let actor = Principal::subject_of(&req);
        let pb::ReportRequest {
            summary,
            start_time,
            discovered_time,
            system_ids,
            category_ids,
            approximate_people,
            containment,
            source,
        } = req.into_inner();
        let mut v = Vec::new();
        let now = self.now();
        let summary = text("summary", summary, 5000, &mut v);
        let discovered = kit::time(discovered_time);
        match discovered {
            None => v.push(("discovered_time".into(), "required".into())),
            Some(t) if t > now + TimeDelta::minutes(5) => {
                v.push(("discovered_time".into(), "in the future".into()));
            }
            Some(_) => {}
        }
        let started = kit::time(start_time);
        if let (Some(s), Some(d)) = (started, discovered)
            && s > d
        {
            v.push(("start_time".into(), "after discovered_time".into()));
        }
        let systems = ids("system_ids", system_ids, &mut v);
        let categories = ids("category_ids", category_ids, &mut v);
        let containment = containment.trim().to_owned();
        if containment.chars().count() > 5000 {
            v.push(("containment".into(), "at most 5000 characters".into()));
        }
        let source = match pb::Source::try_from(source) {
            Ok(pb::Source::PublicForm) => "public_form",
            Ok(pb::Source::Staff | pb::Source::Unspecified) => "staff",
            Err(_) => {
                v.push(("source".into(), "unknown".into()));
                "staff"
            }
        };
        let (Some(discovered), true) = (discovered, v.is_empty()) else {
            return Err(invalid_argument(v));
        };
        let i = self
            .d
            .ledger
            .report_incident(
                Report {
                    summary,
                    started_at: started,
                    discovered_at: discovered,
                    systems,
                    categories,
                    approximate_people,
                    containment,
                    source: source.into(),
                },
                &actor,
            )
            .await?;
        Ok(Response::new(pb::ReportResponse {
            incident: self.one(&i),
        }))
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let pb::GetRequest { id } = req.into_inner();
        Self::id(&id)?;
        let i = self.d.ledger.incident(&id).await?;
        Ok(Response::new(pb::GetResponse {
            incident: self.one(&i),
        }))
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let pb::ListRequest {
            open_only,
            page_size,
            page_token,
        } = req.into_inner();
        let (offset, limit) = page(&page_token, page_size)?;
        let rows = self
            .d
            .ledger
            .incidents(open_only, offset, limit + 1)
            .await?;
        let more = rows.len() as u64 > limit;
        let now = self.now();
        Ok(Response::new(pb::ListResponse {
            incidents: rows
                .iter()
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .map(|i| incident_to_pb(i, now))
                .collect(),
            next_page_token: if more {
                (offset + limit).to_string()
            } else {
                String::new()
            },
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn find_affected(
        &self,
        req: Request<pb::FindAffectedRequest>,
    ) -> Result<Response<pb::FindAffectedResponse>, Status> {
        let actor = Principal::subject_of(&req);
        let pb::FindAffectedRequest { id } = req.into_inner();
        Self::id(&id)?;
        let controllers: Vec<_> = self
            .d
            .group
            .controllers
            .iter()
            .map(|c| c.organisation_number.clone())
            .collect();
        let i = self
            .d
            .ledger
            .ask_who_is_affected(
                &id,
                self.d.discovery.as_ref(),
                &controllers,
                self.d.call_timeout,
                &actor,
            )
            .await?;
        Ok(Response::new(pb::FindAffectedResponse {
            incident: self.one(&i),
        }))
    }

    async fn assess(
        &self,
        req: Request<pb::AssessRequest>,
    ) -> Result<Response<pb::AssessResponse>, Status> {
        let actor = Principal::subject_of(&req);
        let pb::AssessRequest {
            id,
            risk,
            reasoning,
            consequences,
            measures,
        } = req.into_inner();
        Self::id(&id)?;
        let mut v = Vec::new();
        let risk = match pb::Risk::try_from(risk) {
            Ok(pb::Risk::None) => Risk::None,
            Ok(pb::Risk::Risk) => Risk::Risk,
            Ok(pb::Risk::High) => Risk::High,
            Ok(pb::Risk::Unspecified) | Err(_) => {
                v.push(("risk".into(), "required".into()));
                Risk::None
            }
        };
        let reasoning = text("reasoning", reasoning, 5000, &mut v);
        let (consequences, measures) = if risk == Risk::None {
            (consequences.trim().to_owned(), measures.trim().to_owned())
        } else {
            (
                text("consequences", consequences, 5000, &mut v),
                text("measures", measures, 5000, &mut v),
            )
        };
        if !v.is_empty() {
            return Err(invalid_argument(v));
        }
        let i = self
            .d
            .ledger
            .assess_incident(&id, risk, reasoning, consequences, measures, &actor)
            .await?;
        Ok(Response::new(pb::AssessResponse {
            incident: self.one(&i),
        }))
    }

    async fn draft_notification(
        &self,
        req: Request<pb::DraftNotificationRequest>,
    ) -> Result<Response<pb::DraftNotificationResponse>, Status> {
        let pb::DraftNotificationRequest { id, language } = req.into_inner();
        Self::id(&id)?;
        let mut v = Vec::new();
        let l = lang("language", &language, &mut v);
        if !v.is_empty() {
            return Err(invalid_argument(v));
        }
        let i = self.d.ledger.incident(&id).await?;
        let (text, missing) = incidents::draft(&i, &self.d.letters, &self.d.group, l, self.now());
        Ok(Response::new(pb::DraftNotificationResponse {
            text,
            missing: missing.into_iter().map(str::to_owned).collect(),
        }))
    }

    async fn record_authority_notified(
        &self,
        req: Request<pb::RecordAuthorityNotifiedRequest>,
    ) -> Result<Response<pb::RecordAuthorityNotifiedResponse>, Status> {
        let actor = Principal::subject_of(&req);
        let pb::RecordAuthorityNotifiedRequest {
            id,
            notified_time,
            authority_reference,
            late_reason,
        } = req.into_inner();
        Self::id(&id)?;
        let mut v = Vec::new();
        let at = kit::time(notified_time);
        match at {
            None => v.push(("notified_time".into(), "required".into())),
            Some(t) if t > self.now() + TimeDelta::minutes(5) => {
                v.push(("notified_time".into(), "in the future".into()));
            }
            Some(_) => {}
        }
        if authority_reference.len() > 200 {
            v.push((
                "authority_reference".into(),
                "at most 200 characters".into(),
            ));
        }
        if late_reason.chars().count() > 5000 {
            v.push(("late_reason".into(), "at most 5000 characters".into()));
        }
        let (Some(at), true) = (at, v.is_empty()) else {
            return Err(invalid_argument(v));
        };
        let i = self
            .d
            .ledger
            .authority_notified(
                &id,
                at,
                authority_reference.trim().to_owned(),
                late_reason.trim().to_owned(),
                &actor,
            )
            .await?;
        Ok(Response::new(pb::RecordAuthorityNotifiedResponse {
            incident: self.one(&i),
        }))
    }

    async fn notify_people(
        &self,
        req: Request<pb::NotifyPeopleRequest>,
    ) -> Result<Response<pb::NotifyPeopleResponse>, Status> {
        let actor = Principal::subject_of(&req);
        let pb::NotifyPeopleRequest { id } = req.into_inner();
        Self::id(&id)?;
        let i = self.d.ledger.notify_people(&id, &actor).await?;
        Ok(Response::new(pb::NotifyPeopleResponse {
            incident: self.one(&i),
        }))
    }

    async fn record_notice_exception(
        &self,
        req: Request<pb::RecordNoticeExceptionRequest>,
    ) -> Result<Response<pb::RecordNoticeExceptionResponse>, Status> {
        let actor = Principal::subject_of(&req);
        let pb::RecordNoticeExceptionRequest {
            id,
            exception,
            explanation,
        } = req.into_inner();
        Self::id(&id)?;
        let mut v = Vec::new();
        let exception = match pb::NoticeException::try_from(exception) {
            Ok(pb::NoticeException::Unintelligible) => NoticeException::Unintelligible,
            Ok(pb::NoticeException::RiskNoLongerLikely) => NoticeException::RiskNoLongerLikely,
            Ok(pb::NoticeException::PublicCommunication) => NoticeException::PublicCommunication,
            Ok(pb::NoticeException::Unspecified) | Err(_) => {
                v.push(("exception".into(), "required".into()));
                NoticeException::Unintelligible
            }
        };
        let explanation = text("explanation", explanation, 5000, &mut v);
        if !v.is_empty() {
            return Err(invalid_argument(v));
        }
        let i = self
            .d
            .ledger
            .notice_exception(&id, exception, explanation, &actor)
            .await?;
        Ok(Response::new(pb::RecordNoticeExceptionResponse {
            incident: self.one(&i),
        }))
    }

    async fn close(
        &self,
        req: Request<pb::CloseRequest>,
    ) -> Result<Response<pb::CloseResponse>, Status> {
        let actor = Principal::subject_of(&req);
        let pb::CloseRequest {
            id,
            remedial_action,
        } = req.into_inner();
        Self::id(&id)?;
        let mut v = Vec::new();
        let remedial = text("remedial_action", remedial_action, 5000, &mut v);
        if !v.is_empty() {
            return Err(invalid_argument(v));
        }
        let i = self.d.ledger.close_incident(&id, remedial, &actor).await?;
        Ok(Response::new(pb::CloseResponse {
            incident: self.one(&i),
        }))
    }
}

#[tonic::async_trait]
impl Complaints for IncidentHandlers {
    #[tracing::instrument(skip_all)]
    async fn file(
        &self,
        req: Request<pb::FileRequest>,
    ) -> Result<Response<pb::FileResponse>, Status> {
        let actor = Principal::subject_of(&req);
        let pb::FileRequest {
            controller,
            text: body,
            reply_to,
            language,
            request_ids,
        } = req.into_inner();
        let mut v = Vec::new();
        let controller = kit::controller_from_pb(controller, &mut v);
        if let Some(c) = &controller
            && !self
                .d
                .group
                .controllers
                .iter()
                .any(|g| &g.organisation_number == c)
        {
            v.push(("controller".into(), "not a controller of the group".into()));
        }
        let body = text("text", body, 5000, &mut v);
        let reply_to = match reply_to.map(|r| identities_from_pb(vec![r], "reply_to")) {
            None => {
                v.push((
                    "reply_to".into(),
                    "required: an email address or phone".into(),
                ));
                None
            }
            Some(Err(bad)) => {
                v.extend(bad);
                None
            }
            Some(Ok(mut ids)) => {
                let id = ids.pop();
                if id.as_ref().is_some_and(|i| {
                    !matches!(
                        i.kind(),
                        dsr_domain::identity::IdentityType::Email
                            | dsr_domain::identity::IdentityType::Phone
                    )
                }) {
                    v.push(("reply_to".into(), "an email address or phone".into()));
                }
                id
            }
        };
        let l = lang("language", &language, &mut v);
        let request_ids = ids("request_ids", request_ids, &mut v);
        for (i, r) in request_ids.iter().enumerate() {
            if self.d.ledger.get(r).await.is_err() {
                v.push((format!("request_ids[{i}]"), "no such request".into()));
            }
        }
        let (Some(controller), Some(reply_to), true) = (controller, reply_to, v.is_empty()) else {
            return Err(invalid_argument(v));
        };
        let c = self
            .d
            .ledger
            .file_complaint(
                Filing {
                    controller,
                    text: body,
                    reply_to,
                    language: l.code().to_owned(),
                    request_ids,
                },
                self.d.complaint_response,
                &actor,
            )
            .await?;
        Ok(Response::new(pb::FileResponse {
            complaint: Some(complaint_to_pb(&c, self.now())),
        }))
    }

    async fn get_complaint(
        &self,
        req: Request<pb::GetComplaintRequest>,
    ) -> Result<Response<pb::GetComplaintResponse>, Status> {
        let pb::GetComplaintRequest { id } = req.into_inner();
        Self::id(&id)?;
        let c = self.d.ledger.complaint(&id).await?;
        Ok(Response::new(pb::GetComplaintResponse {
            complaint: Some(complaint_to_pb(&c, self.now())),
        }))
    }

    async fn list_complaints(
        &self,
        req: Request<pb::ListComplaintsRequest>,
    ) -> Result<Response<pb::ListComplaintsResponse>, Status> {
        let pb::ListComplaintsRequest {
            open_only,
            page_size,
            page_token,
        } = req.into_inner();
        let (offset, limit) = page(&page_token, page_size)?;
        let rows = self
            .d
            .ledger
            .complaints(open_only, offset, limit + 1)
            .await?;
        let more = rows.len() as u64 > limit;
        let now = self.now();
        Ok(Response::new(pb::ListComplaintsResponse {
            complaints: rows
                .iter()
                .take(usize::try_from(limit).unwrap_or(usize::MAX))
                .map(|c| complaint_to_pb(c, now))
                .collect(),
            next_page_token: if more {
                (offset + limit).to_string()
            } else {
                String::new()
            },
        }))
    }

    async fn answer(
        &self,
        req: Request<pb::AnswerRequest>,
    ) -> Result<Response<pb::AnswerResponse>, Status> {
        let actor = Principal::subject_of(&req);
        let pb::AnswerRequest { id, answer } = req.into_inner();
        Self::id(&id)?;
        let mut v = Vec::new();
        let answer = text("answer", answer, 10_000, &mut v);
        if !v.is_empty() {
            return Err(invalid_argument(v));
        }
        let c = self.d.ledger.answer_complaint(&id, answer, &actor).await?;
        Ok(Response::new(pb::AnswerResponse {
            complaint: Some(complaint_to_pb(&c, self.now())),
        }))
    }
}
