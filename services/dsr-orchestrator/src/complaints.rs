//! Complaints to the data protection officer (the privacy policy, 3.2): a
//! person complains (through the privacy centre, or a case handler on
//! their behalf), linked to their requests where relevant; the DPO's queue
//! with a response target; the answer sent as a letter with the way to the
//! supervisory authority. Each change is in the audit trail under the
//! complaint's id. The address the answer goes to leaves the complaint
//! when the answer is queued (the letter keeps it until sent).

use chrono::{DateTime, TimeDelta, Utc};
use dsr_domain::identity::{Identity, IdentityType, Organisationsnummer};
use dsr_domain::letters::LetterKind;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::entity::{complaint, letter};
use crate::incidents::Error;
use crate::ledger::Ledger;
use crate::letters::{Facts, Status};

/// A complaint as filed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filing {
    /// The controller.
    pub controller: Organisationsnummer,
    /// What the person complains about.
    pub text: String,
    /// Where the answer goes (an email address or phone).
    pub reply_to: Identity,
    /// "sv" or "en".
    pub language: String,
    /// Requests it concerns.
    pub request_ids: Vec<String>,
}

/// A complaint as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Complaint {
    /// Its id.
    pub id: String,
    /// The controller.
    pub controller: String,
    /// What the person complains about.
    pub text: String,
    /// The answer's language.
    pub language: String,
    /// Requests it concerns.
    pub request_ids: Vec<String>,
    /// When filed.
    pub filed_at: DateTime<Utc>,
    /// The response target.
    pub answer_due: DateTime<Utc>,
    /// Who filed it.
    pub filed_by: String,
    /// The answer.
    pub answer: Option<String>,
    /// When answered.
    pub answered_at: Option<DateTime<Utc>>,
    /// Who answered.
    pub answered_by: Option<String>,
    /// Where the answer letter is.
    pub letter_status: Option<Status>,
}

impl Complaint {
    /// Unanswered past its target at `now`.
    pub fn overdue(&self, now: DateTime<Utc>) -> bool {
        self.answered_at.is_none() && now > self.answer_due
    }
}

const ANSWER_KEY: &str = "answer";

impl Ledger {
    async fn complaint_of(&self, m: complaint::Model) -> Result<Complaint, Error> {
        let status: Option<String> = letter::Entity::find()
            .select_only()
            .column(letter::Column::Status)
            .filter(letter::Column::RequestId.eq(m.id.as_str()))
            .filter(letter::Column::Key.eq(ANSWER_KEY))
            .into_tuple()
            .one(self.db())
            .await?;
        Ok(Complaint {
            request_ids: serde_json::from_str(&m.request_ids).unwrap_or_default(),
            letter_status: status.as_deref().and_then(Status::parse),
            id: m.id,
            controller: m.controller,
            text: m.text,
            language: m.language,
            filed_at: m.filed_at,
            answer_due: m.answer_due,
            filed_by: m.filed_by,
            answer: m.answer,
            answered_at: m.answered_at,
            answered_by: m.answered_by,
        })
    }

    /// One complaint.
    pub async fn complaint(&self, id: &str) -> Result<Complaint, Error> {
        let m = complaint::Entity::find_by_id(id.to_owned())
            .one(self.db())
            .await?
            .ok_or(Error::NotFound)?;
        self.complaint_of(m).await
    }

    /// The DPO's queue: open complaints by target, then answered ones,
    /// newest first; from `offset`.
    pub async fn complaints(
        &self,
        open_only: bool,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<Complaint>, Error> {
        let mut q = complaint::Entity::find();
        if open_only {
            q = q.filter(complaint::Column::AnsweredAt.is_null());
        }
        let rows = q
            .order_by_asc(complaint::Column::AnsweredAt)
            .order_by_asc(complaint::Column::AnswerDue)
            .order_by_asc(complaint::Column::Id)
            .offset(offset)
            .limit(limit)
            .all(self.db())
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for m in rows {
            out.push(self.complaint_of(m).await?);
        }
        Ok(out)
    }

    /// Files a complaint; the DPO's target is `respond_within` from now.
    pub async fn file_complaint(
        &self,
        f: Filing,
        respond_within: TimeDelta,
        actor: &str,
    ) -> Result<Complaint, Error> {
        let id = uuid::Uuid::new_v4().to_string();
        let now = self.clock().now();
        let txn = self.write_txn().await?;
        complaint::ActiveModel {
            id: Set(id.clone()),
            controller: Set(f.controller.as_str().to_owned()),
            text: Set(f.text),
            reply_to: Set(Some(
                serde_json::to_string(&[f.reply_to.kind().as_str(), f.reply_to.value()])
                    .expect("strings serialise"),
            )),
            language: Set(f.language),
            request_ids: Set(serde_json::to_string(&f.request_ids).expect("strings serialise")),
            filed_at: Set(now),
            answer_due: Set(now + respond_within),
            filed_by: Set(actor.to_owned()),
            answer: Set(None),
            answered_at: Set(None),
            answered_by: Set(None),
        }
        .insert(&txn)
        .await?;
        self.append(&txn, actor, &id, "complaint:filed").await?;
        for r in &f.request_ids {
            // The request's own trail says a complaint concerns it.
            self.append(&txn, actor, r, &format!("complaint:{id}"))
                .await?;
        }
        txn.commit().await?;
        self.complaint(&id).await
    }

    /// Answers a complaint: the answer is queued as a letter to the address
    /// given, which then leaves the complaint.
    pub async fn answer_complaint(
        &self,
        id: &str,
        answer: String,
        actor: &str,
    ) -> Result<Complaint, Error> {
        let now = self.clock().now();
        let txn = self.write_txn().await?;
        let m = complaint::Entity::find_by_id(id.to_owned())
            .one(&txn)
            .await?
            .ok_or(Error::NotFound)?;
        if m.answered_at.is_some() {
            return Err(Error::Precondition("COMPLAINT_ANSWERED"));
        }
        let to = m.reply_to.clone().filter(|t| {
            serde_json::from_str::<[String; 2]>(t).is_ok_and(|[k, _]| {
                k == IdentityType::Email.as_str() || k == IdentityType::Phone.as_str()
            })
        });
        let facts = Facts {
            controller: Some(m.controller.clone()),
            answer: Some(answer.clone()),
            ..Facts::default()
        };
        letter::ActiveModel {
            request_id: Set(id.to_owned()),
            key: Set(ANSWER_KEY.to_owned()),
            kind: Set(LetterKind::ComplaintAnswer.as_str().to_owned()),
            facts: Set(serde_json::to_string(&facts).expect("serialisable facts")),
            status: Set(Status::Pending.as_str().to_owned()),
            attempts: Set(0),
            next_attempt_ms: Set(Some(now.timestamp_millis())),
            lease_owner: Set(None),
            lease_until_ms: Set(None),
            last_error: Set(None),
            channel: Set(None),
            queued_at: Set(now),
            sent_at: Set(None),
            to_identity: Set(to),
            language: Set(Some(m.language.clone())),
            ..Default::default()
        }
        .insert(&txn)
        .await?;
        let mut am: complaint::ActiveModel = m.into();
        am.answer = Set(Some(answer));
        am.answered_at = Set(Some(now));
        am.answered_by = Set(Some(actor.to_owned()));
        am.reply_to = Set(None);
        am.update(&txn).await?;
        self.append(&txn, actor, id, "complaint:answered").await?;
        txn.commit().await?;
        self.complaint(id).await
    }
}
