//! The suppression list: an objection (to direct marketing above all,
//! Art. 21(3)) must hold for the person's records that arrive later, e.g.
//! when a marketing list with their email is imported again. The list keeps,
//! in the system's own database, a hash of each identity of the person
//! (never the identity) with the purposes objected to; a system checks new
//! records against it ([`Suppressions::purposes_of`]) before it processes
//! them for those purposes.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};
use sha2::{Digest, Sha256};

/// The hash kept for an identity of `kind` with its normalised `value` in
/// system `system_id` (hex SHA-256 over a versioned, system-bound input).
pub fn identity_hash(system_id: &str, kind: &str, value: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"dsr-suppression/1\n");
    h.update(system_id.as_bytes());
    h.update(b"\n");
    h.update(kind.as_bytes());
    h.update(b":");
    h.update(value.as_bytes());
    hex::encode(h.finalize())
}

/// The suppression list of one system.
#[derive(Clone, Debug)]
pub struct Suppressions {
    system_id: String,
}

impl Suppressions {
    /// The list of `system_id` (its table lives in the system's database).
    pub fn new(system_id: &str) -> Self {
        Self {
            system_id: system_id.to_owned(),
        }
    }

    /// The hash of an identity in this system.
    pub fn hash(&self, kind: &str, value: &str) -> String {
        identity_hash(&self.system_id, kind, value)
    }

    /// Records that the person with these identities (kind, normalised
    /// value) objected to `purposes`; inside the caller's transaction.
    #[allow(clippy::wildcard_enum_match_arm)]
    pub async fn add<C: ConnectionTrait>(
        &self,
        conn: &C,
        identities: &[(String, String)],
        purposes: &BTreeSet<String>,
    ) -> Result<u64, DbErr> {
        let backend = conn.get_database_backend();
        // PostgreSQL and SQLite (3.24+) take ON CONFLICT DO NOTHING; MySQL
        // and MariaDB INSERT IGNORE (the row is there: nothing to add).
        let sql = match backend {
            DbBackend::Postgres => {
                "INSERT INTO dsr_suppression (identity_hash, purpose, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
            }
            DbBackend::MySql => {
                "INSERT IGNORE INTO dsr_suppression (identity_hash, purpose, created_at) VALUES (?, ?, ?)"
            }
            _ => {
                "INSERT INTO dsr_suppression (identity_hash, purpose, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
            }
        };
        let mut added = 0;
        let hashes: BTreeSet<String> = identities.iter().map(|(k, v)| self.hash(k, v)).collect();
        for hash in &hashes {
            for p in purposes {
                added += conn
                    .execute_raw(Statement::from_sql_and_values(
                        backend,
                        sql,
                        [hash.clone().into(), p.clone().into(), Utc::now().into()],
                    ))
                    .await?
                    .rows_affected();
            }
        }
        Ok(added)
    }

    /// The whole list: per identity hash, the purposes objected to.
    pub async fn all<C: ConnectionTrait>(
        &self,
        conn: &C,
    ) -> Result<BTreeMap<String, BTreeSet<String>>, DbErr> {
        let rows = conn
            .query_all_raw(Statement::from_string(
                conn.get_database_backend(),
                "SELECT identity_hash, purpose FROM dsr_suppression".to_owned(),
            ))
            .await?;
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in rows {
            let hash: String = r.try_get_by_index(0)?;
            let purpose: String = r.try_get_by_index(1)?;
            out.entry(hash).or_default().insert(purpose);
        }
        Ok(out)
    }

    /// The purposes objected to by whoever holds any of `identities`,
    /// according to `list` (from [`Suppressions::all`]).
    pub fn purposes_of(
        &self,
        list: &BTreeMap<String, BTreeSet<String>>,
        identities: &[(String, String)],
    ) -> BTreeSet<String> {
        identities
            .iter()
            .filter_map(|(k, v)| list.get(&self.hash(k, v)))
            .flatten()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_bound_to_the_system_and_the_kind() {
        let a = identity_hash("crm", "email", "anna@example.se");
        assert_eq!(a.len(), 64);
        assert_ne!(a, identity_hash("legal", "email", "anna@example.se"));
        assert_ne!(a, identity_hash("crm", "phone", "anna@example.se"));
        assert!(!a.contains("anna"));
        let s = Suppressions::new("crm");
        let mut list = BTreeMap::new();
        list.insert(
            s.hash("email", "anna@example.se"),
            BTreeSet::from(["direct_marketing".to_owned()]),
        );
        assert_eq!(
            s.purposes_of(&list, &[("email".into(), "anna@example.se".into())]),
            BTreeSet::from(["direct_marketing".to_owned()])
        );
        assert!(
            s.purposes_of(&list, &[("email".into(), "bo@example.se".into())])
                .is_empty()
        );
    }
}
