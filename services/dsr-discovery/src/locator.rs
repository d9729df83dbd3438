//! Locate across every data system serving a controller, to a fixpoint of
//! identity expansion, with a timeout per system; failures make the map
//! partial, never silently complete.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use dsr_domain::identity::{Identity, IdentityType, Organisationsnummer};
use tokio::sync::RwLock;

/// What a system says about itself, as far as Locate needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The identity types Locate accepts.
    pub accepted: BTreeSet<IdentityType>,
    /// The controllers it serves.
    pub controllers: BTreeSet<Organisationsnummer>,
}

/// Records found in one store.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FoundStore {
    /// Record keys.
    pub keys: BTreeSet<String>,
    /// Categories.
    pub categories: BTreeSet<String>,
}

/// One system's answer to one Locate.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Found {
    /// By store.
    pub stores: BTreeMap<String, FoundStore>,
    /// Identities the system linked to the person.
    pub linked: Vec<Identity>,
    /// Whether the system already searched with every one of `linked`
    /// (it is not asked again with them).
    pub linked_searched: bool,
}

/// Why a system gave no answer. No personal data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SystemError {
    /// No answer in time.
    #[error("timed out")]
    TimedOut,
    /// A failure, with a stable reason (a gRPC code name).
    #[error("failed: {0}")]
    Failed(String),
}

/// The header of one Locate instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The request.
    pub request_id: String,
    /// The controller.
    pub controller: Organisationsnummer,
    /// The due date.
    pub due_date: NaiveDate,
    /// The idempotency key of this call.
    pub idempotency_key: String,
}

/// The data systems, as Locate reaches them (gRPC in production, a test
/// double in tests).
#[tonic::async_trait]
pub trait DataSystems: Send + Sync {
    /// The ids of the registered systems.
    fn ids(&self) -> Vec<String>;
    /// Describes one system.
    async fn describe(&self, system: &str) -> Result<Capabilities, SystemError>;
    /// Locates in one system.
    async fn locate(
        &self,
        system: &str,
        header: &Header,
        identities: &[Identity],
    ) -> Result<Found, SystemError>;
    /// For a breach: the people with records in `categories` (FindAffected).
    async fn find_affected(
        &self,
        system: &str,
        header: &Header,
        breach: &Breach,
    ) -> Result<Vec<AffectedPerson>, SystemError>;
}

/// What a breach concerns, as the systems are asked about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breach {
    /// The categories of data.
    pub categories: Vec<String>,
    /// Its window, when known.
    pub from: Option<DateTime<Utc>>,
    /// See `from`.
    pub to: Option<DateTime<Utc>>,
}

/// One person a system says a breach may have touched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AffectedPerson {
    /// Their email addresses and phones.
    pub contacts: Vec<Identity>,
    /// Their language, when the system holds it.
    pub language: String,
    /// The categories their records hold.
    pub categories: Vec<String>,
    /// Their records in those categories.
    pub records: u64,
    /// Whether the system applied the breach's window.
    pub window_applied: bool,
}

/// One system's answer about a breach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemAffected {
    /// The system.
    pub system_id: String,
    /// Found (people listed), NotFound, Failed or TimedOut.
    pub outcome: Outcome,
    /// The people.
    pub people: Vec<AffectedPerson>,
    /// For a failure: a stable reason.
    pub error_reason: Option<String>,
}

/// How a system came out of a Locate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Records found.
    Found,
    /// Answered, nothing found.
    NotFound,
    /// Accepts none of the identity types known.
    NoAcceptedIdentity,
    /// Failed.
    Failed,
    /// No answer in time.
    TimedOut,
}

/// One system in the subject map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemLocation {
    /// The system.
    pub system_id: String,
    /// The outcome.
    pub outcome: Outcome,
    /// What was found.
    pub stores: BTreeMap<String, FoundStore>,
    /// For failures: the reason.
    pub error_reason: Option<String>,
    /// The identity types it was asked with.
    pub asked_with: BTreeSet<IdentityType>,
}

/// The subject map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectMap {
    /// Every identity known at the end.
    pub identities: BTreeSet<Identity>,
    /// Per system serving the controller.
    pub systems: Vec<SystemLocation>,
    /// Some system failed or timed out.
    pub partial: bool,
    /// Rounds run.
    pub rounds: u32,
}

/// A registered system's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemState {
    /// Its capabilities, once described.
    pub capabilities: Option<Capabilities>,
    /// When last described successfully.
    pub described_at: Option<DateTime<Utc>>,
    /// The last Describe failure.
    pub last_error: Option<String>,
}

/// Locate across the mesh.
#[derive(Clone)]
pub struct Locator {
    systems: Arc<dyn DataSystems>,
    state: Arc<RwLock<BTreeMap<String, SystemState>>>,
    timeout: Duration,
}

impl std::fmt::Debug for Locator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locator")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The most rounds a Locate may run.
pub const MAX_ROUNDS: u32 = 5;

impl Locator {
    /// A locator over `systems`, waiting at most `timeout` for each call.
    pub fn new(systems: Arc<dyn DataSystems>, timeout: Duration) -> Self {
        let state = systems
            .ids()
            .into_iter()
            .map(|id| {
                (
                    id,
                    SystemState {
                        capabilities: None,
                        described_at: None,
                        last_error: None,
                    },
                )
            })
            .collect();
        Self {
            systems,
            state: Arc::new(RwLock::new(state)),
            timeout,
        }
    }

    /// The registered systems and what is known of them.
    pub async fn states(&self) -> BTreeMap<String, SystemState> {
        self.state.read().await.clone()
    }

    async fn describe_one(&self, id: &str) -> Option<Capabilities> {
        let res = tokio::time::timeout(self.timeout, self.systems.describe(id))
            .await
            .unwrap_or(Err(SystemError::TimedOut));
        let mut state = self.state.write().await;
        let entry = state.entry(id.to_owned()).or_insert(SystemState {
            capabilities: None,
            described_at: None,
            last_error: None,
        });
        match res {
            Ok(c) => {
                entry.capabilities = Some(c.clone());
                entry.described_at = Some(Utc::now());
                entry.last_error = None;
                Some(c)
            }
            Err(e) => {
                tracing::warn!(system = id, error = %e, "describe failed");
                entry.last_error = Some(e.to_string());
                // Keep the last good capabilities: a system that is briefly down is
                // still a system that may hold the person's data.
                entry.capabilities.clone()
            }
        }
    }

    /// Describes every system (at start, then periodically).
    pub async fn refresh(&self) {
        let ids = self.systems.ids();
        futures_util::future::join_all(ids.iter().map(|id| self.describe_one(id))).await;
    }

    /// Refreshes every `every` in the background.
    pub fn spawn_refresh(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                this.refresh().await;
                tokio::time::sleep(every).await;
            }
        })
    }

    /// For a breach: asks every system in `only` (all when empty) that
    /// serves `controller` which people it concerns, in parallel, each
    /// within ten times the Locate timeout (it reads in bulk). A system not
    /// described, failing or slow is an outcome, never left out.
    pub async fn find_affected(
        &self,
        header: &Header,
        only: &BTreeSet<String>,
        breach: &Breach,
    ) -> Vec<SystemAffected> {
        let mut asked = Vec::new();
        for id in self.systems.ids() {
            if !only.is_empty() && !only.contains(&id) {
                continue;
            }
            let known = self
                .state
                .read()
                .await
                .get(&id)
                .and_then(|s| s.capabilities.clone());
            let caps = match known {
                Some(c) => Some(c),
                None => self.describe_one(&id).await,
            };
            match caps {
                Some(c) if !c.controllers.contains(&header.controller) => {}
                other => asked.push((id, other.is_some())),
            }
        }
        let within = self.timeout.saturating_mul(10);
        futures_util::future::join_all(asked.into_iter().map(|(id, described)| async move {
            if !described {
                return SystemAffected {
                    system_id: id,
                    outcome: Outcome::Failed,
                    people: Vec::new(),
                    error_reason: Some("NOT_DESCRIBED".into()),
                };
            }
            let res = tokio::time::timeout(within, self.systems.find_affected(&id, header, breach))
                .await
                .unwrap_or(Err(SystemError::TimedOut));
            match res {
                Ok(people) => SystemAffected {
                    system_id: id,
                    outcome: if people.is_empty() {
                        Outcome::NotFound
                    } else {
                        Outcome::Found
                    },
                    people,
                    error_reason: None,
                },
                Err(e) => {
                    tracing::warn!(system = %id, error = %e, "find affected failed");
                    SystemAffected {
                        system_id: id,
                        outcome: match e {
                            SystemError::TimedOut => Outcome::TimedOut,
                            SystemError::Failed(_) => Outcome::Failed,
                        },
                        people: Vec::new(),
                        error_reason: Some(match e {
                            SystemError::TimedOut => "TIMED_OUT".into(),
                            SystemError::Failed(r) => r,
                        }),
                    }
                }
            }
        }))
        .await
    }

    /// Locates the person in every system serving `controller`.
    pub async fn locate(
        &self,
        request_id: &str,
        controller: &Organisationsnummer,
        due_date: NaiveDate,
        identities: Vec<Identity>,
        max_rounds: u32,
    ) -> SubjectMap {
        let mut known: BTreeSet<Identity> = identities.into_iter().collect();
        // Systems serving the controller; one never described is described now,
        // and one that cannot be described is a failure, not an absence.
        let mut serving: Vec<(String, Option<Capabilities>)> = Vec::new();
        for id in self.systems.ids() {
            // Take the known capabilities first: describe_one needs the write lock.
            let known_caps = self
                .state
                .read()
                .await
                .get(&id)
                .and_then(|s| s.capabilities.clone());
            let caps = match known_caps {
                Some(c) => Some(c),
                None => self.describe_one(&id).await,
            };
            match caps {
                Some(c) if !c.controllers.contains(controller) => {}
                other => serving.push((id, other)),
            }
        }
        let mut results: BTreeMap<String, SystemLocation> = serving
            .iter()
            .map(|(id, caps)| {
                let failed = caps.is_none();
                (
                    id.clone(),
                    SystemLocation {
                        system_id: id.clone(),
                        outcome: if failed {
                            Outcome::Failed
                        } else {
                            Outcome::NoAcceptedIdentity
                        },
                        stores: BTreeMap::new(),
                        error_reason: failed.then(|| "DESCRIBE_FAILED".to_owned()),
                        asked_with: BTreeSet::new(),
                    },
                )
            })
            .collect();
        let mut asked: BTreeMap<String, BTreeSet<Identity>> = BTreeMap::new();
        let mut rounds = 0;
        for round in 1..=max_rounds.clamp(1, MAX_ROUNDS) {
            let work: Vec<(String, Vec<Identity>)> = serving
                .iter()
                .filter_map(|(id, caps)| {
                    let caps = caps.as_ref()?;
                    let done = asked.get(id);
                    let ids: Vec<Identity> = known
                        .iter()
                        .filter(|i| {
                            caps.accepted.contains(&i.kind())
                                && done.is_none_or(|d| !d.contains(*i))
                        })
                        .cloned()
                        .collect();
                    (!ids.is_empty()).then(|| (id.clone(), ids))
                })
                .collect();
            if work.is_empty() {
                break;
            }
            // Which systems are asked with which kinds of identity (never
            // the values): why a system was or was not asked.
            if tracing::enabled!(tracing::Level::DEBUG) {
                let asking: Vec<(&str, Vec<IdentityType>)> = work
                    .iter()
                    .map(|(id, ids)| (id.as_str(), ids.iter().map(Identity::kind).collect()))
                    .collect();
                tracing::debug!(request = request_id, round, systems = ?asking, "locate round");
            }
            rounds = round;
            let calls = work.iter().map(|(id, ids)| {
                let header = Header {
                    request_id: request_id.to_owned(),
                    controller: controller.clone(),
                    due_date,
                    idempotency_key: format!("{request_id}:{id}:locate:{round}"),
                };
                async move {
                    let res =
                        tokio::time::timeout(self.timeout, self.systems.locate(id, &header, ids))
                            .await
                            .unwrap_or(Err(SystemError::TimedOut));
                    (id.clone(), ids.clone(), res)
                }
            });
            let answers = futures_util::future::join_all(calls).await;
            for (id, ids, res) in answers {
                let loc = results
                    .get_mut(&id)
                    .expect("every serving system has a result");
                loc.asked_with.extend(ids.iter().map(Identity::kind));
                asked.entry(id.clone()).or_default().extend(ids);
                match res {
                    Ok(found) => {
                        if !found.stores.is_empty()
                            && !matches!(loc.outcome, Outcome::Failed | Outcome::TimedOut)
                        {
                            loc.outcome = Outcome::Found;
                        } else if loc.outcome == Outcome::NoAcceptedIdentity {
                            loc.outcome = Outcome::NotFound;
                        }
                        for (store, f) in found.stores {
                            let s = loc.stores.entry(store).or_default();
                            s.keys.extend(f.keys);
                            s.categories.extend(f.categories);
                        }
                        if found.linked_searched {
                            // The system followed them itself: asking it
                            // again with them would find nothing more.
                            loc.asked_with
                                .extend(found.linked.iter().map(Identity::kind));
                            asked
                                .entry(id.clone())
                                .or_default()
                                .extend(found.linked.iter().cloned());
                        }
                        known.extend(found.linked);
                    }
                    Err(e) => {
                        tracing::warn!(request = request_id, system = %id, error = %e, "locate failed");
                        loc.outcome = if e == SystemError::TimedOut {
                            Outcome::TimedOut
                        } else {
                            Outcome::Failed
                        };
                        loc.error_reason = Some(match e {
                            SystemError::TimedOut => "TIMED_OUT".to_owned(),
                            SystemError::Failed(r) => r,
                        });
                    }
                }
            }
        }
        // A system found nothing in an earlier round but something later: Found wins.
        for loc in results.values_mut() {
            if loc.outcome == Outcome::NotFound && !loc.stores.is_empty() {
                loc.outcome = Outcome::Found;
            }
        }
        let systems: Vec<SystemLocation> = results.into_values().collect();
        let partial = systems
            .iter()
            .any(|s| matches!(s.outcome, Outcome::Failed | Outcome::TimedOut));
        SubjectMap {
            identities: known,
            systems,
            partial,
            rounds,
        }
    }
}
