//! The HTTP connector: a REST API, described by a YAML manifest
//! ([`manifest`]), served as a `dsr.system.v1.DataSystem` through the same
//! handlers as a SQL database ([`crate::grpc::Source`]).
//!
//! - [`manifest`]: the format and its checks (file, field, reason);
//! - [`api`]: the calls: templates, authentication (API key, OAuth 2 client
//!   credentials), timeouts, retries with backoff, a rate limit, paging;
//! - [`HttpSystem`]: Locate (by identity, then each record's children,
//!   widened by the identities found), Access, FindAffected, and the
//!   writes, each under the connector's own idempotency ledger (a database
//!   of its own): the calls run in a task of their own that goes on when
//!   the caller stops waiting, and the receipt is signed once every record
//!   has its outcome. A write retried after the process died runs again:
//!   erasing what is already gone answers NOT_FOUND for it.
//! - [`reference_api`]: the reference REST system (a survey platform) the
//!   tests and `dsr up` run it against.

pub mod api;
mod grpc;
pub mod manifest;
pub mod reference_api;
mod system;

pub use system::HttpSystem;
