//! The kit for implementing `dsr.system.v1.DataSystem` in Rust.
//!
//! A data system (the CRM, a processor's platform) gets from this crate the
//! parts of the contract that are the same everywhere, so that it only writes
//! how to find, read and change its own data:
//!
//! - [`instruction`]: the checks every instruction passes first: addressed to
//!   this system, inside its issued-at/expires-at window (at most 15
//!   minutes), for a controller the system serves.
//! - [`operations`]: the idempotency ledger and the operations, in the
//!   system's own database (run [`migration::Migrator`]): the same key with
//!   the same instruction answers the same receipt; with another instruction
//!   it is refused.
//! - [`restriction`]: why a record is restricted (retention, an Art. 18
//!   request, a hold) and which of them a dated erasure may end.
//! - [`signing`]: Ed25519 receipt signing over the exact payload bytes, key
//!   files, key ids, verification.
//! - [`grpc`]: conversions of the header, operations and receipts to and
//!   from the proto, and the status for each refusal.
//!
//! # Example
//!
//! A write handler, in outline:
//!
//! ```no_run
//! # async fn erase(ops: &dsr_connector::operations::Operations,
//! #                signer: &dsr_connector::signing::ReceiptSigner,
//! #                req: dsr_proto::system::v1::EraseRequest,
//! #                controllers: &std::collections::BTreeSet<dsr_domain::identity::Organisationsnummer>)
//! #   -> Result<dsr_proto::system::v1::Operation, tonic::Status> {
//! use dsr_connector::{grpc, operations::Claim};
//! use prost::Message as _;
//! let instruction = grpc::instruction(req.instruction.clone(), "crm", controllers)?;
//! let digest = grpc::digest(&req.encode_to_vec());
//! match ops.claim(&instruction.idempotency_key, &digest, "erase").await.map_err(grpc::ledger_status)? {
//!     Claim::Existing(op) => Ok(grpc::operation_to_pb(&op)),
//!     Claim::New(id) | Claim::Retry(id) => {
//!         ops.start(&id, 1).await.map_err(grpc::ledger_status)?;
//!         // ... erase the records, build a dsr_proto::system::v1::Receipt ...
//!         let receipt = dsr_proto::system::v1::Receipt::default();
//!         let signed = signer.sign(receipt.encode_to_vec());
//!         let op = ops.succeed(&id, 1, signed).await.map_err(grpc::ledger_status)?;
//!         Ok(grpc::operation_to_pb(&op))
//!     }
//! }
//! # }
//! ```
#![forbid(unsafe_code)]

mod entity;
pub mod grpc;
pub mod instruction;
pub mod migration;
pub mod operations;
pub mod restriction;
pub mod signing;
pub mod subject;
pub mod suppression;
