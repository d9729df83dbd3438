//! The data systems over gRPC: each called with a service token of its
//! own; receipts verified against the keys its `Describe` publishes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dsr_auth::TokenSigner;
use dsr_connector::grpc as kit;
use dsr_domain::identity::Organisationsnummer;
use dsr_mesh_client::client::{self, failure_reason};
use dsr_mesh_client::{DataSystems, SystemClient};
use dsr_proto::system::v1 as sys;
use tonic::Status;

use crate::model::{
    EraseOrder, Header, Receipt, RecordInfo, RecordRef, StoreResult, SystemError, Systems, Write,
};

pub use dsr_mesh_client::SystemEndpoint;

use super::convert::{records_from_pb, ref_to_pb};

/// How long to wait for an asynchronous write before trying again later.
const OPERATION_WAIT: Duration = Duration::from_secs(120);
/// How long a system's sweep may run.
const SWEEP_WAIT: Duration = Duration::from_secs(6 * 3600);

/// What a finished operation must answer.
struct Expect<'a> {
    /// The instruction's idempotency key.
    key: &'a str,
    /// The receipt's action.
    action: sys::ReceiptAction,
    /// How long to wait for the operation.
    wait_at_most: Duration,
    /// Where to record its progress.
    progress: Option<&'a AtomicU64>,
}

/// The data systems over gRPC.
#[derive(Debug)]
pub struct GrpcSystems {
    systems: DataSystems,
}

/// What erasure keeps of a system's Describe.
#[derive(Clone, Debug)]
struct Described {
    keys: Vec<sys::SigningKey>,
    controllers: Vec<String>,
    rights: Vec<i32>,
}

impl GrpcSystems {
    /// Clients calling as `service:dsr-erasure`, with tokens from `signer`.
    pub fn new(systems: &[SystemEndpoint], signer: Arc<TokenSigner>) -> Result<Self, String> {
        Ok(Self {
            systems: DataSystems::new(
                crate::SERVICE_NAME,
                systems.to_vec(),
                signer,
                &["system:describe", "system:read", "system:write"],
            )?,
        })
    }

    fn system(&self, id: &str) -> Result<SystemClient, SystemError> {
        self.systems.client(id).map_err(|e| SystemError {
            system: id.to_owned(),
            reason: e.reason().to_owned(),
            receipt_invalid: false,
        })
    }

    /// The system's Describe (its keys and controllers), reused for a
    /// while unless `fresh` (a receipt signed by a key not yet seen).
    async fn described(&self, system: &str, fresh: bool) -> Result<Described, SystemError> {
        let d = self
            .systems
            .describe(system, fresh)
            .await
            .map_err(|e| SystemError {
                system: system.to_owned(),
                reason: e.reason().to_owned(),
                receipt_invalid: false,
            })?;
        Ok(Described {
            rights: d.supported_rights,
            keys: d.signing_keys,
            controllers: d
                .controllers
                .into_iter()
                .map(|c| c.organisation_number)
                .collect(),
        })
    }

    /// Waits up to `wait` for `op` to end (polling GetOperation with a
    /// growing delay, recording its progress), then verifies its receipt
    /// (with the cached keys, then fresh ones for a key rotated since) and
    /// checks it answers this instruction.
    async fn finish(
        &self,
        system: &str,
        h: &Header,
        expect: Expect<'_>,
        mut op: sys::Operation,
    ) -> Result<Receipt, SystemError> {
        let Expect {
            key,
            action,
            wait_at_most,
            progress,
        } = expect;
        let mut client = self.system(system)?;
        let err = |reason: &str, receipt_invalid: bool| SystemError {
            system: system.to_owned(),
            reason: reason.to_owned(),
            receipt_invalid,
        };
        let started = Instant::now();
        let mut wait = Duration::from_millis(100);
        loop {
            match sys::OperationState::try_from(op.state) {
                Ok(sys::OperationState::Succeeded) => break,
                Ok(sys::OperationState::Failed) => return Err(err("OPERATION_FAILED", false)),
                Ok(
                    sys::OperationState::Pending
                    | sys::OperationState::Running
                    | sys::OperationState::Unspecified,
                )
                | Err(_) => {
                    if let Some(p) = progress {
                        p.store(op.done, Ordering::Relaxed);
                    }
                    if started.elapsed() > wait_at_most {
                        return Err(err("OPERATION_PENDING", false));
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                    op = client
                        .get_operation(sys::GetOperationRequest { id: op.id.clone() })
                        .await
                        .map_err(|s| failed(system, &s))?
                        .into_inner()
                        .operation
                        .unwrap_or_default();
                }
            }
        }
        if let Some(p) = progress {
            p.store(op.done, Ordering::Relaxed);
        }
        let signed = op.receipt.ok_or_else(|| err("RECEIPT_MISSING", true))?;
        let mut decoded = kit::verify_receipt(&signed, &self.described(system, false).await?.keys);
        if decoded.is_err() {
            decoded = kit::verify_receipt(&signed, &self.described(system, true).await?.keys);
        }
        let r = decoded.map_err(|_| err("RECEIPT_SIGNATURE", true))?;
        if r.system_id != system || r.request_id != h.request_id || r.idempotency_key != key {
            return Err(err("RECEIPT_MISMATCH", true));
        }
        if r.action != action as i32 {
            return Err(err("RECEIPT_ACTION", true));
        }
        let records = records_from_pb(&r);
        Ok(Receipt {
            payload: signed.payload.clone(),
            key_id: signed.key_id.clone(),
            signature: signed.signature.clone(),
            system_id: r.system_id,
            request_id: r.request_id,
            idempotency_key: r.idempotency_key,
            stores: r
                .stores
                .iter()
                .map(|s| StoreResult {
                    store: s.store.clone(),
                    matched: s.matched,
                    affected: s.affected,
                    refused: s.refused,
                })
                .collect(),
            retained: r.retained.len() as u64,
            records,
        })
    }
}

pub(super) fn failed(system: &str, s: &Status) -> SystemError {
    SystemError {
        system: system.to_owned(),
        reason: failure_reason(s),
        receipt_invalid: false,
    }
}

fn instruction(system: &str, h: &Header, key: &str) -> sys::Instruction {
    client::instruction(system, &h.request_id, &h.controller, h.due_date, key)
}

#[tonic::async_trait]
impl Systems for GrpcSystems {
    async fn read(
        &self,
        system: &str,
        h: &Header,
        refs: &[RecordRef],
    ) -> Result<Vec<RecordInfo>, SystemError> {
        let key = format!("erasure-read-{}", h.request_id);
        let mut stream = self
            .system(system)?
            .access(sys::AccessRequest {
                instruction: Some(instruction(system, h, &key)),
                records: refs.iter().map(ref_to_pb).collect(),
                portable_only: false,
            })
            .await
            .map_err(|s| failed(system, &s))?
            .into_inner();
        let mut out = Vec::with_capacity(refs.len());
        while let Some(batch) = stream.message().await.map_err(|s| failed(system, &s))? {
            for r in batch.records {
                let rf = r.r#ref.unwrap_or_default();
                out.push(RecordInfo {
                    record: RecordRef {
                        store: rf.store,
                        key: rf.key,
                    },
                    anchor: kit::date(r.retention_anchor),
                    // Names and categories only: values are not kept.
                    fields: r
                        .fields
                        .into_iter()
                        .map(|f| (f.name, f.category_id))
                        .collect(),
                });
            }
        }
        Ok(out)
    }

    async fn erase(
        &self,
        system: &str,
        h: &Header,
        idempotency_key: &str,
        order: &EraseOrder,
    ) -> Result<Receipt, SystemError> {
        let req = sys::EraseRequest {
            instruction: Some(instruction(system, h, idempotency_key)),
            records: order.records.iter().map(ref_to_pb).collect(),
            // Masking is pseudonymisation, not erasure: never acceptable.
            acceptable_methods: vec![
                sys::ErasureMethod::Delete as i32,
                sys::ErasureMethod::Anonymise as i32,
                sys::ErasureMethod::Nullify as i32,
                sys::ErasureMethod::CryptoShred as i32,
            ],
            retain: order
                .retain
                .iter()
                .map(|o| sys::RetentionOrder {
                    record: Some(ref_to_pb(&o.record)),
                    legal_ground: o.ground.clone(),
                    retain_until: o.until.map(kit::date_to_pb),
                    reason: if o.hold {
                        sys::RestrictionReason::Hold
                    } else {
                        sys::RestrictionReason::Retention
                    } as i32,
                })
                .collect(),
        };
        let op = self
            .system(system)?
            .erase(req)
            .await
            .map_err(|s| failed(system, &s))?
            .into_inner()
            .operation
            .unwrap_or_default();
        self.finish(
            system,
            h,
            Expect {
                key: idempotency_key,
                action: sys::ReceiptAction::Erase,
                wait_at_most: OPERATION_WAIT,
                progress: None,
            },
            op,
        )
        .await
    }

    async fn write(
        &self,
        system: &str,
        h: &Header,
        idempotency_key: &str,
        write: &Write,
    ) -> Result<Receipt, SystemError> {
        let mut client = self.system(system)?;
        let instruction = Some(instruction(system, h, idempotency_key));
        let (op, action) = match write {
            Write::Rectify(changes) => (
                client
                    .rectify(sys::RectifyRequest {
                        instruction,
                        changes: changes
                            .iter()
                            .map(|(r, field, value)| sys::FieldChange {
                                record: Some(ref_to_pb(r)),
                                field: field.clone(),
                                value: value.clone(),
                            })
                            .collect(),
                    })
                    .await
                    .map_err(|s| failed(system, &s))?
                    .into_inner()
                    .operation,
                sys::ReceiptAction::Rectify,
            ),
            Write::Restrict {
                records,
                lift,
                reason,
            } => (
                client
                    .restrict(sys::RestrictRequest {
                        instruction,
                        records: records.iter().map(ref_to_pb).collect(),
                        lift: *lift,
                        reason: reason.clone(),
                        basis: sys::RestrictionReason::Request as i32,
                    })
                    .await
                    .map_err(|s| failed(system, &s))?
                    .into_inner()
                    .operation,
                if *lift {
                    sys::ReceiptAction::LiftRestriction
                } else {
                    sys::ReceiptAction::Restrict
                },
            ),
            Write::Object {
                records,
                purposes,
                direct_marketing,
            } => (
                client
                    .object(sys::ObjectRequest {
                        instruction,
                        records: records.iter().map(ref_to_pb).collect(),
                        purposes: purposes.clone(),
                        direct_marketing: *direct_marketing,
                    })
                    .await
                    .map_err(|s| failed(system, &s))?
                    .into_inner()
                    .operation,
                sys::ReceiptAction::Object,
            ),
        };
        self.finish(
            system,
            h,
            Expect {
                key: idempotency_key,
                action,
                wait_at_most: OPERATION_WAIT,
                progress: None,
            },
            op.unwrap_or_default(),
        )
        .await
    }

    fn system_ids(&self) -> Vec<String> {
        self.systems.ids()
    }

    async fn controllers(&self, system: &str) -> Result<Vec<Organisationsnummer>, SystemError> {
        Ok(self
            .described(system, false)
            .await?
            .controllers
            .iter()
            .filter_map(|c| Organisationsnummer::parse(c).ok())
            .collect())
    }

    async fn sweep(
        &self,
        system: &str,
        h: &Header,
        idempotency_key: &str,
        dry_run: bool,
        batch_size: u32,
        progress: &AtomicU64,
    ) -> Result<Receipt, SystemError> {
        let op = self
            .system(system)?
            .sweep(sys::SweepRequest {
                instruction: Some(instruction(system, h, idempotency_key)),
                dry_run,
                batch_size: if batch_size == 0 { 1000 } else { batch_size },
            })
            .await
            .map_err(|s| failed(system, &s))?
            .into_inner()
            .operation
            .unwrap_or_default();
        self.finish(
            system,
            h,
            Expect {
                key: idempotency_key,
                action: sys::ReceiptAction::Sweep,
                wait_at_most: SWEEP_WAIT,
                progress: Some(progress),
            },
            op,
        )
        .await
    }

    async fn acts_on(&self, system: &str, write: &Write) -> Result<bool, SystemError> {
        let right = match write {
            Write::Rectify(_) => sys::Right::Rectification,
            Write::Restrict { .. } => sys::Right::Restriction,
            Write::Object { .. } => sys::Right::Objection,
        };
        Ok(self
            .described(system, false)
            .await?
            .rights
            .contains(&(right as i32)))
    }

    fn operator(&self, system: &str) -> Option<String> {
        self.systems
            .endpoints()
            .find(|e| e.id == system)
            .map(|e| e.operator_recipient_id.clone())
            .filter(|op| !op.is_empty())
    }
}
