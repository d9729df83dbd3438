//! The transfer registry (`dsr.transfer.v1.TransferRegistry`): who receives
//! personal data from the group, where, under which safeguard, and whether a
//! transfer is lawful under GDPR Chapter V.
//!
//! - [`registry`]: the operations, over [`dsr_domain::transfer`]'s rules;
//! - `store` and `entity`: persistence with sea-orm (SQLite or PostgreSQL);
//! - [`migration`]: the schema, one file per migration;
//! - [`seed`]: the recipients named by the privacy policy, in TOML;
//! - [`grpc`]: thin handlers, conversions, the error mapping, the scope table.
#![forbid(unsafe_code)]

pub mod assembly;
mod entity;
pub mod grpc;
pub mod metrics;
pub mod migration;
pub mod registry;
pub mod seed;
mod store;

pub use registry::{Error, Registry};

/// The service's name: its JWT audience and its database name.
pub const SERVICE_NAME: &str = "dsr-transfer-registry";
