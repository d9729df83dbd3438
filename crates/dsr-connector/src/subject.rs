//! The subject map as the services that act on it (export, erasure) take it
//! from discovery: the person's identities and, per system, the records of
//! each store with their categories.

use dsr_domain::identity::Identity;

/// The records of one store of one system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapStore {
    /// The store.
    pub store: String,
    /// Record keys.
    pub keys: Vec<String>,
    /// Categories found there.
    pub categories: Vec<String>,
}

/// One system of the subject map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapSystem {
    /// The system.
    pub system_id: String,
    /// Its stores with records (empty when nothing was found).
    pub stores: Vec<MapStore>,
}

/// The subject map, as discovery produced it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectMap {
    /// The person's identities.
    pub identities: Vec<Identity>,
    /// Per system.
    pub systems: Vec<MapSystem>,
    /// Some system did not answer.
    pub partial: bool,
}
