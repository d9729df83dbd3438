//! Persistence of recipients (sea-orm), converting rows to domain values.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use dsr_domain::identity::Organisationsnummer;
use dsr_domain::transfer::{CountryTables, Recipient, RecipientRole, Safeguard};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    SqlErr,
};

use crate::entity::recipient::{self, Entity as Recipients};
use crate::registry::{Error, StoredRecipient};

fn corrupt(what: &str) -> Error {
    Error::Storage(DbErr::Custom(format!(
        "stored recipient has an invalid {what}"
    )))
}

fn json_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    serde_json::to_string(&items.into_iter().collect::<Vec<_>>()).expect("strings serialise")
}

fn parse_list(text: &str, what: &str) -> Result<Vec<String>, Error> {
    serde_json::from_str(text).map_err(|_| corrupt(what))
}

fn to_row(
    r: &Recipient,
    revision: u64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
) -> recipient::ActiveModel {
    recipient::ActiveModel {
        id: Set(r.id.clone()),
        name: Set(r.name.clone()),
        role: Set(r.role.as_str().to_owned()),
        country: Set(r.country.as_str().to_owned()),
        controllers: Set(json_list(
            r.controllers.iter().map(Organisationsnummer::as_str),
        )),
        category_ids: Set(json_list(r.categories.iter().map(String::as_str))),
        system_ids: Set(json_list(r.systems.iter().map(String::as_str))),
        dpa_reference: Set(r.dpa_reference.clone()),
        safeguard: Set(r
            .safeguard
            .as_ref()
            .map(|s| serde_json::to_string(s).expect("safeguard serialises"))),
        purpose: Set(r.purpose.clone()),
        name_sv: Set(r.name_sv.clone()),
        purpose_sv: Set(r.purpose_sv.clone()),
        revision: Set(i64::try_from(revision).unwrap_or(i64::MAX)),
        created_at: Set(created_at),
        updated_at: Set(updated_at),
    }
}

fn from_row(m: recipient::Model, tables: &CountryTables) -> Result<StoredRecipient, Error> {
    let controllers = parse_list(&m.controllers, "controller list")?
        .iter()
        .map(|c| Organisationsnummer::parse(c).map_err(|_| corrupt("controller")))
        .collect::<Result<BTreeSet<_>, _>>()?;
    let safeguard = match m.safeguard.as_deref() {
        Some(text) => {
            Some(serde_json::from_str::<Safeguard>(text).map_err(|_| corrupt("safeguard"))?)
        }
        None => None,
    };
    Ok(StoredRecipient {
        recipient: Recipient {
            role: RecipientRole::parse(&m.role).ok_or_else(|| corrupt("role"))?,
            country: tables.code(&m.country).ok_or_else(|| corrupt("country"))?,
            controllers,
            categories: parse_list(&m.category_ids, "category list")?
                .into_iter()
                .collect(),
            systems: parse_list(&m.system_ids, "system list")?
                .into_iter()
                .collect(),
            id: m.id,
            name: m.name,
            dpa_reference: m.dpa_reference,
            safeguard,
            purpose: m.purpose,
            name_sv: m.name_sv,
            purpose_sv: m.purpose_sv,
        },
        revision: u64::try_from(m.revision).map_err(|_| corrupt("revision"))?,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

/// Recipient rows.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    db: DatabaseConnection,
}

impl Store {
    pub(crate) fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub(crate) async fn insert(
        &self,
        r: &Recipient,
        now: DateTime<Utc>,
        tables: &CountryTables,
    ) -> Result<StoredRecipient, Error> {
        let row = to_row(r, 1, now, now);
        match Recipients::insert(row)
            .exec_without_returning(&self.db)
            .await
        {
            Ok(_) => {}
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                return Err(Error::AlreadyExists);
            }
            Err(e) => return Err(Error::Storage(e)),
        }
        self.get(&r.id, tables).await
    }

    pub(crate) async fn get(
        &self,
        id: &str,
        tables: &CountryTables,
    ) -> Result<StoredRecipient, Error> {
        let row = Recipients::find_by_id(id.to_owned())
            .one(&self.db)
            .await
            .map_err(Error::Storage)?;
        from_row(row.ok_or(Error::NotFound)?, tables)
    }

    /// Replaces the row if its revision is still `expected`.
    pub(crate) async fn replace(
        &self,
        r: &Recipient,
        expected: u64,
        now: DateTime<Utc>,
        tables: &CountryTables,
    ) -> Result<StoredRecipient, Error> {
        let current = self.get(&r.id, tables).await?;
        if current.revision != expected {
            return Err(Error::RevisionMismatch);
        }
        let mut row = to_row(r, expected + 1, current.created_at, now);
        row.id = sea_orm::ActiveValue::NotSet;
        let res = Recipients::update_many()
            .set(row)
            .filter(recipient::Column::Id.eq(r.id.as_str()))
            .filter(recipient::Column::Revision.eq(i64::try_from(expected).unwrap_or(i64::MAX)))
            .exec(&self.db)
            .await
            .map_err(Error::Storage)?;
        if res.rows_affected == 0 {
            return Err(Error::RevisionMismatch);
        }
        self.get(&r.id, tables).await
    }

    pub(crate) async fn delete(&self, id: &str, expected: Option<u64>) -> Result<(), Error> {
        let mut q = Recipients::delete_many().filter(recipient::Column::Id.eq(id));
        if let Some(rev) = expected {
            q = q.filter(recipient::Column::Revision.eq(i64::try_from(rev).unwrap_or(i64::MAX)));
        }
        let res = q.exec(&self.db).await.map_err(Error::Storage)?;
        if res.rows_affected == 0 {
            let exists = Recipients::find_by_id(id.to_owned())
                .one(&self.db)
                .await
                .map_err(Error::Storage)?;
            return Err(if exists.is_some() {
                Error::RevisionMismatch
            } else {
                Error::NotFound
            });
        }
        Ok(())
    }

    /// Every recipient with an id after `after`, ordered by id.
    pub(crate) async fn list_after(
        &self,
        after: Option<&str>,
        tables: &CountryTables,
    ) -> Result<Vec<StoredRecipient>, Error> {
        let mut q = Recipients::find().order_by_asc(recipient::Column::Id);
        if let Some(after) = after {
            q = q.filter(recipient::Column::Id.gt(after));
        }
        q.all(&self.db)
            .await
            .map_err(Error::Storage)?
            .into_iter()
            .map(|m| from_row(m, tables))
            .collect()
    }
}
