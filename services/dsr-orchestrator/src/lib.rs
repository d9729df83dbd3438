//! The orchestrator (`dsr.orchestrator.v1.Requests`): the portals' API over
//! a durable [`ledger`] of requests (state machine and deadline rules from
//! `dsr_domain`, a hash-chained audit trail), a leased work [`queue`] that
//! several replicas share, and the [`worker`] that runs each request's
//! steps (verify, locate, export) against the services behind the
//! [`mesh`] traits, implemented over gRPC in [`grpc::clients`].
#![forbid(unsafe_code)]

pub mod assembly;
pub mod complaints;
mod entity;
pub mod feed;
pub mod grpc;
pub mod incidents;
pub mod intake;
pub mod ledger;
pub mod letters;
pub mod listing;
pub mod mesh;
pub mod metrics;
pub mod migration;
pub mod queue;
pub mod worker;

/// The audience tokens for this service name.
pub const SERVICE_NAME: &str = "dsr-orchestrator";
