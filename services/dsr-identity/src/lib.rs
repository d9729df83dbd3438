//! Identity verification (`dsr.identity.v1.IdentityVerification`): one-time
//! codes by email or SMS, identity-provider assertions (BankID through the
//! company's IdP), and case handlers' attestations, each ending in a
//! short-lived verification token that other services verify offline.
//!
//! - [`verifier`]: the rules (codes, limits, assertions, attestations, audit);
//! - [`tokens`]: verification tokens and their JWKS;
//! - [`notifier`]: SMTP and the development outbox;
//! - [`migration`], `entity`: the challenges and the audit of attempts;
//! - [`grpc`]: the handlers and the scope table.
#![forbid(unsafe_code)]

pub mod assembly;
mod entity;
pub mod grpc;
pub mod migration;
pub use dsr_server::notifier;
pub mod texts;
pub mod tokens;
pub mod verifier;

/// The service's name and JWT audience.
pub const SERVICE_NAME: &str = "dsr-identity";
