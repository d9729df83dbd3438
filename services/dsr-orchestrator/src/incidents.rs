//! Personal-data breaches (Art. 33 and 34): the register (Art. 33(5)),
//! who a breach touches as the systems answer, the 72 hours, the risk
//! assessment, the notification to the supervisory authority drafted with
//! its Art. 33(3) contents, the notices to the people through the letters,
//! or an Art. 34(3) exception.
//!
//! Kept beside the requests in the orchestrator's database, each change
//! appended to the same hash-chained audit trail (under the incident's id).
//! The people a breach touches are kept, with the contact a notice goes
//! to, only until their notices are queued, an exception is recorded or
//! the incident is closed; the register keeps their counts.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use dsr_domain::group::Group;
use dsr_domain::identity::{IdentityType, Organisationsnummer};
use dsr_domain::letters::{LetterKind, Letters};
use dsr_domain::text::Lang;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, DbErr, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};

use crate::entity::{incident, incident_person, letter};
use crate::ledger::Ledger;
use crate::letters::{Facts, Status};
use crate::mesh::{BreachQuery, Call, Discovery, SystemAffected};

/// The hours the supervisory authority must be told within (Art. 33(1)).
pub const AUTHORITY_HOURS: i64 = 72;

/// Why an incident operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such incident.
    #[error("incident not found")]
    NotFound,
    /// Bad input: (field, what is wrong), no values.
    #[error("invalid argument")]
    Invalid(Vec<(String, String)>),
    /// Not in a state for it: a stable reason.
    #[error("failed precondition: {0}")]
    Precondition(&'static str),
    /// Another service did not answer: its stable reason (no personal
    /// data); trying again may help.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The database failed.
    #[error("storage error: {0}")]
    Storage(#[from] DbErr),
}

/// How serious the risk is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Risk {
    /// Unlikely to result in a risk.
    None,
    /// A risk: the authority is told.
    Risk,
    /// A high risk: the authority and the people are told.
    High,
}

impl Risk {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Risk => "risk",
            Self::High => "high",
        }
    }

    /// From its name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::None,
            "risk" => Self::Risk,
            "high" => Self::High,
            _ => return None,
        })
    }
}

/// An Art. 34(3) exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeException {
    /// (a) Unintelligible to anyone not authorised.
    Unintelligible,
    /// (b) The high risk is no longer likely.
    RiskNoLongerLikely,
    /// (c) A public communication instead.
    PublicCommunication,
}

impl NoticeException {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unintelligible => "unintelligible",
            Self::RiskNoLongerLikely => "risk_no_longer_likely",
            Self::PublicCommunication => "public_communication",
        }
    }

    /// From its name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "unintelligible" => Self::Unintelligible,
            "risk_no_longer_likely" => Self::RiskNoLongerLikely,
            "public_communication" => Self::PublicCommunication,
            _ => return None,
        })
    }
}

/// A report of an incident, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// What happened.
    pub summary: String,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the company became aware.
    pub discovered_at: DateTime<Utc>,
    /// The systems concerned.
    pub systems: Vec<String>,
    /// The categories concerned.
    pub categories: Vec<String>,
    /// Roughly how many people.
    pub approximate_people: u64,
    /// Containment.
    pub containment: String,
    /// "staff" or "public_form".
    pub source: String,
}

/// People and records of one controller in one category.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AffectedCount {
    /// The controller.
    pub controller: String,
    /// The category.
    pub category: String,
    /// People.
    pub people: u64,
    /// Their records in the breach's categories.
    pub records: u64,
}

/// What the systems answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Affected {
    /// Per controller and category.
    pub counts: Vec<AffectedCount>,
    /// People in all.
    pub people: u64,
    /// Records in all.
    pub records: u64,
    /// People with a contact.
    pub reachable: u64,
    /// Systems that answered.
    pub systems_answered: Vec<String>,
    /// Systems that did not ("legal: UNIMPLEMENTED").
    pub failed_systems: Vec<String>,
    /// Whether every answer applied the window.
    pub window_applied: bool,
    /// When the systems were asked.
    pub found_at: DateTime<Utc>,
}

/// Notices as they go out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notices {
    /// Queued in all.
    pub queued: u64,
    /// Sent.
    pub sent: u64,
    /// Failed or without an address.
    pub failed: u64,
}

/// An incident as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    /// Its id.
    pub id: String,
    /// What happened.
    pub summary: String,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the company became aware.
    pub discovered_at: DateTime<Utc>,
    /// When recorded.
    pub reported_at: DateTime<Utc>,
    /// "staff" or "public_form".
    pub source: String,
    /// Who reported it.
    pub reported_by: String,
    /// Systems.
    pub systems: Vec<String>,
    /// Categories.
    pub categories: Vec<String>,
    /// As reported.
    pub approximate_people: u64,
    /// Containment.
    pub containment: String,
    /// The assessment.
    pub risk: Option<Risk>,
    /// Its reasoning.
    pub risk_reasoning: Option<String>,
    /// Likely consequences.
    pub consequences: Option<String>,
    /// Measures.
    pub measures: Option<String>,
    /// Who is affected.
    pub affected: Option<Affected>,
    /// When the authority was told.
    pub authority_notified_at: Option<DateTime<Utc>>,
    /// The authority's reference.
    pub authority_reference: Option<String>,
    /// Why late.
    pub late_reason: Option<String>,
    /// When the notices were queued.
    pub notices_started_at: Option<DateTime<Utc>>,
    /// The notices.
    pub notices: Notices,
    /// An exception instead of notices.
    pub notice_exception: Option<(NoticeException, String)>,
    /// The remedial action, once closed.
    pub remedial_action: Option<String>,
    /// When closed.
    pub closed_at: Option<DateTime<Utc>>,
}

impl Incident {
    /// The end of the 72 hours.
    pub fn authority_due(&self) -> DateTime<Utc> {
        self.discovered_at + TimeDelta::hours(AUTHORITY_HOURS)
    }

    /// Whether the authority should have been told by `now` and was not
    /// (an incident assessed as no risk need not be).
    pub fn authority_overdue(&self, now: DateTime<Utc>) -> bool {
        self.authority_notified_at.is_none()
            && self.risk != Some(Risk::None)
            && now > self.authority_due()
    }
}

fn list(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_default()
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialisable")
}

fn incident_of(m: incident::Model, notices: Notices) -> Incident {
    Incident {
        systems: list(&m.system_ids),
        categories: list(&m.category_ids),
        risk: m.risk.as_deref().and_then(Risk::parse),
        affected: m
            .affected
            .as_deref()
            .and_then(|a| serde_json::from_str(a).ok()),
        notice_exception: m
            .notice_exception
            .as_deref()
            .and_then(NoticeException::parse)
            .map(|e| {
                (
                    e,
                    m.notice_exception_explanation.clone().unwrap_or_default(),
                )
            }),
        approximate_people: u64::try_from(m.approximate_people).unwrap_or(0),
        id: m.id,
        summary: m.summary,
        started_at: m.started_at,
        discovered_at: m.discovered_at,
        reported_at: m.reported_at,
        source: m.source,
        reported_by: m.reported_by,
        containment: m.containment,
        risk_reasoning: m.risk_reasoning,
        consequences: m.consequences,
        measures: m.measures,
        authority_notified_at: m.authority_notified_at,
        authority_reference: m.authority_reference,
        late_reason: m.late_reason,
        notices_started_at: m.notices_started_at,
        notices,
        remedial_action: m.remedial_action,
        closed_at: m.closed_at,
    }
}

/// A person a notice can reach: the controller, their contacts
/// (`[type, value]`) and language.
pub type Reachable = (String, Vec<[String; 2]>, String);

/// Merges what each controller's systems answered: a person found in two
/// systems by the same contact is one person.
pub fn tally(
    answers: &[(Organisationsnummer, Vec<SystemAffected>)],
    now: DateTime<Utc>,
) -> (Affected, Vec<Reachable>) {
    type Person = (BTreeSet<String>, u64, Vec<[String; 2]>, String);
    let mut answered = BTreeSet::new();
    let mut failed = BTreeSet::new();
    let mut window = true;
    let mut reach: Vec<Reachable> = Vec::new();
    let mut counts: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    let (mut people, mut records, mut reachable) = (0u64, 0u64, 0u64);
    for (controller, systems) in answers {
        let mut persons: BTreeMap<String, Person> = BTreeMap::new();
        for s in systems {
            if matches!(s.outcome.as_str(), "found" | "not_found") {
                answered.insert(s.system_id.clone());
            } else {
                failed.insert(format!(
                    "{}: {}",
                    s.system_id,
                    if s.error_reason.is_empty() {
                        s.outcome.to_uppercase()
                    } else {
                        s.error_reason.clone()
                    }
                ));
            }
            for (i, p) in s.people.iter().enumerate() {
                window &= p.window_applied;
                let key = p
                    .contacts
                    .first()
                    .map(|c| format!("{}:{}", c.kind().as_str(), c.value()))
                    .unwrap_or_else(|| format!("{}#{i}", s.system_id));
                let e = persons.entry(key).or_default();
                e.0.extend(p.categories.iter().cloned());
                e.1 += p.records;
                for c in &p.contacts {
                    let pair = [c.kind().as_str().to_owned(), c.value().to_owned()];
                    if !e.2.contains(&pair) {
                        e.2.push(pair);
                    }
                }
                if e.3.is_empty() {
                    e.3.clone_from(&p.language);
                }
            }
        }
        for (cats, n, contacts, language) in persons.into_values() {
            people += 1;
            records += n;
            for c in cats {
                let e = counts
                    .entry((controller.as_str().to_owned(), c))
                    .or_default();
                e.0 += 1;
                e.1 += n;
            }
            if !contacts.is_empty() {
                reachable += 1;
                reach.push((controller.as_str().to_owned(), contacts, language));
            }
        }
    }
    let affected = Affected {
        counts: counts
            .into_iter()
            .map(
                |((controller, category), (people, records))| AffectedCount {
                    controller,
                    category,
                    people,
                    records,
                },
            )
            .collect(),
        people,
        records,
        reachable,
        systems_answered: answered.into_iter().collect(),
        failed_systems: failed.into_iter().collect(),
        window_applied: window,
        found_at: now,
    };
    (affected, reach)
}

impl Ledger {
    async fn incident_model(&self, id: &str) -> Result<incident::Model, Error> {
        incident::Entity::find_by_id(id.to_owned())
            .one(self.db())
            .await?
            .ok_or(Error::NotFound)
    }

    async fn notices_of(&self, id: &str) -> Result<Notices, DbErr> {
        Ok(self
            .notices_of_many(&[id.to_owned()])
            .await?
            .remove(id)
            .unwrap_or_default())
    }

    /// The notices of several incidents, in one read.
    async fn notices_of_many(&self, ids: &[String]) -> Result<BTreeMap<String, Notices>, DbErr> {
        let rows: Vec<(String, String)> = letter::Entity::find()
            .select_only()
            .column(letter::Column::RequestId)
            .column(letter::Column::Status)
            .filter(letter::Column::RequestId.is_in(ids.iter().map(String::as_str)))
            .filter(letter::Column::Kind.eq(LetterKind::BreachNotice.as_str()))
            .into_tuple()
            .all(self.db())
            .await?;
        let mut out: BTreeMap<String, Notices> = BTreeMap::new();
        for (id, s) in rows {
            let n = out.entry(id).or_default();
            n.queued += 1;
            if s == Status::Sent.as_str() {
                n.sent += 1;
            } else if s != Status::Pending.as_str() {
                n.failed += 1;
            }
        }
        Ok(out)
    }

    /// One incident.
    pub async fn incident(&self, id: &str) -> Result<Incident, Error> {
        let m = self.incident_model(id).await?;
        let n = self.notices_of(id).await?;
        Ok(incident_of(m, n))
    }

    /// The register, newest discovered first, from `offset`.
    pub async fn incidents(
        &self,
        open_only: bool,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<Incident>, Error> {
        let mut q = incident::Entity::find();
        if open_only {
            q = q.filter(incident::Column::ClosedAt.is_null());
        }
        let rows = q
            .order_by_desc(incident::Column::DiscoveredAt)
            .order_by_asc(incident::Column::Id)
            .offset(offset)
            .limit(limit)
            .all(self.db())
            .await?;
        let ids: Vec<String> = rows.iter().map(|m| m.id.clone()).collect();
        let mut notices = self.notices_of_many(&ids).await?;
        Ok(rows
            .into_iter()
            .map(|m| {
                let n = notices.remove(&m.id).unwrap_or_default();
                incident_of(m, n)
            })
            .collect())
    }

    /// Incidents whose authority notification is overdue now.
    pub async fn incidents_overdue(&self) -> Result<u64, DbErr> {
        let due_before = self.clock().now() - TimeDelta::hours(AUTHORITY_HOURS);
        incident::Entity::find()
            .filter(incident::Column::AuthorityNotifiedAt.is_null())
            .filter(incident::Column::ClosedAt.is_null())
            .filter(incident::Column::DiscoveredAt.lt(due_before))
            .filter(
                sea_orm::Condition::any()
                    .add(incident::Column::Risk.is_null())
                    .add(incident::Column::Risk.ne(Risk::None.as_str())),
            )
            .count(self.db())
            .await
    }

    /// Records an incident.
    pub async fn report_incident(&self, r: Report, actor: &str) -> Result<Incident, Error> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.clock().now();
        let txn = self.write_txn().await?;
        incident::ActiveModel {
            id: Set(id.clone()),
            summary: Set(r.summary),
            started_at: Set(r.started_at),
            discovered_at: Set(r.discovered_at),
            reported_at: Set(now),
            source: Set(r.source.clone()),
            reported_by: Set(actor.to_owned()),
            system_ids: Set(json(&r.systems)),
            category_ids: Set(json(&r.categories)),
            approximate_people: Set(i64::try_from(r.approximate_people).unwrap_or(i64::MAX)),
            containment: Set(r.containment),
            risk: Set(None),
            risk_reasoning: Set(None),
            consequences: Set(None),
            measures: Set(None),
            affected: Set(None),
            authority_notified_at: Set(None),
            authority_reference: Set(None),
            late_reason: Set(None),
            notices_started_at: Set(None),
            notice_exception: Set(None),
            notice_exception_explanation: Set(None),
            remedial_action: Set(None),
            closed_at: Set(None),
        }
        .insert(&txn)
        .await?;
        self.append(
            &txn,
            actor,
            &id,
            &format!("incident:reported ({})", r.source),
        )
        .await?;
        txn.commit().await?;
        tracing::info!(incident = %id, "incident reported");
        self.incident(&id).await
    }

    /// Changes an incident in one transaction with its audit event.
    async fn change_incident(
        &self,
        id: &str,
        actor: &str,
        action: String,
        f: impl FnOnce(&incident::Model, &mut incident::ActiveModel) -> Result<(), Error>,
    ) -> Result<Incident, Error> {
        let txn = self.write_txn().await?;
        let m = incident::Entity::find_by_id(id.to_owned())
            .one(&txn)
            .await?
            .ok_or(Error::NotFound)?;
        let current = m.clone();
        let mut am: incident::ActiveModel = m.into();
        f(&current, &mut am)?;
        am.update(&txn).await?;
        self.append(&txn, actor, id, &action).await?;
        txn.commit().await?;
        self.incident(id).await
    }

    /// Records who the systems say is affected, replacing earlier counts;
    /// the people with a contact are kept for their notices.
    pub async fn record_affected(
        &self,
        id: &str,
        answers: &[(Organisationsnummer, Vec<SystemAffected>)],
        actor: &str,
    ) -> Result<Incident, Error> {
        let (affected, reach) = tally(answers, self.clock().now());
        let action = format!(
            "incident:affected people {} records {}{}",
            affected.people,
            affected.records,
            if affected.failed_systems.is_empty() {
                String::new()
            } else {
                format!(" (not answered: {})", affected.failed_systems.join(", "))
            }
        );
        let txn = self.write_txn().await?;
        let m = incident::Entity::find_by_id(id.to_owned())
            .one(&txn)
            .await?
            .ok_or(Error::NotFound)?;
        if m.closed_at.is_some() || m.notices_started_at.is_some() || m.notice_exception.is_some() {
            return Err(Error::Precondition("INCIDENT_PEOPLE_SETTLED"));
        }
        incident_person::Entity::delete_many()
            .filter(incident_person::Column::IncidentId.eq(id))
            .exec(&txn)
            .await?;
        for chunk in reach.chunks(200) {
            incident_person::Entity::insert_many(chunk.iter().map(
                |(controller, contacts, lang)| incident_person::ActiveModel {
                    incident_id: Set(id.to_owned()),
                    controller: Set(controller.clone()),
                    contacts: Set(json(contacts)),
                    language: Set(if lang == "en" { "en" } else { "sv" }.to_owned()),
                    ..Default::default()
                },
            ))
            .exec_without_returning(&txn)
            .await?;
        }
        let mut am: incident::ActiveModel = m.into();
        am.affected = Set(Some(json(&affected)));
        am.update(&txn).await?;
        self.append(&txn, actor, id, &action).await?;
        txn.commit().await?;
        self.incident(id).await
    }

    /// Asks the systems the incident concerns, for each of `controllers`,
    /// who has records in its categories (through `discovery`, each call
    /// within `timeout`), and records the answers.
    pub async fn ask_who_is_affected(
        &self,
        id: &str,
        discovery: &dyn Discovery,
        controllers: &[Organisationsnummer],
        timeout: std::time::Duration,
        actor: &str,
    ) -> Result<Incident, Error> {
        let i = self.incident(id).await?;
        if i.categories.is_empty() {
            return Err(Error::Precondition("NO_CATEGORIES"));
        }
        let query = BreachQuery {
            systems: i.systems.clone(),
            categories: i.categories.clone(),
            from: i.started_at,
            to: Some(i.discovered_at),
        };
        let mut answers = Vec::new();
        for c in controllers {
            let call = Call {
                request_id: i.id.clone(),
                controller: c.clone(),
                due_date: i.authority_due().date_naive(),
                submitted_by: None,
                timeout,
            };
            let systems = discovery
                .find_affected(&call, &query)
                .await
                .map_err(|e| Error::Unavailable(e.reason))?;
            answers.push((c.clone(), systems));
        }
        self.record_affected(id, &answers, actor).await
    }

    /// Records the risk assessment. Below a high risk no one is notified,
    /// so the affected people's addresses go (their counts stay); a later
    /// high assessment asks the systems again.
    pub async fn assess_incident(
        &self,
        id: &str,
        risk: Risk,
        reasoning: String,
        consequences: String,
        measures: String,
        actor: &str,
    ) -> Result<Incident, Error> {
        let done = self
            .change_incident(
                id,
                actor,
                format!("incident:assessed {}", risk.as_str()),
                move |m, am| {
                    if m.closed_at.is_some() {
                        return Err(Error::Precondition("INCIDENT_CLOSED"));
                    }
                    am.risk = Set(Some(risk.as_str().to_owned()));
                    am.risk_reasoning = Set(Some(reasoning));
                    am.consequences = Set(Some(consequences));
                    am.measures = Set(Some(measures));
                    Ok(())
                },
            )
            .await?;
        if risk != Risk::High {
            self.forget_people(id).await?;
        }
        Ok(done)
    }

    /// Records that the authority was told at `at`; past the 72 hours the
    /// reasons are required.
    pub async fn authority_notified(
        &self,
        id: &str,
        at: DateTime<Utc>,
        reference: String,
        late_reason: String,
        actor: &str,
    ) -> Result<Incident, Error> {
        let late =
            at > self.incident_model(id).await?.discovered_at + TimeDelta::hours(AUTHORITY_HOURS);
        if late && late_reason.trim().is_empty() {
            return Err(Error::Invalid(vec![(
                "late_reason".into(),
                "required: the authority was told more than 72 hours after discovery (Art. 33(1))"
                    .into(),
            )]));
        }
        self.change_incident(
            id,
            actor,
            format!(
                "incident:authority_notified{}",
                if late { " late" } else { "" }
            ),
            move |_, am| {
                am.authority_notified_at = Set(Some(at));
                am.authority_reference = Set(Some(reference).filter(|r| !r.is_empty()));
                am.late_reason = Set(Some(late_reason).filter(|r| !r.trim().is_empty()));
                Ok(())
            },
        )
        .await
    }

    /// Queues a notice to each affected person with a contact (Art. 34),
    /// in their language, and lets their contacts go from the incident.
    pub async fn notify_people(&self, id: &str, actor: &str) -> Result<Incident, Error> {
        let now = self.clock().now();
        let txn = self.write_txn().await?;
        let m = incident::Entity::find_by_id(id.to_owned())
            .one(&txn)
            .await?
            .ok_or(Error::NotFound)?;
        if m.risk.as_deref() != Some(Risk::High.as_str()) {
            return Err(Error::Precondition("RISK_NOT_HIGH"));
        }
        if m.affected.is_none() {
            return Err(Error::Precondition("AFFECTED_NOT_FOUND"));
        }
        if m.notices_started_at.is_some() {
            return Err(Error::Precondition("NOTICES_ALREADY_QUEUED"));
        }
        if m.notice_exception.is_some() {
            return Err(Error::Precondition("NOTICE_EXCEPTION_RECORDED"));
        }
        let people = incident_person::Entity::find()
            .filter(incident_person::Column::IncidentId.eq(id))
            .order_by_asc(incident_person::Column::Id)
            .all(&txn)
            .await?;
        let queued = people.len();
        for chunk in people.chunks(200) {
            let rows = chunk.iter().filter_map(|p| {
                let contacts: Vec<[String; 2]> = serde_json::from_str(&p.contacts).ok()?;
                // An email address first, else a phone.
                let to = contacts
                    .iter()
                    .find(|[t, _]| t == IdentityType::Email.as_str())
                    .or_else(|| contacts.first())?;
                let facts = Facts {
                    controller: Some(p.controller.clone()),
                    nature: Some(m.summary.clone()),
                    consequences: m.consequences.clone(),
                    measures: m.measures.clone(),
                    ..Facts::default()
                };
                Some(letter::ActiveModel {
                    request_id: Set(id.to_owned()),
                    key: Set(format!("notice:{}", p.id)),
                    kind: Set(LetterKind::BreachNotice.as_str().to_owned()),
                    facts: Set(json(&facts)),
                    status: Set(Status::Pending.as_str().to_owned()),
                    attempts: Set(0),
                    next_attempt_ms: Set(Some(now.timestamp_millis())),
                    lease_owner: Set(None),
                    lease_until_ms: Set(None),
                    last_error: Set(None),
                    channel: Set(None),
                    queued_at: Set(now),
                    sent_at: Set(None),
                    to_identity: Set(Some(json(to))),
                    language: Set(Some(p.language.clone())),
                    ..Default::default()
                })
            });
            letter::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::columns([letter::Column::RequestId, letter::Column::Key])
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
        }
        incident_person::Entity::delete_many()
            .filter(incident_person::Column::IncidentId.eq(id))
            .exec(&txn)
            .await?;
        let mut am: incident::ActiveModel = m.into();
        am.notices_started_at = Set(Some(now));
        am.update(&txn).await?;
        self.append(
            &txn,
            actor,
            id,
            &format!("incident:notices_queued {queued}"),
        )
        .await?;
        txn.commit().await?;
        self.incident(id).await
    }

    /// Records an Art. 34(3) exception instead of notices.
    pub async fn notice_exception(
        &self,
        id: &str,
        exception: NoticeException,
        explanation: String,
        actor: &str,
    ) -> Result<Incident, Error> {
        let done = self
            .change_incident(
                id,
                actor,
                format!("incident:notice_exception {}", exception.as_str()),
                move |m, am| {
                    if m.notices_started_at.is_some() {
                        return Err(Error::Precondition("NOTICES_ALREADY_QUEUED"));
                    }
                    am.notice_exception = Set(Some(exception.as_str().to_owned()));
                    am.notice_exception_explanation = Set(Some(explanation));
                    Ok(())
                },
            )
            .await?;
        self.forget_people(id).await?;
        Ok(done)
    }

    /// Closes an incident with its remedial action.
    pub async fn close_incident(
        &self,
        id: &str,
        remedial: String,
        actor: &str,
    ) -> Result<Incident, Error> {
        let now = self.clock().now();
        let done = self
            .change_incident(id, actor, "incident:closed".into(), move |m, am| {
                if m.closed_at.is_some() {
                    return Err(Error::Precondition("INCIDENT_CLOSED"));
                }
                am.remedial_action = Set(Some(remedial));
                am.closed_at = Set(Some(now));
                Ok(())
            })
            .await?;
        self.forget_people(id).await?;
        Ok(done)
    }

    async fn forget_people(&self, id: &str) -> Result<(), DbErr> {
        incident_person::Entity::delete_many()
            .filter(incident_person::Column::IncidentId.eq(id))
            .exec(self.db())
            .await?;
        Ok(())
    }
}

/// The notification to the supervisory authority, drafted in `lang` with
/// the Art. 33(3) contents from what is recorded; also the items still
/// missing ("consequences", "measures", "affected", "late_reason").
pub fn draft(
    i: &Incident,
    letters: &Letters,
    group: &Group,
    lang: Lang,
    now: DateTime<Utc>,
) -> (String, Vec<&'static str>) {
    let h = |k: &str| letters.notification(k, lang).to_owned();
    let mut missing = Vec::new();
    let mut out = h("title") + "\n\n";
    let mut section = |title: String, body: String| {
        out.push_str(&title);
        out.push('\n');
        out.push_str(&body);
        out.push_str("\n\n");
    };
    let when = |t: Option<DateTime<Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| h("unknown"))
    };
    let controllers: BTreeSet<String> = match &i.affected {
        Some(a) if !a.counts.is_empty() => a.counts.iter().map(|c| c.controller.clone()).collect(),
        _ => group
            .controllers
            .iter()
            .map(|c| c.organisation_number.as_str().to_owned())
            .collect(),
    };
    let name = |orgnr: &str| {
        group
            .controllers
            .iter()
            .find(|c| c.organisation_number.as_str() == orgnr)
            .map_or_else(|| orgnr.to_owned(), |c| format!("{} ({orgnr})", c.name))
    };
    section(
        h("controllers"),
        controllers
            .iter()
            .map(|c| name(c))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    section(h("reference"), i.id.clone());
    section(h("nature"), i.summary.clone());
    section(h("started"), when(i.started_at));
    section(h("discovered"), when(Some(i.discovered_at)));
    section(h("reported"), when(Some(i.reported_at)));
    section(h("systems"), i.systems.join(", "));
    match &i.affected {
        Some(a) => {
            let mut lines: Vec<String> = a
                .counts
                .iter()
                .map(|c| {
                    format!(
                        "{}: {}: {} {}, {} {}",
                        name(&c.controller),
                        c.category,
                        c.people,
                        h("people_unit"),
                        c.records,
                        h("records_unit")
                    )
                })
                .collect();
            if !a.window_applied {
                lines.push(h("window"));
            }
            for f in &a.failed_systems {
                lines.push(format!("! {f}"));
            }
            section(h("categories"), lines.join("\n"));
            section(h("people"), a.people.to_string());
            section(h("records"), a.records.to_string());
        }
        None => {
            missing.push("affected");
            section(
                h("categories"),
                format!(
                    "{}\n{}: {}",
                    i.categories.join(", "),
                    h("missing"),
                    h("not_asked")
                ),
            );
            section(h("people"), format!("~{}", i.approximate_people));
        }
    }
    section(h("dpo"), group.dpo_email.clone());
    let or_missing =
        |v: &Option<String>, key: &'static str, missing: &mut Vec<&'static str>| match v
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        {
            Some(s) => s.to_owned(),
            None => {
                missing.push(key);
                h("missing")
            }
        };
    let consequences = or_missing(&i.consequences, "consequences", &mut missing);
    section(h("consequences"), consequences);
    let measures = or_missing(&i.measures, "measures", &mut missing);
    section(h("measures"), measures);
    section(h("containment"), i.containment.clone());
    section(
        h("risk"),
        match (&i.risk, &i.risk_reasoning) {
            (Some(r), Some(why)) => format!("{}: {why}", r.as_str()),
            _ => {
                missing.push("risk");
                h("missing")
            }
        },
    );
    section(
        h("people_told"),
        match (&i.notice_exception, i.notices_started_at) {
            (Some((e, why)), _) => format!("Art. 34(3): {}: {why}", e.as_str()),
            (None, Some(t)) => format!("{} ({})", when(Some(t)), i.notices.queued),
            (None, None) => h("unknown"),
        },
    );
    let told = i.authority_notified_at.unwrap_or(now);
    if told > i.authority_due() {
        let reason = or_missing(&i.late_reason, "late_reason", &mut missing);
        section(h("late"), reason);
    }
    (out.trim_end().to_owned() + "\n", missing)
}
