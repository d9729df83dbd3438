//! Discovery (`dsr.discovery.v1.Discovery`): the registry of data systems
//! and Locate across all of them.
//!
//! - [`locator`]: the fan-out to a fixpoint of identity expansion, over the
//!   [`locator::DataSystems`] trait;
//! - [`grpc`]: the handlers, and the tonic implementation of the trait
//!   (one client per system, a service token per system).
#![forbid(unsafe_code)]

pub mod assembly;
pub mod grpc;
pub mod locator;

/// The service's name and JWT audience.
pub const SERVICE_NAME: &str = "dsr-discovery";
