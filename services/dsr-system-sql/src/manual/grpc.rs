//! The manual vendor behind the contract's gRPC edge: what it declares
//! (Describe) and how each call becomes a task.

use std::collections::BTreeSet;

use dsr_connector::instruction::Instruction;
use dsr_connector::operations::{Operation, Operations};
use dsr_domain::identity::{Identity, IdentityType, Organisationsnummer};
use dsr_proto::system::v1 as pb;

use super::system::ManualSystem;
use crate::grpc::{Source, describe_response};
use crate::system::{Affected, Error, Located, RecordData, RecordRef, Write};

#[tonic::async_trait]
impl Source for ManualSystem {
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
        describe_response(
            &self.manifest.system,
            &self.manifest.categories,
            &self.accepted_identity_types(),
            &[
                pb::Right::Access,
                pb::Right::Portability,
                pb::Right::Erasure,
                pb::Right::Rectification,
                pb::Right::Restriction,
            ],
            BTreeSet::from([pb::ErasureMethod::Delete as i32]),
            &self.signer,
        )
    }

    fn supports(&self, right: pb::Right) -> bool {
        !matches!(right, pb::Right::Objection | pb::Right::Unspecified)
    }

    async fn locate(
        &self,
        instruction: &Instruction,
        identities: Vec<Identity>,
    ) -> Result<Located, Error> {
        self.search(instruction, identities).await
    }

    async fn find_affected(
        &self,
        _controller: &Organisationsnummer,
        _categories: &BTreeSet<String>,
    ) -> Result<Vec<Affected>, Error> {
        Err(Error::Unsupported(
            "FindAffected (a vendor without an API cannot list everyone)",
        ))
    }

    fn access(
        &self,
        controller: Organisationsnummer,
        refs: Vec<RecordRef>,
        portable_only: bool,
        batch: usize,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<Vec<RecordData>, Error>>, Error> {
        for (i, r) in refs.iter().enumerate() {
            if self.manifest.store(&r.store).is_none() {
                return Err(Error::InvalidArgument(vec![(
                    format!("records[{i}].store"),
                    "unknown store".into(),
                )]));
            }
        }
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let this = self.clone();
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            match this.recorded(&controller, refs, portable_only).await {
                Ok(all) => {
                    for chunk in all.chunks(batch.max(1)) {
                        if tx.send(Ok(chunk.to_vec())).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                }
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
        self.begin(instruction, digest, write).await
    }

    async fn sweep(
        &self,
        _instruction: Instruction,
        _digest: Vec<u8>,
        _dry_run: bool,
        _batch: usize,
    ) -> Result<Operation, Error> {
        Err(Error::Unsupported(
            "a retention sweep at a vendor without an API",
        ))
    }

    fn operations(&self) -> &Operations {
        &self.ops
    }
}
