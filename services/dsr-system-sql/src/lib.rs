//! The generic SQL connector: any relational schema, described by a YAML
//! manifest, served as a `dsr.system.v1.DataSystem`.
//!
//! - [`manifest`]: the manifest format and its own checks;
//! - [`schema`]: the manifest against the live database (refuses to start on
//!   a missing table or column, naming the manifest file and field);
//! - [`system`]: Locate (with identity expansion and linked records), Access
//!   (streamed in bounded memory), the writes under the idempotency ledger
//!   with signed receipts, and Sweep;
//! - `grpc`: the thin handlers, over a [`grpc::Source`] of records: a SQL
//!   database ([`system::SqlSystem`]), a REST API ([`http::HttpSystem`]) or
//!   a vendor without an API, whose people answer tasks
//!   ([`manual::ManualSystem`]).
#![forbid(unsafe_code)]

pub mod assembly;
pub mod grpc;
pub mod http;
pub mod manifest;
pub mod manual;
pub mod reference;
pub mod schema;
pub mod system;
