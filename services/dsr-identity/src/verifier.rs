//! The verification rules: one-time codes (CSPRNG, keyed hash, 10 minutes,
//! 5 attempts, a rate limit per identity), identity-provider assertions, and
//! case handlers' attestations.
//!
//! Logs name challenges and outcomes, never identities or codes.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use dsr_auth::Validator;
use dsr_domain::identity::{Identity, IdentityType};
use hmac::{Hmac, Mac};
use rand::Rng as _;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder,
};
use serde::Deserialize;
use sha2::Sha256;

use crate::entity::{attempt, challenge};
use crate::notifier::{Message, Notifier};
use crate::tokens::{Assurance, Issued, Method, TokenIdentity, TokenIssuer};

/// From `now` to the start of the next clock hour (at least a second).
fn until_next_hour(now: DateTime<Utc>) -> Duration {
    Duration::seconds(3600 - now.timestamp().rem_euclid(3600)).max(Duration::seconds(1))
}

/// Why a verification failed. Messages hold no personal data.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input: (field, description).
    #[error("invalid argument")]
    InvalidArgument(Vec<(String, String)>),
    /// Too many codes for this identity in the last hour.
    #[error("rate limited")]
    RateLimited {
        /// How long until a code can be sent again.
        retry_after: Duration,
    },
    /// No such challenge.
    #[error("challenge not found")]
    NotFound,
    /// The code has expired.
    #[error("challenge expired")]
    Expired,
    /// Too many wrong codes.
    #[error("challenge locked")]
    Locked,
    /// The challenge was already completed.
    #[error("challenge already used")]
    Used,
    /// A wrong code; `remaining` attempts are left.
    #[error("wrong code")]
    WrongCode {
        /// Attempts left before the challenge locks.
        remaining: u32,
    },
    /// The assertion does not verify or lacks what is needed.
    #[error("assertion rejected: {0}")]
    AssertionRejected(&'static str),
    /// No identity provider is configured.
    #[error("identity-provider assertions are not configured")]
    NoIdentityProvider,
    /// The code could not be delivered.
    #[error("delivery failed")]
    Delivery,
    /// The database or the signing key failed.
    #[error("internal: {0}")]
    Internal(String),
}

impl From<DbErr> for Error {
    fn from(e: DbErr) -> Self {
        Self::Internal(format!(
            "storage: {}",
            if matches!(e, DbErr::Conn(_) | DbErr::ConnectionAcquire(_)) {
                "unavailable"
            } else {
                "error"
            }
        ))
    }
}

/// Settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a code works.
    pub code_ttl: Duration,
    /// Wrong codes before a challenge locks.
    pub max_attempts: u32,
    /// Codes per identity per hour.
    pub per_hour: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            code_ttl: Duration::minutes(10),
            max_attempts: 5,
            per_hour: 5,
        }
    }
}

/// The channel a code goes by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Email.
    Email,
    /// SMS.
    Sms,
}

impl Channel {
    /// Whether `to` is the kind of address this channel sends to.
    fn expects(self, to: &Identity) -> Result<(), Error> {
        let expected = match self {
            Self::Email => IdentityType::Email,
            Self::Sms => IdentityType::Phone,
        };
        if to.kind() == expected {
            Ok(())
        } else {
            Err(Error::InvalidArgument(vec![(
                "claimed[0].type".into(),
                format!("the code goes to a {expected}: claim exactly one"),
            )]))
        }
    }

    fn method(self) -> Method {
        match self {
            Self::Email => Method::EmailCode,
            Self::Sms => Method::SmsCode,
        }
    }
}

/// A started code challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Started {
    /// Its id.
    pub challenge_id: String,
    /// When the code stops working.
    pub expires_at: DateTime<Utc>,
}

/// How a case handler identified the person.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// In person.
    InPerson,
    /// By document.
    Document,
}

/// The identity provider's claims DSR Mesh reads.
#[derive(Debug, Deserialize)]
struct IdpClaims {
    #[serde(default)]
    acr: String,
    #[serde(default)]
    personnummer: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: bool,
}

/// The verification service.
#[derive(Clone)]
pub struct Verifier {
    db: DatabaseConnection,
    settings: Settings,
    notifier: Arc<dyn Notifier>,
    issuer: TokenIssuer,
    hmac_key: [u8; 32],
    idp: Option<Arc<Validator>>,
    clock: dsr_domain::clock::Clock,
    code_message: crate::texts::CodeMessage,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Verifier {
    /// A verifier over `db` (migrated). `hmac_key` keys the code and
    /// identity hashes; `idp` verifies identity-provider assertions.
    pub fn new(
        db: DatabaseConnection,
        settings: Settings,
        notifier: Arc<dyn Notifier>,
        issuer: TokenIssuer,
        hmac_key: [u8; 32],
        idp: Option<Arc<Validator>>,
    ) -> Self {
        Self {
            db,
            settings,
            notifier,
            issuer,
            hmac_key,
            idp,
            clock: dsr_domain::clock::Clock::system(),
            code_message: crate::texts::CodeMessage::shipped(),
        }
    }

    /// Writes codes with `message` (the company's own wording) instead of
    /// the shipped one.
    #[must_use]
    pub fn with_code_message(mut self, message: crate::texts::CodeMessage) -> Self {
        self.code_message = message;
        self
    }

    /// Reads the time from `clock`: codes expire and expired challenges
    /// are purged by it.
    #[must_use]
    pub fn with_clock(mut self, clock: dsr_domain::clock::Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The JWKS verification tokens are checked with.
    pub fn jwks(&self) -> String {
        self.issuer.jwks()
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.hmac_key).expect("any key length");
        for p in parts {
            m.update(p);
            m.update(&[0]);
        }
        hex::encode(m.finalize().into_bytes())
    }

    async fn audit(
        &self,
        challenge_id: &str,
        method: &str,
        outcome: &str,
        actor: &str,
    ) -> Result<(), Error> {
        attempt::ActiveModel {
            challenge_id: Set(challenge_id.to_owned()),
            method: Set(method.to_owned()),
            outcome: Set(outcome.to_owned()),
            actor: Set(actor.to_owned()),
            at: Set(self.clock.now()),
            ..Default::default()
        }
        .insert(&self.db)
        .await?;
        tracing::info!(
            challenge = challenge_id,
            method,
            outcome,
            "verification attempt"
        );
        Ok(())
    }

    /// Sends a code to `to` (an email address or phone number matching
    /// `channel`). The answer is the same whoever the person is.
    pub async fn start_code(
        &self,
        to: Identity,
        channel: Channel,
        language: &str,
    ) -> Result<Started, Error> {
        channel.expects(&to)?;
        let now = self.clock.now();
        let identity_hash = self.identity_hash(&to);
        let limited = match self.wait_before_code(&identity_hash, now).await? {
            Some(wait) => Some(wait),
            None if !self.take_slot(&identity_hash, now).await? => Some(until_next_hour(now)),
            None => None,
        };
        if let Some(retry_after) = limited {
            self.audit("-", channel.method().as_str(), "rate_limited", "subject")
                .await?;
            return Err(Error::RateLimited { retry_after });
        }
        let id = uuid::Uuid::new_v4().to_string();
        let code = format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32));
        let expires_at = now + self.settings.code_ttl;
        let identities = serde_json::to_string(&[TokenIdentity::from_identity(&to)])
            .map_err(|e| Error::Internal(e.to_string()))?;
        challenge::ActiveModel {
            id: Set(id.clone()),
            method: Set(channel.method().as_str().to_owned()),
            identities: Set(identities),
            identity_hash: Set(identity_hash),
            code_hash: Set(self.mac(&[b"code", id.as_bytes(), code.as_bytes()])),
            attempts: Set(0),
            state: Set("pending".into()),
            created_at: Set(now),
            expires_at: Set(expires_at),
        }
        .insert(&self.db)
        .await?;
        let minutes = std::cmp::max(self.settings.code_ttl.num_minutes(), 1);
        let (subject, body) = self.code_message.write(language, &code, minutes);
        if self
            .notifier
            .send(&Message { to, subject, body })
            .await
            .is_err()
        {
            self.audit(&id, channel.method().as_str(), "delivery_failed", "subject")
                .await?;
            return Err(Error::Delivery);
        }
        self.audit(&id, channel.method().as_str(), "code_sent", "subject")
            .await?;
        Ok(Started {
            challenge_id: id,
            expires_at,
        })
    }

    /// Whether a code could be sent to `to` now, without sending one or
    /// recording anything: `RateLimited` (with how long to wait) when not.
    pub async fn check_code(&self, to: &Identity, channel: Channel) -> Result<(), Error> {
        channel.expects(to)?;
        let now = self.clock.now();
        match self.wait_before_code(&self.identity_hash(to), now).await? {
            Some(retry_after) => Err(Error::RateLimited { retry_after }),
            None => Ok(()),
        }
    }

    fn identity_hash(&self, to: &Identity) -> String {
        self.mac(&[
            b"identity",
            to.kind().as_str().as_bytes(),
            to.value().as_bytes(),
        ])
    }

    /// How long until a code may go to the identity: `None` when one may
    /// now. Two limits: `per_hour` codes in any sliding hour, and
    /// `per_hour` slots in each clock hour (see [`Self::take_slot`]).
    async fn wait_before_code(
        &self,
        identity_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, Error> {
        use crate::entity::rate_slot;
        let recent = challenge::Entity::find()
            .filter(challenge::Column::IdentityHash.eq(identity_hash))
            .filter(challenge::Column::CreatedAt.gt(now - Duration::hours(1)))
            .order_by_desc(challenge::Column::CreatedAt)
            .all(&self.db)
            .await?;
        let per_hour = usize::try_from(self.settings.per_hour).unwrap_or(usize::MAX);
        // The code that must leave the sliding hour before another may go.
        let sliding = (recent.len() >= per_hour)
            .then(|| recent.get(per_hour.saturating_sub(1)))
            .flatten()
            .map(|c| c.created_at + Duration::hours(1) - now);
        let hour = now.timestamp().div_euclid(3600);
        let taken = rate_slot::Entity::find()
            .filter(rate_slot::Column::Key.starts_with(format!("{identity_hash}:{hour}:")))
            .count(&self.db)
            .await?;
        let slots = (taken >= self.settings.per_hour).then(|| until_next_hour(now));
        Ok(match (sliding, slots) {
            (None, None) => None,
            (a, b) => Some(a.max(b).unwrap_or_default().max(Duration::seconds(1))),
        })
    }

    /// Takes one of this hour's `per_hour` slots for the identity: the
    /// database's unique key decides between parallel requests, so no more
    /// codes go out than the limit, whatever the concurrency. `false` when
    /// every slot is taken.
    async fn take_slot(&self, identity_hash: &str, now: DateTime<Utc>) -> Result<bool, Error> {
        use crate::entity::rate_slot;
        // Slots of past hours are spent.
        rate_slot::Entity::delete_many()
            .filter(rate_slot::Column::CreatedAt.lt(now - Duration::hours(2)))
            .exec(&self.db)
            .await?;
        let hour = now.timestamp().div_euclid(3600);
        for slot in 0..self.settings.per_hour {
            let taken = rate_slot::ActiveModel {
                key: Set(format!("{identity_hash}:{hour}:{slot}")),
                created_at: Set(now),
            }
            .insert(&self.db)
            .await;
            match taken {
                Ok(_) => return Ok(true),
                Err(e)
                    if matches!(
                        e.sql_err(),
                        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(false)
    }

    /// Checks a code. A wrong one counts an attempt; the last one locks the
    /// challenge.
    pub async fn complete(&self, challenge_id: &str, code: &str) -> Result<Issued, Error> {
        if !code.bytes().all(|b| b.is_ascii_digit()) || code.len() != 6 {
            return Err(Error::InvalidArgument(vec![(
                "code".into(),
                "6 digits".into(),
            )]));
        }
        let Some(c) = challenge::Entity::find_by_id(challenge_id.to_owned())
            .one(&self.db)
            .await?
        else {
            return Err(Error::NotFound);
        };
        match c.state.as_str() {
            "locked" => {
                self.audit(challenge_id, &c.method, "refused_locked", "subject")
                    .await?;
                return Err(Error::Locked);
            }
            "used" => {
                self.audit(challenge_id, &c.method, "refused_used", "subject")
                    .await?;
                return Err(Error::Used);
            }
            _ => {}
        }
        if self.clock.now() > c.expires_at {
            self.audit(challenge_id, &c.method, "refused_expired", "subject")
                .await?;
            return Err(Error::Expired);
        }
        // Count the attempt first, atomically, so parallel guesses cannot
        // exceed the limit.
        let counted = challenge::Entity::update_many()
            .col_expr(
                challenge::Column::Attempts,
                Expr::col(challenge::Column::Attempts).add(1),
            )
            .filter(challenge::Column::Id.eq(challenge_id))
            .filter(challenge::Column::State.eq("pending"))
            .filter(
                challenge::Column::Attempts
                    .lt(i32::try_from(self.settings.max_attempts).unwrap_or(i32::MAX)),
            )
            .exec(&self.db)
            .await?;
        if counted.rows_affected == 0 {
            self.audit(challenge_id, &c.method, "refused_locked", "subject")
                .await?;
            return Err(Error::Locked);
        }
        let attempts = u32::try_from(c.attempts).unwrap_or(0) + 1;
        let expected = self.mac(&[b"code", challenge_id.as_bytes(), code.as_bytes()]);
        if !constant_time_eq(expected.as_bytes(), c.code_hash.as_bytes()) {
            let remaining = self.settings.max_attempts.saturating_sub(attempts);
            if remaining == 0 {
                challenge::Entity::update_many()
                    .col_expr(challenge::Column::State, Expr::value("locked"))
                    .filter(challenge::Column::Id.eq(challenge_id))
                    .exec(&self.db)
                    .await?;
            }
            self.audit(
                challenge_id,
                &c.method,
                if remaining == 0 {
                    "wrong_code_locked"
                } else {
                    "wrong_code"
                },
                "subject",
            )
            .await?;
            return Err(Error::WrongCode { remaining });
        }
        let used = challenge::Entity::update_many()
            .col_expr(challenge::Column::State, Expr::value("used"))
            .filter(challenge::Column::Id.eq(challenge_id))
            .filter(challenge::Column::State.eq("pending"))
            .exec(&self.db)
            .await?;
        if used.rows_affected == 0 {
            return Err(Error::Used);
        }
        let identities: Vec<TokenIdentity> =
            serde_json::from_str(&c.identities).map_err(|e| Error::Internal(e.to_string()))?;
        let identities: Vec<Identity> = identities
            .iter()
            .filter_map(TokenIdentity::to_identity)
            .collect();
        let method = Method::parse(&c.method)
            .ok_or_else(|| Error::Internal("a challenge of an unknown method".into()))?;
        let issued = self
            .issuer
            .issue(challenge_id, method, Assurance::Low, identities)
            .map_err(|e| Error::Internal(e.to_string()))?;
        self.audit(challenge_id, &c.method, "verified", "subject")
            .await?;
        Ok(issued)
    }

    /// Sends a letter to `to` (an email address or a phone number) through
    /// the notifier; the text is not kept.
    pub async fn send_letter(&self, to: Identity, subject: &str, body: &str) -> Result<(), Error> {
        if !matches!(to.kind(), IdentityType::Email | IdentityType::Phone) {
            return Err(Error::InvalidArgument(vec![(
                "to".into(),
                "an email address or a phone number".into(),
            )]));
        }
        self.notifier
            .send(&Message {
                to,
                subject: subject.to_owned(),
                body: body.to_owned(),
            })
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "letter not delivered");
                Error::Delivery
            })
    }

    /// Verifies an identity provider's assertion and issues a token at its
    /// level with the identities it vouches for.
    pub async fn assertion(&self, jwt: &str) -> Result<Issued, Error> {
        let idp = self.idp.as_ref().ok_or(Error::NoIdentityProvider)?;
        let id = uuid::Uuid::new_v4().to_string();
        let claims: IdpClaims = match idp.decode(jwt, &["exp", "iss", "aud", "sub"]) {
            Ok(c) => c,
            Err(e) => {
                self.audit(&id, "idp_assertion", e.reason(), "subject")
                    .await?;
                return Err(Error::AssertionRejected(e.reason()));
            }
        };
        let acr = claims.acr.to_ascii_lowercase();
        let assurance = if acr.ends_with("high") {
            Assurance::High
        } else if acr.ends_with("substantial") {
            Assurance::Substantial
        } else if acr.ends_with("low") {
            Assurance::Low
        } else {
            self.audit(&id, "idp_assertion", "unknown_acr", "subject")
                .await?;
            return Err(Error::AssertionRejected("ASSERTION_ACR_UNKNOWN"));
        };
        let mut identities = Vec::new();
        if let Some(p) = claims.personnummer.as_deref() {
            identities.push(
                Identity::parse(IdentityType::Personnummer, p)
                    .map_err(|_| Error::AssertionRejected("ASSERTION_IDENTITY_INVALID"))?,
            );
        }
        if let (Some(e), true) = (claims.email.as_deref(), claims.email_verified) {
            identities.push(
                Identity::parse(IdentityType::Email, e)
                    .map_err(|_| Error::AssertionRejected("ASSERTION_IDENTITY_INVALID"))?,
            );
        }
        if identities.is_empty() {
            self.audit(&id, "idp_assertion", "no_identity", "subject")
                .await?;
            return Err(Error::AssertionRejected("ASSERTION_NO_IDENTITY"));
        }
        let issued = self
            .issuer
            .issue(&id, Method::IdpAssertion, assurance, identities)
            .map_err(|e| Error::Internal(e.to_string()))?;
        self.audit(&id, "idp_assertion", "verified", "subject")
            .await?;
        Ok(issued)
    }

    /// Records a case handler's attestation and issues a token.
    pub async fn attest(
        &self,
        handler: &str,
        identities: Vec<Identity>,
        evidence: Evidence,
        note: &str,
    ) -> Result<Issued, Error> {
        if identities.is_empty() {
            return Err(Error::InvalidArgument(vec![(
                "claimed".into(),
                "at least one identity".into(),
            )]));
        }
        if note.chars().count() > 500 {
            return Err(Error::InvalidArgument(vec![(
                "attestation.note".into(),
                "at most 500 characters".into(),
            )]));
        }
        let id = uuid::Uuid::new_v4().to_string();
        let outcome = match evidence {
            Evidence::InPerson => "attested_in_person",
            Evidence::Document => "attested_by_document",
        };
        let issued = self
            .issuer
            .issue(
                &id,
                Method::CaseHandlerAttestation,
                Assurance::Attested,
                identities,
            )
            .map_err(|e| Error::Internal(e.to_string()))?;
        self.audit(&id, "case_handler_attestation", outcome, handler)
            .await?;
        Ok(issued)
    }

    /// Deletes challenges that expired more than `grace` ago (their
    /// identities with them, from the database's log too); the audit rows
    /// stay. Returns how many.
    pub async fn purge(&self, grace: Duration) -> Result<u64, Error> {
        let res = challenge::Entity::delete_many()
            .filter(challenge::Column::ExpiresAt.lt(self.clock.now() - grace))
            .exec(&self.db)
            .await?;
        if res.rows_affected > 0 {
            dsr_store::scrub_log(&self.db).await?;
        }
        Ok(res.rows_affected)
    }

    /// Purges every `every` in the background.
    pub fn spawn_purge(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match this.purge(Duration::hours(1)).await {
                    Ok(n) if n > 0 => tracing::info!(purged = n, "expired challenges purged"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "purge failed"),
                }
                tokio::time::sleep(every).await;
            }
        })
    }
}
