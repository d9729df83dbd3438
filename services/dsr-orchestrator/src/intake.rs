//! Proving who the person is: verification tokens checked offline against
//! the identity service's keys (at submission, or later), and the person's
//! one-time code completed with the identity service for a request waiting
//! in VERIFYING. The gRPC handlers validate the wire and map the errors;
//! the flow lives here.

use std::sync::Arc;
use std::time::Duration;

use dsr_auth::Validator;
use dsr_auth::verification::{Assurance, TokenIdentity, VerificationClaims};
use dsr_domain::identity::{Identity, Organisationsnummer};
use dsr_domain::request::Kind;
use dsr_domain::request::State;

use crate::ledger::{self, Ledger, Request};
use crate::mesh::{Call, Verification};

/// What the person offers as proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Proof {
    /// The one-time code they received.
    Code(String),
    /// A verification token a portal obtained.
    Token(String),
}

/// Why a proof was not accepted. No personal data.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The token does not verify, or vouches for no one.
    #[error("{0}")]
    BadToken(String),
    /// The request is not waiting for verification.
    #[error("the request is not waiting for verification")]
    NotVerifying,
    /// The code does not match.
    #[error("the code does not match")]
    CodeMismatch,
    /// The identity service refused the challenge (a stable reason, e.g.
    /// CHALLENGE_EXPIRED or CHALLENGE_LOCKED).
    #[error("the challenge cannot be completed: {0}")]
    ChallengeRefused(String),
    /// The identity service did not answer.
    #[error("identity verification is unavailable")]
    Unavailable,
    /// The proof is weaker than the kind of request needs.
    #[error("the request needs {needed:?} assurance; the proof gave {got:?}")]
    AssuranceTooLow {
        /// Needed.
        needed: Assurance,
        /// Given.
        got: Assurance,
    },
    /// The token vouches for someone else: not every identity the request
    /// claims.
    #[error("the verification token does not vouch for every identity the request claims")]
    NotThePerson,
    /// The ledger refused or failed.
    #[error(transparent)]
    Ledger(#[from] ledger::Error),
}

/// How strongly a person must be verified, per kind of request (Low for
/// a kind not named): an erasure of data kept under the anti-money-
/// laundering rules, say, may ask BankID through the identity provider or a
/// case handler's attestation rather than an email code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AssurancePolicy(std::collections::BTreeMap<Kind, Assurance>);

impl AssurancePolicy {
    /// From configuration: kind name → "low", "substantial", "high" or
    /// "attested". The error names the entry.
    pub fn parse(entries: &std::collections::BTreeMap<String, String>) -> Result<Self, String> {
        let mut m = std::collections::BTreeMap::new();
        for (kind, level) in entries {
            let k = Kind::parse(kind).ok_or_else(|| format!("{kind}: not a kind of request"))?;
            let a = match level.as_str() {
                "low" => Assurance::Low,
                "substantial" => Assurance::Substantial,
                "high" => Assurance::High,
                "attested" => Assurance::Attested,
                other => {
                    return Err(format!(
                        "{kind}: {other} is not low, substantial, high or attested"
                    ));
                }
            };
            m.insert(k, a);
        }
        Ok(Self(m))
    }

    /// What `kind` needs.
    pub fn required(&self, kind: Kind) -> Assurance {
        self.0.get(&kind).copied().unwrap_or(Assurance::Low)
    }

    /// Whether `got` is enough for `kind`. A case handler's attestation
    /// (the person identified in person or by document) is enough for any.
    pub fn enough(&self, kind: Kind, got: Assurance) -> bool {
        got == Assurance::Attested || got >= self.required(kind)
    }
}

/// What a verification token vouches for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vouched {
    /// The verified identities.
    pub identities: Vec<Identity>,
    /// The token's id: it verifies one request, once.
    pub jti: String,
    /// How strongly.
    pub assurance: dsr_auth::verification::Assurance,
}

impl Vouched {
    /// Whether every one of `claimed` is among the verified identities.
    pub fn covers(&self, claimed: &[Identity]) -> bool {
        claimed.iter().all(|c| self.identities.contains(c))
    }
}

/// What a submission's token gives the request.
#[derive(Clone, Debug)]
pub struct SubmissionProof {
    /// The identities the request claims.
    pub claimed: Vec<Identity>,
    /// What verified it, when the token was strong enough.
    pub verified: Option<Vouched>,
}

/// Checks tokens and completes challenges.
#[derive(Clone)]
pub struct Intake {
    ledger: Ledger,
    tokens: Arc<Validator>,
    verification: Arc<dyn Verification>,
    assurance: AssurancePolicy,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Intake(..)")
    }
}

/// How long Submit waits for the identity service to say whether a code
/// could go now; without an answer the request is recorded as usual.
const CODE_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

impl Intake {
    /// Over `ledger`, checking tokens with `tokens` (the identity service's
    /// keys, issuer `dsr-identity`, audience `dsr-mesh`), completing codes
    /// through `verification`.
    pub fn new(
        ledger: Ledger,
        tokens: Arc<Validator>,
        verification: Arc<dyn Verification>,
    ) -> Self {
        Self {
            ledger,
            tokens,
            verification,
            assurance: AssurancePolicy::default(),
        }
    }

    /// The same intake requiring `assurance` per kind of request.
    #[must_use]
    pub fn with_assurance(mut self, assurance: AssurancePolicy) -> Self {
        self.assurance = assurance;
        self
    }

    /// The assurance policy.
    pub fn assurance(&self) -> &AssurancePolicy {
        &self.assurance
    }

    /// Before a request that will send the person a code is recorded: how
    /// long until the identity service would send one, when it rate-limits
    /// them now (too many codes lately). The portal is then told at once
    /// instead of the request retrying unheard. `None` when a code could go,
    /// when the kind needs more than a code, when a request is already
    /// recorded under `idempotency_key` (a resubmission answers as before),
    /// or when the identity service does not answer (the verify step then
    /// tries as usual).
    pub async fn code_wait(
        &self,
        kind: Kind,
        controller: &Organisationsnummer,
        claimed: &[Identity],
        idempotency_key: &str,
    ) -> Result<Option<Duration>, IntakeError> {
        if self.assurance.required(kind) > Assurance::Low
            || self.ledger.recorded(idempotency_key).await?
        {
            return Ok(None);
        }
        // No request yet: the call carries the controller alone.
        let call = Call {
            request_id: String::new(),
            controller: controller.clone(),
            due_date: self.ledger.clock().today(),
            submitted_by: None,
            timeout: CODE_CHECK_TIMEOUT,
        };
        Ok(self
            .verification
            .code_wait(&call, claimed)
            .await
            .unwrap_or_else(|e| {
                tracing::debug!(reason = %e, "the code check at submission did not answer");
                None
            }))
    }

    /// What a verification token vouches for: its identities, its id and
    /// its assurance.
    pub fn vouched(&self, token: &str) -> Result<Vouched, IntakeError> {
        let claims: VerificationClaims = self
            .tokens
            .decode(token, &["exp", "iss", "aud", "sub"])
            .map_err(|e| {
            IntakeError::BadToken(format!("not a valid verification token ({})", e.reason()))
        })?;
        let ids: Vec<Identity> = claims
            .identities
            .iter()
            .filter_map(TokenIdentity::to_identity)
            .collect();
        if ids.is_empty() {
            return Err(IntakeError::BadToken(
                "the token vouches for no identity".into(),
            ));
        }
        Ok(Vouched {
            identities: ids,
            jti: claims.jti,
            assurance: claims.acr,
        })
    }

    /// What a submission with `token` records for a request of `kind`
    /// claiming `claimed`: an error when it is no token, or vouches for
    /// someone else. A token strong enough for the kind verifies the
    /// request. One too weak does not (the request waits in VERIFYING for a
    /// stronger proof and the token is not used up), but it still names the
    /// person: without claimed identities the request claims what it
    /// vouched for, so only a proof of that person moves it on.
    pub fn submission_proof(
        &self,
        token: &str,
        kind: Option<Kind>,
        claimed: Vec<Identity>,
    ) -> Result<SubmissionProof, IntakeError> {
        let vouched = self.vouched(token)?;
        if !vouched.covers(&claimed) {
            return Err(IntakeError::NotThePerson);
        }
        if kind.is_none_or(|k| self.assurance.enough(k, vouched.assurance)) {
            return Ok(SubmissionProof {
                claimed,
                verified: Some(vouched),
            });
        }
        Ok(SubmissionProof {
            claimed: if claimed.is_empty() {
                vouched.identities
            } else {
                claimed
            },
            verified: None,
        })
    }

    /// Verifies a request waiting in VERIFYING with the person's proof;
    /// on success the request moves on to locating.
    pub async fn verify(
        &self,
        id: &str,
        proof: Proof,
        actor: &str,
    ) -> Result<Request, IntakeError> {
        let r = self.ledger.get(id).await?;
        if r.state != State::Verifying {
            return Err(IntakeError::NotVerifying);
        }
        let token = match proof {
            Proof::Token(t) => t,
            Proof::Code(code) => {
                let call = Call {
                    request_id: r.id.clone(),
                    controller: r.controller.clone(),
                    due_date: r.deadline.due(),
                    submitted_by: r.submitted_by.clone(),
                    timeout: Duration::from_secs(10),
                };
                let challenge = r.challenge_id.clone().unwrap_or_default();
                match self.verification.complete(&call, &challenge, &code).await {
                    Ok(t) => t,
                    Err(e) if e.retryable => return Err(IntakeError::Unavailable),
                    Err(e) if e.reason == "CODE_MISMATCH" => {
                        return Err(IntakeError::CodeMismatch);
                    }
                    Err(e) => return Err(IntakeError::ChallengeRefused(e.reason)),
                }
            }
        };
        let vouched = self.vouched(&token)?;
        // The proof must be of this request's person: every identity they
        // claimed, vouched for (a request always names its person; one that
        // does not is never verified by whoever comes).
        if r.identities.is_empty() || !vouched.covers(&r.identities) {
            return Err(IntakeError::NotThePerson);
        }
        if !self.assurance.enough(r.kind, vouched.assurance) {
            return Err(IntakeError::AssuranceTooLow {
                needed: self.assurance.required(r.kind),
                got: vouched.assurance,
            });
        }
        self.ledger.use_verification(&vouched.jti, id).await?;
        Ok(self.ledger.verified(id, &vouched.identities, actor).await?)
    }
}
