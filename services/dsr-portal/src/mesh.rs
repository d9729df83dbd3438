//! The mesh as the privacy centre calls it: identity, orchestrator and
//! export over gRPC, each call with a token of the session's own subject
//! (so the mesh scopes what it reads to what that session submitted).

use std::sync::Arc;
use std::time::Duration;

use dsr_auth::{TokenRequest, TokenSigner};
use dsr_proto::common::v1 as common;
use dsr_proto::erasure::v1 as era;
use dsr_proto::erasure::v1::erasure_client::ErasureClient;
use dsr_proto::export::v1 as exp;
use dsr_proto::export::v1::export_client::ExportClient;
use dsr_proto::identity::v1 as idv;
use dsr_proto::identity::v1::identity_verification_client::IdentityVerificationClient;
use dsr_proto::incident::v1 as inc;
use dsr_proto::incident::v1::complaints_client::ComplaintsClient;
use dsr_proto::incident::v1::incidents_client::IncidentsClient;
use dsr_proto::orchestrator::v1 as pb;
use dsr_proto::orchestrator::v1::requests_client::RequestsClient;
use dsr_proto::orchestrator::v1::submit_request::Order;
use dsr_proto::transfer::v1 as tr;
use dsr_proto::transfer::v1::transfer_registry_client::TransferRegistryClient;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

/// Why a call did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The input was refused: the fields named, as the API named them.
    #[error("refused input: {0:?}")]
    Invalid(Vec<String>),
    /// Refused for a reason the page can explain (the ErrorInfo reason).
    #[error("refused: {0}")]
    Refused(String),
    /// The mesh did not answer; nothing was done.
    #[error("unavailable")]
    Unavailable,
}

impl From<tonic::Status> for MeshError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let details = s.get_error_details();
        let reason = details.error_info().map(|i| i.reason.clone());
        let transient = matches!(
            s.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted
        );
        if transient && reason.as_deref() != Some("IDENTITY_RATE_LIMITED") {
            Self::Unavailable
        } else if let (Code::InvalidArgument, Some(b)) = (s.code(), details.bad_request()) {
            Self::Invalid(b.field_violations.iter().map(|v| v.field.clone()).collect())
        } else {
            Self::Refused(reason.unwrap_or_else(|| format!("{:?}", s.code())))
        }
    }
}

/// Where the services are.
#[derive(Clone, Debug)]
pub struct Endpoints {
    /// The orchestrator.
    pub orchestrator: String,
    /// Identity verification.
    pub identity: String,
    /// Export.
    pub export: String,
    /// Erasure (the console's Art. 19 tasks, receipts, holds, sweeps);
    /// empty: none.
    pub erasure: String,
    /// The transfer registry (the console's recipients); empty: none.
    pub registry: String,
}

/// The clients.
#[derive(Clone, Debug)]
pub struct Mesh {
    orchestrator: Channel,
    identity: Channel,
    export: Channel,
    erasure: Option<Channel>,
    registry: Option<Channel>,
    signer: Arc<TokenSigner>,
    /// Scopes every token carries besides the call's own.
    extra_scopes: Vec<String>,
    /// When set, the only scopes a token may carry (a case handler's).
    allowed: Option<Arc<[String]>>,
}

/// What a new request asks for.
#[derive(Clone, Debug)]
pub struct NewRequest {
    /// The kind.
    pub kind: pb::Kind,
    /// The controller's organisation number.
    pub controller: String,
    /// The verification token.
    pub verification_token: String,
    /// "sv" or "en".
    pub language: String,
    /// Chosen once per session and right.
    pub idempotency_key: String,
    /// For a restriction.
    pub ground: pb::RestrictionGround,
    /// For an objection: to direct marketing.
    pub direct_marketing: bool,
    /// For a rectification: (category, correct value).
    pub corrections: Vec<(String, String)>,
    /// For an objection: purposes besides direct marketing.
    pub purposes: Vec<String>,
}

/// A channel that connects on first use, over TLS for an `https://`
/// endpoint (the mesh's client TLS settings), each call bounded.
fn channel(endpoint: &str) -> Result<Channel, String> {
    Ok(dsr_mesh_client::client::endpoint(endpoint)?
        .timeout(Duration::from_secs(30))
        .connect_lazy())
}

fn optional_channel(endpoint: &str) -> Result<Option<Channel>, String> {
    if endpoint.is_empty() {
        Ok(None)
    } else {
        channel(endpoint).map(Some)
    }
}

impl Mesh {
    /// Clients of `e`, with tokens signed by `signer`.
    pub fn new(e: &Endpoints, signer: Arc<TokenSigner>) -> Result<Self, String> {
        Ok(Self {
            orchestrator: channel(&e.orchestrator)?,
            identity: channel(&e.identity)?,
            export: channel(&e.export)?,
            erasure: optional_channel(&e.erasure)?,
            registry: optional_channel(&e.registry)?,
            signer,
            extra_scopes: Vec::new(),
            allowed: None,
        })
    }

    /// The same clients calling as case handlers: every token also carries
    /// `requests:manage`, the role the orchestrator reads every request
    /// for and takes decisions from.
    #[must_use]
    pub fn as_case_handlers(mut self) -> Self {
        self.extra_scopes = vec!["requests:manage".to_owned()];
        self
    }

    /// The same clients whose tokens carry no scope but `scopes` (those a
    /// signed-in case handler holds): a call needing another is refused by
    /// the service, as it would refuse the handler.
    #[must_use]
    pub fn limited_to(&self, scopes: &[String]) -> Self {
        Self {
            allowed: Some(scopes.into()),
            ..self.clone()
        }
    }

    /// `m` with a token for `subject` to `audience` carrying `scopes` and
    /// the mesh's extra ones (those allowed).
    fn req<T>(
        &self,
        subject: &str,
        audience: &str,
        scopes: &[&str],
        m: T,
    ) -> Result<tonic::Request<T>, MeshError> {
        let token = self
            .signer
            .mint(&TokenRequest {
                subject: subject.to_owned(),
                audiences: vec![audience.to_owned()],
                scopes: scopes
                    .iter()
                    .map(|s| (*s).to_owned())
                    .chain(self.extra_scopes.iter().cloned())
                    .filter(|s| self.allowed.as_ref().is_none_or(|a| a.contains(s)))
                    .collect(),
                ttl: Duration::from_secs(120),
            })
            .map_err(|_| MeshError::Unavailable)?;
        let mut r = tonic::Request::new(m);
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| MeshError::Unavailable)?;
        r.metadata_mut().insert("authorization", value);
        Ok(r)
    }

    /// Sends a one-time code to `to` (an email address, or a phone number
    /// by SMS); the challenge's id.
    pub async fn start(
        &self,
        subject: &str,
        to: &dsr_domain::identity::Identity,
        language: &str,
    ) -> Result<String, MeshError> {
        let sms = to.kind() == dsr_domain::identity::IdentityType::Phone;
        let r = self.req(
            subject,
            "dsr-identity",
            &["identity:verify"],
            idv::StartVerificationRequest {
                claimed: vec![dsr_connector::grpc::identity_to_pb(to)],
                method: if sms {
                    idv::Method::SmsCode
                } else {
                    idv::Method::EmailCode
                } as i32,
                idp_assertion: String::new(),
                attestation: None,
                language: language.to_owned(),
                dry_run: false,
            },
        )?;
        Ok(IdentityVerificationClient::new(self.identity.clone())
            .start_verification(r)
            .await?
            .into_inner()
            .challenge_id)
    }

    /// A verification token for the identity provider's assertion (an ID
    /// token from BankID through the company's provider): identity checks
    /// it against the provider's keys and vouches at its level.
    pub async fn assertion(&self, subject: &str, id_token: &str) -> Result<String, MeshError> {
        let r = self.req(
            subject,
            "dsr-identity",
            &["identity:verify"],
            idv::StartVerificationRequest {
                claimed: Vec::new(),
                method: idv::Method::IdpAssertion as i32,
                idp_assertion: id_token.to_owned(),
                attestation: None,
                language: String::new(),
                dry_run: false,
            },
        )?;
        IdentityVerificationClient::new(self.identity.clone())
            .start_verification(r)
            .await?
            .into_inner()
            .token
            .map(|t| t.jwt)
            .ok_or(MeshError::Unavailable)
    }

    /// The verification token for the code.
    pub async fn complete(
        &self,
        subject: &str,
        challenge_id: &str,
        code: &str,
    ) -> Result<String, MeshError> {
        let r = self.req(
            subject,
            "dsr-identity",
            &["identity:verify"],
            idv::CompleteVerificationRequest {
                challenge_id: challenge_id.to_owned(),
                code: code.to_owned(),
            },
        )?;
        IdentityVerificationClient::new(self.identity.clone())
            .complete_verification(r)
            .await?
            .into_inner()
            .token
            .map(|t| t.jwt)
            .ok_or(MeshError::Unavailable)
    }

    /// Submits the request; its id.
    pub async fn submit(&self, subject: &str, n: NewRequest) -> Result<String, MeshError> {
        let r = self.req(
            subject,
            "dsr-orchestrator",
            &["requests:submit"],
            pb::SubmitRequest {
                kind: n.kind as i32,
                controller: Some(common::ControllerRef {
                    organisation_number: n.controller,
                }),
                verification_token: n.verification_token,
                language: n.language,
                idempotency_key: n.idempotency_key,
                order: match n.kind {
                    pb::Kind::Rectification => Some(Order::Rectification(pb::RectificationOrder {
                        corrections: n
                            .corrections
                            .into_iter()
                            .map(|(category_id, value)| pb::Correction { category_id, value })
                            .collect(),
                    })),
                    pb::Kind::Restriction => Some(Order::Restriction(pb::RestrictionOrder {
                        ground: n.ground as i32,
                        ..Default::default()
                    })),
                    pb::Kind::Objection => Some(Order::Objection(pb::ObjectionOrder {
                        purposes: n.purposes,
                        direct_marketing: n.direct_marketing,
                    })),
                    pb::Kind::Unspecified
                    | pb::Kind::Access
                    | pb::Kind::Portability
                    | pb::Kind::Erasure => None,
                },
                ..Default::default()
            },
        )?;
        RequestsClient::new(self.orchestrator.clone())
            .submit(r)
            .await?
            .into_inner()
            .request
            .map(|r| r.id)
            .ok_or(MeshError::Unavailable)
    }

    /// The request as it stands.
    pub async fn get(&self, subject: &str, id: &str) -> Result<pb::DataSubjectRequest, MeshError> {
        let r = self.req(
            subject,
            "dsr-orchestrator",
            &["requests:read"],
            pb::GetRequest { id: id.to_owned() },
        )?;
        RequestsClient::new(self.orchestrator.clone())
            .get(r)
            .await?
            .into_inner()
            .request
            .ok_or(MeshError::Unavailable)
    }

    /// A package's description.
    pub async fn package(&self, subject: &str, id: &str) -> Result<exp::Package, MeshError> {
        let r = self.req(
            subject,
            "dsr-export",
            &["export:read"],
            exp::GetPackageRequest {
                package_id: id.to_owned(),
            },
        )?;
        ExportClient::new(self.export.clone())
            .get_package(r)
            .await?
            .into_inner()
            .package
            .ok_or(MeshError::Unavailable)
    }

    /// One file of a package, as a stream of chunks.
    pub async fn download(
        &self,
        subject: &str,
        package_id: &str,
        file: &str,
    ) -> Result<tonic::Streaming<exp::DownloadResponse>, MeshError> {
        let r = self.req(
            subject,
            "dsr-export",
            &["export:read"],
            exp::DownloadRequest {
                package_id: package_id.to_owned(),
                file_name: file.to_owned(),
            },
        )?;
        Ok(ExportClient::new(self.export.clone())
            .download(r)
            .await?
            .into_inner())
    }

    /// A page of requests, newest first (a case handler's view).
    pub async fn list(
        &self,
        subject: &str,
        f: &ListFilter,
    ) -> Result<Vec<pb::DataSubjectRequest>, MeshError> {
        let r = self.req(
            subject,
            "dsr-orchestrator",
            &["requests:read"],
            pb::ListRequest {
                page: Some(common::PageRequest {
                    page_size: 100,
                    page_token: String::new(),
                }),
                state: f.state as i32,
                kind: f.kind as i32,
                controller: (!f.controller.is_empty()).then(|| common::ControllerRef {
                    organisation_number: f.controller.clone(),
                }),
                overdue: f.overdue,
                due_within_days: f.due_within_days,
            },
        )?;
        Ok(RequestsClient::new(self.orchestrator.clone())
            .list(r)
            .await?
            .into_inner()
            .requests)
    }

    /// A case handler's attestation of the person behind request `id`: a
    /// verification token for `identity` from identity, presented to the
    /// orchestrator's Verify.
    pub async fn attest(
        &self,
        subject: &str,
        id: &str,
        identity: common::Identity,
        evidence: idv::AttestationEvidence,
        note: &str,
    ) -> Result<(), MeshError> {
        let r = self.req(
            subject,
            "dsr-identity",
            &["identity:verify", "identity:attest"],
            idv::StartVerificationRequest {
                claimed: vec![identity],
                method: idv::Method::CaseHandlerAttestation as i32,
                idp_assertion: String::new(),
                attestation: Some(idv::Attestation {
                    evidence: evidence as i32,
                    note: note.to_owned(),
                }),
                language: String::new(),
                dry_run: false,
            },
        )?;
        let token = IdentityVerificationClient::new(self.identity.clone())
            .start_verification(r)
            .await?
            .into_inner()
            .token
            .map(|t| t.jwt)
            .ok_or(MeshError::Unavailable)?;
        let r = self.req(
            subject,
            "dsr-orchestrator",
            &["requests:submit"],
            pb::VerifyRequest {
                id: id.to_owned(),
                code: String::new(),
                verification_token: token,
            },
        )?;
        RequestsClient::new(self.orchestrator.clone())
            .verify(r)
            .await?;
        Ok(())
    }

    /// The Art. 19 notifications of a request (none without erasure).
    pub async fn notifications(
        &self,
        subject: &str,
        request_id: &str,
    ) -> Result<Vec<era::Notification>, MeshError> {
        let Some(ch) = &self.erasure else {
            return Ok(Vec::new());
        };
        let r = self.req(
            subject,
            "dsr-erasure",
            &["erasure:read"],
            era::ListNotificationsRequest {
                request_id: request_id.to_owned(),
            },
        )?;
        Ok(ErasureClient::new(ch.clone())
            .list_notifications(r)
            .await?
            .into_inner()
            .notifications)
    }

    /// A request's case file (identities, subject map, audit trail).
    pub async fn case_file(
        &self,
        subject: &str,
        id: &str,
    ) -> Result<pb::GetCaseFileResponse, MeshError> {
        let r = self.req(
            subject,
            "dsr-orchestrator",
            &["requests:manage"],
            pb::GetCaseFileRequest { id: id.to_owned() },
        )?;
        Ok(RequestsClient::new(self.orchestrator.clone())
            .get_case_file(r)
            .await?
            .into_inner())
    }

    fn erasure(&self) -> Result<ErasureClient<Channel>, MeshError> {
        self.erasure
            .clone()
            .map(ErasureClient::new)
            .ok_or(MeshError::Unavailable)
    }

    /// The erasure receipts of a request (none without erasure).
    pub async fn receipts(
        &self,
        subject: &str,
        request_id: &str,
    ) -> Result<Vec<era::StoredReceipt>, MeshError> {
        if self.erasure.is_none() {
            return Ok(Vec::new());
        }
        let r = self.req(
            subject,
            "dsr-erasure",
            &["erasure:read"],
            era::ListReceiptsRequest {
                request_id: request_id.to_owned(),
            },
        )?;
        Ok(self
            .erasure()?
            .list_receipts(r)
            .await?
            .into_inner()
            .receipts)
    }

    /// An erasure's plan; `None` when the request has none (not an
    /// erasure, or not planned yet) or erasure is not configured.
    pub async fn plan(
        &self,
        subject: &str,
        request_id: &str,
    ) -> Result<Option<era::Plan>, MeshError> {
        if self.erasure.is_none() {
            return Ok(None);
        }
        let r = self.req(
            subject,
            "dsr-erasure",
            &["erasure:read"],
            era::GetPlanRequest {
                request_id: request_id.to_owned(),
            },
        )?;
        match self.erasure()?.get_plan(r).await {
            Ok(p) => Ok(p.into_inner().plan),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s.into()),
        }
    }

    /// The legal holds, lifted ones too.
    pub async fn holds(&self, subject: &str) -> Result<Vec<era::Hold>, MeshError> {
        let r = self.req(
            subject,
            "dsr-erasure",
            &["erasure:holds"],
            era::ListHoldsRequest {
                include_lifted: true,
            },
        )?;
        Ok(self.erasure()?.list_holds(r).await?.into_inner().holds)
    }

    /// Places a hold.
    pub async fn place_hold(
        &self,
        subject: &str,
        h: era::PlaceHoldRequest,
    ) -> Result<era::Hold, MeshError> {
        let r = self.req(subject, "dsr-erasure", &["erasure:holds"], h)?;
        self.erasure()?
            .place_hold(r)
            .await?
            .into_inner()
            .hold
            .ok_or(MeshError::Unavailable)
    }

    /// Lifts a hold.
    pub async fn lift_hold(&self, subject: &str, id: &str) -> Result<(), MeshError> {
        let r = self.req(
            subject,
            "dsr-erasure",
            &["erasure:holds"],
            era::LiftHoldRequest { id: id.to_owned() },
        )?;
        self.erasure()?.lift_hold(r).await?;
        Ok(())
    }

    /// The latest sweeps, newest first.
    pub async fn sweeps(&self, subject: &str) -> Result<Vec<era::Sweep>, MeshError> {
        let r = self.req(
            subject,
            "dsr-erasure",
            &["erasure:sweep"],
            era::ListSweepsRequest { limit: 20 },
        )?;
        Ok(self.erasure()?.list_sweeps(r).await?.into_inner().sweeps)
    }

    /// Starts a retention sweep over every system.
    pub async fn start_sweep(&self, subject: &str, dry_run: bool) -> Result<era::Sweep, MeshError> {
        let r = self.req(
            subject,
            "dsr-erasure",
            &["erasure:sweep"],
            era::StartSweepRequest {
                system_ids: Vec::new(),
                dry_run,
                batch_size: 0,
            },
        )?;
        self.erasure()?
            .start_sweep(r)
            .await?
            .into_inner()
            .sweep
            .ok_or(MeshError::Unavailable)
    }

    /// Approves a notification held for review (a transfer without a
    /// lawful basis in the registry), with what it rests on.
    pub async fn approve_notification(
        &self,
        subject: &str,
        id: &str,
        note: &str,
    ) -> Result<(), MeshError> {
        let r = self.req(
            subject,
            "dsr-erasure",
            &["erasure:holds"],
            era::ApproveNotificationRequest {
                id: id.to_owned(),
                note: note.to_owned(),
            },
        )?;
        self.erasure()?.approve_notification(r).await?;
        Ok(())
    }

    /// Every recipient in the transfer registry (with its standing today),
    /// and the safeguard reviews due within `within_days`.
    pub async fn recipients(
        &self,
        subject: &str,
        within_days: u32,
    ) -> Result<(Vec<tr::Recipient>, Vec<tr::ReviewDue>), MeshError> {
        let ch = self.registry.clone().ok_or(MeshError::Unavailable)?;
        let mut c = TransferRegistryClient::new(ch);
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let r = self.req(
                subject,
                "dsr-transfer-registry",
                &["transfers:read"],
                tr::ListRecipientsRequest {
                    page: Some(common::PageRequest {
                        page_size: 200,
                        page_token: token.clone(),
                    }),
                    ..Default::default()
                },
            )?;
            let page = c.list_recipients(r).await?.into_inner();
            all.extend(page.recipients);
            token = page.page.map(|p| p.next_page_token).unwrap_or_default();
            if token.is_empty() || all.len() >= 10_000 {
                break;
            }
        }
        let r = self.req(
            subject,
            "dsr-transfer-registry",
            &["transfers:read"],
            tr::ListReviewsDueRequest { within_days },
        )?;
        let due = c.list_reviews_due(r).await?.into_inner().reviews;
        Ok((all, due))
    }

    /// Marks an Art. 19 task done.
    pub async fn complete_notification(&self, subject: &str, id: &str) -> Result<(), MeshError> {
        let r = self.req(
            subject,
            "dsr-erasure",
            &["erasure:holds"],
            era::CompleteNotificationRequest { id: id.to_owned() },
        )?;
        self.erasure()?.complete_notification(r).await?;
        Ok(())
    }

    /// A case handler's decision on a request.
    pub async fn decide(&self, subject: &str, d: Decision) -> Result<(), MeshError> {
        let mut c = RequestsClient::new(self.orchestrator.clone());
        let (aud, scope): (&str, &[&str]) = ("dsr-orchestrator", &["requests:manage"]);
        match d {
            Decision::Approve { id, note } => {
                c.approve(self.req(subject, aud, scope, pb::ApproveRequest { id, note })?)
                    .await?;
            }
            Decision::Reject { id, reason, note } => {
                c.reject(self.req(
                    subject,
                    aud,
                    scope,
                    pb::RejectRequest {
                        id,
                        reason: reason as i32,
                        note,
                    },
                )?)
                .await?;
            }
            Decision::Extend { id, months, reason } => {
                c.extend(self.req(
                    subject,
                    aud,
                    scope,
                    pb::ExtendRequest { id, months, reason },
                )?)
                .await?;
            }
            Decision::Cancel { id, reason } => {
                c.cancel(self.req(subject, aud, scope, pb::CancelRequest { id, reason })?)
                    .await?;
            }
        }
        Ok(())
    }
}

/// The console queue's filters (each optional).
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only in this state (`Unspecified`: any).
    pub state: pb::State,
    /// Only of this kind (`Unspecified`: any).
    pub kind: pb::Kind,
    /// Only for this controller (empty: any).
    pub controller: String,
    /// Only overdue ones.
    pub overdue: bool,
    /// Only open ones due within this many days (0: no such filter).
    pub due_within_days: u32,
}

/// What a case handler decides.
#[derive(Clone, Debug)]
pub enum Decision {
    /// Approve (a plan awaiting approval, or a reviewed difference).
    Approve {
        /// The request.
        id: String,
        /// Why, for the trail.
        note: String,
    },
    /// Refuse, with a typed reason (Art. 12(4)).
    Reject {
        /// The request.
        id: String,
        /// The reason.
        reason: pb::RejectionReason,
        /// Told to the person.
        note: String,
    },
    /// Extend the deadline (Art. 12(3)).
    Extend {
        /// The request.
        id: String,
        /// 1 or 2.
        months: u32,
        /// Told to the person.
        reason: String,
    },
    /// Cancel (the person withdrew it).
    Cancel {
        /// The request.
        id: String,
        /// Why.
        reason: String,
    },
}

/// A case handler's or the DPO's step on an incident.
#[derive(Clone, Debug)]
pub enum IncidentStep {
    /// Ask the systems who is affected.
    FindAffected,
    /// Record the risk assessment.
    Assess {
        /// The risk.
        risk: inc::Risk,
        /// Why.
        reasoning: String,
        /// Likely consequences.
        consequences: String,
        /// Measures.
        measures: String,
    },
    /// The authority was notified at `at`.
    Notified {
        /// When.
        at: chrono::DateTime<chrono::Utc>,
        /// Its reference.
        reference: String,
        /// Why late, when late.
        late_reason: String,
    },
    /// Send the notices.
    NotifyPeople,
    /// An Art. 34(3) exception.
    Exception {
        /// Which.
        exception: inc::NoticeException,
        /// Why.
        explanation: String,
    },
    /// Close.
    Close {
        /// The remedial action.
        remedial: String,
    },
}

impl Mesh {
    /// Records an incident (a staff member's, or anyone's through the
    /// privacy centre's form).
    pub async fn report_incident(
        &self,
        subject: &str,
        report: inc::ReportRequest,
    ) -> Result<inc::Incident, MeshError> {
        let r = self.req(subject, "dsr-orchestrator", &["incidents:report"], report)?;
        IncidentsClient::new(self.orchestrator.clone())
            .report(r)
            .await?
            .into_inner()
            .incident
            .ok_or(MeshError::Unavailable)
    }

    /// The register, newest first.
    pub async fn incidents(&self, subject: &str) -> Result<Vec<inc::Incident>, MeshError> {
        let r = self.req(
            subject,
            "dsr-orchestrator",
            &["incidents:manage"],
            inc::ListRequest {
                open_only: false,
                page_size: 200,
                page_token: String::new(),
            },
        )?;
        Ok(IncidentsClient::new(self.orchestrator.clone())
            .list(r)
            .await?
            .into_inner()
            .incidents)
    }

    /// One incident.
    pub async fn incident(&self, subject: &str, id: &str) -> Result<inc::Incident, MeshError> {
        let r = self.req(
            subject,
            "dsr-orchestrator",
            &["incidents:manage"],
            inc::GetRequest { id: id.to_owned() },
        )?;
        IncidentsClient::new(self.orchestrator.clone())
            .get(r)
            .await?
            .into_inner()
            .incident
            .ok_or(MeshError::Unavailable)
    }

    /// The notification to the authority, drafted in `language`.
    pub async fn incident_draft(
        &self,
        subject: &str,
        id: &str,
        language: &str,
    ) -> Result<inc::DraftNotificationResponse, MeshError> {
        let r = self.req(
            subject,
            "dsr-orchestrator",
            &["incidents:manage"],
            inc::DraftNotificationRequest {
                id: id.to_owned(),
                language: language.to_owned(),
            },
        )?;
        Ok(IncidentsClient::new(self.orchestrator.clone())
            .draft_notification(r)
            .await?
            .into_inner())
    }

    /// One step on an incident.
    pub async fn incident_step(
        &self,
        subject: &str,
        id: &str,
        step: IncidentStep,
    ) -> Result<(), MeshError> {
        let mut c = IncidentsClient::new(self.orchestrator.clone());
        let id = id.to_owned();
        let scopes = &["incidents:manage"];
        let aud = "dsr-orchestrator";
        match step {
            IncidentStep::FindAffected => {
                c.find_affected(self.req(subject, aud, scopes, inc::FindAffectedRequest { id })?)
                    .await?;
            }
            IncidentStep::Assess {
                risk,
                reasoning,
                consequences,
                measures,
            } => {
                c.assess(self.req(
                    subject,
                    aud,
                    scopes,
                    inc::AssessRequest {
                        id,
                        risk: risk as i32,
                        reasoning,
                        consequences,
                        measures,
                    },
                )?)
                .await?;
            }
            IncidentStep::Notified {
                at,
                reference,
                late_reason,
            } => {
                c.record_authority_notified(self.req(
                    subject,
                    aud,
                    scopes,
                    inc::RecordAuthorityNotifiedRequest {
                        id,
                        notified_time: Some(prost_types::Timestamp {
                            seconds: at.timestamp(),
                            nanos: 0,
                        }),
                        authority_reference: reference,
                        late_reason,
                    },
                )?)
                .await?;
            }
            IncidentStep::NotifyPeople => {
                c.notify_people(self.req(subject, aud, scopes, inc::NotifyPeopleRequest { id })?)
                    .await?;
            }
            IncidentStep::Exception {
                exception,
                explanation,
            } => {
                c.record_notice_exception(self.req(
                    subject,
                    aud,
                    scopes,
                    inc::RecordNoticeExceptionRequest {
                        id,
                        exception: exception as i32,
                        explanation,
                    },
                )?)
                .await?;
            }
            IncidentStep::Close { remedial } => {
                c.close(self.req(
                    subject,
                    aud,
                    scopes,
                    inc::CloseRequest {
                        id,
                        remedial_action: remedial,
                    },
                )?)
                .await?;
            }
        }
        Ok(())
    }

    /// Files a complaint (the person's, or a handler's on their behalf).
    pub async fn file_complaint(
        &self,
        subject: &str,
        f: inc::FileRequest,
    ) -> Result<inc::Complaint, MeshError> {
        let r = self.req(subject, "dsr-orchestrator", &["requests:submit"], f)?;
        ComplaintsClient::new(self.orchestrator.clone())
            .file(r)
            .await?
            .into_inner()
            .complaint
            .ok_or(MeshError::Unavailable)
    }

    /// The DPO's queue.
    pub async fn complaints(&self, subject: &str) -> Result<Vec<inc::Complaint>, MeshError> {
        let r = self.req(
            subject,
            "dsr-orchestrator",
            &["requests:manage"],
            inc::ListComplaintsRequest {
                open_only: false,
                page_size: 200,
                page_token: String::new(),
            },
        )?;
        Ok(ComplaintsClient::new(self.orchestrator.clone())
            .list_complaints(r)
            .await?
            .into_inner()
            .complaints)
    }

    /// Answers a complaint.
    pub async fn answer_complaint(
        &self,
        subject: &str,
        id: &str,
        answer: &str,
    ) -> Result<(), MeshError> {
        let r = self.req(
            subject,
            "dsr-orchestrator",
            &["requests:manage"],
            inc::AnswerRequest {
                id: id.to_owned(),
                answer: answer.to_owned(),
            },
        )?;
        ComplaintsClient::new(self.orchestrator.clone())
            .answer(r)
            .await?;
        Ok(())
    }
}
