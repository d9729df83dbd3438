//! Erasure (`dsr.erasure.v1.Erasure`): the answer to an erasure request
//! (Art. 17). From the subject map it plans every record (erase, anonymise,
//! or retain with a legal ground and a date: the retention policy, the
//! legal holds), executes the plan on every system under one idempotency
//! key per (request, system, phase), verifies and keeps the signed
//! receipts, erases retained records when their date comes (deferred
//! erasures, scheduled by the orchestrator), and keeps tombstones (keyed
//! hashes of the identities, the orders carried out) that
//! `ReplayErasures` uses after a backup restore.
//!
//! [`eraser`] holds the logic over the [`model::Systems`] trait; [`grpc`]
//! holds the handlers and the tonic systems.
#![forbid(unsafe_code)]

pub mod assembly;
mod entity;
pub mod eraser;
pub mod grpc;
pub mod metrics;
pub mod migration;
pub mod model;
pub mod reconcile;
pub mod store;

/// The audience tokens for this service name.
pub const SERVICE_NAME: &str = "dsr-erasure";
