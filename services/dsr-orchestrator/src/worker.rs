//! The worker: claims runnable requests from the ledger's queue and runs
//! their next step against the mesh, with bounded retries (exponential
//! backoff with jitter) and a lease kept alive while the step runs. Steps
//! are idempotent downstream (Locate reads; export builds one package per
//! request), so an attempt cut off by a crash is simply run again, and its
//! completion is recorded once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dsr_domain::identity::Organisationsnummer;
use rand::Rng as _;
use tokio::sync::{Notify, Semaphore, broadcast, watch};
use tracing::Instrument as _;

use crate::feed::Change;
use crate::ledger::{Ledger, Request};
use crate::mesh::{Call, CallError, Discovery, Erasure, Executed, Export, Verification};
use crate::metrics::Metrics;
use crate::queue::{Claim, Outcome, step_for};

/// How the worker runs.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// This worker's id (in leases and the step log), e.g. the pod name.
    pub worker_id: String,
    /// How long a claim holds without renewal.
    pub lease: Duration,
    /// How often to look for work when idle.
    pub poll: Duration,
    /// Requests worked on at once.
    pub concurrency: usize,
    /// First retry delay.
    pub backoff_base: Duration,
    /// Longest retry delay.
    pub backoff_max: Duration,
    /// Attempts of one step before it waits for a person.
    pub max_attempts: u32,
    /// Deadline of each downstream call.
    pub call_timeout: Duration,
    /// Controllers whose requests a case handler approves before export.
    pub approval_controllers: BTreeSet<Organisationsnummer>,
    /// How strongly each kind of request must be verified: a kind that
    /// needs more than a code (Low) sends none, and waits in VERIFYING for a
    /// stronger proof (`Verify` with the IdP's or a case handler's token).
    pub assurance: crate::intake::AssurancePolicy,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: format!("worker-{}", std::process::id()),
            lease: Duration::from_secs(30),
            poll: Duration::from_millis(500),
            concurrency: 16,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            max_attempts: 50,
            call_timeout: Duration::from_secs(60),
            approval_controllers: BTreeSet::new(),
            assurance: crate::intake::AssurancePolicy::default(),
        }
    }
}

/// The services the steps call.
#[derive(Clone)]
pub struct Mesh {
    /// Identity verification.
    pub verification: Arc<dyn Verification>,
    /// Discovery.
    pub discovery: Arc<dyn Discovery>,
    /// Export.
    pub export: Arc<dyn Export>,
    /// Erasure.
    pub erasure: Arc<dyn Erasure>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mesh(..)")
    }
}

/// The delay before retry `attempt` (1-based): `base · 2^(attempt-1)`,
/// capped at `max`, then drawn uniformly from its upper half (jitter, so
/// that requests failing together do not retry together).
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let d = exp.min(max);
    let half = d / 2;
    half + rand::thread_rng().gen_range(Duration::ZERO..=half)
}

/// The worker.
#[derive(Clone, Debug)]
pub struct Worker {
    ledger: Ledger,
    mesh: Mesh,
    cfg: Arc<WorkerConfig>,
    wake: Arc<Notify>,
    changes: broadcast::Sender<Change>,
    metrics: Metrics,
}

impl Worker {
    /// A worker over `ledger`. `wake` is notified when work arrives;
    /// `changes` carries the ids of requests it moved.
    pub fn new(
        ledger: Ledger,
        mesh: Mesh,
        cfg: WorkerConfig,
        wake: Arc<Notify>,
        changes: broadcast::Sender<Change>,
        metrics: Metrics,
    ) -> Self {
        Self {
            ledger,
            mesh,
            cfg: Arc::new(cfg),
            wake,
            changes,
            metrics,
        }
    }

    /// Runs until `shutdown` turns true, then lets the steps in progress
    /// finish.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let permits = Arc::new(Semaphore::new(self.cfg.concurrency.max(1)));
        tracing::info!(worker = %self.cfg.worker_id, "worker started");
        loop {
            if *shutdown.borrow() {
                break;
            }
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("semaphore open"),
                _ = shutdown.changed() => break,
            };
            match self
                .ledger
                .claim_and_begin(&self.cfg.worker_id, self.cfg.lease)
                .await
            {
                Ok(Some((claim, r, begun))) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        me.run_claim(claim, r, begun).await;
                        drop(permit);
                    });
                }
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        () = tokio::time::sleep(self.cfg.poll) => {}
                        () = self.wake.notified() => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    drop(permit);
                    tracing::warn!(error = %e, "cannot claim work");
                    tokio::time::sleep(self.cfg.poll).await;
                }
            }
        }
        let n = u32::try_from(self.cfg.concurrency.max(1)).unwrap_or(u32::MAX);
        let _ = permits.acquire_many(n).await;
        tracing::info!(worker = %self.cfg.worker_id, "worker stopped");
    }

    /// Runs the claimed request's steps one after another while it has
    /// one to run and the lease holds, in a span of the trace of the call
    /// that submitted it.
    async fn run_claim(&self, claim: Claim, r: Request, begun: Option<i64>) {
        let span = tracing::info_span!(
            "work",
            otel.name = "work on request",
            dsr.request.id = %r.id,
            dsr.request.kind = r.kind.as_str(),
            worker = %self.cfg.worker_id,
        );
        if let Some(tp) = &r.trace_parent {
            dsr_telemetry::propagation::adopt_traceparent(&span, tp);
        }
        self.run_steps(claim, r, begun).instrument(span).await;
    }

    /// Runs the steps; `begun` is the log row of the first one's attempt
    /// when the claim began it.
    async fn run_steps(&self, claim: Claim, mut r: Request, mut begun: Option<i64>) {
        let renew = async {
            let mut wait = self.cfg.lease / 3;
            loop {
                tokio::time::sleep(wait).await;
                match self.ledger.renew(&claim, self.cfg.lease).await {
                    Ok(true) => wait = self.cfg.lease / 3,
                    Ok(false) => return,
                    Err(e) => {
                        // A busy database: try again soon, not a third of
                        // the lease later, or the lease lapses under load.
                        tracing::warn!(error = %e, "cannot renew the lease");
                        wait = (self.cfg.lease / 20).max(Duration::from_millis(100));
                    }
                }
            }
        };
        tokio::pin!(renew);
        let actor = format!("service:orchestrator/{}", self.cfg.worker_id);
        // The next step's attempt, when the claim or the previous
        // completion began it.
        loop {
            let Some(step) = step_for(r.kind, r.state) else {
                let _ = self.ledger.release(&claim).await;
                return;
            };
            let row = match begun.take() {
                Some(row) => row,
                None => match self
                    .ledger
                    .start_step(&claim, step, &self.cfg.worker_id)
                    .await
                {
                    Ok((row, _attempt)) => row,
                    Err(e) => {
                        tracing::warn!(error = %e, step, "cannot start the step");
                        return;
                    }
                },
            };
            let started = Instant::now();
            let step_span = tracing::info_span!(
                "step",
                otel.name = %format!("step {step}"),
                step,
                attempt = r.attempts + 1,
            );
            let result = tokio::select! {
                res = self.execute(step, &r).instrument(step_span) => Some(res),
                () = &mut renew => None,
            };
            let elapsed = started.elapsed();
            match result {
                None => {
                    tracing::warn!(
                        step,
                        "lease lost; the step is left to the worker that holds it"
                    );
                    return;
                }
                Some(Ok(outcome)) => {
                    match self
                        .ledger
                        .complete_step(&claim, row, outcome, &actor, Some(&self.cfg.worker_id))
                        .await
                    {
                        Ok((next, next_row)) => {
                            self.metrics.step_done(step, "done", elapsed);
                            tracing::info!(step, state = %next.state, "step done");
                            let _ = self.changes.send(Change::written(&next));
                            if next_row.is_none() {
                                // The lease went back with the request: its
                                // next step, if any, waits for a person or a
                                // date, and is claimed again then.
                                return;
                            }
                            r = next;
                            begun = next_row;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, step, "cannot record the step as done");
                            return;
                        }
                    }
                }
                Some(Err(e)) => {
                    let failures = r.attempts + 1;
                    // A step waiting on people (a vendor's open task) is
                    // asked again at the longest backoff for as long as it
                    // takes; the vendor's reminders and escalation run at
                    // the system.
                    let waiting = e.is_waiting();
                    let retry_at = (e.retryable && (waiting || failures < self.cfg.max_attempts))
                        .then(|| {
                            self.ledger.clock().now()
                                + if waiting {
                                    self.cfg.backoff_max
                                } else {
                                    backoff(failures, self.cfg.backoff_base, self.cfg.backoff_max)
                                }
                        });
                    self.metrics.step_done(step, "failed", elapsed);
                    tracing::warn!(error = %e, step, failures, retry = retry_at.is_some(), "step failed");
                    if let Err(err) = self
                        .ledger
                        .fail_step(&claim, row, &e.to_string(), retry_at)
                        .await
                    {
                        tracing::warn!(error = %err, "cannot record the failure");
                    }
                    let _ = self.changes.send(Change::of(&r.id));
                    return;
                }
            }
        }
    }

    async fn execute(&self, step: &str, r: &Request) -> Result<Outcome, CallError> {
        let call = Call {
            request_id: r.id.clone(),
            controller: r.controller.clone(),
            due_date: r.deadline.due(),
            submitted_by: r.submitted_by.clone(),
            timeout: self.cfg.call_timeout,
        };
        match step {
            "verify" => {
                if r.verified.is_some() {
                    return Ok(Outcome::Verified);
                }
                if self.cfg.assurance.required(r.kind) > dsr_auth::verification::Assurance::Low {
                    // A code could not be enough: none is sent.
                    return Ok(Outcome::ChallengeStarted(String::new()));
                }
                let c = self
                    .mesh
                    .verification
                    .start(&call, &r.identities, &r.language)
                    .await?;
                Ok(Outcome::ChallengeStarted(c.id))
            }
            "locate" => {
                let ids = r.verified.clone().unwrap_or_default();
                let map = self.mesh.discovery.locate(&call, &ids).await?;
                if map.partial && crate::mesh::only_waiting(&map.failures()) {
                    return Err(CallError::waiting("discovery", &map.failures()));
                }
                if map.partial {
                    return Err(CallError {
                        service: "discovery".into(),
                        reason: format!("partial subject map ({})", map.failures().join(", ")),
                        retryable: true,
                    });
                }
                Ok(Outcome::Located {
                    needs_approval: self.cfg.approval_controllers.contains(&r.controller),
                    map,
                })
            }
            "export" => {
                let map = r.subject_map.as_ref().ok_or_else(|| CallError {
                    service: "orchestrator".into(),
                    reason: "no subject map recorded".into(),
                    retryable: false,
                })?;
                let p = self
                    .mesh
                    .export
                    .build(&call, r.kind, &r.language, map)
                    .await?;
                Ok(Outcome::Exported(p))
            }
            "plan" => {
                let map = r.subject_map.as_ref().ok_or_else(|| CallError {
                    service: "orchestrator".into(),
                    reason: "no subject map recorded".into(),
                    retryable: false,
                })?;
                let plan = self.mesh.erasure.plan(&call, map).await?;
                Ok(Outcome::Planned {
                    plan,
                    needs_approval: self.cfg.approval_controllers.contains(&r.controller),
                })
            }
            "execute" => {
                let e = self.mesh.erasure.execute(&call).await?;
                complete(e)
            }
            "apply" => {
                let (Some(map), Some(order)) = (r.subject_map.as_ref(), r.write_order.as_ref())
                else {
                    return Err(CallError {
                        service: "orchestrator".into(),
                        reason: "no subject map or write order recorded".into(),
                        retryable: false,
                    });
                };
                // Art. 18(3): the person is told before a lift; when the
                // mesh tells them, the lift waits for its letter.
                let told;
                let order = if let dsr_domain::request::WriteOrder::Lift {
                    person_informed_at: None,
                } = order
                {
                    match self.ledger.lift_letter_sent(&r.id).await {
                        Ok(Some(at)) => {
                            told = dsr_domain::request::WriteOrder::Lift {
                                person_informed_at: Some(at),
                            };
                            &told
                        }
                        Ok(None) | Err(crate::letters::LiftNotice::Unknown) => {
                            return Err(CallError {
                                service: "orchestrator".into(),
                                reason: "the restriction-lifted letter is not sent yet".into(),
                                retryable: true,
                            });
                        }
                        Err(crate::letters::LiftNotice::NotSent) => {
                            return Err(CallError {
                                service: "orchestrator".into(),
                                reason: "the restriction-lifted letter could not be sent: \
                                         tell the person, then submit the lift with the time"
                                    .into(),
                                retryable: false,
                            });
                        }
                    }
                } else {
                    order
                };
                let e = self.mesh.erasure.apply(&call, order, map).await?;
                complete(e)
            }
            "deferred" => {
                let e = self
                    .mesh
                    .erasure
                    .deferred(&call, self.ledger.clock().now().date_naive())
                    .await?;
                complete(e)
            }
            other => Err(CallError {
                service: "orchestrator".into(),
                reason: format!("unknown step {other}"),
                retryable: false,
            }),
        }
    }
}

/// An execution every system answered is the step's outcome; one with a
/// system still to answer is a failure worth retrying (the next attempt
/// asks only the systems without a receipt).
fn complete(e: Executed) -> Result<Outcome, CallError> {
    if e.complete {
        Ok(Outcome::Executed(e))
    } else if crate::mesh::only_waiting(&e.failures) {
        Err(CallError::waiting("erasure", &e.failures))
    } else {
        Err(CallError {
            service: "erasure".into(),
            reason: format!("incomplete ({})", e.failures.join(", ")),
            retryable: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for _ in 0..200 {
            let d1 = backoff(1, base, max);
            assert!(d1 >= Duration::from_millis(50) && d1 <= base, "{d1:?}");
            let d3 = backoff(3, base, max);
            assert!(d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400));
            let d30 = backoff(30, base, max);
            assert!(d30 >= Duration::from_secs(1) && d30 <= max);
        }
    }
}
