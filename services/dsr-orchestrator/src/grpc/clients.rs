//! The tonic implementations of the [`crate::mesh`] traits: identity,
//! discovery, export and erasure, each called with a service token for its audience,
//! the caller's trace context, and the step's deadline as `grpc-timeout`.

use std::sync::Arc;

use dsr_auth::TokenSigner;
use dsr_connector::grpc::{self as kit, identity_to_pb};
use dsr_domain::identity::Identity;
use dsr_domain::request::{Kind, RestrictionGround, WriteOrder};
use dsr_mesh_client::client::{Calls, Outgoing, calls, failure_reason, lazy_channel};
use dsr_proto::common::v1 as common;
use dsr_proto::discovery::v1 as disc;
use dsr_proto::discovery::v1::discovery_client::DiscoveryClient;
use dsr_proto::erasure::v1 as era;
use dsr_proto::erasure::v1::erasure_client::ErasureClient;
use dsr_proto::export::v1 as exp;
use dsr_proto::export::v1::export_client::ExportClient;
use dsr_proto::identity::v1 as idv;
use dsr_proto::identity::v1::identity_verification_client::IdentityVerificationClient;
use dsr_proto::system::v1 as sys;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

use crate::mesh::{
    Call, CallError, Challenge, Discovery, Discrepancy, Erasure, Executed, Export, PackageRef,
    Planned, Store, SubjectMap, SystemFound, Verification, Withheld,
};

/// Where the other services are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// Identity verification.
    pub identity: String,
    /// Discovery.
    pub discovery: String,
    /// Export.
    pub export: String,
    /// Erasure.
    pub erasure: String,
}

/// The mesh over gRPC.
#[derive(Clone, Debug)]
pub struct GrpcMesh {
    identity: IdentityVerificationClient<Calls>,
    discovery: DiscoveryClient<Calls>,
    export: ExportClient<Calls>,
    erasure: ErasureClient<Calls>,
}

impl GrpcMesh {
    /// Clients calling as `service:dsr-orchestrator`, with tokens from
    /// `signer`. Connections are made on first use.
    pub fn new(e: &Endpoints, signer: Arc<TokenSigner>) -> Result<Self, String> {
        let me = crate::SERVICE_NAME;
        let ch = |what: &str, url: &str| lazy_channel(url).map_err(|err| format!("{what}: {err}"));
        Ok(Self {
            identity: IdentityVerificationClient::new(calls(
                ch("identity", &e.identity)?,
                Outgoing::new(
                    signer.clone(),
                    me,
                    "dsr-identity",
                    &["identity:verify", "identity:notify"],
                ),
                "dsr-identity",
            )),
            discovery: DiscoveryClient::new(calls(
                ch("discovery", &e.discovery)?,
                Outgoing::new(signer.clone(), me, "dsr-discovery", &["discovery:locate"]),
                "dsr-discovery",
            ))
            .max_decoding_message_size(64 * 1024 * 1024),
            export: ExportClient::new(calls(
                ch("export", &e.export)?,
                Outgoing::new(signer.clone(), me, "dsr-export", &["export:build"]),
                "dsr-export",
            ))
            .max_encoding_message_size(64 * 1024 * 1024),
            erasure: ErasureClient::new(calls(
                ch("erasure", &e.erasure)?,
                Outgoing::new(signer, me, "dsr-erasure", &["erasure:execute"]),
                "dsr-erasure",
            ))
            .max_encoding_message_size(64 * 1024 * 1024),
        })
    }
}

/// A failed call: the callee's ErrorInfo reason when it gave one, else the
/// code; retryable when the callee was unavailable, timed out or busy.
fn call_error(service: &str, s: &Status) -> CallError {
    let reason = s
        .get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| failure_reason(s));
    CallError {
        service: service.to_owned(),
        reason,
        // A call cut short (the server's own timeout answers CANCELLED) is
        // tried again: the callee's writes are idempotent and finish on
        // their own.
        retryable: matches!(
            s.code(),
            Code::Unavailable
                | Code::Cancelled
                | Code::DeadlineExceeded
                | Code::ResourceExhausted
                | Code::Aborted
                | Code::Internal
                | Code::Unknown
                | Code::FailedPrecondition
        ),
    }
}

fn with_deadline<T>(call: &Call, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(call.timeout);
    r
}

fn controller(call: &Call) -> Option<common::ControllerRef> {
    Some(common::ControllerRef {
        organisation_number: call.controller.as_str().to_owned(),
    })
}

fn outcome_name(o: i32) -> String {
    disc::Outcome::try_from(o)
        .map(|x| {
            x.as_str_name()
                .trim_start_matches("OUTCOME_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unspecified".into())
}

/// From discovery's subject map.
pub fn map_from_pb(m: disc::SubjectMap) -> SubjectMap {
    SubjectMap {
        identities: m
            .identities
            .into_iter()
            .filter_map(|i| {
                kit::identity_type_from_pb(i.r#type).map(|t| (t.as_str().to_owned(), i.value))
            })
            .collect(),
        systems: m
            .systems
            .into_iter()
            .map(|s| SystemFound {
                outcome: outcome_name(s.outcome),
                stores: s
                    .stores
                    .into_iter()
                    .map(|st| Store {
                        keys: st.records.into_iter().map(|r| r.key).collect(),
                        categories: st.category_ids,
                        store: st.store,
                    })
                    .collect(),
                error_reason: s.error_reason,
                system_id: s.system_id,
            })
            .collect(),
        partial: m.partial,
        rounds: m.rounds,
    }
}

/// Back to discovery's subject map, for export.
pub fn map_to_pb(m: &SubjectMap) -> disc::SubjectMap {
    disc::SubjectMap {
        identities: m
            .identities
            .iter()
            .filter_map(|(t, v)| crate::ledger::identity_from_parts(t, v))
            .map(|i| identity_to_pb(&i))
            .collect(),
        systems: m
            .systems
            .iter()
            .map(|s| disc::SystemLocation {
                system_id: s.system_id.clone(),
                outcome: disc::Outcome::from_str_name(&format!(
                    "OUTCOME_{}",
                    s.outcome.to_uppercase()
                ))
                .unwrap_or(disc::Outcome::Unspecified) as i32,
                stores: s
                    .stores
                    .iter()
                    .map(|st| sys::LocatedStore {
                        store: st.store.clone(),
                        records: st
                            .keys
                            .iter()
                            .map(|k| sys::RecordRef {
                                store: st.store.clone(),
                                key: k.clone(),
                            })
                            .collect(),
                        category_ids: st.categories.clone(),
                    })
                    .collect(),
                error_reason: s.error_reason.clone(),
                asked_with: Vec::new(),
            })
            .collect(),
        partial: m.partial,
        rounds: m.rounds,
    }
}

/// Where a code goes: the first email, else the first phone; and how.
fn code_target(claimed: &[Identity]) -> Result<(&Identity, idv::Method), CallError> {
    let target = claimed
        .iter()
        .find(|i| i.kind() == dsr_domain::identity::IdentityType::Email)
        .or_else(|| {
            claimed
                .iter()
                .find(|i| i.kind() == dsr_domain::identity::IdentityType::Phone)
        })
        .ok_or_else(|| CallError {
            service: "identity".into(),
            reason: "NO_CONTACT_IDENTITY".into(),
            retryable: false,
        })?;
    let method = if target.kind() == dsr_domain::identity::IdentityType::Email {
        idv::Method::EmailCode
    } else {
        idv::Method::SmsCode
    };
    Ok((target, method))
}

/// Starting (or, `dry_run`, asking about) a code to `target` alone: the
/// challenge names the one address the code goes to.
fn code_request(
    target: &Identity,
    method: idv::Method,
    language: &str,
    dry_run: bool,
) -> idv::StartVerificationRequest {
    idv::StartVerificationRequest {
        claimed: vec![identity_to_pb(target)],
        method: method as i32,
        idp_assertion: String::new(),
        attestation: None,
        language: language.to_owned(),
        dry_run,
    }
}

#[tonic::async_trait]
impl Verification for GrpcMesh {
    async fn code_wait(
        &self,
        call: &Call,
        claimed: &[Identity],
    ) -> Result<Option<std::time::Duration>, CallError> {
        let Ok((target, method)) = code_target(claimed) else {
            // No address for a code: the verify step says so.
            return Ok(None);
        };
        let asked = self
            .identity
            .clone()
            .start_verification(with_deadline(call, code_request(target, method, "", true)))
            .await;
        match asked {
            Ok(_) => Ok(None),
            Err(s) if s.code() == Code::ResourceExhausted => Ok(Some(
                s.get_error_details()
                    .retry_info()
                    .and_then(|r| r.retry_delay)
                    .unwrap_or(std::time::Duration::from_secs(3600)),
            )),
            Err(s) => Err(call_error("identity", &s)),
        }
    }

    async fn start(
        &self,
        call: &Call,
        claimed: &[Identity],
        language: &str,
    ) -> Result<Challenge, CallError> {
        let (target, method) = code_target(claimed)?;
        let resp = self
            .identity
            .clone()
            .start_verification(with_deadline(
                call,
                code_request(target, method, language, false),
            ))
            .await
            .map_err(|s| call_error("identity", &s))?
            .into_inner();
        Ok(Challenge {
            id: resp.challenge_id,
        })
    }

    async fn complete(
        &self,
        call: &Call,
        challenge_id: &str,
        code: &str,
    ) -> Result<String, CallError> {
        let resp = self
            .identity
            .clone()
            .complete_verification(with_deadline(
                call,
                idv::CompleteVerificationRequest {
                    challenge_id: challenge_id.to_owned(),
                    code: code.to_owned(),
                },
            ))
            .await
            .map_err(|s| {
                let mut e = call_error("identity", &s);
                // A refused code is the person's answer, not an outage.
                e.retryable = e.retryable && s.code() != Code::FailedPrecondition;
                e
            })?
            .into_inner();
        resp.token.map(|t| t.jwt).ok_or_else(|| CallError {
            service: "identity".into(),
            reason: "NO_TOKEN".into(),
            retryable: true,
        })
    }

    async fn send_letter(
        &self,
        call: &Call,
        to: &Identity,
        subject: &str,
        body: &str,
    ) -> Result<(), CallError> {
        self.identity
            .clone()
            .send_letter(with_deadline(
                call,
                idv::SendLetterRequest {
                    to: Some(identity_to_pb(to)),
                    subject: subject.to_owned(),
                    body: body.to_owned(),
                },
            ))
            .await
            .map_err(|s| call_error("identity", &s))?;
        Ok(())
    }
}

#[tonic::async_trait]
impl Discovery for GrpcMesh {
    async fn locate(&self, call: &Call, identities: &[Identity]) -> Result<SubjectMap, CallError> {
        let resp = self
            .discovery
            .clone()
            .locate(with_deadline(
                call,
                disc::LocateRequest {
                    request_id: call.request_id.clone(),
                    controller: controller(call),
                    due_date: Some(kit::date_to_pb(call.due_date)),
                    identities: identities.iter().map(identity_to_pb).collect(),
                    max_rounds: 0,
                },
            ))
            .await
            .map_err(|s| call_error("discovery", &s))?
            .into_inner();
        resp.subject_map.map(map_from_pb).ok_or_else(|| CallError {
            service: "discovery".into(),
            reason: "NO_SUBJECT_MAP".into(),
            retryable: true,
        })
    }

    async fn find_affected(
        &self,
        call: &Call,
        q: &crate::mesh::BreachQuery,
    ) -> Result<Vec<crate::mesh::SystemAffected>, CallError> {
        let mut stream = self
            .discovery
            .clone()
            .find_affected(with_deadline(
                call,
                disc::FindAffectedRequest {
                    incident_id: call.request_id.clone(),
                    controller: controller(call),
                    due_date: Some(kit::date_to_pb(call.due_date)),
                    system_ids: q.systems.clone(),
                    category_ids: q.categories.clone(),
                    from_time: q.from.map(kit::timestamp),
                    to_time: q.to.map(kit::timestamp),
                },
            ))
            .await
            .map_err(|s| call_error("discovery", &s))?
            .into_inner();
        let mut by_system: std::collections::BTreeMap<String, crate::mesh::SystemAffected> =
            std::collections::BTreeMap::new();
        while let Some(m) = stream
            .message()
            .await
            .map_err(|s| call_error("discovery", &s))?
        {
            let entry = by_system.entry(m.system_id.clone()).or_insert_with(|| {
                crate::mesh::SystemAffected {
                    system_id: m.system_id.clone(),
                    outcome: String::new(),
                    people: Vec::new(),
                    error_reason: String::new(),
                }
            });
            if let Some(p) = m.person {
                entry.people.push(crate::mesh::AffectedPerson {
                    contacts: kit::identities_from_pb(p.contacts, "contacts").unwrap_or_default(),
                    language: p.language,
                    categories: p.category_ids,
                    records: p.record_count,
                    window_applied: p.window_applied,
                });
            } else {
                entry.outcome = outcome_name(m.outcome);
                entry.error_reason = m.error_reason;
            }
        }
        Ok(by_system.into_values().collect())
    }
}

#[tonic::async_trait]
impl Export for GrpcMesh {
    async fn build(
        &self,
        call: &Call,
        kind: Kind,
        language: &str,
        map: &SubjectMap,
    ) -> Result<PackageRef, CallError> {
        let resp = self
            .export
            .clone()
            .build_package(with_deadline(
                call,
                exp::BuildPackageRequest {
                    request_id: call.request_id.clone(),
                    kind: match kind {
                        Kind::Access => exp::PackageKind::Access,
                        Kind::Portability => exp::PackageKind::Portability,
                        Kind::Erasure
                        | Kind::Rectification
                        | Kind::Restriction
                        | Kind::Objection => {
                            return Err(CallError {
                                service: "orchestrator".into(),
                                reason: "only access and portability requests have a package"
                                    .into(),
                                retryable: false,
                            });
                        }
                    } as i32,
                    controller: controller(call),
                    due_date: Some(kit::date_to_pb(call.due_date)),
                    language: language.to_owned(),
                    subject_map: Some(map_to_pb(map)),
                    submitted_by: call.submitted_by.clone().unwrap_or_default(),
                },
            ))
            .await
            .map_err(|s| call_error("export", &s))?
            .into_inner();
        let p = resp.package.ok_or_else(|| CallError {
            service: "export".into(),
            reason: "NO_PACKAGE".into(),
            retryable: true,
        })?;
        Ok(PackageRef {
            id: p.id,
            record_count: p.record_count,
            system_ids: p.system_ids,
        })
    }
}

fn order_to_pb(o: &WriteOrder) -> era::apply_request::Order {
    use era::apply_request::Order;
    match o {
        WriteOrder::Rectify { corrections } => Order::Rectify(era::RectifyOrder {
            corrections: corrections
                .iter()
                .map(|c| era::Correction {
                    category_id: c.category.clone(),
                    value: c.value.clone(),
                })
                .collect(),
        }),
        WriteOrder::Restrict { ground } => Order::Restrict(era::RestrictOrder {
            ground: match ground {
                RestrictionGround::AccuracyContested => era::RestrictionGround::AccuracyContested,
                RestrictionGround::UnlawfulProcessing => era::RestrictionGround::UnlawfulProcessing,
                RestrictionGround::NeededForLegalClaims => {
                    era::RestrictionGround::NeededForLegalClaims
                }
                RestrictionGround::ObjectionPending => era::RestrictionGround::ObjectionPending,
            } as i32,
            lift: false,
            person_informed_time: None,
        }),
        WriteOrder::Lift { person_informed_at } => Order::Restrict(era::RestrictOrder {
            ground: 0,
            lift: true,
            person_informed_time: person_informed_at.map(kit::timestamp),
        }),
        WriteOrder::Object {
            purposes,
            direct_marketing,
        } => Order::Object(era::ObjectOrder {
            purposes: purposes.clone(),
            direct_marketing: *direct_marketing,
        }),
    }
}

/// The notifications not sent for want of a lawful transfer.
fn withheld(ns: &[era::Notification]) -> Vec<Withheld> {
    ns.iter()
        .filter_map(|n| {
            let verdict = match era::NotificationTransfer::try_from(n.transfer) {
                Ok(era::NotificationTransfer::Refused) => "refused",
                Ok(era::NotificationTransfer::AwaitingApproval) => "awaiting_approval",
                Ok(
                    era::NotificationTransfer::Lawful
                    | era::NotificationTransfer::Approved
                    | era::NotificationTransfer::Unspecified,
                )
                | Err(_) => return None,
            };
            Some(Withheld {
                recipient_id: n.recipient_id.clone(),
                recipient_name: n.recipient_name.clone(),
                country: n.country.clone(),
                action: n.action.clone(),
                verdict: verdict.into(),
                reasons: n.transfer_reasons.clone(),
                notification_id: n.id.clone(),
            })
        })
        .collect()
}

fn erased(
    e: Option<era::Execution>,
    notifications: &[era::Notification],
) -> Result<Executed, CallError> {
    let e = e.ok_or_else(|| CallError {
        service: "erasure".into(),
        reason: "NO_EXECUTION".into(),
        retryable: true,
    })?;
    let failures = e
        .systems
        .iter()
        .filter(|s| s.state != era::SystemState::Done as i32)
        .map(|s| format!("system {}: {}", s.system_id, s.error))
        .collect();
    Ok(Executed {
        complete: e.complete,
        failures,
        affected: e.systems.iter().map(|s| s.affected).sum(),
        refused: e.systems.iter().map(|s| s.refused).sum(),
        retained: e.retained_count,
        next_deferred_on: kit::date(e.next_deferred_on),
        discrepancies: e.discrepancies.iter().map(discrepancy_from_pb).collect(),
        withheld: withheld(notifications),
        system_ids: e.systems.into_iter().map(|s| s.system_id).collect(),
    })
}

fn discrepancy_from_pb(d: &era::Discrepancy) -> Discrepancy {
    let record = d.record.clone().unwrap_or_default();
    let kept = d.observed == sys::RecordResult::Retained as i32;
    Discrepancy {
        system_id: d.system_id.clone(),
        store: record.store,
        key: record.key,
        phase: d.phase.clone(),
        expected: match era::Expectation::try_from(d.expected) {
            Ok(era::Expectation::Retained) => "retained",
            Ok(era::Expectation::Removed | era::Expectation::Unspecified) | Err(_) => "removed",
        }
        .into(),
        observed: match sys::RecordResult::try_from(d.observed) {
            Ok(sys::RecordResult::Erased) => "erased",
            Ok(sys::RecordResult::Anonymised) => "anonymised",
            Ok(sys::RecordResult::Retained) => "retained",
            Ok(sys::RecordResult::Refused) => "refused",
            Ok(sys::RecordResult::NotFound) => "not_found",
            Ok(sys::RecordResult::Applied) => "applied",
            Ok(sys::RecordResult::Unchanged) => "unchanged",
            Ok(sys::RecordResult::Unspecified) | Err(_) => "not_reported",
        }
        .into(),
        reason: kept
            .then(
                || match sys::RestrictionReason::try_from(d.restriction_reason) {
                    Ok(sys::RestrictionReason::Request) => Some("request"),
                    Ok(sys::RestrictionReason::Hold) => Some("hold"),
                    Ok(sys::RestrictionReason::Retention) => Some("retention"),
                    Ok(sys::RestrictionReason::Unspecified) | Err(_) => None,
                },
            )
            .flatten()
            .map(str::to_owned),
        ground: (!d.legal_ground.is_empty()).then(|| d.legal_ground.clone()),
        until: kit::date(d.retain_until),
        receipt_id: d.receipt_id.clone(),
    }
}

#[tonic::async_trait]
impl Erasure for GrpcMesh {
    async fn plan(&self, call: &Call, map: &SubjectMap) -> Result<Planned, CallError> {
        let p = self
            .erasure
            .clone()
            .plan(with_deadline(
                call,
                era::PlanRequest {
                    request_id: call.request_id.clone(),
                    controller: controller(call),
                    due_date: Some(kit::date_to_pb(call.due_date)),
                    subject_map: Some(map_to_pb(map)),
                },
            ))
            .await
            .map_err(|s| call_error("erasure", &s))?
            .into_inner()
            .plan
            .unwrap_or_default();
        Ok(Planned {
            erase: p.erase_count,
            anonymise: p.anonymise_count,
            retain: p.retain_count,
        })
    }

    async fn execute(&self, call: &Call) -> Result<Executed, CallError> {
        let resp = self
            .erasure
            .clone()
            .execute(with_deadline(
                call,
                era::ExecuteRequest {
                    request_id: call.request_id.clone(),
                    due_date: Some(kit::date_to_pb(call.due_date)),
                },
            ))
            .await
            .map_err(|s| call_error("erasure", &s))?
            .into_inner();
        erased(resp.execution, &resp.notifications)
    }

    async fn apply(
        &self,
        call: &Call,
        order: &WriteOrder,
        map: &SubjectMap,
    ) -> Result<Executed, CallError> {
        let resp = self
            .erasure
            .clone()
            .apply(with_deadline(
                call,
                era::ApplyRequest {
                    request_id: call.request_id.clone(),
                    controller: controller(call),
                    due_date: Some(kit::date_to_pb(call.due_date)),
                    subject_map: Some(map_to_pb(map)),
                    order: Some(order_to_pb(order)),
                },
            ))
            .await
            .map_err(|s| call_error("erasure", &s))?
            .into_inner();
        erased(resp.execution, &resp.notifications)
    }

    async fn deferred(&self, call: &Call, as_of: chrono::NaiveDate) -> Result<Executed, CallError> {
        let resp = self
            .erasure
            .clone()
            .execute_deferred(with_deadline(
                call,
                era::ExecuteDeferredRequest {
                    request_id: call.request_id.clone(),
                    as_of: Some(kit::date_to_pb(as_of)),
                    due_date: Some(kit::date_to_pb(call.due_date)),
                },
            ))
            .await
            .map_err(|s| call_error("erasure", &s))?
            .into_inner();
        erased(resp.execution, &[])
    }
}
