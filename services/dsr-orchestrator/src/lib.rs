//! The orchestrator (`dsr.orchestrator.v1.Requests`), being built for
//! issue [D]. What exists: the durable [`ledger`] of requests, with the
//! state machine and the deadline rules of `dsr_domain` and the
//! hash-chained audit trail. What follows: the gRPC API, the work queue with
//! leases, and the calls to identity, discovery and export.
#![forbid(unsafe_code)]

mod entity;
pub mod ledger;
pub mod migration;
