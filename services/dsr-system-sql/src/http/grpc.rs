//! The HTTP-backed system behind the contract's gRPC edge: what it
//! declares (Describe) and how each call maps onto its API.

use std::collections::BTreeSet;

use dsr_connector::instruction::Instruction;
use dsr_connector::operations::{Claim, Operation, Operations};
use dsr_domain::identity::{Identity, IdentityType, Organisationsnummer};
use dsr_proto::system::v1 as pb;

use super::api::{Vars, as_text, at};
use super::system::HttpSystem;
use crate::grpc::{Source, describe_response};
use crate::system::{Action, Affected, Error, Located, RecordData, RecordRef, Write};

#[tonic::async_trait]
impl Source for HttpSystem {
    fn system_id(&self) -> &str {
        &self.manifest.system.id
    }

    fn controllers(&self) -> &BTreeSet<Organisationsnummer> {
        &self.controllers
    }

    fn accepted_identity_types(&self) -> BTreeSet<IdentityType> {
        self.manifest.accepted_identity_types()
    }

    fn describe(&self) -> pb::DescribeResponse {
        let rights: Vec<pb::Right> = [
            pb::Right::Access,
            pb::Right::Portability,
            pb::Right::Erasure,
            pb::Right::Rectification,
            pb::Right::Restriction,
            pb::Right::Objection,
        ]
        .into_iter()
        .filter(|r| self.supports(*r))
        .collect();
        let methods = if self.supports(pb::Right::Erasure) {
            BTreeSet::from([pb::ErasureMethod::Delete as i32])
        } else {
            BTreeSet::new()
        };
        describe_response(
            &self.manifest.system,
            &self.manifest.categories,
            &self.accepted_identity_types(),
            &rights,
            methods,
            &self.signer,
        )
    }

    fn supports(&self, right: pb::Right) -> bool {
        let m = &self.manifest;
        match right {
            pb::Right::Access | pb::Right::Portability => true,
            pb::Right::Erasure => m.resources.iter().any(|r| r.erase.is_some()),
            pb::Right::Rectification => m.resources.iter().any(|r| r.rectify.is_some()),
            pb::Right::Restriction => m.all_have(|r| r.restrict.is_some()),
            pb::Right::Objection | pb::Right::Unspecified => false,
        }
    }

    async fn locate(
        &self,
        instruction: &Instruction,
        identities: Vec<Identity>,
    ) -> Result<Located, Error> {
        self.locate_all(&instruction.controller, identities).await
    }

    async fn find_affected(
        &self,
        controller: &Organisationsnummer,
        categories: &BTreeSet<String>,
    ) -> Result<Vec<Affected>, Error> {
        let org = controller.as_str().to_owned();
        let mut people = Vec::new();
        for r in self
            .manifest
            .resources
            .iter()
            .filter(|r| r.parent.is_none())
        {
            let Some(list) = &r.list else {
                return Err(Error::Unsupported("FindAffected (no list of every record)"));
            };
            let vars: Vars<'_> = [("controller", org.as_str())].into();
            for item in self.api.list(list, &r.page, &vars).await? {
                let Some(key) = self.owned(r, &item, controller) else {
                    continue;
                };
                let mut cats: BTreeSet<String> = Self::categories(r)
                    .intersection(categories)
                    .cloned()
                    .collect();
                let mut records = u64::from(!cats.is_empty());
                let mut stack = vec![(r, key)];
                while let Some((res, k)) = stack.pop() {
                    for child in self.manifest.children(&res.name) {
                        let Some(p) = &child.parent else { continue };
                        let vars: Vars<'_> = [("parent", k.as_str())].into();
                        let hit: BTreeSet<String> = Self::categories(child)
                            .intersection(categories)
                            .cloned()
                            .collect();
                        for ci in self.api.list(&p.call, &child.page, &vars).await? {
                            let Some(ck) = self.owned(child, &ci, controller) else {
                                continue;
                            };
                            if !hit.is_empty() {
                                records += 1;
                                cats.extend(hit.iter().cloned());
                            }
                            stack.push((child, ck));
                        }
                    }
                }
                if records == 0 {
                    continue;
                }
                let contacts = r
                    .fields
                    .iter()
                    .filter(|f| {
                        f.identity.is_some_and(|k| {
                            matches!(k.domain(), IdentityType::Email | IdentityType::Phone)
                        })
                    })
                    .filter_map(|f| {
                        let v = at(&item, &f.path).and_then(as_text)?;
                        Identity::parse(f.identity?.domain(), &v).ok()
                    })
                    .collect();
                people.push(Affected {
                    contacts,
                    language: None,
                    categories: cats,
                    records,
                });
            }
        }
        Ok(people)
    }

    fn access(
        &self,
        controller: Organisationsnummer,
        refs: Vec<RecordRef>,
        portable_only: bool,
        batch: usize,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<Vec<RecordData>, Error>>, Error> {
        for (i, r) in refs.iter().enumerate() {
            if self.manifest.resource(&r.store).is_none() {
                return Err(Error::InvalidArgument(vec![(
                    format!("records[{i}].store"),
                    "unknown store".into(),
                )]));
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let this = self.clone();
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            let mut out = Vec::new();
            for reference in refs {
                let got = this.get(&reference, &controller).await;
                let item = match got {
                    Ok(Some(x)) => x,
                    Ok(None) => continue,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if let Some(d) = this.record_data(item.1, reference, &item.0, portable_only) {
                    out.push(d);
                }
                if out.len() >= batch.max(1) && tx.send(Ok(std::mem::take(&mut out))).await.is_err()
                {
                    return;
                }
            }
            if !out.is_empty() {
                let _ = tx.send(Ok(out)).await;
            }
        }));
        Ok(rx)
    }

    async fn write(
        &self,
        instruction: Instruction,
        digest: Vec<u8>,
        write: Write,
    ) -> Result<Operation, Error> {
        self.validate(&write)?;
        let action = match &write {
            Write::Erase { .. } => Action::Erase,
            Write::Rectify(_) => Action::Rectify,
            Write::Restrict { lift: false, .. } => Action::Restrict,
            Write::Restrict { lift: true, .. } => Action::Lift,
            Write::Object { .. } => Action::Object,
        };
        let kind = match action {
            Action::Erase => "erase",
            Action::Rectify => "rectify",
            Action::Restrict => "restrict",
            Action::Lift => "lift_restriction",
            Action::Object => "object",
            Action::Sweep => "sweep",
        };
        let hex_digest: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        // From the claim on, the work belongs to its own task.
        let this = self.clone();
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            let id = match this
                .ops
                .claim(&instruction.idempotency_key, &hex_digest, kind)
                .await?
            {
                Claim::Existing(op) => return Ok(op),
                Claim::New(id) | Claim::Retry(id) => id,
            };
            this.run(id, instruction, digest, write, action).await
        }))
        .await
        .map_err(|_| {
            Error::Unavailable("the write stopped; retry with the same idempotency key".into())
        })?
    }

    async fn sweep(
        &self,
        _instruction: Instruction,
        _digest: Vec<u8>,
        _dry_run: bool,
        _batch: usize,
    ) -> Result<Operation, Error> {
        Err(Error::Unsupported("a retention sweep through an HTTP API"))
    }

    fn operations(&self) -> &Operations {
        &self.ops
    }
}
