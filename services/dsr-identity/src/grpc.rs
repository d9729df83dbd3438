//! The gRPC edge: thin handlers, the error mapping, the scope table.

use std::sync::Arc;

use dsr_auth::{AuthLayer, AuthService, Principal, ScopeRule, Validator};
use dsr_connector::grpc::{identities_from_pb, identity_to_pb};
use dsr_domain::identity::Identity;
use dsr_proto::common::v1 as common;
use dsr_proto::identity::v1 as pb;
use dsr_proto::identity::v1::identity_verification_server::{
    IdentityVerification, IdentityVerificationServer,
};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower_layer::Layer;

use crate::tokens::{Assurance, Issued};
use crate::verifier::{Channel, Error, Evidence, Verifier};

/// Scope to start and complete verifications.
pub const SCOPE_VERIFY: &str = "identity:verify";
/// Scope of case handlers' attestations.
pub const SCOPE_ATTEST: &str = "identity:attest";
/// Scope of SendLetter (the orchestrator's letters to a person).
pub const SCOPE_NOTIFY: &str = "identity:notify";

/// Required scopes per RPC (an attestation also needs [`SCOPE_ATTEST`],
/// checked in the handler since it depends on the method).
pub const SCOPES: &[ScopeRule] = &[
    ScopeRule {
        method: "StartVerification",
        scopes: &[SCOPE_VERIFY],
    },
    ScopeRule {
        method: "CompleteVerification",
        scopes: &[SCOPE_VERIFY],
    },
    ScopeRule {
        method: "GetJwks",
        scopes: &[],
    },
    ScopeRule {
        method: "SendLetter",
        scopes: &[SCOPE_NOTIFY],
    },
];

const DOMAIN: &str = "identity.dsr-mesh";

/// The authenticated service.
pub type Service = AuthService<IdentityVerificationServer<Handlers>>;

/// Builds the service.
pub fn service(verifier: Verifier, validator: Arc<Validator>) -> Service {
    AuthLayer::new(validator, SCOPES).layer(IdentityVerificationServer::new(Handlers { verifier }))
}

/// The handlers.
#[derive(Clone, Debug)]
pub struct Handlers {
    verifier: Verifier,
}

fn status(code: Code, message: &str, reason: &str) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, DOMAIN, []),
    )
}

fn invalid(v: Vec<(String, String)>) -> Status {
    let mut d = ErrorDetails::with_error_info("INVALID_ARGUMENT", DOMAIN, []);
    for (f, desc) in v {
        d.add_bad_request_violation(f, desc);
    }
    Status::with_error_details(Code::InvalidArgument, "invalid request", d)
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(v) => invalid(v),
            Error::RateLimited { retry_after } => {
                let mut d = ErrorDetails::with_error_info("IDENTITY_RATE_LIMITED", DOMAIN, []);
                d.set_retry_info(Some(retry_after.to_std().unwrap_or_default()));
                Status::with_error_details(
                    Code::ResourceExhausted,
                    "too many codes for this identity; try again later (RetryInfo says when)",
                    d,
                )
            }
            Error::NotFound => status(Code::NotFound, "challenge not found", "CHALLENGE_NOT_FOUND"),
            Error::Expired => status(
                Code::FailedPrecondition,
                "the code has expired; start again",
                "CHALLENGE_EXPIRED",
            ),
            Error::Locked => status(
                Code::FailedPrecondition,
                "too many wrong codes; start again",
                "CHALLENGE_LOCKED",
            ),
            Error::Used => status(
                Code::FailedPrecondition,
                "the challenge was already completed",
                "CHALLENGE_USED",
            ),
            Error::WrongCode { remaining } => {
                let mut d = ErrorDetails::with_error_info(
                    "CODE_MISMATCH",
                    DOMAIN,
                    [("remaining_attempts".to_owned(), remaining.to_string())],
                );
                d.add_bad_request_violation("code", "does not match");
                Status::with_error_details(Code::InvalidArgument, "the code does not match", d)
            }
            Error::AssertionRejected(reason) => status(
                Code::Unauthenticated,
                "identity-provider assertion rejected",
                reason,
            ),
            Error::NoIdentityProvider => status(
                Code::FailedPrecondition,
                "no identity provider is configured",
                "NO_IDENTITY_PROVIDER",
            ),
            Error::Delivery => status(
                Code::Unavailable,
                "the message could not be delivered; try again",
                "DELIVERY_FAILED",
            ),
            Error::Internal(m) => {
                tracing::error!(error = %m, "identity service failure");
                status(Code::Internal, "internal error", "INTERNAL")
            }
        }
    }
}

/// The claimed identities, or every bad one as a field violation.
fn claimed(list: Vec<common::Identity>) -> Result<Vec<Identity>, Status> {
    identities_from_pb(list, "claimed").map_err(invalid)
}

fn token_to_pb(t: &Issued) -> pb::VerificationToken {
    pb::VerificationToken {
        jwt: t.jwt.clone(),
        expires_at: Some(prost_types::Timestamp {
            seconds: t.expires_at.timestamp(),
            nanos: 0,
        }),
        assurance: match t.assurance {
            Assurance::Low => pb::Assurance::Low,
            Assurance::Substantial => pb::Assurance::Substantial,
            Assurance::High => pb::Assurance::High,
            Assurance::Attested => pb::Assurance::Attested,
        } as i32,
        identities: t.identities.iter().map(identity_to_pb).collect(),
    }
}

#[tonic::async_trait]
impl IdentityVerification for Handlers {
    #[tracing::instrument(skip_all)]
    async fn start_verification(
        &self,
        req: Request<pb::StartVerificationRequest>,
    ) -> Result<Response<pb::StartVerificationResponse>, Status> {
        let principal = req.extensions().get::<Principal>().cloned();
        let pb::StartVerificationRequest {
            claimed: ids,
            method,
            idp_assertion,
            attestation,
            language,
            dry_run,
        } = req.into_inner();
        let Some(language) = dsr_domain::text::Lang::requested(&language) else {
            return Err(invalid(vec![("language".into(), "sv or en".into())]));
        };
        let language = language.code().to_owned();
        match pb::Method::try_from(method) {
            Ok(m @ (pb::Method::EmailCode | pb::Method::SmsCode)) => {
                let ids = claimed(ids)?;
                let [to] = <[Identity; 1]>::try_from(ids).map_err(|_| {
                    invalid(vec![(
                        "claimed".into(),
                        "exactly one identity: where the code goes".into(),
                    )])
                })?;
                let channel = if m == pb::Method::EmailCode {
                    Channel::Email
                } else {
                    Channel::Sms
                };
                if dry_run {
                    self.verifier.check_code(&to, channel).await?;
                    return Ok(Response::new(pb::StartVerificationResponse::default()));
                }
                let started = self.verifier.start_code(to, channel, &language).await?;
                Ok(Response::new(pb::StartVerificationResponse {
                    challenge_id: started.challenge_id,
                    challenge_expires_at: Some(prost_types::Timestamp {
                        seconds: started.expires_at.timestamp(),
                        nanos: 0,
                    }),
                    token: None,
                }))
            }
            Ok(pb::Method::IdpAssertion) => {
                if idp_assertion.is_empty() {
                    return Err(invalid(vec![("idp_assertion".into(), "required".into())]));
                }
                let issued = self.verifier.assertion(&idp_assertion).await?;
                Ok(Response::new(pb::StartVerificationResponse {
                    challenge_id: String::new(),
                    challenge_expires_at: None,
                    token: Some(token_to_pb(&issued)),
                }))
            }
            Ok(pb::Method::CaseHandlerAttestation) => {
                let Some(p) = principal.filter(|p| p.has_scope(SCOPE_ATTEST)) else {
                    return Err(Status::with_error_details(
                        Code::PermissionDenied,
                        "permission denied",
                        ErrorDetails::with_error_info(
                            "SCOPE_MISSING",
                            "auth.dsr-mesh",
                            [("scope".to_owned(), SCOPE_ATTEST.to_owned())],
                        ),
                    ));
                };
                let Some(pb::Attestation { evidence, note }) = attestation else {
                    return Err(invalid(vec![("attestation".into(), "required".into())]));
                };
                let evidence = match pb::AttestationEvidence::try_from(evidence) {
                    Ok(pb::AttestationEvidence::InPerson) => Evidence::InPerson,
                    Ok(pb::AttestationEvidence::Document) => Evidence::Document,
                    Ok(pb::AttestationEvidence::Unspecified) | Err(_) => {
                        return Err(invalid(vec![(
                            "attestation.evidence".into(),
                            "required".into(),
                        )]));
                    }
                };
                let ids = claimed(ids)?;
                let issued = self
                    .verifier
                    .attest(&p.subject, ids, evidence, &note)
                    .await?;
                Ok(Response::new(pb::StartVerificationResponse {
                    challenge_id: String::new(),
                    challenge_expires_at: None,
                    token: Some(token_to_pb(&issued)),
                }))
            }
            Ok(pb::Method::Unspecified) | Err(_) => {
                Err(invalid(vec![("method".into(), "required".into())]))
            }
        }
    }

    #[tracing::instrument(skip_all)]
    async fn complete_verification(
        &self,
        req: Request<pb::CompleteVerificationRequest>,
    ) -> Result<Response<pb::CompleteVerificationResponse>, Status> {
        let pb::CompleteVerificationRequest { challenge_id, code } = req.into_inner();
        if uuid::Uuid::parse_str(&challenge_id).is_err() {
            return Err(invalid(vec![(
                "challenge_id".into(),
                "not a challenge id".into(),
            )]));
        }
        let issued = self.verifier.complete(&challenge_id, code.trim()).await?;
        Ok(Response::new(pb::CompleteVerificationResponse {
            token: Some(token_to_pb(&issued)),
        }))
    }

    async fn get_jwks(
        &self,
        req: Request<pb::GetJwksRequest>,
    ) -> Result<Response<pb::GetJwksResponse>, Status> {
        let pb::GetJwksRequest {} = req.into_inner();
        Ok(Response::new(pb::GetJwksResponse {
            jwks: self.verifier.jwks(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn send_letter(
        &self,
        req: Request<pb::SendLetterRequest>,
    ) -> Result<Response<pb::SendLetterResponse>, Status> {
        let pb::SendLetterRequest { to, subject, body } = req.into_inner();
        let mut v = Vec::new();
        let to = match identities_from_pb(to.into_iter().collect(), "to") {
            Ok(ids) => match <[Identity; 1]>::try_from(ids) {
                Ok([i]) => Some(i),
                Err(_) => {
                    v.push((
                        "to".to_owned(),
                        "required: one email address or phone number".to_owned(),
                    ));
                    None
                }
            },
            Err(bad) => {
                v.extend(bad);
                None
            }
        };
        let subject = subject.trim();
        if subject.is_empty() || subject.chars().count() > 200 || subject.contains('\n') {
            v.push((
                "subject".to_owned(),
                "1 to 200 characters, one line".to_owned(),
            ));
        }
        if body.trim().is_empty() || body.chars().count() > 20_000 {
            v.push(("body".to_owned(), "1 to 20 000 characters".to_owned()));
        }
        let Some(to) = to.filter(|_| v.is_empty()) else {
            return Err(invalid(v));
        };
        self.verifier.send_letter(to, subject, &body).await?;
        Ok(Response::new(pb::SendLetterResponse {}))
    }
}
