//! How the mesh's own services (discovery, export, erasure) call the data
//! systems: one [`DataSystems`] per service holds a client for each
//! configured system (connected on first use, a service token minted per
//! call for the system's audience, the trace context carried on), the
//! systems' Describe answers reused for a while, and the [`instruction`]
//! header every call carries.
//!
//! `dsr-connector` stays the kit a processor implements the contract with;
//! this crate is the calling side, for the mesh alone.
#![forbid(unsafe_code)]

pub mod client;

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use crate::client::{Calls, Outgoing, calls, failure_reason, lazy_channel};
use dsr_auth::TokenSigner;
use dsr_proto::system::v1 as sys;
use dsr_proto::system::v1::data_system_client::DataSystemClient;
use tonic::Status;

/// A client of one data system.
pub type SystemClient = DataSystemClient<Calls>;

/// How long a system's Describe answer is reused: what a system declares
/// changes with its deployments, not per request.
pub const DESCRIBE_TTL: Duration = Duration::from_secs(60);

/// Largest message read from a system (a Locate or Access batch of a
/// person with very many records).
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A configured data system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemEndpoint {
    /// Its id (the token audience).
    pub id: String,
    /// Its gRPC address.
    pub endpoint: String,
    /// The registry id of the operator running it (a processor); empty when
    /// the controller runs it.
    pub operator_recipient_id: String,
}

/// Why a call to a system failed. Carries no personal data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// The system is not configured.
    UnknownSystem,
    /// The call failed; the stable reason of [`failure_reason`] (e.g.
    /// `UNAVAILABLE`).
    Failed(String),
}

impl CallError {
    /// The failure of a call.
    pub fn of(s: &Status) -> Self {
        Self::Failed(failure_reason(s))
    }

    /// A stable reason: `UNKNOWN_SYSTEM` or the call's.
    pub fn reason(&self) -> &str {
        match self {
            Self::UnknownSystem => "UNKNOWN_SYSTEM",
            Self::Failed(r) => r,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for CallError {}

/// The data systems a service calls.
#[derive(Debug)]
pub struct DataSystems {
    systems: BTreeMap<String, (SystemEndpoint, SystemClient)>,
    described: RwLock<BTreeMap<String, (Instant, sys::DescribeResponse)>>,
}

impl DataSystems {
    /// Clients for `systems`, calling as `service:<caller>` with `scopes`,
    /// tokens from `signer`. Connections are made on first use; an endpoint
    /// that is not a URL is an error naming the system.
    pub fn new(
        caller: &str,
        systems: Vec<SystemEndpoint>,
        signer: Arc<TokenSigner>,
        scopes: &[&str],
    ) -> Result<Self, String> {
        let mut clients = BTreeMap::new();
        for s in systems {
            let channel = lazy_channel(&s.endpoint).map_err(|e| format!("system {}: {e}", s.id))?;
            let out = Outgoing::new(signer.clone(), caller, &s.id, scopes);
            let client = DataSystemClient::new(calls(channel, out, &s.id))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            clients.insert(s.id.clone(), (s, client));
        }
        Ok(Self {
            systems: clients,
            described: RwLock::new(BTreeMap::new()),
        })
    }

    /// The configured systems' ids, in order.
    pub fn ids(&self) -> Vec<String> {
        self.systems.keys().cloned().collect()
    }

    /// The configured systems.
    pub fn endpoints(&self) -> impl Iterator<Item = &SystemEndpoint> {
        self.systems.values().map(|(e, _)| e)
    }

    /// The client of `system`.
    pub fn client(&self, system: &str) -> Result<SystemClient, CallError> {
        self.systems
            .get(system)
            .map(|(_, c)| c.clone())
            .ok_or(CallError::UnknownSystem)
    }

    /// What `system` declares: the answer of the last [`DESCRIBE_TTL`]
    /// unless `fresh` (a receipt signed by a key not yet seen, a status
    /// page), else asked now and kept.
    pub async fn describe(
        &self,
        system: &str,
        fresh: bool,
    ) -> Result<sys::DescribeResponse, CallError> {
        if !fresh
            && let Some((at, d)) = self
                .described
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(system)
            && at.elapsed() < DESCRIBE_TTL
        {
            return Ok(d.clone());
        }
        let d = self
            .client(system)?
            .describe(sys::DescribeRequest {})
            .await
            .map_err(|s| CallError::of(&s))?
            .into_inner();
        self.described
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(system.to_owned(), (Instant::now(), d.clone()));
        Ok(d)
    }

    /// The last Describe answer of each system that gave one.
    pub fn descriptions(&self) -> BTreeMap<String, sys::DescribeResponse> {
        self.described
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, (_, d))| (id.clone(), d.clone()))
            .collect()
    }
}

pub use client::instruction;
