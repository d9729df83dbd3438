//! The rules of DSR Mesh that hold whatever the transport or the database:
//! identities and their normal forms, Art. 12(3) deadlines, and the
//! lawfulness of transfers outside the EEA.
//!
//! **Architecture Invariant:** this crate does no I/O and knows neither
//! tonic, prost nor sea-orm. Reference data it needs (the holiday calendar,
//! the adequacy list) is data compiled in from `data/`, replaceable by the
//! caller. The time rules run at is an input ([`clock::Clock`]), read in one
//! place.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod category;
pub mod clock;
pub mod deadline;
pub mod erasure;
pub mod group;
pub mod identity;
pub mod letters;
pub mod request;
pub mod retention;
pub mod text;
pub mod transfer;
