//! Builds a package from a subject map: reads every record from its system,
//! joins each category with its declarations and with the registry, and
//! stores the documents sealed.
//!
//! In constant memory, whatever the number of records: each system's
//! records go, batch by batch as the system streams them, into a sealed
//! spool ([`crate::spool`]) while the categories they hold are noted; the
//! documents are then written from the spools into the sealed package
//! files, record by record.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::Utc;
use dsr_domain::category::LegalBasis;
use dsr_domain::group::Group;
use futures_util::TryStreamExt as _;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{
    BuildRequest, Disclosure, Header, Kind, MapSystem, Record, SourceError, Sources, SystemInfo,
};
use crate::report::{
    self, AccessDocument, AutomatedOut, CategoryOut, ComplaintOut, ControllerOut, IdentityOut,
    PolicyOut, PortabilityDocument, PortableRecord, PortableSystem, SystemOut,
};
use crate::spool::{SpoolDir, Spooled};
use crate::store::{FileInfo, PackageInfo, PackageWriter, Packages, StoreError};

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

impl From<std::io::Error> for BuildError {
    fn from(e: std::io::Error) -> Self {
        Self::Store(StoreError::Io(e))
    }
}

impl From<crate::crypt::CryptError> for BuildError {
    fn from(e: crate::crypt::CryptError) -> Self {
        Self::Store(StoreError::Crypt(e))
    }
}

/// What the documents keep of a record a system returned.
trait Kept: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// What the system's declarations decide for every record.
    type Rule: Send + Sync;
    /// The rule, from what the system declares.
    fn rule(info: &SystemInfo) -> Self::Rule;
    /// The record as kept; `None`: left out.
    fn keep(rule: &Self::Rule, r: Record) -> Option<Self>;
    /// Notes what the documents need to know of a kept record before
    /// they are written.
    fn note(&self, seen: &mut Seen);
}

/// What the records of one system held, learnt while spooling them.
#[derive(Debug, Default)]
struct Seen {
    /// The categories of their fields.
    categories: BTreeSet<String>,
    /// Per store, field names in the order first seen.
    columns: BTreeMap<String, Vec<String>>,
}

impl Kept for Record {
    type Rule = ();

    fn rule(_: &SystemInfo) {}

    fn keep((): &(), r: Record) -> Option<Self> {
        Some(r)
    }

    fn note(&self, seen: &mut Seen) {
        for f in &self.fields {
            if !seen.categories.contains(&f.category) {
                seen.categories.insert(f.category.clone());
            }
        }
    }
}

/// Only what the person provided, on consent or contract, as the systems
/// declare it portable: the systems were asked for the portable subset, and
/// every field is checked again against the declaration.
impl Kept for PortableRecord {
    type Rule = BTreeSet<String>;

    fn rule(info: &SystemInfo) -> BTreeSet<String> {
        info.categories
            .iter()
            .filter(|c| {
                c.portable
                    && c.provided_by_subject
                    && c.legal_basis.is_some_and(LegalBasis::portable)
            })
            .map(|c| c.id.clone())
            .collect()
    }

    fn keep(portable: &BTreeSet<String>, r: Record) -> Option<Self> {
        let fields: BTreeMap<String, Option<String>> = r
            .fields
            .into_iter()
            .filter(|f| portable.contains(&f.category))
            .map(|f| (f.name, f.value))
            .collect();
        (!fields.is_empty()).then_some(PortableRecord {
            store: r.store,
            key: r.key,
            fields,
        })
    }

    fn note(&self, seen: &mut Seen) {
        let columns = match seen.columns.get_mut(&self.store) {
            Some(c) => c,
            None => seen.columns.entry(self.store.clone()).or_default(),
        };
        for name in self.fields.keys() {
            if !columns.contains(name) {
                columns.push(name.clone());
            }
        }
    }
}

/// One system as read.
struct Read<T> {
    info: SystemInfo,
    /// The categories the subject map names for it.
    mapped: BTreeSet<String>,
    /// Every record it returned.
    returned: u64,
    seen: Seen,
    records: Spooled<T>,
}

/// The systems and categories a subject map names, as the access
/// document will list them when the records hold nothing else: the
/// systems with keys in the map's order, the categories sorted.
#[derive(Debug)]
struct Asked {
    systems: Vec<String>,
    categories: Vec<String>,
}

impl Asked {
    fn of(map: &[MapSystem]) -> Self {
        let with_keys = || {
            map.iter()
                .filter(|s| s.stores.iter().any(|st| !st.keys.is_empty()))
        };
        let categories: BTreeSet<&String> = with_keys()
            .flat_map(|s| s.stores.iter().flat_map(|st| st.categories.iter()))
            .collect();
        Self {
            systems: with_keys().map(|s| s.system_id.clone()).collect(),
            categories: categories.into_iter().cloned().collect(),
        }
    }
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
    /// The store is not asked first: a request has its package built once
    /// but for a retry, so the usual build saves that read, and a retry's
    /// build, refused by the store's one package a request, is dropped for
    /// the package already built ([`Packages::commit`]).
    #[tracing::instrument(skip_all, fields(request = %req.request_id, kind = req.kind.as_str()))]
    pub async fn build(&self, mut req: BuildRequest) -> Result<PackageInfo, BuildError> {
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
        let package_id = uuid::Uuid::new_v4().to_string();
        let spool = SpoolDir::new(self.packages.scratch_dir(&package_id))?;
        let t0 = std::time::Instant::now();
        let now = self.packages.clock().now();
        let expires_at = now + self.ttl;
        let controller_out = ControllerOut {
            organisation_number: controller.organisation_number.as_str().to_owned(),
            name: controller.name.clone(),
        };
        let kind = req.kind;
        let language = req.language;
        let (written, record_count, system_ids) = match kind {
            Kind::Access => {
                // The recipients of what the map names are asked while the
                // records are read, not after them.
                let asked = Asked::of(&req.map.systems);
                let reading = self.read::<Record>(
                    std::mem::take(&mut req.map.systems),
                    &header,
                    &spool,
                    false,
                );
                let early = async {
                    if asked.systems.is_empty() {
                        return None;
                    }
                    let found = self
                        .sources
                        .disclosures(&req.controller, &asked.systems, &asked.categories)
                        .await;
                    Some(found)
                };
                let (systems, early) = tokio::join!(reading, early);
                let systems = systems?;
                let system_ids: Vec<String> = systems.iter().map(|s| s.info.id.clone()).collect();
                let early = early.and_then(Result::ok).map(|found| (asked, found));
                let doc = self
                    .access_document(&req, controller_out, systems, now, early)
                    .await?;
                let count = doc.record_count;
                let written = self
                    .write(&package_id, &req, now, expires_at, spool, move |w| {
                        w.write_file("access.json", "application/json", |out| {
                            serde_json::to_writer_pretty(&mut *out, &doc)
                                .map_err(std::io::Error::other)
                        })?;
                        w.write_file("report.html", "text/html; charset=utf-8", |out| {
                            report::render_html(&doc, language, out)
                        })?;
                        Ok(())
                    })
                    .await?;
                (written, count, system_ids)
            }
            Kind::Portability => {
                let systems = self
                    .read::<PortableRecord>(
                        std::mem::take(&mut req.map.systems),
                        &header,
                        &spool,
                        true,
                    )
                    .await?;
                let system_ids: Vec<String> = systems.iter().map(|s| s.info.id.clone()).collect();
                let doc = portability_document(&req, controller_out, systems, now);
                let count = doc.systems.iter().map(|s| s.records.len()).sum();
                let written = self
                    .write(&package_id, &req, now, expires_at, spool, move |w| {
                        w.write_file("portability.zip", "application/zip", |out| {
                            report::portability_zip(&doc, out)
                        })?;
                        Ok(())
                    })
                    .await?;
                (written, count, system_ids)
            }
        };
        let info = self
            .packages
            .commit(
                written,
                &req.request_id,
                kind,
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
            total_ms = t0.elapsed().as_millis(),
            "package built"
        );
        Ok(info)
    }

    /// Reads each system with records (in parallel), with its
    /// declarations, spooling what the documents keep of each record as
    /// the system streams them.
    async fn read<T: Kept>(
        &self,
        systems: Vec<MapSystem>,
        header: &Header,
        spool: &SpoolDir,
        portable_only: bool,
    ) -> Result<Vec<Read<T>>, BuildError> {
        let reads = systems
            .into_iter()
            .filter(|s| s.stores.iter().any(|st| !st.keys.is_empty()))
            .enumerate()
            .map(|(n, s)| {
                let sources = self.sources.clone();
                let header = header.clone();
                let mapped: BTreeSet<String> = s
                    .stores
                    .iter()
                    .flat_map(|st| st.categories.iter().cloned())
                    .collect();
                let MapSystem {
                    system_id: id,
                    stores,
                } = s;
                let mut writer = spool.writer::<T>(u32::try_from(n).unwrap_or(u32::MAX));
                async move {
                    let info = sources.describe(&id).await?;
                    let rule = T::rule(&info);
                    let mut batches = sources.access(&id, &header, stores, portable_only).await?;
                    let mut seen = Seen::default();
                    let mut returned = 0u64;
                    while let Some(batch) = batches.try_next().await? {
                        for r in batch {
                            returned += 1;
                            if let Some(kept) = T::keep(&rule, r) {
                                kept.note(&mut seen);
                                writer.push(&kept).await?;
                            }
                        }
                    }
                    Ok::<_, BuildError>(Read {
                        info,
                        mapped,
                        returned,
                        seen,
                        records: writer.finish().await?,
                    })
                }
            });
        let mut systems = futures_util::future::try_join_all(reads).await?;
        systems.sort_by(|a, b| a.info.id.cmp(&b.info.id));
        Ok(systems)
    }

    /// Writes the package's documents with `documents`, then its manifest,
    /// off the async threads; the spools go once the documents are written.
    async fn write(
        &self,
        package_id: &str,
        req: &BuildRequest,
        created: chrono::DateTime<Utc>,
        expires: chrono::DateTime<Utc>,
        spool: SpoolDir,
        documents: impl FnOnce(&mut PackageWriter) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<PackageWriter, BuildError> {
        let packages = self.packages.clone();
        let id = package_id.to_owned();
        let request_id = req.request_id.clone();
        let kind = req.kind;
        let written = tokio::task::spawn_blocking(move || {
            let mut w = packages.begin(&id)?;
            documents(&mut w)?;
            drop(spool);
            let manifest = manifest(&id, &request_id, kind, created, expires, w.files());
            w.write_file("manifest.json", "application/json", |out| {
                out.write_all(&manifest)
            })?;
            Ok::<_, StoreError>(w)
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
        Ok(written)
    }

    async fn access_document(
        &self,
        req: &BuildRequest,
        controller: ControllerOut,
        systems: Vec<Read<Record>>,
        now: chrono::DateTime<Utc>,
        early: Option<(Asked, Vec<Disclosure>)>,
    ) -> Result<AccessDocument, BuildError> {
        // Categories: those the map names and those the records hold.
        let mut categories: BTreeMap<String, CategoryOut> = BTreeMap::new();
        let mut automated = Vec::new();
        for Read {
            info, mapped, seen, ..
        } in &systems
        {
            let mut held: BTreeSet<String> = mapped.clone();
            held.extend(seen.categories.iter().cloned());
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
        let system_ids: Vec<String> = systems.iter().map(|s| s.info.id.clone()).collect();
        let category_ids: Vec<String> = categories.keys().cloned().collect();
        let recipients = if system_ids.is_empty() {
            Vec::new()
        } else {
            // What the registry said for the map's systems and categories,
            // when the records showed no other; asked again otherwise.
            let found = match early {
                Some((asked, found))
                    if asked.systems == system_ids && asked.categories == category_ids =>
                {
                    found
                }
                _ => {
                    self.sources
                        .disclosures(&req.controller, &system_ids, &category_ids)
                        .await?
                }
            };
            found
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
        let record_count = systems.iter().map(|s| s.returned).sum();
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
                .map(|Read { info, records, .. }| SystemOut {
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

/// The systems with portable records, each with its CSV columns.
fn portability_document(
    req: &BuildRequest,
    controller: ControllerOut,
    systems: Vec<Read<PortableRecord>>,
    now: chrono::DateTime<Utc>,
) -> PortabilityDocument {
    let systems = systems
        .into_iter()
        .filter(|s| !s.records.is_empty())
        .map(
            |Read {
                 info,
                 records,
                 seen,
                 ..
             }| PortableSystem {
                id: info.id,
                records,
                columns: seen.columns,
            },
        )
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
    request_id: &str,
    kind: Kind,
    created: chrono::DateTime<Utc>,
    expires: chrono::DateTime<Utc>,
    files: &[FileInfo],
) -> Vec<u8> {
    let files: Vec<serde_json::Value> = files
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name,
                "media_type": f.media_type,
                "size": f.size,
                "sha256": f.sha256,
            })
        })
        .collect();
    serde_json::to_vec_pretty(&serde_json::json!({
        "schema": MANIFEST_SCHEMA,
        "package_id": package_id,
        "request_id": request_id,
        "kind": kind.as_str(),
        "created_at": report::rfc3339(created),
        "expires_at": report::rfc3339(expires),
        "files": files,
    }))
    .expect("serialisable")
}
