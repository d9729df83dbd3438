//! The gRPC edge of discovery: the handlers, and the tonic implementation of
//! [`DataSystems`] (one lazily connected client per system, a service token
//! minted for each system, the caller's trace context carried on).

use std::collections::BTreeMap;
use std::sync::Arc;

use dsr_auth::{AuthLayer, AuthService, ScopeRule, TokenSigner, Validator};
use dsr_connector::grpc::{self as kit, identities_from_pb, identity_to_pb, identity_type_to_pb};
use dsr_domain::identity::{Identity, Organisationsnummer};
use dsr_mesh_client::SystemClient;
use dsr_mesh_client::client::failure_reason;
use dsr_proto::discovery::v1 as pb;
use dsr_proto::discovery::v1::discovery_server::{Discovery, DiscoveryServer};
use dsr_proto::system::v1 as sys;
use tonic::{Request, Response, Status};
use tower_layer::Layer;

use crate::locator::{
    AffectedPerson, Breach, Capabilities, DataSystems, Found, FoundStore, Header, Locator, Outcome,
    SystemError,
};

/// This service's statuses: ErrorInfo domain "discovery.dsr-mesh".
pub(crate) const ERR: kit::Errors = kit::Errors::new("discovery.dsr-mesh");

/// Scope of Locate.
pub const SCOPE_LOCATE: &str = "discovery:locate";
/// Scope of ListSystems.
pub const SCOPE_READ: &str = "discovery:read";

/// Required scopes per RPC.
pub const SCOPES: &[ScopeRule] = &[
    ScopeRule {
        method: "ListSystems",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "Locate",
        scopes: &[SCOPE_LOCATE],
    },
    ScopeRule {
        method: "FindAffected",
        scopes: &[SCOPE_LOCATE],
    },
];

pub use dsr_mesh_client::SystemEndpoint;

/// The data systems over gRPC.
#[derive(Debug)]
pub struct GrpcSystems {
    systems: dsr_mesh_client::DataSystems,
}

impl GrpcSystems {
    /// Clients for `systems`, calling as `service:dsr-discovery` with tokens
    /// from `signer`. Connections are made on first use.
    pub fn new(systems: Vec<SystemEndpoint>, signer: Arc<TokenSigner>) -> Result<Self, String> {
        Ok(Self {
            systems: dsr_mesh_client::DataSystems::new(
                crate::SERVICE_NAME,
                systems,
                signer,
                &["system:describe", "system:read"],
            )?,
        })
    }

    /// The configured systems.
    pub fn endpoints(&self) -> impl Iterator<Item = &SystemEndpoint> {
        self.systems.endpoints()
    }

    /// The last Describe of each system.
    pub fn descriptions(&self) -> BTreeMap<String, sys::DescribeResponse> {
        self.systems.descriptions()
    }

    fn client(&self, system: &str) -> Result<SystemClient, SystemError> {
        self.systems
            .client(system)
            .map_err(|e| SystemError::Failed(e.reason().to_owned()))
    }
}

fn failed(s: &Status) -> SystemError {
    SystemError::Failed(failure_reason(s))
}

#[tonic::async_trait]
impl DataSystems for GrpcSystems {
    fn ids(&self) -> Vec<String> {
        self.systems.ids()
    }

    async fn describe(&self, system: &str) -> Result<Capabilities, SystemError> {
        // Asked afresh: the locator describes a system when it starts and
        // when it comes back, and the status page shows the last answer.
        let d = self
            .systems
            .describe(system, true)
            .await
            .map_err(|e| SystemError::Failed(e.reason().to_owned()))?;
        let caps = Capabilities {
            accepted: d
                .accepted_identities
                .iter()
                .filter(|a| {
                    a.formats
                        .contains(&(dsr_proto::common::v1::IdentityFormat::Raw as i32))
                })
                .filter_map(|a| kit::identity_type_from_pb(a.r#type))
                .collect(),
            controllers: d
                .controllers
                .iter()
                .filter_map(|c| Organisationsnummer::parse(&c.organisation_number).ok())
                .collect(),
        };
        Ok(caps)
    }

    async fn locate(
        &self,
        system: &str,
        h: &Header,
        identities: &[Identity],
    ) -> Result<Found, SystemError> {
        let now = chrono::Utc::now();
        let instruction = sys::Instruction {
            request_id: h.request_id.clone(),
            controller: Some(dsr_proto::common::v1::ControllerRef {
                organisation_number: h.controller.as_str().to_owned(),
            }),
            system_id: system.to_owned(),
            due_date: Some(kit::date_to_pb(h.due_date)),
            issued_at: Some(kit::timestamp(now - chrono::Duration::seconds(5))),
            expires_at: Some(kit::timestamp(now + chrono::Duration::minutes(5))),
            idempotency_key: h.idempotency_key.clone(),
        };
        let resp = self
            .client(system)?
            .locate(sys::LocateRequest {
                instruction: Some(instruction),
                identities: identities.iter().map(identity_to_pb).collect(),
            })
            .await
            .map_err(|s| failed(&s))?
            .into_inner();
        let mut stores = BTreeMap::new();
        for s in resp.stores {
            let entry: &mut FoundStore = stores.entry(s.store.clone()).or_default();
            entry.keys.extend(s.records.into_iter().map(|r| r.key));
            entry.categories.extend(s.category_ids);
        }
        let linked = identities_from_pb(resp.linked_identities, "linked").unwrap_or_default();
        Ok(Found {
            stores,
            linked,
            linked_searched: resp.linked_identities_searched,
        })
    }

    async fn find_affected(
        &self,
        system: &str,
        h: &Header,
        breach: &Breach,
    ) -> Result<Vec<AffectedPerson>, SystemError> {
        let now = chrono::Utc::now();
        let instruction = sys::Instruction {
            request_id: h.request_id.clone(),
            controller: Some(dsr_proto::common::v1::ControllerRef {
                organisation_number: h.controller.as_str().to_owned(),
            }),
            system_id: system.to_owned(),
            due_date: Some(kit::date_to_pb(h.due_date)),
            issued_at: Some(kit::timestamp(now - chrono::Duration::seconds(5))),
            expires_at: Some(kit::timestamp(now + chrono::Duration::minutes(5))),
            idempotency_key: h.idempotency_key.clone(),
        };
        let mut stream = self
            .client(system)?
            .find_affected(sys::FindAffectedRequest {
                instruction: Some(instruction),
                category_ids: breach.categories.clone(),
                from_time: breach.from.map(kit::timestamp),
                to_time: breach.to.map(kit::timestamp),
            })
            .await
            .map_err(|s| failed(&s))?
            .into_inner();
        let mut people = Vec::new();
        while let Some(p) = stream.message().await.map_err(|s| failed(&s))? {
            people.push(AffectedPerson {
                contacts: identities_from_pb(p.contacts, "contacts").unwrap_or_default(),
                language: p.language,
                categories: p.category_ids,
                records: p.record_count,
                window_applied: p.window_applied,
            });
        }
        Ok(people)
    }
}

/// The service.
pub type Service = AuthService<DiscoveryServer<Handlers>>;

/// Builds the service.
pub fn service(locator: Locator, systems: Arc<GrpcSystems>, validator: Arc<Validator>) -> Service {
    AuthLayer::new(validator, SCOPES).layer(DiscoveryServer::new(Handlers { locator, systems }))
}

/// The handlers.
#[derive(Debug)]
pub struct Handlers {
    locator: Locator,
    systems: Arc<GrpcSystems>,
}

fn outcome_to_pb(o: Outcome) -> pb::Outcome {
    match o {
        Outcome::Found => pb::Outcome::Found,
        Outcome::NotFound => pb::Outcome::NotFound,
        Outcome::NoAcceptedIdentity => pb::Outcome::NoAcceptedIdentity,
        Outcome::Failed => pb::Outcome::Failed,
        Outcome::TimedOut => pb::Outcome::TimedOut,
    }
}

type AffectedStream = std::pin::Pin<
    Box<dyn futures_util::Stream<Item = Result<pb::FindAffectedResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl Discovery for Handlers {
    type FindAffectedStream = AffectedStream;

    #[tracing::instrument(skip_all)]
    async fn find_affected(
        &self,
        req: Request<pb::FindAffectedRequest>,
    ) -> Result<Response<Self::FindAffectedStream>, Status> {
        let pb::FindAffectedRequest {
            incident_id,
            controller,
            due_date,
            system_ids,
            category_ids,
            from_time,
            to_time,
        } = req.into_inner();
        let mut v: Vec<(String, String)> = Vec::new();
        kit::check_request_id(&incident_id, &mut v);
        let controller = kit::controller_from_pb(controller, &mut v);
        let due = kit::date(due_date);
        if due.is_none() {
            v.push(("due_date".into(), "required, a valid date".into()));
        }
        let categories: Vec<String> = category_ids
            .into_iter()
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        if categories.is_empty() {
            v.push(("category_ids".into(), "at least one category".into()));
        }
        let (Some(controller), Some(due), true) = (controller, due, v.is_empty()) else {
            return Err(ERR.invalid_argument(v));
        };
        let header = Header {
            idempotency_key: format!("{incident_id}-affected"),
            request_id: incident_id,
            controller,
            due_date: due,
        };
        let breach = Breach {
            categories,
            from: kit::time(from_time),
            to: kit::time(to_time),
        };
        let only = system_ids.into_iter().collect();
        let answers = self.locator.find_affected(&header, &only, &breach).await;
        let mut out = Vec::new();
        for a in answers {
            for p in a.people {
                out.push(Ok(pb::FindAffectedResponse {
                    system_id: a.system_id.clone(),
                    person: Some(sys::FindAffectedResponse {
                        contacts: p.contacts.iter().map(identity_to_pb).collect(),
                        language: p.language,
                        category_ids: p.categories,
                        record_count: p.records,
                        window_applied: p.window_applied,
                    }),
                    outcome: 0,
                    error_reason: String::new(),
                }));
            }
            out.push(Ok(pb::FindAffectedResponse {
                system_id: a.system_id,
                person: None,
                outcome: outcome_to_pb(a.outcome) as i32,
                error_reason: a.error_reason.unwrap_or_default(),
            }));
        }
        Ok(Response::new(Box::pin(futures_util::stream::iter(out))))
    }

    async fn list_systems(
        &self,
        req: Request<pb::ListSystemsRequest>,
    ) -> Result<Response<pb::ListSystemsResponse>, Status> {
        let pb::ListSystemsRequest {} = req.into_inner();
        let states = self.locator.states().await;
        let described = self.systems.descriptions();
        let systems = self
            .systems
            .endpoints()
            .map(|e| {
                let st = states.get(&e.id);
                pb::SystemInfo {
                    system_id: e.id.clone(),
                    endpoint: e.endpoint.clone(),
                    operator_recipient_id: e.operator_recipient_id.clone(),
                    reachable: st
                        .is_some_and(|s| s.last_error.is_none() && s.described_at.is_some()),
                    described_at: st.and_then(|s| s.described_at).map(kit::timestamp),
                    description: described.get(&e.id).cloned(),
                    last_error: st.and_then(|s| s.last_error.clone()).unwrap_or_default(),
                }
            })
            .collect();
        Ok(Response::new(pb::ListSystemsResponse { systems }))
    }

    #[tracing::instrument(skip_all)]
    async fn locate(
        &self,
        req: Request<pb::LocateRequest>,
    ) -> Result<Response<pb::LocateResponse>, Status> {
        let pb::LocateRequest {
            request_id,
            controller,
            due_date,
            identities,
            max_rounds,
        } = req.into_inner();
        let mut v: Vec<(String, String)> = Vec::new();
        kit::check_request_id(&request_id, &mut v);
        let controller = kit::controller_from_pb(controller, &mut v);
        let due = kit::date(due_date);
        if due.is_none() {
            v.push(("due_date".into(), "required, a valid date".into()));
        }
        let ids = match identities_from_pb(identities, "identities") {
            Ok(ids) if ids.is_empty() => {
                v.push(("identities".into(), "at least one identity".into()));
                ids
            }
            Ok(ids) => ids,
            Err(bad) => {
                v.extend(bad);
                Vec::new()
            }
        };
        if max_rounds > crate::locator::MAX_ROUNDS {
            v.push(("max_rounds".into(), "0 to 5".into()));
        }
        let (Some(controller), Some(due), true) = (controller, due, v.is_empty()) else {
            return Err(ERR.invalid_argument(v));
        };
        let rounds = if max_rounds == 0 { 3 } else { max_rounds };
        let map = self
            .locator
            .locate(&request_id, &controller, due, ids, rounds)
            .await;
        Ok(Response::new(pb::LocateResponse {
            subject_map: Some(pb::SubjectMap {
                identities: map.identities.iter().map(identity_to_pb).collect(),
                systems: map
                    .systems
                    .into_iter()
                    .map(|s| pb::SystemLocation {
                        outcome: outcome_to_pb(s.outcome) as i32,
                        stores: s
                            .stores
                            .into_iter()
                            .map(|(store, f)| sys::LocatedStore {
                                records: f
                                    .keys
                                    .into_iter()
                                    .map(|key| sys::RecordRef {
                                        store: store.clone(),
                                        key,
                                    })
                                    .collect(),
                                category_ids: f.categories.into_iter().collect(),
                                store,
                            })
                            .collect(),
                        error_reason: s.error_reason.unwrap_or_default(),
                        asked_with: s
                            .asked_with
                            .into_iter()
                            .map(|t| identity_type_to_pb(t) as i32)
                            .collect(),
                        system_id: s.system_id,
                    })
                    .collect(),
                partial: map.partial,
                rounds: map.rounds,
            }),
        }))
    }
}
