//! Builds a package from a subject map: reads every record from its system,
//! joins each category with its declarations and with the registry, and
//! stores the documents sealed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::Utc;
use dsr_domain::group::Group;

use crate::model::{BuildRequest, Header, Kind, Record, SourceError, Sources, SystemInfo};
use crate::report::{
    self, AccessDocument, AutomatedOut, CategoryOut, ComplaintOut, ControllerOut, IdentityOut,
    PolicyOut, PortabilityDocument, PortableRecord, PortableSystem, SystemOut,
};
use crate::store::{NewFile, PackageInfo, Packages, StoreError};

/// The manifest's schema id.
pub const MANIFEST_SCHEMA: &str = "dsr.export.manifest/1";

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The subject map is partial: no answer from an incomplete map.
    #[error("the subject map is partial")]
    Partial,
    /// The controller is not one of the group's.
    #[error("unknown controller")]
    UnknownController,
    /// A system or the registry failed (retry later).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Storing failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The exporter.
#[derive(Clone)]
pub struct Exporter {
    sources: Arc<dyn Sources>,
    packages: Packages,
    group: Arc<Group>,
    ttl: chrono::Duration,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Exporter {
    /// An exporter reading from `sources`, storing in `packages`, keeping
    /// packages for `ttl`.
    pub fn new(
        sources: Arc<dyn Sources>,
        packages: Packages,
        group: Arc<Group>,
        ttl: chrono::Duration,
    ) -> Self {
        Self {
            sources,
            packages,
            group,
            ttl,
        }
    }

    /// The store.
    pub fn packages(&self) -> &Packages {
        &self.packages
    }

    /// Builds the package of a request, or returns the one already built.
    #[tracing::instrument(skip_all, fields(request = %req.request_id, kind = req.kind.as_str()))]
    pub async fn build(&self, req: BuildRequest) -> Result<PackageInfo, BuildError> {
        if let Some(p) = self.packages.by_request(&req.request_id).await? {
            return Ok(p);
        }
        if req.map.partial {
            return Err(BuildError::Partial);
        }
        let controller = self
            .group
            .controller(&req.controller)
            .ok_or(BuildError::UnknownController)?;
        let header = Header {
            request_id: req.request_id.clone(),
            controller: req.controller.clone(),
            due_date: req.due_date,
        };
        let portable_only = req.kind == Kind::Portability;
        let t0 = std::time::Instant::now();
        // Read each system with records (in parallel), with its declarations.
        let reads = req
            .map
            .systems
            .iter()
            .filter(|s| s.stores.iter().any(|st| !st.keys.is_empty()))
            .map(|s| {
                let sources = self.sources.clone();
                let header = header.clone();
                let refs: Vec<(String, String)> = s
                    .stores
                    .iter()
                    .flat_map(|st| st.keys.iter().map(|k| (st.store.clone(), k.clone())))
                    .collect();
                let mapped: BTreeSet<String> = s
                    .stores
                    .iter()
                    .flat_map(|st| st.categories.iter().cloned())
                    .collect();
                let id = s.system_id.clone();
                async move {
                    let info = sources.describe(&id).await?;
                    let records = sources.access(&id, &header, &refs, portable_only).await?;
                    Ok::<_, SourceError>((info, records, mapped))
                }
            });
        let mut systems: Vec<(SystemInfo, Vec<Record>, BTreeSet<String>)> =
            futures_util::future::try_join_all(reads).await?;
        systems.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        let read_ms = t0.elapsed().as_millis();
        let now = self.packages.clock().now();
        let package_id = uuid::Uuid::new_v4().to_string();
        let expires_at = now + self.ttl;
        let controller_out = ControllerOut {
            organisation_number: controller.organisation_number.as_str().to_owned(),
            name: controller.name.clone(),
        };
        let system_ids: Vec<String> = systems.iter().map(|s| s.0.id.clone()).collect();
        let (files, record_count) = match req.kind {
            Kind::Access => {
                let doc = self
                    .access_document(&req, controller_out, systems, now)
                    .await?;
                let count = doc.record_count;
                let html = report::render_html(&doc, req.language);
                let json = serde_json::to_vec_pretty(&doc).expect("serialisable");
                (
                    vec![
                        NewFile {
                            name: "access.json".into(),
                            media_type: "application/json".into(),
                            bytes: json,
                        },
                        NewFile {
                            name: "report.html".into(),
                            media_type: "text/html; charset=utf-8".into(),
                            bytes: html.into_bytes(),
                        },
                    ],
                    count,
                )
            }
            Kind::Portability => {
                let doc = portability_document(&req, controller_out, systems, now);
                let count = doc.systems.iter().map(|s| s.records.len() as u64).sum();
                let zip = report::portability_zip(&doc).map_err(StoreError::Io)?;
                (
                    vec![NewFile {
                        name: "portability.zip".into(),
                        media_type: "application/zip".into(),
                        bytes: zip,
                    }],
                    count,
                )
            }
        };
        let manifest = manifest(&package_id, &req, now, expires_at, &files);
        let mut files = files;
        files.push(NewFile {
            name: "manifest.json".into(),
            media_type: "application/json".into(),
            bytes: manifest,
        });
        let built_ms = t0.elapsed().as_millis() - read_ms;
        let info = self
            .packages
            .save(
                &package_id,
                &req.request_id,
                req.kind,
                files,
                record_count,
                &system_ids,
                now,
                expires_at,
                req.submitted_by.as_deref(),
            )
            .await?;
        tracing::info!(
            package = %info.id,
            records = info.record_count,
            read_ms,
            built_ms,
            total_ms = t0.elapsed().as_millis(),
            "package built"
        );
        Ok(info)
    }

    async fn access_document(
        &self,
        req: &BuildRequest,
        controller: ControllerOut,
        systems: Vec<(SystemInfo, Vec<Record>, BTreeSet<String>)>,
        now: chrono::DateTime<Utc>,
    ) -> Result<AccessDocument, BuildError> {
        // Categories: those the map names and those the records hold.
        let mut categories: BTreeMap<String, CategoryOut> = BTreeMap::new();
        let mut automated = Vec::new();
        for (info, records, mapped) in &systems {
            let mut held: BTreeSet<String> = mapped.clone();
            held.extend(
                records
                    .iter()
                    .flat_map(|r| r.fields.iter().map(|f| f.category.clone())),
            );
            for id in &held {
                let Some(declared) = info.categories.iter().find(|c| &c.id == id) else {
                    continue;
                };
                let declared = &declared.localized(req.language).unwrap_or_else(|| {
                    // A system that gives no texts in the person's language:
                    // its English ones, said loudly (`dsr conformance`
                    // checks every system gives both).
                    tracing::warn!(
                        system = %info.id,
                        category = %id,
                        language = req.language.code(),
                        "the system gives no texts in the person's language"
                    );
                    declared.clone()
                });
                categories
                    .entry(id.clone())
                    .or_insert_with(|| CategoryOut {
                        category: declared.clone(),
                        systems: Vec::new(),
                    })
                    .systems
                    .push(info.id.clone());
                if declared.automated_decision {
                    automated.push(AutomatedOut {
                        category: id.clone(),
                        display_name: declared.display_name.clone(),
                        system: info.id.clone(),
                        logic: declared.automated_decision_logic.clone(),
                    });
                }
            }
        }
        let system_ids: Vec<String> = systems.iter().map(|s| s.0.id.clone()).collect();
        let category_ids: Vec<String> = categories.keys().cloned().collect();
        let recipients = if system_ids.is_empty() {
            Vec::new()
        } else {
            self.sources
                .disclosures(&req.controller, &system_ids, &category_ids)
                .await?
                .into_iter()
                .map(|d| {
                    d.localized(req.language).unwrap_or_else(|| {
                        tracing::warn!(
                            recipient = %d.recipient_id,
                            language = req.language.code(),
                            "the registry has no name for the recipient in the person's language"
                        );
                        d
                    })
                })
                .collect()
        };
        let record_count = systems.iter().map(|s| s.1.len() as u64).sum();
        Ok(AccessDocument {
            schema: report::ACCESS_SCHEMA,
            request_id: req.request_id.clone(),
            generated_at: report::rfc3339(now),
            language: req.language.code(),
            controller,
            policy: PolicyOut {
                version: self.group.policy.version.clone(),
                published: self.group.policy.published,
            },
            data_processed: record_count > 0,
            record_count,
            identities: req
                .map
                .identities
                .iter()
                .map(|i| IdentityOut {
                    kind: i.kind().as_str().to_owned(),
                    value: i.value().to_owned(),
                })
                .collect(),
            systems: systems
                .into_iter()
                .map(|(info, records, _)| SystemOut {
                    display_name: info
                        .display_names
                        .get(req.language.code())
                        .cloned()
                        .unwrap_or(info.display_name),
                    id: info.id,
                    role: info.role,
                    operator_recipient_id: info.operator_recipient_id,
                    records,
                })
                .collect(),
            categories: categories.into_values().collect(),
            recipients,
            automated_decisions: automated,
            rights: report::rights(req.language),
            complaint: ComplaintOut {
                data_protection_officer: self.group.dpo_email.clone(),
                supervisory_authority: match req.language {
                    crate::model::Language::Sv => self.group.authority.name_sv.clone(),
                    crate::model::Language::En => self.group.authority.name_en.clone(),
                },
                supervisory_authority_url: self.group.authority.url.clone(),
            },
        })
    }
}

/// Only what the person provided, on consent or contract, as the systems
/// declare it portable: the systems were asked for the portable subset, and
/// every field is checked again against the declaration.
fn portability_document(
    req: &BuildRequest,
    controller: ControllerOut,
    systems: Vec<(SystemInfo, Vec<Record>, BTreeSet<String>)>,
    now: chrono::DateTime<Utc>,
) -> PortabilityDocument {
    let systems = systems
        .into_iter()
        .map(|(info, records, _)| {
            let portable: BTreeSet<&str> = info
                .categories
                .iter()
                .filter(|c| {
                    c.portable
                        && c.provided_by_subject
                        && matches!(c.legal_basis.as_str(), "consent" | "contract")
                })
                .map(|c| c.id.as_str())
                .collect();
            let records = records
                .into_iter()
                .filter_map(|r| {
                    let fields: BTreeMap<String, Option<String>> = r
                        .fields
                        .into_iter()
                        .filter(|f| portable.contains(f.category.as_str()))
                        .map(|f| (f.name, f.value))
                        .collect();
                    (!fields.is_empty()).then_some(PortableRecord {
                        store: r.store,
                        key: r.key,
                        fields,
                    })
                })
                .collect();
            PortableSystem {
                id: info.id,
                records,
            }
        })
        .filter(|s| !s.records.is_empty())
        .collect();
    PortabilityDocument {
        schema: report::PORTABILITY_SCHEMA,
        request_id: req.request_id.clone(),
        generated_at: report::rfc3339(now),
        controller,
        systems,
    }
}

fn manifest(
    package_id: &str,
    req: &BuildRequest,
    created: chrono::DateTime<Utc>,
    expires: chrono::DateTime<Utc>,
    files: &[NewFile],
) -> Vec<u8> {
    use sha2::Digest as _;
    let files: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name,
                "media_type": f.media_type,
                "size": f.bytes.len(),
                "sha256": hex::encode(sha2::Sha256::digest(&f.bytes)),
            })
        })
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({
        "schema": MANIFEST_SCHEMA,
        "package_id": package_id,
        "request_id": req.request_id,
        "kind": req.kind.as_str(),
        "created_at": report::rfc3339(created),
        "expires_at": report::rfc3339(expires),
        "files": files,
    }))
    .expect("serialisable")
}
