//! The gRPC edge of the SQL connector: thin handlers, conversions, the
//! receipt codec and the scope table.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use dsr_auth::{AuthLayer, AuthService, ScopeRule, Validator};
use dsr_connector::grpc::{
    self as kit, date_to_pb, identity_type_from_pb, identity_type_to_pb, invalid_argument,
    timestamp,
};
use dsr_domain::identity::Identity;
use dsr_domain::text::Lang;
use dsr_proto::common::v1 as common;
use dsr_proto::system::v1 as pb;
use dsr_proto::system::v1::data_system_server::{DataSystem, DataSystemServer};
use prost::Message as _;
use tokio_stream::Stream;
use tonic::{Code, Request, Response, Status};
use tower_layer::Layer;

use crate::manifest::{self, Role};
use crate::system::{self, Action, Method, RecordRef, RecordResult, RetainOrder, SqlSystem, Write};
use dsr_connector::restriction::Reason;

/// Scope of Describe.
pub const SCOPE_DESCRIBE: &str = "system:describe";
/// Scope of Locate, Access and the operation calls.
pub const SCOPE_READ: &str = "system:read";
/// Scope of the writes and Sweep.
pub const SCOPE_WRITE: &str = "system:write";

/// Required scopes per RPC.
pub const SCOPES: &[ScopeRule] = &[
    ScopeRule {
        method: "Describe",
        scopes: &[SCOPE_DESCRIBE],
    },
    ScopeRule {
        method: "Locate",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "Access",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "FindAffected",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "Erase",
        scopes: &[SCOPE_WRITE],
    },
    ScopeRule {
        method: "Rectify",
        scopes: &[SCOPE_WRITE],
    },
    ScopeRule {
        method: "Restrict",
        scopes: &[SCOPE_WRITE],
    },
    ScopeRule {
        method: "Object",
        scopes: &[SCOPE_WRITE],
    },
    ScopeRule {
        method: "GetOperation",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "WatchOperation",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "Sweep",
        scopes: &[SCOPE_WRITE],
    },
];

/// The authenticated service over a source of records (a SQL database, or
/// a REST API through [`crate::http`]).
pub type Service<S = SqlSystem> = AuthService<DataSystemServer<Handlers<S>>>;

/// Builds the service over `system`.
pub fn service<S: Source>(system: S, validator: Arc<Validator>) -> Service<S> {
    AuthLayer::new(validator, SCOPES).layer(DataSystemServer::new(Handlers { system }))
}

/// Where the generic connector's records live: what the handlers ask of
/// it. The handlers parse and check the request (the header, identities,
/// methods) and map the answer; the source finds, reads and changes.
#[tonic::async_trait]
pub trait Source: Clone + Send + Sync + 'static {
    /// The system's id.
    fn system_id(&self) -> &str;
    /// The controllers it serves.
    fn controllers(&self) -> &BTreeSet<dsr_domain::identity::Organisationsnummer>;
    /// The identity types Locate accepts.
    fn accepted_identity_types(&self) -> BTreeSet<dsr_domain::identity::IdentityType>;
    /// Describe's answer.
    fn describe(&self) -> pb::DescribeResponse;
    /// Whether it acts on `right` (others answer UNIMPLEMENTED).
    fn supports(&self, right: pb::Right) -> bool;
    /// Locate.
    async fn locate(
        &self,
        instruction: &dsr_connector::instruction::Instruction,
        identities: Vec<Identity>,
    ) -> Result<system::Located, system::Error>;
    /// FindAffected.
    async fn find_affected(
        &self,
        controller: &dsr_domain::identity::Organisationsnummer,
        categories: &BTreeSet<String>,
    ) -> Result<Vec<system::Affected>, system::Error>;
    /// Access, streamed in batches of at most `batch` records.
    fn access(
        &self,
        controller: dsr_domain::identity::Organisationsnummer,
        refs: Vec<RecordRef>,
        portable_only: bool,
        batch: usize,
    ) -> Result<
        tokio::sync::mpsc::Receiver<Result<Vec<system::RecordData>, system::Error>>,
        system::Error,
    >;
    /// A write under the idempotency ledger.
    async fn write(
        &self,
        instruction: dsr_connector::instruction::Instruction,
        digest: Vec<u8>,
        write: Write,
    ) -> Result<dsr_connector::operations::Operation, system::Error>;
    /// A retention sweep.
    async fn sweep(
        &self,
        instruction: dsr_connector::instruction::Instruction,
        digest: Vec<u8>,
        dry_run: bool,
        batch: usize,
    ) -> Result<dsr_connector::operations::Operation, system::Error>;
    /// The operations ledger.
    fn operations(&self) -> &dsr_connector::operations::Operations;
}

#[tonic::async_trait]
impl Source for SqlSystem {
    fn system_id(&self) -> &str {
        &self.manifest().system.id
    }
    fn controllers(&self) -> &BTreeSet<dsr_domain::identity::Organisationsnummer> {
        SqlSystem::controllers(self)
    }
    fn accepted_identity_types(&self) -> BTreeSet<dsr_domain::identity::IdentityType> {
        self.manifest().accepted_identity_types()
    }
    fn describe(&self) -> pb::DescribeResponse {
        describe_sql(self)
    }
    fn supports(&self, _right: pb::Right) -> bool {
        true
    }
    async fn locate(
        &self,
        instruction: &dsr_connector::instruction::Instruction,
        identities: Vec<Identity>,
    ) -> Result<system::Located, system::Error> {
        SqlSystem::locate(self, &instruction.controller, identities).await
    }
    async fn find_affected(
        &self,
        controller: &dsr_domain::identity::Organisationsnummer,
        categories: &BTreeSet<String>,
    ) -> Result<Vec<system::Affected>, system::Error> {
        SqlSystem::find_affected(self, controller, categories).await
    }
    fn access(
        &self,
        controller: dsr_domain::identity::Organisationsnummer,
        refs: Vec<RecordRef>,
        portable_only: bool,
        batch: usize,
    ) -> Result<
        tokio::sync::mpsc::Receiver<Result<Vec<system::RecordData>, system::Error>>,
        system::Error,
    > {
        SqlSystem::access(self, controller, refs, portable_only, batch)
    }
    async fn write(
        &self,
        instruction: dsr_connector::instruction::Instruction,
        digest: Vec<u8>,
        write: Write,
    ) -> Result<dsr_connector::operations::Operation, system::Error> {
        SqlSystem::write(self, instruction, digest, write).await
    }
    async fn sweep(
        &self,
        instruction: dsr_connector::instruction::Instruction,
        digest: Vec<u8>,
        dry_run: bool,
        batch: usize,
    ) -> Result<dsr_connector::operations::Operation, system::Error> {
        SqlSystem::sweep(self, instruction, digest, dry_run, batch).await
    }
    fn operations(&self) -> &dsr_connector::operations::Operations {
        SqlSystem::operations(self)
    }
}

/// An UNIMPLEMENTED answer for a right the system does not act on.
fn unsupported(right: &str) -> Status {
    kit::status(
        Code::Unimplemented,
        &format!("{right} is not among this system's supported rights"),
        "RIGHT_NOT_SUPPORTED",
    )
}

/// Encodes receipts as `dsr.system.v1.Receipt`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProtoReceipts;

fn method_to_pb(m: Method) -> pb::ErasureMethod {
    match m {
        Method::Delete => pb::ErasureMethod::Delete,
        Method::Nullify => pb::ErasureMethod::Nullify,
        Method::Anonymise => pb::ErasureMethod::Anonymise,
    }
}

impl system::ReceiptCodec for ProtoReceipts {
    fn encode(&self, r: &system::ReceiptData) -> Vec<u8> {
        pb::Receipt {
            system_id: r.system_id.clone(),
            request_id: r.instruction.request_id.clone(),
            idempotency_key: r.instruction.idempotency_key.clone(),
            instruction_digest: r.instruction_digest.clone(),
            action: match r.action {
                Action::Erase => pb::ReceiptAction::Erase,
                Action::Rectify => pb::ReceiptAction::Rectify,
                Action::Restrict => pb::ReceiptAction::Restrict,
                Action::Lift => pb::ReceiptAction::LiftRestriction,
                Action::Object => pb::ReceiptAction::Object,
                Action::Sweep => pb::ReceiptAction::Sweep,
            } as i32,
            stores: r
                .stores
                .iter()
                .map(|s| pb::StoreResult {
                    store: s.store.clone(),
                    category_ids: s.categories.iter().cloned().collect(),
                    matched: s.matched,
                    affected: s.affected,
                    method: s
                        .method
                        .map_or(pb::ErasureMethod::Unspecified, method_to_pb)
                        as i32,
                    hidden_at: s.method.map(|_| timestamp(r.hidden_at)),
                    purge_deadline: s.method.map(|_| timestamp(r.hidden_at)),
                    backup_expiry: s.method.map(|_| timestamp(r.backup_expiry)),
                    refused: s.refused,
                })
                .collect(),
            retained: r
                .retained
                .iter()
                .map(|x| pb::RetainedItem {
                    record: Some(pb::RecordRef {
                        store: x.reference.store.clone(),
                        key: x.reference.key.clone(),
                    }),
                    category_ids: x.categories.iter().cloned().collect(),
                    legal_ground: x.legal_ground.clone(),
                    retain_until: x.until.map(date_to_pb),
                    restricted: true,
                    reason: kit::restriction_to_pb(x.reason) as i32,
                })
                .collect(),
            records: r
                .records
                .iter()
                .map(|o| {
                    let (result, method) = match o.result {
                        RecordResult::Erased(m) => (pb::RecordResult::Erased, Some(m)),
                        RecordResult::Anonymised => {
                            (pb::RecordResult::Anonymised, Some(Method::Anonymise))
                        }
                        RecordResult::Retained => (pb::RecordResult::Retained, None),
                        RecordResult::Refused => (pb::RecordResult::Refused, None),
                        RecordResult::NotFound => (pb::RecordResult::NotFound, None),
                        RecordResult::Applied => (pb::RecordResult::Applied, None),
                        RecordResult::Unchanged => (pb::RecordResult::Unchanged, None),
                    };
                    pb::RecordOutcome {
                        record: Some(pb::RecordRef {
                            store: o.reference.store.clone(),
                            key: o.reference.key.clone(),
                        }),
                        result: result as i32,
                        method: method.map_or(pb::ErasureMethod::Unspecified, method_to_pb) as i32,
                    }
                })
                .collect(),
            completed_at: Some(timestamp(r.completed_at)),
            controller: Some(common::ControllerRef {
                organisation_number: r.instruction.controller.as_str().to_owned(),
            }),
            attestation: r.attestation.as_ref().map(|a| pb::Attestation {
                name: a.name.clone(),
                contact: a.contact.clone(),
                attested_at: Some(timestamp(a.attested_at)),
                statement: a.statement.clone(),
            }),
        }
        .encode_to_vec()
    }
}

impl From<system::Error> for Status {
    fn from(e: system::Error) -> Self {
        match e {
            system::Error::InvalidArgument(v) => invalid_argument(v),
            system::Error::Ledger(l) => kit::ledger_status(l),
            system::Error::Unavailable(why) => {
                tracing::warn!(error = %why, "the system's API is unavailable");
                kit::status(
                    Code::Unavailable,
                    "the system is unavailable",
                    "SYSTEM_UNAVAILABLE",
                )
            }
            system::Error::Unsupported(what) => unsupported(what),
            system::Error::AwaitingVendor => kit::status(
                Code::Unavailable,
                "waiting for the vendor to answer a task",
                kit::AWAITING_VENDOR,
            ),
            e @ system::Error::Storage(_) => {
                tracing::error!(error = e.log_kind(), "storage failure");
                kit::status(Code::Internal, "internal error", "INTERNAL")
            }
        }
    }
}

/// The handlers.
#[derive(Clone, Debug)]
pub struct Handlers<S = SqlSystem> {
    system: S,
}

fn refs(records: Vec<pb::RecordRef>) -> Vec<RecordRef> {
    records
        .into_iter()
        .map(|pb::RecordRef { store, key }| RecordRef { store, key })
        .collect()
}

/// The digest binding a receipt to its instruction: SHA-256 of the request
/// with the validity window cleared (a retry re-issues the window).
fn digest<M: prost::Message + Clone>(msg: &M, clear: impl FnOnce(&mut M)) -> Vec<u8> {
    let mut m = msg.clone();
    clear(&mut m);
    kit::digest_bytes(&m.encode_to_vec())
}

fn clear_window(i: &mut Option<pb::Instruction>) {
    if let Some(i) = i.as_mut() {
        i.issued_at = None;
        i.expires_at = None;
    }
}

impl<S: Source> Handlers<S> {
    fn instruction(
        &self,
        header: Option<pb::Instruction>,
    ) -> Result<dsr_connector::instruction::Instruction, Status> {
        kit::instruction(header, self.system.system_id(), self.system.controllers())
    }
}

fn describe_sql(system: &SqlSystem) -> pb::DescribeResponse {
    {
        let m = system.manifest();
        // Every right is acted on: an objection to a system with no
        // objection column is answered, record by record, UNCHANGED (it
        // processes nothing for those purposes), not UNIMPLEMENTED.
        let rights = [
            pb::Right::Access,
            pb::Right::Portability,
            pb::Right::Erasure,
            pb::Right::Rectification,
            pb::Right::Restriction,
            pb::Right::Objection,
        ];
        let mut methods: BTreeSet<i32> = BTreeSet::new();
        for t in &m.tables {
            let method = match t.erasure {
                manifest::ErasureAction::Delete => Some(pb::ErasureMethod::Delete),
                manifest::ErasureAction::Nullify => Some(pb::ErasureMethod::Nullify),
                manifest::ErasureAction::Anonymise => Some(pb::ErasureMethod::Anonymise),
                manifest::ErasureAction::Retain => None,
            };
            methods.extend(method.map(|x| x as i32));
        }
        describe_response(
            &m.system,
            &m.categories,
            &m.accepted_identity_types(),
            &rights,
            methods,
            system.signer(),
        )
    }
}

/// Describe's answer from a manifest's `system` and `categories` sections
/// (shared by the SQL and the HTTP connector).
pub(crate) fn describe_response(
    s: &manifest::SystemSpec,
    categories: &[manifest::CategorySpec],
    accepted: &BTreeSet<dsr_domain::identity::IdentityType>,
    rights: &[pb::Right],
    methods: BTreeSet<i32>,
    signer: &dsr_connector::signing::ReceiptSigner,
) -> pb::DescribeResponse {
    pb::DescribeResponse {
        system_id: s.id.clone(),
        display_name: s.display_name.en.clone(),
        display_names: Lang::ALL
            .into_iter()
            .map(|l| (l.code().to_owned(), s.display_name.get(l).clone()))
            .collect(),
        role: match s.role {
            Role::Controller => pb::SystemRole::Controller,
            Role::Processor => pb::SystemRole::Processor,
        } as i32,
        operator_recipient_id: s.operator_recipient_id.clone(),
        controllers: s
            .controllers
            .iter()
            .filter_map(|c| dsr_domain::identity::Organisationsnummer::parse(c).ok())
            .map(|c| common::ControllerRef {
                organisation_number: c.as_str().to_owned(),
            })
            .collect(),
        supported_rights: rights.iter().map(|r| *r as i32).collect(),
        accepted_identities: accepted
            .iter()
            .copied()
            .map(|t| pb::AcceptedIdentity {
                r#type: identity_type_to_pb(t) as i32,
                formats: vec![common::IdentityFormat::Raw as i32],
            })
            .collect(),
        categories: categories
            .iter()
            .map(|c| pb::CategoryDescription {
                category: Some(common::DataCategory {
                    id: c.id.clone(),
                    display_name: c.display_name.en.clone(),
                    sensitivity: match c.sensitivity {
                        manifest::Sensitivity::Ordinary => common::Sensitivity::Ordinary,
                        manifest::Sensitivity::SpecialCategory => {
                            common::Sensitivity::SpecialCategory
                        }
                        manifest::Sensitivity::Criminal => common::Sensitivity::Criminal,
                        manifest::Sensitivity::NationalId => common::Sensitivity::NationalId,
                    } as i32,
                }),
                purposes: c.purposes.en.clone(),
                texts: Lang::ALL
                    .into_iter()
                    .map(|l| {
                        (
                            l.code().to_owned(),
                            pb::CategoryTexts {
                                display_name: c.display_name.get(l).clone(),
                                purposes: c.purposes.get(l).clone(),
                                retention_description: c.retention.description.get(l).clone(),
                                retention_legal_ground: c.retention.legal_ground.get(l).clone(),
                                source: c.source.get(l).clone(),
                                automated_decision_logic: c.automated_decision_logic.get(l).clone(),
                            },
                        )
                    })
                    .collect(),
                legal_basis: match c.legal_basis {
                    manifest::LegalBasis::Consent => common::LegalBasis::Consent,
                    manifest::LegalBasis::Contract => common::LegalBasis::Contract,
                    manifest::LegalBasis::LegalObligation => common::LegalBasis::LegalObligation,
                    manifest::LegalBasis::VitalInterests => common::LegalBasis::VitalInterests,
                    manifest::LegalBasis::PublicTask => common::LegalBasis::PublicTask,
                    manifest::LegalBasis::LegitimateInterests => {
                        common::LegalBasis::LegitimateInterests
                    }
                } as i32,
                retention: Some(pb::RetentionRule {
                    description: c.retention.description.en.clone(),
                    legal_ground: c.retention.legal_ground.en.clone(),
                    months: c.retention.months.unwrap_or(0),
                    anchor: c.retention.anchor.clone(),
                }),
                source: c.source.en.clone(),
                provided_by_subject: c.provided_by_subject,
                portable: c.portable,
                automated_decision: c.automated_decision,
                automated_decision_logic: c.automated_decision_logic.en.clone(),
            })
            .collect(),
        erasure_methods: methods.into_iter().collect(),
        signing_keys: vec![pb::SigningKey {
            key_id: signer.key_id().to_owned(),
            algorithm: "Ed25519".into(),
            public_key: signer.public_key().to_vec(),
            not_after: None,
        }],
        typical_completion: Some(prost_types::Duration {
            seconds: i64::try_from(s.typical_completion_secs).unwrap_or(i64::MAX),
            nanos: 0,
        }),
        backup_retention: Some(prost_types::Duration {
            seconds: i64::from(s.backup_retention_days) * 86_400,
            nanos: 0,
        }),
        api_version: "1".into(),
    }
}

type AccessStream = Pin<Box<dyn Stream<Item = Result<pb::AccessResponse, Status>> + Send>>;
type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchOperationResponse, Status>> + Send>>;
type AffectedStream = Pin<Box<dyn Stream<Item = Result<pb::FindAffectedResponse, Status>> + Send>>;

fn methods_from_pb(v: &[i32]) -> Result<BTreeSet<Method>, Status> {
    let mut out = BTreeSet::new();
    for (i, m) in v.iter().enumerate() {
        match pb::ErasureMethod::try_from(*m) {
            Ok(pb::ErasureMethod::Delete) => {
                out.insert(Method::Delete);
            }
            Ok(pb::ErasureMethod::Nullify) => {
                out.insert(Method::Nullify);
            }
            Ok(pb::ErasureMethod::Anonymise) => {
                out.insert(Method::Anonymise);
            }
            // Methods this connector never applies: accepted in the list, never used.
            Ok(pb::ErasureMethod::Mask | pb::ErasureMethod::CryptoShred) => {}
            Ok(pb::ErasureMethod::Unspecified) | Err(_) => {
                return Err(invalid_argument(vec![(
                    format!("acceptable_methods[{i}]"),
                    "unknown method".into(),
                )]));
            }
        }
    }
    Ok(out)
}

#[tonic::async_trait]
impl<S: Source> DataSystem for Handlers<S> {
    type AccessStream = AccessStream;
    type WatchOperationStream = WatchStream;
    type FindAffectedStream = AffectedStream;

    async fn describe(
        &self,
        req: Request<pb::DescribeRequest>,
    ) -> Result<Response<pb::DescribeResponse>, Status> {
        let pb::DescribeRequest {} = req.into_inner();
        Ok(Response::new(self.system.describe()))
    }

    #[tracing::instrument(skip_all)]
    async fn locate(
        &self,
        req: Request<pb::LocateRequest>,
    ) -> Result<Response<pb::LocateResponse>, Status> {
        let pb::LocateRequest {
            instruction,
            identities,
        } = req.into_inner();
        let instruction = self.instruction(instruction)?;
        let accepted = self.system.accepted_identity_types();
        let mut ids = Vec::new();
        let mut ignored = BTreeSet::new();
        let mut v = Vec::new();
        for (
            i,
            common::Identity {
                r#type,
                format,
                value,
                hmac_key_id: _,
            },
        ) in identities.into_iter().enumerate()
        {
            let Some(kind) = identity_type_from_pb(r#type) else {
                v.push((format!("identities[{i}].type"), "required".to_owned()));
                continue;
            };
            let raw = matches!(
                common::IdentityFormat::try_from(format),
                Ok(common::IdentityFormat::Raw | common::IdentityFormat::Unspecified)
            );
            if !accepted.contains(&kind) || !raw {
                ignored.insert(identity_type_to_pb(kind) as i32);
                continue;
            }
            match Identity::parse(kind, &value) {
                Ok(id) => ids.push(id),
                Err(e) => v.push((format!("identities[{i}].value"), e.to_string())),
            }
        }
        if !v.is_empty() {
            return Err(invalid_argument(v));
        }
        if ids.is_empty() && ignored.is_empty() {
            return Err(invalid_argument(vec![(
                "identities".into(),
                "at least one identity".into(),
            )]));
        }
        let located = self.system.locate(&instruction, ids).await?;
        Ok(Response::new(pb::LocateResponse {
            found: !located.stores.is_empty(),
            stores: located
                .stores
                .into_iter()
                .map(|s| pb::LocatedStore {
                    records: s
                        .keys
                        .into_iter()
                        .map(|key| pb::RecordRef {
                            store: s.store.clone(),
                            key,
                        })
                        .collect(),
                    store: s.store,
                    category_ids: s.categories.into_iter().collect(),
                })
                .collect(),
            linked_identities: located
                .linked
                .iter()
                .map(|i| common::Identity {
                    r#type: identity_type_to_pb(i.kind()) as i32,
                    format: common::IdentityFormat::Raw as i32,
                    value: i.value().to_owned(),
                    hmac_key_id: String::new(),
                })
                .collect(),
            ignored_identity_types: ignored.into_iter().collect(),
            linked_identities_searched: located.linked_searched,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn find_affected(
        &self,
        req: Request<pb::FindAffectedRequest>,
    ) -> Result<Response<Self::FindAffectedStream>, Status> {
        let pb::FindAffectedRequest {
            instruction,
            category_ids,
            from_time: _,
            to_time: _,
        } = req.into_inner();
        let instruction = self.instruction(instruction)?;
        let categories: BTreeSet<String> = category_ids
            .iter()
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect();
        if categories.is_empty() {
            return Err(invalid_argument(vec![(
                "category_ids".into(),
                "at least one category".into(),
            )]));
        }
        let people = self
            .system
            .find_affected(&instruction.controller, &categories)
            .await?;
        // The tables keep no creation time: the window is not applied.
        let answers = people.into_iter().map(|p| {
            Ok(pb::FindAffectedResponse {
                contacts: p
                    .contacts
                    .iter()
                    .map(|i| common::Identity {
                        r#type: identity_type_to_pb(i.kind()) as i32,
                        format: common::IdentityFormat::Raw as i32,
                        value: i.value().to_owned(),
                        hmac_key_id: String::new(),
                    })
                    .collect(),
                language: p.language.unwrap_or_default(),
                category_ids: p.categories.into_iter().collect(),
                record_count: p.records,
                window_applied: false,
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(answers))))
    }

    #[tracing::instrument(skip_all)]
    async fn access(
        &self,
        req: Request<pb::AccessRequest>,
    ) -> Result<Response<Self::AccessStream>, Status> {
        let pb::AccessRequest {
            instruction,
            records,
            portable_only,
        } = req.into_inner();
        if portable_only && !self.system.supports(pb::Right::Portability) {
            return Err(unsupported("portability"));
        }
        let instruction = self.instruction(instruction)?;
        let rx = self
            .system
            .access(instruction.controller, refs(records), portable_only, 200)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map_results();
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all)]
    async fn erase(
        &self,
        req: Request<pb::EraseRequest>,
    ) -> Result<Response<pb::EraseResponse>, Status> {
        if !self.system.supports(pb::Right::Erasure) {
            return Err(unsupported("erasure"));
        }
        let msg = req.into_inner();
        let d = digest(&msg, |m| clear_window(&mut m.instruction));
        let pb::EraseRequest {
            instruction,
            records,
            acceptable_methods,
            retain,
        } = msg;
        let instruction = self.instruction(instruction)?;
        let acceptable = methods_from_pb(&acceptable_methods)?;
        let mut orders = Vec::new();
        for (
            i,
            pb::RetentionOrder {
                record,
                legal_ground,
                retain_until,
                reason,
            },
        ) in retain.into_iter().enumerate()
        {
            let Some(pb::RecordRef { store, key }) = record else {
                return Err(invalid_argument(vec![(
                    format!("retain[{i}].record"),
                    "required".into(),
                )]));
            };
            let Some(reason) = kit::restriction_from_pb(reason, Reason::Retention) else {
                return Err(invalid_argument(vec![(
                    format!("retain[{i}].reason"),
                    "unknown restriction reason".into(),
                )]));
            };
            orders.push(RetainOrder {
                record: RecordRef { store, key },
                ground: legal_ground,
                until: kit::date(retain_until),
                reason,
            });
        }
        let op = self
            .system
            .write(
                instruction,
                d,
                Write::Erase {
                    records: refs(records),
                    acceptable,
                    retain: orders,
                },
            )
            .await?;
        Ok(Response::new(pb::EraseResponse {
            operation: Some(kit::operation_to_pb(&op)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn rectify(
        &self,
        req: Request<pb::RectifyRequest>,
    ) -> Result<Response<pb::RectifyResponse>, Status> {
        if !self.system.supports(pb::Right::Rectification) {
            return Err(unsupported("rectification"));
        }
        let msg = req.into_inner();
        let d = digest(&msg, |m| clear_window(&mut m.instruction));
        let pb::RectifyRequest {
            instruction,
            changes,
        } = msg;
        let instruction = self.instruction(instruction)?;
        let mut out = Vec::new();
        for (
            i,
            pb::FieldChange {
                record,
                field,
                value,
            },
        ) in changes.into_iter().enumerate()
        {
            let Some(pb::RecordRef { store, key }) = record else {
                return Err(invalid_argument(vec![(
                    format!("changes[{i}].record"),
                    "required".into(),
                )]));
            };
            out.push((RecordRef { store, key }, field, value));
        }
        if out.is_empty() {
            return Err(invalid_argument(vec![(
                "changes".into(),
                "at least one change".into(),
            )]));
        }
        let op = self
            .system
            .write(instruction, d, Write::Rectify(out))
            .await?;
        Ok(Response::new(pb::RectifyResponse {
            operation: Some(kit::operation_to_pb(&op)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn restrict(
        &self,
        req: Request<pb::RestrictRequest>,
    ) -> Result<Response<pb::RestrictResponse>, Status> {
        if !self.system.supports(pb::Right::Restriction) {
            return Err(unsupported("restriction"));
        }
        let msg = req.into_inner();
        let d = digest(&msg, |m| clear_window(&mut m.instruction));
        let pb::RestrictRequest {
            instruction,
            records,
            lift,
            reason: _,
            basis,
        } = msg;
        let instruction = self.instruction(instruction)?;
        let Some(basis) = kit::restriction_from_pb(basis, Reason::Request) else {
            return Err(invalid_argument(vec![(
                "basis".into(),
                "unknown restriction reason".into(),
            )]));
        };
        let op = self
            .system
            .write(
                instruction,
                d,
                Write::Restrict {
                    records: refs(records),
                    lift,
                    basis,
                },
            )
            .await?;
        Ok(Response::new(pb::RestrictResponse {
            operation: Some(kit::operation_to_pb(&op)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn object(
        &self,
        req: Request<pb::ObjectRequest>,
    ) -> Result<Response<pb::ObjectResponse>, Status> {
        if !self.system.supports(pb::Right::Objection) {
            return Err(unsupported("objection"));
        }
        let msg = req.into_inner();
        let d = digest(&msg, |m| clear_window(&mut m.instruction));
        let pb::ObjectRequest {
            instruction,
            records,
            purposes,
            direct_marketing,
        } = msg;
        let instruction = self.instruction(instruction)?;
        let mut all: BTreeSet<String> = purposes.into_iter().collect();
        if direct_marketing {
            all.insert(system::DIRECT_MARKETING.to_owned());
        }
        let op = self
            .system
            .write(
                instruction,
                d,
                Write::Object {
                    records: refs(records),
                    purposes: all,
                },
            )
            .await?;
        Ok(Response::new(pb::ObjectResponse {
            operation: Some(kit::operation_to_pb(&op)),
        }))
    }

    async fn get_operation(
        &self,
        req: Request<pb::GetOperationRequest>,
    ) -> Result<Response<pb::GetOperationResponse>, Status> {
        let pb::GetOperationRequest { id } = req.into_inner();
        let op = self
            .system
            .operations()
            .get(&id)
            .await
            .map_err(kit::ledger_status)?;
        Ok(Response::new(pb::GetOperationResponse {
            operation: Some(kit::operation_to_pb(&op)),
        }))
    }

    async fn watch_operation(
        &self,
        req: Request<pb::WatchOperationRequest>,
    ) -> Result<Response<Self::WatchOperationStream>, Status> {
        let pb::WatchOperationRequest { id } = req.into_inner();
        let mut rx = self
            .system
            .operations()
            .watch(&id)
            .await
            .map_err(kit::ledger_status)?;
        let (tx, out) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let op = rx.borrow_and_update().clone();
                let last = op.state.is_final();
                if tx
                    .send(Ok(pb::WatchOperationResponse {
                        operation: Some(kit::operation_to_pb(&op)),
                    }))
                    .await
                    .is_err()
                    || last
                {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn sweep(
        &self,
        req: Request<pb::SweepRequest>,
    ) -> Result<Response<pb::SweepResponse>, Status> {
        let msg = req.into_inner();
        let d = digest(&msg, |m| clear_window(&mut m.instruction));
        let pb::SweepRequest {
            instruction,
            dry_run,
            batch_size,
        } = msg;
        let instruction = self.instruction(instruction)?;
        if batch_size > 10_000 {
            return Err(invalid_argument(vec![(
                "batch_size".into(),
                "1 to 10000".into(),
            )]));
        }
        let batch = if batch_size == 0 {
            500
        } else {
            batch_size as usize
        };
        let op = self.system.sweep(instruction, d, dry_run, batch).await?;
        Ok(Response::new(pb::SweepResponse {
            operation: Some(kit::operation_to_pb(&op)),
        }))
    }
}

trait MapResults {
    fn map_results(self) -> AccessStream;
}

impl MapResults
    for tokio_stream::wrappers::ReceiverStream<Result<Vec<system::RecordData>, system::Error>>
{
    fn map_results(self) -> AccessStream {
        use tokio_stream::StreamExt as _;
        Box::pin(self.map(|batch| {
            batch
                .map_err(Status::from)
                .map(|records| pb::AccessResponse {
                    records: records
                        .into_iter()
                        .map(|r| pb::Record {
                            r#ref: Some(pb::RecordRef {
                                store: r.reference.store,
                                key: r.reference.key,
                            }),
                            fields: r
                                .fields
                                .into_iter()
                                .map(|f| pb::Field {
                                    null: f.value.is_none(),
                                    value: f.value.unwrap_or_default(),
                                    name: f.name,
                                    category_id: f.category,
                                })
                                .collect(),
                            attestation: r.attestation.as_ref().map(|a| pb::Attestation {
                                name: a.name.clone(),
                                contact: a.contact.clone(),
                                attested_at: Some(timestamp(a.attested_at)),
                                statement: a.statement.clone(),
                            }),
                            restricted: r.restricted,
                            restriction_reasons: r
                                .restriction
                                .iter()
                                .map(|x| kit::restriction_to_pb(x) as i32)
                                .collect(),
                            objected_purposes: r.objected,
                            retention_anchor: r.retention_anchor.map(kit::date_to_pb),
                        })
                        .collect(),
                })
        }))
    }
}
