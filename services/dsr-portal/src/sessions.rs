//! Browser sessions, held on the server: the cookie is only a random key.
//! A session remembers what the person is doing (the right, the company,
//! the challenge and then the request's id) and the subject its calls to
//! the mesh carry (random, until the person proves who they are: then a
//! keyed hash of the address they proved); never an identity value (a rectification's
//! correct values stay only until the request is submitted). Sessions end after
//! their time to live and are bounded in number (the oldest goes first).

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use dsr_domain::clock::Clock;
use rand::RngCore as _;

/// What one browser is doing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Session {
    /// The subject of this session's tokens to the mesh: random, or once
    /// `proven` the person's keyed hash.
    pub subject: String,
    /// The right chosen (`access`, `portability`, …).
    pub right: String,
    /// The controller's organisation number.
    pub controller: String,
    /// For a restriction: the ground chosen.
    pub ground: String,
    /// For a rectification: (category, correct value), held until the
    /// request is submitted, then dropped.
    pub corrections: Vec<(String, String)>,
    /// The identity service's challenge, once a code is sent.
    pub challenge_id: String,
    /// The request, once submitted.
    pub request_id: String,
    /// In the console: the signed-in case handler's id.
    pub handler: String,
    /// In the console: the scopes the handler's roles give.
    pub scopes: Vec<String>,
    /// A sign-in at the identity provider underway.
    pub attempt: crate::oidc::Attempt,
    /// The language of the page the sign-in started from.
    pub lang: String,
    /// Where the code went: "email" or "sms".
    pub method: String,
    /// For an objection: the purposes objected to.
    pub purposes: Vec<String>,
    /// The person proved who they are and `subject` is the key their
    /// requests are filed under (they may list them).
    pub proven: bool,
}

struct Entry {
    session: Session,
    touched: DateTime<Utc>,
}

/// Every open session.
pub struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
    ttl: chrono::Duration,
    max: usize,
    clock: Clock,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("ttl", &self.ttl)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

fn random_hex() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Sessions {
    /// Sessions that live `ttl` after their last use, at most `max`.
    pub fn new(ttl: chrono::Duration, max: usize, clock: Clock) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            ttl,
            max: max.max(1),
            clock,
        }
    }

    /// A new session; returns its key (the cookie's value).
    pub fn open(&self, session: Session) -> String {
        let key = random_hex();
        let now = self.clock.now();
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, e| now - e.touched < self.ttl);
        if map.len() >= self.max
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.touched)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            key.clone(),
            Entry {
                session: Session {
                    subject: format!("person:{}", random_hex()),
                    ..session
                },
                touched: now,
            },
        );
        key
    }

    /// The session under `key`, if it is still alive.
    pub fn get(&self, key: &str) -> Option<Session> {
        let now = self.clock.now();
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get_mut(key) {
            Some(e) if now - e.touched < self.ttl => {
                e.touched = now;
                Some(e.session.clone())
            }
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Ends the session under `key` (signed out, or replaced after a
    /// sign-in so that a key seen before it is worth nothing after).
    pub fn close(&self, key: &str) {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }

    /// Changes the session under `key`; false when it is gone.
    pub fn update(&self, key: &str, f: impl FnOnce(&mut Session)) -> bool {
        let now = self.clock.now();
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get_mut(key) {
            Some(e) if now - e.touched < self.ttl => {
                f(&mut e.session);
                e.touched = now;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_end_by_the_clock_and_stay_bounded() {
        let clock = Clock::starting_at(Utc::now());
        let s = Sessions::new(chrono::Duration::minutes(30), 2, clock.clone());
        let a = s.open(Session::default());
        let subject = s.get(&a).unwrap().subject;
        assert!(subject.starts_with("person:") && subject.len() > 20);
        assert!(s.update(&a, |x| x.right = "access".into()));
        assert_eq!(s.get(&a).unwrap().right, "access");
        clock.advance(chrono::Duration::minutes(31));
        assert!(s.get(&a).is_none(), "expired");
        let b = s.open(Session::default());
        clock.advance(chrono::Duration::seconds(1));
        let c = s.open(Session::default());
        let d = s.open(Session::default());
        assert!(s.get(&b).is_none(), "the oldest made room");
        assert!(s.get(&c).is_some() && s.get(&d).is_some());
        assert_ne!(c, d);
    }
}
