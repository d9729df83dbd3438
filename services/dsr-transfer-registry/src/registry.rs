//! The registry's operations: validation, storage, and the transfer rules of
//! `dsr_domain::transfer` applied to stored recipients.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use dsr_domain::clock::Clock;
use dsr_domain::identity::Organisationsnummer;
use dsr_domain::transfer::{
    self, Assessment, CountryTables, FieldViolation, Recipient, TransferCheck, TransferPolicy,
};
use sea_orm::{DatabaseConnection, DbErr};

use crate::store::Store;

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input breaks the rules; each violation names its field.
    #[error("invalid argument ({} violations)", .0.len())]
    InvalidArgument(Vec<FieldViolation>),
    /// No recipient with that id.
    #[error("recipient not found")]
    NotFound,
    /// A recipient with that id exists.
    #[error("recipient already exists")]
    AlreadyExists,
    /// The recipient changed since the revision the caller saw.
    #[error("revision mismatch")]
    RevisionMismatch,
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[source] DbErr),
}

/// A recipient as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecipient {
    /// The recipient.
    pub recipient: Recipient,
    /// Increases on every change, starting at 1.
    pub revision: u64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// Filters of [`Registry::list`]; empty lists match everything.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Serving this controller.
    pub controller: Option<Organisationsnummer>,
    /// Receiving from one of these systems.
    pub systems: BTreeSet<String>,
    /// Receiving one of these categories.
    pub categories: BTreeSet<String>,
    /// In this country.
    pub country: Option<transfer::CountryCode>,
}

impl ListFilter {
    fn matches(&self, r: &Recipient) -> bool {
        self.controller
            .as_ref()
            .is_none_or(|c| r.controllers.contains(c))
            && (self.systems.is_empty() || !self.systems.is_disjoint(&r.systems))
            && (self.categories.is_empty() || !self.categories.is_disjoint(&r.categories))
            && self.country.as_ref().is_none_or(|c| *c == r.country)
    }
}

/// One recipient of a person's data, for the access report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disclosure {
    /// The recipient.
    pub recipient: StoredRecipient,
    /// The asked-about categories it receives.
    pub matched_categories: BTreeSet<String>,
    /// Its transfer assessment for those categories.
    pub assessment: Assessment,
}

/// Most items on one page.
pub const MAX_PAGE_SIZE: usize = 500;
/// Items on a page when the caller does not say.
pub const DEFAULT_PAGE_SIZE: usize = 50;

/// The transfer registry.
#[derive(Clone, Debug)]
pub struct Registry {
    store: Store,
    tables: Arc<CountryTables>,
    policy: Arc<TransferPolicy>,
    clock: Clock,
}

impl Registry {
    /// A registry over `db` (migrated), with the country tables and the
    /// controller's transfer policy.
    pub fn new(
        db: DatabaseConnection,
        tables: Arc<CountryTables>,
        policy: Arc<TransferPolicy>,
    ) -> Self {
        Self {
            store: Store::new(db),
            tables,
            policy,
            clock: Clock::default(),
        }
    }

    /// The same registry assessing transfers at `clock`'s date.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The country tables in use.
    pub fn tables(&self) -> &CountryTables {
        &self.tables
    }

    /// The date transfers are assessed at (the clock's today).
    pub fn today(&self) -> NaiveDate {
        self.clock.today()
    }

    /// Whether sending everything `s` receives to it is lawful today, for
    /// any of its controllers: its standing in listings.
    pub fn standing(&self, s: &StoredRecipient) -> Assessment {
        transfer::assess(
            &s.recipient,
            &TransferCheck {
                categories: &s.recipient.categories,
                controller: None,
                on: self.today(),
            },
            &self.tables,
            &self.policy,
        )
    }

    fn check_rules(&self, r: &Recipient) -> Result<(), Error> {
        let violations = r.validate(self.today());
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(violations))
        }
    }

    /// Records a new recipient.
    pub async fn create(&self, r: Recipient) -> Result<StoredRecipient, Error> {
        self.check_rules(&r)?;
        let stored = self
            .store
            .insert(&r, self.clock.now(), &self.tables)
            .await?;
        tracing::info!(recipient = %stored.recipient.id, "recipient created");
        Ok(stored)
    }

    /// One recipient.
    pub async fn get(&self, id: &str) -> Result<StoredRecipient, Error> {
        self.store.get(id, &self.tables).await
    }

    /// Replaces a recipient; with `expected_revision`, only if unchanged since.
    pub async fn update(
        &self,
        r: Recipient,
        expected_revision: Option<u64>,
    ) -> Result<StoredRecipient, Error> {
        self.check_rules(&r)?;
        let expected = match expected_revision {
            Some(rev) => rev,
            None => self.store.get(&r.id, &self.tables).await?.revision,
        };
        let stored = self
            .store
            .replace(&r, expected, self.clock.now(), &self.tables)
            .await?;
        tracing::info!(recipient = %stored.recipient.id, revision = stored.revision, "recipient updated");
        Ok(stored)
    }

    /// Removes a recipient; with `expected_revision`, only if unchanged since.
    pub async fn delete(&self, id: &str, expected_revision: Option<u64>) -> Result<(), Error> {
        self.store.delete(id, expected_revision).await?;
        tracing::info!(recipient = %id, "recipient deleted");
        Ok(())
    }

    /// A page of recipients matching `filter`, after the id `after`, and the
    /// id to continue after when there are more.
    pub async fn list(
        &self,
        filter: &ListFilter,
        after: Option<&str>,
        page_size: usize,
    ) -> Result<(Vec<StoredRecipient>, Option<String>), Error> {
        let mut page: Vec<StoredRecipient> = self
            .store
            .list_after(after, &self.tables)
            .await?
            .into_iter()
            .filter(|s| filter.matches(&s.recipient))
            .take(page_size + 1)
            .collect();
        let next = if page.len() > page_size {
            page.truncate(page_size);
            page.last().map(|s| s.recipient.id.clone())
        } else {
            None
        };
        Ok((page, next))
    }

    /// Whether sending `categories` to `recipient_id` is lawful on `on`.
    pub async fn check(
        &self,
        recipient_id: &str,
        categories: &BTreeSet<String>,
        controller: Option<&Organisationsnummer>,
        on: NaiveDate,
    ) -> Result<Assessment, Error> {
        let stored = self.get(recipient_id).await?;
        Ok(transfer::assess(
            &stored.recipient,
            &TransferCheck {
                categories,
                controller,
                on,
            },
            &self.tables,
            &self.policy,
        ))
    }

    /// The recipients of a person's data held by `systems` in `categories`
    /// for `controller`, each with its assessment for the categories it gets.
    pub async fn disclosures(
        &self,
        controller: &Organisationsnummer,
        systems: &BTreeSet<String>,
        categories: &BTreeSet<String>,
    ) -> Result<Vec<Disclosure>, Error> {
        let on = self.today();
        let all = self.store.list_after(None, &self.tables).await?;
        Ok(all
            .into_iter()
            .filter(|s| s.recipient.controllers.contains(controller))
            .filter(|s| {
                !s.recipient.systems.is_disjoint(systems)
                    || !s.recipient.categories.is_disjoint(categories)
            })
            .map(|s| {
                let matched: BTreeSet<String> = if categories.is_empty() {
                    s.recipient.categories.clone()
                } else {
                    s.recipient
                        .categories
                        .intersection(categories)
                        .cloned()
                        .collect()
                };
                let assessment = transfer::assess(
                    &s.recipient,
                    &TransferCheck {
                        categories: &matched,
                        controller: Some(controller),
                        on,
                    },
                    &self.tables,
                    &self.policy,
                );
                Disclosure {
                    recipient: s,
                    matched_categories: matched,
                    assessment,
                }
            })
            .collect())
    }

    /// Reviews due within `within_days` (and overdue ones), earliest first,
    /// as (recipient, basis, date, overdue).
    pub async fn reviews_due(&self, within_days: u32) -> Result<Vec<ReviewDue>, Error> {
        let all = self.store.list_after(None, &self.tables).await?;
        let recipients: Vec<Recipient> = all.into_iter().map(|s| s.recipient).collect();
        Ok(
            transfer::reviews_due(&recipients, self.today(), within_days)
                .into_iter()
                .map(|r| ReviewDue {
                    recipient_id: r.recipient.id.clone(),
                    recipient_name: r.recipient.name.clone(),
                    basis: r.basis,
                    review_by: r.review_by,
                    overdue: r.overdue,
                })
                .collect(),
        )
    }

    /// Creates the recipients of `seed` when the registry is empty (its first
    /// start); a registry that holds anything is left as it is, so a deleted
    /// seed recipient stays deleted. Returns how many were created.
    pub async fn seed(&self, seed: Vec<Recipient>) -> Result<usize, Error> {
        if !self.store.list_after(None, &self.tables).await?.is_empty() {
            return Ok(0);
        }
        let mut created = 0;
        for r in seed {
            match self.create(r).await {
                Ok(_) => created += 1,
                Err(Error::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(created)
    }
}

/// A safeguard review that is due.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewDue {
    /// The recipient's id.
    pub recipient_id: String,
    /// Its name.
    pub recipient_name: String,
    /// Which basis.
    pub basis: transfer::TransferBasis,
    /// The date.
    pub review_by: NaiveDate,
    /// Past.
    pub overdue: bool,
}

/// A recipient as a caller describes it, before validation: what the API and
/// the seed file have in common.
#[derive(Clone, Debug, Default)]
pub struct RecipientDraft {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Role, `None` when unspecified.
    pub role: Option<transfer::RecipientRole>,
    /// Country code as given.
    pub country: String,
    /// Controller organisationsnummer as given.
    pub controllers: Vec<String>,
    /// Category ids.
    pub categories: Vec<String>,
    /// System ids.
    pub systems: Vec<String>,
    /// Agreement reference.
    pub dpa_reference: String,
    /// Purpose.
    pub purpose: String,
    /// Name in Swedish.
    pub name_sv: String,
    /// Purpose in Swedish.
    pub purpose_sv: String,
    /// Safeguard, already typed by the caller's format.
    pub safeguard: Option<transfer::Safeguard>,
}

impl RecipientDraft {
    /// Validates the syntax of every field (field paths under `prefix`) and
    /// builds the domain value. The rules between fields are checked by
    /// [`Recipient::validate`] when the recipient is stored.
    pub fn build(
        self,
        tables: &CountryTables,
        prefix: &str,
    ) -> Result<Recipient, Vec<FieldViolation>> {
        let mut v = Vec::new();
        let f = |name: &str| format!("{prefix}.{name}");
        if self.role.is_none() {
            v.push(FieldViolation::new(f("role"), "required: one of the roles"));
        }
        let country = tables.code(&self.country);
        if country.is_none() {
            v.push(FieldViolation::new(
                f("country"),
                "not an ISO 3166-1 alpha-2 code",
            ));
        }
        let mut controllers = BTreeSet::new();
        for (i, c) in self.controllers.iter().enumerate() {
            match Organisationsnummer::parse(c) {
                Ok(o) => {
                    controllers.insert(o);
                }
                Err(e) => v.push(FieldViolation::new(
                    format!("{}[{i}]", f("controllers")),
                    e.to_string(),
                )),
            }
        }
        for (i, c) in self.categories.iter().enumerate() {
            if !transfer::valid_category_id(c) {
                v.push(FieldViolation::new(
                    format!("{}[{i}]", f("category_ids")),
                    "lower-case letters, digits, _ and ., at most 64",
                ));
            }
        }
        for (i, s) in self.systems.iter().enumerate() {
            if !transfer::valid_slug(s) {
                v.push(FieldViolation::new(
                    format!("{}[{i}]", f("system_ids")),
                    "2-64 lower-case letters, digits and -",
                ));
            }
        }
        if !v.is_empty() {
            // Report the field checks that need no parsed value too, so one answer
            // names every problem.
            let basic = transfer::basic_violations(
                &self.id,
                &self.name,
                self.controllers.len(),
                self.categories.len(),
            );
            let mut all: Vec<FieldViolation> = basic
                .into_iter()
                .map(|b| FieldViolation {
                    field: b.field.replacen("recipient", prefix, 1),
                    description: b.description,
                })
                .collect();
            all.extend(v);
            return Err(all);
        }
        match (self.role, country, v.is_empty()) {
            (Some(role), Some(country), true) => Ok(Recipient {
                id: self.id.trim().to_owned(),
                name: self.name.trim().to_owned(),
                role,
                country,
                controllers,
                categories: self.categories.into_iter().collect(),
                systems: self.systems.into_iter().collect(),
                dpa_reference: self.dpa_reference.trim().to_owned(),
                safeguard: self.safeguard,
                purpose: self.purpose.trim().to_owned(),
                name_sv: self.name_sv.trim().to_owned(),
                purpose_sv: self.purpose_sv.trim().to_owned(),
            }),
            _ => Err(v),
        }
    }
}
