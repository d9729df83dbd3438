//! The gRPC edge of export: the handlers, and the tonic implementation of
//! [`Sources`] (the data systems and the transfer registry, each called with
//! a service token of its own and the caller's trace context).

use std::pin::Pin;
use std::sync::Arc;

use dsr_auth::{AuthLayer, AuthService, ScopeRule, TokenSigner, Validator};
use dsr_connector::grpc::{self as kit};
use dsr_domain::category::{LegalBasis, Sensitivity};
use dsr_domain::identity::Organisationsnummer;
use dsr_mesh_client::client::{Calls, Outgoing, calls, failure_reason, instruction, lazy_channel};
use dsr_mesh_client::{DataSystems, SystemClient};
use dsr_proto::common::v1 as common;
use dsr_proto::export::v1 as pb;
use dsr_proto::export::v1::export_server::{Export, ExportServer};
use dsr_proto::system::v1 as sys;
use dsr_proto::transfer::v1 as tr;
use dsr_proto::transfer::v1::transfer_registry_client::TransferRegistryClient;
use futures_util::Stream;
use tonic::{Code, Request, Response, Status};
use tower_layer::Layer;

use crate::exporter::{BuildError, Exporter};
use crate::model::{
    AttestedBy, BuildRequest, Category, CategoryText, Disclosure, DisclosureText, Field, Header,
    Kind, Language, MapStore, Record, RecordBatches, SourceError, Sources, SystemInfo,
};
use crate::store::{PackageInfo, StoreError};

/// This service's statuses: ErrorInfo domain "export.dsr-mesh".
pub(crate) const ERR: kit::Errors = kit::Errors::new("export.dsr-mesh");

/// Scope of BuildPackage (the orchestrator).
pub const SCOPE_BUILD: &str = "export:build";
/// Scope of GetPackage and Download (portals).
pub const SCOPE_READ: &str = "export:read";

/// Required scopes per RPC.
pub const SCOPES: &[ScopeRule] = &[
    ScopeRule {
        method: "BuildPackage",
        scopes: &[SCOPE_BUILD],
    },
    ScopeRule {
        method: "GetPackage",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "Download",
        scopes: &[SCOPE_READ],
    },
];

/// The scope of a case handler, who may fetch any package; a portal fetches
/// only the packages of the requests it submitted.
pub const SCOPE_HANDLER: &str = "requests:manage";

/// Who is fetching a package.
struct Reader {
    /// The caller's issuer and subject.
    who: String,
    handler: bool,
}

impl Reader {
    fn of<T>(req: &Request<T>) -> Self {
        let p = req.extensions().get::<dsr_auth::Principal>();
        Self {
            who: p.map_or_else(String::new, |p| format!("{} {}", p.issuer, p.subject)),
            handler: p.is_some_and(|p| p.has_scope(SCOPE_HANDLER)),
        }
    }

    /// NOT_FOUND for a package this caller may not fetch (no hint that it
    /// exists).
    fn may_fetch(&self, p: &PackageInfo) -> Result<(), Status> {
        if self.handler || p.submitted_by.as_deref() == Some(self.who.as_str()) {
            Ok(())
        } else {
            Err(store_status(&StoreError::NotFound))
        }
    }
}

/// The service.
pub type Service = AuthService<ExportServer<Handlers>>;

/// Builds the service.
pub fn service(exporter: Exporter, validator: Arc<Validator>) -> Service {
    AuthLayer::new(validator, SCOPES).layer(ExportServer::new(Handlers { exporter }))
}

/// The handlers.
#[derive(Debug)]
pub struct Handlers {
    exporter: Exporter,
}

fn kind_to_pb(k: Kind) -> pb::PackageKind {
    match k {
        Kind::Access => pb::PackageKind::Access,
        Kind::Portability => pb::PackageKind::Portability,
    }
}

fn package_to_pb(p: PackageInfo) -> pb::Package {
    pb::Package {
        kind: kind_to_pb(p.kind) as i32,
        files: p
            .files
            .into_iter()
            .map(|f| pb::PackageFile {
                name: f.name,
                media_type: f.media_type,
                size: f.size,
                sha256: f.sha256,
            })
            .collect(),
        create_time: Some(kit::timestamp(p.created_at)),
        expire_time: Some(kit::timestamp(p.expires_at)),
        record_count: p.record_count,
        system_ids: p.system_ids,
        id: p.id,
        request_id: p.request_id,
    }
}

fn store_status(e: &StoreError) -> Status {
    match e {
        StoreError::NotFound => {
            ERR.status(Code::NotFound, "package not found", "PACKAGE_NOT_FOUND")
        }
        StoreError::NoSuchFile => ERR.status(
            Code::NotFound,
            "no such file in the package",
            "FILE_NOT_FOUND",
        ),
        StoreError::Crypt(_) => ERR.status(
            Code::DataLoss,
            "package data does not authenticate",
            "PACKAGE_CORRUPT",
        ),
        StoreError::Io(_) | StoreError::Db(_) => {
            tracing::error!(error = %e, "package store failed");
            ERR.status(Code::Unavailable, "package storage unavailable", "STORAGE")
        }
    }
}

type DownloadStream = Pin<Box<dyn Stream<Item = Result<pb::DownloadResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Export for Handlers {
    #[tracing::instrument(skip_all)]
    async fn build_package(
        &self,
        req: Request<pb::BuildPackageRequest>,
    ) -> Result<Response<pb::BuildPackageResponse>, Status> {
        let pb::BuildPackageRequest {
            request_id,
            kind,
            controller,
            due_date,
            language,
            subject_map,
            submitted_by,
        } = req.into_inner();
        let mut v: Vec<(String, String)> = Vec::new();
        kit::check_request_id(&request_id, &mut v);
        if submitted_by.len() > 512 {
            v.push(("submitted_by".into(), "at most 512 characters".into()));
        }
        let kind = match pb::PackageKind::try_from(kind) {
            Ok(pb::PackageKind::Access) => Some(Kind::Access),
            Ok(pb::PackageKind::Portability) => Some(Kind::Portability),
            Ok(pb::PackageKind::Unspecified) | Err(_) => {
                v.push(("kind".into(), "required: ACCESS or PORTABILITY".into()));
                None
            }
        };
        let controller = kit::controller_from_pb(controller, &mut v);
        let due = kit::date(due_date);
        if due.is_none() {
            v.push(("due_date".into(), "required, a valid date".into()));
        }
        let language = Language::requested(&language);
        if language.is_none() {
            v.push(("language".into(), "\"sv\" or \"en\"".into()));
        }
        let map = match subject_map {
            Some(m) => Some(kit::subject_map_from_pb(m, &mut v)),
            None => {
                v.push(("subject_map".into(), "required".into()));
                None
            }
        };
        let (Some(kind), Some(controller), Some(due_date), Some(language), Some(map), true) =
            (kind, controller, due, language, map, v.is_empty())
        else {
            return Err(ERR.invalid_argument(v));
        };
        let built = self
            .exporter
            .build(BuildRequest {
                request_id,
                kind,
                controller,
                due_date,
                language,
                map,
                submitted_by: (!submitted_by.is_empty()).then_some(submitted_by),
            })
            .await;
        match built {
            Ok(p) => Ok(Response::new(pb::BuildPackageResponse {
                package: Some(package_to_pb(p)),
            })),
            Err(BuildError::Partial) => Err(ERR.status(
                Code::FailedPrecondition,
                "the subject map is partial; locate again when every system answers",
                "SUBJECT_MAP_PARTIAL",
            )),
            Err(BuildError::UnknownController) => Err(ERR.invalid_argument(vec![(
                "controller.organisation_number".into(),
                "not one of the group's controllers".into(),
            )])),
            Err(BuildError::Source(e)) => {
                tracing::warn!(error = %e, "a source failed while building");
                Err(ERR.status(Code::Unavailable, &e.to_string(), "SOURCE_UNAVAILABLE"))
            }
            Err(BuildError::Store(e)) => Err(store_status(&e)),
        }
    }

    async fn get_package(
        &self,
        req: Request<pb::GetPackageRequest>,
    ) -> Result<Response<pb::GetPackageResponse>, Status> {
        let reader = Reader::of(&req);
        let pb::GetPackageRequest { package_id } = req.into_inner();
        if !kit::valid_id(&package_id) {
            return Err(ERR.invalid_argument(vec![("package_id".into(), "required".into())]));
        }
        let p = self
            .exporter
            .packages()
            .get(&package_id)
            .await
            .map_err(|e| store_status(&e))?;
        reader.may_fetch(&p)?;
        Ok(Response::new(pb::GetPackageResponse {
            package: Some(package_to_pb(p)),
        }))
    }

    type DownloadStream = DownloadStream;

    async fn download(
        &self,
        req: Request<pb::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let reader = Reader::of(&req);
        let pb::DownloadRequest {
            package_id,
            file_name,
        } = req.into_inner();
        let mut v = Vec::new();
        if !kit::valid_id(&package_id) {
            v.push(("package_id".into(), "required".into()));
        }
        if file_name.is_empty() || file_name.len() > 128 {
            v.push((
                "file_name".into(),
                "required: a name from Package.files".into(),
            ));
        }
        if !v.is_empty() {
            return Err(ERR.invalid_argument(v));
        }
        let p = self
            .exporter
            .packages()
            .get(&package_id)
            .await
            .map_err(|e| store_status(&e))?;
        reader.may_fetch(&p)?;
        let mut rx = self
            .exporter
            .packages()
            .open(&package_id, &file_name)
            .await
            .map_err(|e| store_status(&e))?;
        let stream = async_stream_of(move |tx| async move {
            let mut offset: u64 = 0;
            while let Some(chunk) = rx.recv().await {
                let item = chunk
                    .map(|c| {
                        let len = c.len() as u64;
                        let resp = pb::DownloadResponse { chunk: c, offset };
                        offset += len;
                        resp
                    })
                    .map_err(|e| store_status(&e));
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A stream fed by a task.
fn async_stream_of<F, Fut>(f: F) -> DownloadStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::DownloadResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

pub use dsr_mesh_client::SystemEndpoint;

type RegistryClient = TransferRegistryClient<Calls>;

/// The data systems and the registry over gRPC.
#[derive(Debug)]
pub struct GrpcSources {
    systems: DataSystems,
    registry: RegistryClient,
}

impl GrpcSources {
    /// Clients calling as `service:dsr-export`, with tokens from `signer`.
    pub fn new(
        systems: &[SystemEndpoint],
        registry_endpoint: &str,
        registry_audience: &str,
        signer: Arc<TokenSigner>,
    ) -> Result<Self, String> {
        let systems = DataSystems::new(
            crate::SERVICE_NAME,
            systems.to_vec(),
            signer.clone(),
            &["system:describe", "system:read"],
        )?;
        let channel =
            lazy_channel(registry_endpoint).map_err(|e| format!("transfer registry: {e}"))?;
        let out = Outgoing::new(
            signer,
            crate::SERVICE_NAME,
            registry_audience,
            &["transfers:read"],
        );
        Ok(Self {
            systems,
            registry: TransferRegistryClient::new(calls(channel, out, "dsr-transfer-registry")),
        })
    }

    fn system(&self, id: &str) -> Result<SystemClient, SourceError> {
        self.systems.client(id).map_err(|e| SourceError {
            what: format!("system {id}"),
            reason: e.reason().to_owned(),
        })
    }
}

fn enum_name(full: &str, prefix: &str) -> String {
    full.trim_start_matches(prefix).to_lowercase()
}

fn source_err(what: &str, s: &Status) -> SourceError {
    SourceError {
        what: what.to_owned(),
        reason: failure_reason(s),
    }
}

impl GrpcSources {
    /// What a system declares, as export works with it.
    async fn describe_now(&self, system: &str) -> Result<SystemInfo, SourceError> {
        let d = self
            .systems
            .describe(system, false)
            .await
            .map_err(|e| SourceError {
                what: format!("system {system}"),
                reason: e.reason().to_owned(),
            })?;
        Ok(SystemInfo {
            id: d.system_id,
            display_name: d.display_name,
            display_names: d.display_names.into_iter().collect(),
            role: sys::SystemRole::try_from(d.role)
                .map(|r| enum_name(r.as_str_name(), "SYSTEM_ROLE_"))
                .unwrap_or_default(),
            operator_recipient_id: d.operator_recipient_id,
            categories: d
                .categories
                .into_iter()
                .map(|c| {
                    let cat = c.category.unwrap_or_default();
                    let retention = c.retention.unwrap_or_default();
                    Category {
                        id: cat.id,
                        display_name: cat.display_name,
                        sensitivity: sensitivity_of(cat.sensitivity),
                        purposes: c.purposes,
                        legal_basis: basis_of(c.legal_basis),
                        retention: retention.description,
                        retention_legal_ground: retention.legal_ground,
                        source: c.source,
                        provided_by_subject: c.provided_by_subject,
                        portable: c.portable,
                        automated_decision: c.automated_decision,
                        automated_decision_logic: c.automated_decision_logic,
                        texts: c
                            .texts
                            .into_iter()
                            .map(|(lang, t)| {
                                (
                                    lang,
                                    CategoryText {
                                        display_name: t.display_name,
                                        purposes: t.purposes,
                                        retention: t.retention_description,
                                        retention_legal_ground: t.retention_legal_ground,
                                        source: t.source,
                                        automated_decision_logic: t.automated_decision_logic,
                                    },
                                )
                            })
                            .collect(),
                    }
                })
                .collect(),
        })
    }
}

/// A record as export works with it.
fn record_from_pb(r: sys::Record) -> Record {
    let rf = r.r#ref.unwrap_or_default();
    Record {
        store: rf.store,
        key: rf.key,
        fields: r
            .fields
            .into_iter()
            .map(|f| Field {
                value: (!f.null).then_some(f.value),
                name: f.name,
                category: f.category_id,
            })
            .collect(),
        restricted: r.restricted,
        objected_purposes: r.objected_purposes,
        attested_by: r.attestation.map(|a| AttestedBy {
            name: a.name,
            on: a
                .attested_at
                .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                .map(|d| d.format("%Y-%m-%d").to_string())
                .unwrap_or_default(),
        }),
    }
}

#[tonic::async_trait]
impl Sources for GrpcSources {
    async fn describe(&self, system: &str) -> Result<SystemInfo, SourceError> {
        // Reused for a while (dsr_mesh_client::DESCRIBE_TTL).
        self.describe_now(system).await
    }

    async fn access(
        &self,
        system: &str,
        h: &Header,
        stores: Vec<MapStore>,
        portable_only: bool,
    ) -> Result<RecordBatches, SourceError> {
        let what = format!("system {system}");
        let instruction = instruction(
            system,
            &h.request_id,
            &h.controller,
            h.due_date,
            &format!("export-{}", h.request_id),
        );
        let mut records = Vec::with_capacity(stores.iter().map(|s| s.keys.len()).sum());
        for st in stores {
            for key in st.keys {
                records.push(sys::RecordRef {
                    store: st.store.clone(),
                    key,
                });
            }
        }
        let stream = self
            .system(system)?
            .access(sys::AccessRequest {
                instruction: Some(instruction),
                records,
                portable_only,
            })
            .await
            .map_err(|s| source_err(&what, &s))?
            .into_inner();
        let batches = futures_util::stream::try_unfold(stream, move |mut stream| {
            let what = what.clone();
            async move {
                let Some(batch) = stream.message().await.map_err(|s| source_err(&what, &s))? else {
                    return Ok(None);
                };
                Ok(Some((
                    batch.records.into_iter().map(record_from_pb).collect(),
                    stream,
                )))
            }
        });
        Ok(Box::pin(batches))
    }

    async fn disclosures(
        &self,
        controller: &Organisationsnummer,
        systems: &[String],
        categories: &[String],
    ) -> Result<Vec<Disclosure>, SourceError> {
        let resp = self
            .registry
            .clone()
            .list_disclosure_recipients(tr::ListDisclosureRecipientsRequest {
                controller: Some(common::ControllerRef {
                    organisation_number: controller.as_str().to_owned(),
                }),
                system_ids: systems.to_vec(),
                category_ids: categories.to_vec(),
            })
            .await
            .map_err(|s| source_err("transfer registry", &s))?
            .into_inner();
        Ok(resp
            .disclosures
            .into_iter()
            .map(|d| {
                let r = d.recipient.unwrap_or_default();
                let a = d.assessment.unwrap_or_default();
                let basis =
                    tr::TransferBasis::try_from(a.basis).unwrap_or(tr::TransferBasis::Unspecified);
                Disclosure {
                    recipient_id: r.id,
                    name: r.name,
                    role: tr::RecipientRole::try_from(r.role)
                        .map(|x| enum_name(x.as_str_name(), "RECIPIENT_ROLE_"))
                        .unwrap_or_default(),
                    country: r.country,
                    purpose: r.purpose,
                    categories: d.matched_category_ids,
                    outside_eea: basis != tr::TransferBasis::WithinEea,
                    lawful: a.lawful,
                    transfer_basis: enum_name(basis.as_str_name(), "TRANSFER_BASIS_"),
                    safeguard: a.safeguard_summary,
                    decision_reference: a.decision_reference,
                    sv: DisclosureText {
                        name: r.name_sv,
                        purpose: r.purpose_sv,
                        safeguard: a.safeguard_summary_sv,
                    },
                }
            })
            .collect())
    }
}

/// A category's sensitivity from the wire; ordinary when unset or unknown.
fn sensitivity_of(v: i32) -> Sensitivity {
    match common::Sensitivity::try_from(v) {
        Ok(common::Sensitivity::SpecialCategory) => Sensitivity::SpecialCategory,
        Ok(common::Sensitivity::Criminal) => Sensitivity::Criminal,
        Ok(common::Sensitivity::NationalId) => Sensitivity::NationalId,
        Ok(common::Sensitivity::Ordinary | common::Sensitivity::Unspecified) | Err(_) => {
            Sensitivity::Ordinary
        }
    }
}

/// A category's legal basis from the wire; none when unset or unknown.
fn basis_of(v: i32) -> Option<LegalBasis> {
    match common::LegalBasis::try_from(v) {
        Ok(common::LegalBasis::Consent) => Some(LegalBasis::Consent),
        Ok(common::LegalBasis::Contract) => Some(LegalBasis::Contract),
        Ok(common::LegalBasis::LegalObligation) => Some(LegalBasis::LegalObligation),
        Ok(common::LegalBasis::VitalInterests) => Some(LegalBasis::VitalInterests),
        Ok(common::LegalBasis::PublicTask) => Some(LegalBasis::PublicTask),
        Ok(common::LegalBasis::LegitimateInterests) => Some(LegalBasis::LegitimateInterests),
        Ok(common::LegalBasis::Unspecified) | Err(_) => None,
    }
}
