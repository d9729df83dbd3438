//! Export (`dsr.export.v1.Export`): the answer to an access or portability
//! request. Given the subject map, it reads every record from its system,
//! joins each category with what the system declared about it and with the
//! transfer registry, and writes the package: the Art. 15 document (JSON)
//! and report (HTML, Swedish or English), or the Art. 20 archive (JSON and
//! CSV in a zip), with a manifest of SHA-256 digests; sealed at rest with a
//! key per package, deleted at expiry, downloaded in chunks. A package is
//! built in constant memory: records are spooled, sealed, as their systems
//! stream them, and the documents written from the spools ([`spool`]).
//!
//! The [`exporter`] holds the logic over the [`model::Sources`] trait;
//! [`grpc`] holds the handlers and the tonic sources.
#![forbid(unsafe_code)]

pub mod assembly;
pub mod crypt;
mod entity;
pub mod exporter;
pub mod grpc;
pub mod migration;
pub mod model;
pub mod report;
pub mod spool;
pub mod store;

/// The audience tokens for this service name.
pub const SERVICE_NAME: &str = "dsr-export";
