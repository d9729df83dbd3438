//! The three reference systems modelled on the privacy policy: the group's
//! CRM, the print-and-mail vendor and the legal-representative vendor. Each
//! has a schema, a manifest (`reference/*.yaml`) and a deterministic
//! generator of Swedish synthetic people, overlapping across the systems
//! under different identifiers: the CRM knows a person by email, phone,
//! customer number and sometimes personnummer; the print vendor only by
//! customer number; the legal vendor by phone (and sometimes personnummer).

use chrono::{Datelike, Duration, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sea_orm::sea_query::{
    Alias, ColumnDef, Expr, ForeignKey, ForeignKeyAction, Func, Index, InsertStatement, Query,
    SimpleExpr, Table, TableCreateStatement,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Value};

/// A reference system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reference {
    /// The group's CRM.
    Crm,
    /// The print-and-mail vendor.
    PrintMail,
    /// The legal-representative vendor.
    Legal,
}

/// The controllers of the seed policy.
pub const CONTROLLERS: [&str; 4] = ["556134-1248", "556885-5265", "556786-4854", "556397-1414"];

/// A fixed day to generate the synthetic data relative to, where the same
/// rows are wanted on every run (tests, benchmarks); `dsr up` generates
/// relative to its clock's today, so its stories keep their shape.
pub fn base_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 1).expect("valid date")
}

/// The three people the README's examples follow: each the first person
/// of a company of the group's first controller (each with a KYC document
/// and a PEP screening in the CRM).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Demo {
    /// The relationship ended 400 days before the seed date: the contact
    /// data has no ground left against an erasure, the AML records are
    /// kept for five years after the end (about 3.9 years more).
    AmlRetentionRuns,
    /// The relationship ended six years before: every retention period,
    /// the AML one too, is over.
    EndedOverFiveYearsAgo,
    /// The relationship goes on: the contract keeps the contact and AML
    /// data over an erasure request.
    Ongoing,
}

impl Demo {
    /// Every demo person.
    pub const ALL: [Demo; 3] = [
        Demo::AmlRetentionRuns,
        Demo::EndedOverFiveYearsAgo,
        Demo::Ongoing,
    ];

    /// Their index among the generated people: the first of companies 1,
    /// 5 and 9, whose controller is the group's first (the CLI's default).
    pub fn index(self) -> usize {
        let every = PER_COMPANY * CONTROLLERS.len();
        match self {
            Self::AmlRetentionRuns => 0,
            Self::EndedOverFiveYearsAgo => every,
            Self::Ongoing => 2 * every,
        }
    }

    /// Their company's relationship end, relative to the seed date.
    pub fn relationship_end(self, base: NaiveDate) -> Option<NaiveDate> {
        match self {
            Self::AmlRetentionRuns => Some(base - Duration::days(400)),
            Self::EndedOverFiveYearsAgo => Some(base - Duration::days(6 * 365 + 30)),
            Self::Ongoing => None,
        }
    }

    /// What their story is, in a line.
    pub fn story(self) -> &'static str {
        match self {
            Self::AmlRetentionRuns => {
                "relationship ended 400 days ago: erasure keeps the AML records for five years"
            }
            Self::EndedOverFiveYearsAgo => "relationship ended six years ago: everything is erased",
            Self::Ongoing => "relationship ongoing: the contract keeps the data",
        }
    }

    /// Their email among `subjects` people generated from `seed`.
    pub fn email(self, subjects: usize, seed: u64) -> Option<String> {
        people(subjects, seed)
            .into_iter()
            .nth(self.index())
            .map(|p| p.email)
    }

    fn of_company(company: i64) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|d| (d.index() / PER_COMPANY) as i64 + 1 == company)
    }
}

impl Reference {
    /// Every reference system.
    pub const ALL: [Reference; 3] = [Reference::Crm, Reference::PrintMail, Reference::Legal];

    /// The system id.
    pub fn id(self) -> &'static str {
        match self {
            Self::Crm => "crm",
            Self::PrintMail => "print-mail",
            Self::Legal => "legal",
        }
    }

    /// Parses a system id.
    pub fn parse(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.id() == id)
    }

    /// Its operator's recipient id in the transfer registry's seed.
    pub fn operator_recipient_id(self) -> &'static str {
        match self {
            Self::Crm => "crm-vendor",
            Self::PrintMail => "print-mail",
            Self::Legal => "legal-representatives",
        }
    }

    /// The manifest.
    pub fn manifest(self) -> &'static str {
        match self {
            Self::Crm => include_str!("../reference/crm.yaml"),
            Self::PrintMail => include_str!("../reference/print-mail.yaml"),
            Self::Legal => include_str!("../reference/legal.yaml"),
        }
    }

    /// The manifest's file name (for messages).
    pub fn manifest_name(self) -> &'static str {
        match self {
            Self::Crm => "reference/crm.yaml",
            Self::PrintMail => "reference/print-mail.yaml",
            Self::Legal => "reference/legal.yaml",
        }
    }

    /// Creates the schema when it does not exist.
    pub async fn create_schema(self, db: &DatabaseConnection) -> Result<(), DbErr> {
        let mysql = db.get_database_backend() == sea_orm::DbBackend::MySql;
        for stmt in self.tables(mysql) {
            db.execute(&stmt).await?;
        }
        for (name, table, cols) in self.indexes() {
            // MySQL and MariaDB have no CREATE INDEX IF NOT EXISTS in
            // sea-query's dialect: ask first.
            if mysql
                && !db
                    .query_all_raw(sea_orm::Statement::from_sql_and_values(
                        sea_orm::DbBackend::MySql,
                        "SELECT 1 FROM information_schema.statistics \
                         WHERE table_schema = DATABASE() AND table_name = ? AND index_name = ?",
                        [table.into(), name.into()],
                    ))
                    .await?
                    .is_empty()
            {
                continue;
            }
            let mut idx = Index::create();
            idx.if_not_exists().name(name).table(Alias::new(table));
            for col in cols {
                idx.col(Alias::new(*col));
            }
            db.execute(&idx).await?;
        }
        Ok(())
    }

    fn indexes(self) -> Vec<(&'static str, &'static str, &'static [&'static str])> {
        match self {
            // A sweep pages through a controller's own rows in key order:
            // the controller with the key.
            Self::Crm => vec![
                (
                    "idx_contacts_controller",
                    "contacts",
                    &["controller_orgnr", "id"],
                ),
                (
                    "idx_prospects_controller",
                    "prospects",
                    &["controller_orgnr", "id"],
                ),
                ("idx_contacts_email", "contacts", &["email"]),
                ("idx_contacts_phone", "contacts", &["phone"]),
                ("idx_contacts_personnummer", "contacts", &["personnummer"]),
                (
                    "idx_contacts_customer_number",
                    "contacts",
                    &["customer_number"],
                ),
                (
                    "idx_contacts_relationship_ended_on",
                    "contacts",
                    &["relationship_ended_on"],
                ),
                (
                    "idx_kyc_documents_contact_id",
                    "kyc_documents",
                    &["contact_id"],
                ),
                (
                    "idx_pep_screenings_contact_id",
                    "pep_screenings",
                    &["contact_id"],
                ),
                (
                    "idx_event_registrations_contact_id",
                    "event_registrations",
                    &["contact_id"],
                ),
                (
                    "idx_survey_responses_contact_id",
                    "survey_responses",
                    &["contact_id"],
                ),
                ("idx_prospects_email", "prospects", &["email"]),
                (
                    "idx_prospect_interactions_prospect_id",
                    "prospect_interactions",
                    &["prospect_id"],
                ),
            ],
            Self::PrintMail => vec![
                (
                    "idx_recipients_controller",
                    "recipients",
                    &["controller_orgnr", "id"],
                ),
                (
                    "idx_recipients_customer_number",
                    "recipients",
                    &["customer_number"],
                ),
                ("idx_letters_recipient_id", "letters", &["recipient_id"]),
                ("idx_letters_sent_on", "letters", &["sent_on"]),
            ],
            Self::Legal => vec![
                (
                    "idx_parties_controller",
                    "parties",
                    &["controller_orgnr", "id"],
                ),
                ("idx_parties_phone", "parties", &["phone"]),
                ("idx_parties_personnummer", "parties", &["personnummer"]),
                ("idx_cases_party_id", "cases", &["party_id"]),
                ("idx_case_documents_case_id", "case_documents", &["case_id"]),
            ],
        }
    }

    /// The tables; on MySQL and MariaDB text columns are `varchar(255)`,
    /// which (unlike `text`) an index can cover whole.
    fn tables(self, mysql: bool) -> Vec<TableCreateStatement> {
        let pk = |c: &str| {
            ColumnDef::new(Alias::new(c))
                .big_integer()
                .not_null()
                .primary_key()
                .to_owned()
        };
        let text_type = |c: &str| {
            let mut def = ColumnDef::new(Alias::new(c));
            if mysql {
                def.string_len(255);
            } else {
                def.text();
            }
            def
        };
        let text = |c: &str| text_type(c).null().to_owned();
        let text_nn = |c: &str| text_type(c).not_null().to_owned();
        let date = |c: &str| ColumnDef::new(Alias::new(c)).date().null().to_owned();
        let int = |c: &str| {
            ColumnDef::new(Alias::new(c))
                .big_integer()
                .null()
                .to_owned()
        };
        let boolean = |c: &str| ColumnDef::new(Alias::new(c)).boolean().null().to_owned();
        let restricted = || {
            ColumnDef::new(Alias::new("restricted_at"))
                .timestamp_with_time_zone()
                .null()
                .to_owned()
        };
        let fk = |t: &str, c: &str, p: &str, on_delete: ForeignKeyAction| {
            ForeignKey::create()
                .from(Alias::new(t), Alias::new(c))
                .to(Alias::new(p), Alias::new("id"))
                .on_delete(on_delete)
                .to_owned()
        };
        let table = |name: &str, cols: Vec<ColumnDef>| {
            let mut t = Table::create();
            t.table(Alias::new(name)).if_not_exists();
            for mut c in cols {
                t.col(&mut c);
            }
            t
        };
        match self {
            Self::Crm => vec![
                // Companies are not personal data (the manifest leaves them out);
                // a contact's relationship ends when their company's does.
                table(
                    "companies",
                    vec![
                        pk("id"),
                        text_nn("organisationsnummer"),
                        text("name"),
                        text("kind"),
                        text_nn("controller_orgnr"),
                        date("relationship_start"),
                        date("relationship_end"),
                    ],
                )
                .to_owned(),
                table(
                    "contacts",
                    vec![
                        pk("id"),
                        int("company_id"),
                        text_nn("controller_orgnr"),
                        text("full_name"),
                        text("job_title"),
                        text("email"),
                        text("phone"),
                        text("address"),
                        text("language"),
                        text("customer_number"),
                        text("personnummer"),
                        date("relationship_ended_on"),
                        restricted(),
                        text("restriction_reasons"),
                        text("objected_purposes"),
                    ],
                )
                .foreign_key(&mut fk(
                    "contacts",
                    "company_id",
                    "companies",
                    ForeignKeyAction::SetNull,
                ))
                .to_owned(),
                table(
                    "kyc_documents",
                    vec![
                        pk("id"),
                        int("contact_id"),
                        text("document_type"),
                        text("document_number"),
                        text("issuing_country"),
                        date("expires_on"),
                        date("relationship_ended_on"),
                        restricted(),
                        text("restriction_reasons"),
                    ],
                )
                .foreign_key(&mut fk(
                    "kyc_documents",
                    "contact_id",
                    "contacts",
                    ForeignKeyAction::SetNull,
                ))
                .to_owned(),
                table(
                    "pep_screenings",
                    vec![
                        pk("id"),
                        int("contact_id"),
                        date("screened_on"),
                        boolean("is_pep"),
                        boolean("relative_is_pep"),
                        date("relationship_ended_on"),
                        restricted(),
                        text("restriction_reasons"),
                    ],
                )
                .foreign_key(&mut fk(
                    "pep_screenings",
                    "contact_id",
                    "contacts",
                    ForeignKeyAction::SetNull,
                ))
                .to_owned(),
                table(
                    "event_registrations",
                    vec![
                        pk("id"),
                        int("contact_id"),
                        text("event_name"),
                        date("event_date"),
                        text("dietary_preferences"),
                        text("allergies"),
                        restricted(),
                        text("restriction_reasons"),
                    ],
                )
                .foreign_key(&mut fk(
                    "event_registrations",
                    "contact_id",
                    "contacts",
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
                table(
                    "survey_responses",
                    vec![
                        pk("id"),
                        int("contact_id"),
                        text("answers"),
                        text("ip_address"),
                        text("responded_at"),
                        restricted(),
                        text("restriction_reasons"),
                    ],
                )
                .foreign_key(&mut fk(
                    "survey_responses",
                    "contact_id",
                    "contacts",
                    ForeignKeyAction::SetNull,
                ))
                .to_owned(),
                table(
                    "prospects",
                    vec![
                        pk("id"),
                        text_nn("controller_orgnr"),
                        text("email"),
                        int("lead_score"),
                        text("score_factors"),
                        date("last_interaction_on"),
                        restricted(),
                        text("restriction_reasons"),
                        text("objected_purposes"),
                    ],
                )
                .to_owned(),
                table(
                    "prospect_interactions",
                    vec![
                        pk("id"),
                        int("prospect_id"),
                        text("kind"),
                        date("occurred_on"),
                        text("detail"),
                        restricted(),
                        text("restriction_reasons"),
                    ],
                )
                .foreign_key(&mut fk(
                    "prospect_interactions",
                    "prospect_id",
                    "prospects",
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
            ],
            Self::PrintMail => vec![
                table(
                    "recipients",
                    vec![
                        pk("id"),
                        text_nn("controller_orgnr"),
                        text("customer_number"),
                        text("full_name"),
                        text("street"),
                        text("postal_code"),
                        text("city"),
                        date("last_letter_on"),
                        restricted(),
                        text("restriction_reasons"),
                    ],
                )
                .to_owned(),
                table(
                    "letters",
                    vec![
                        pk("id"),
                        int("recipient_id"),
                        date("sent_on"),
                        text("template"),
                        text("subject"),
                        restricted(),
                        text("restriction_reasons"),
                    ],
                )
                .foreign_key(&mut fk(
                    "letters",
                    "recipient_id",
                    "recipients",
                    ForeignKeyAction::Cascade,
                ))
                .to_owned(),
            ],
            Self::Legal => vec![
                table(
                    "parties",
                    vec![
                        pk("id"),
                        text_nn("controller_orgnr"),
                        text("full_name"),
                        text("phone"),
                        text("address"),
                        text("personnummer"),
                        date("last_case_closed_on"),
                        restricted(),
                        text("restriction_reasons"),
                    ],
                )
                .to_owned(),
                table(
                    "cases",
                    vec![
                        pk("id"),
                        int("party_id"),
                        text("case_number"),
                        text("country"),
                        text("agent"),
                        date("opened_on"),
                        date("closed_on"),
                        int("claim_amount_sek"),
                        restricted(),
                        text("restriction_reasons"),
                    ],
                )
                .foreign_key(&mut fk(
                    "cases",
                    "party_id",
                    "parties",
                    ForeignKeyAction::SetNull,
                ))
                .to_owned(),
                table(
                    "case_documents",
                    vec![
                        pk("id"),
                        int("case_id"),
                        text("title"),
                        date("filed_on"),
                        date("case_closed_on"),
                        restricted(),
                        text("restriction_reasons"),
                    ],
                )
                .foreign_key(&mut fk(
                    "case_documents",
                    "case_id",
                    "cases",
                    ForeignKeyAction::SetNull,
                ))
                .to_owned(),
            ],
        }
    }

    /// The reference CRM's lead scoring, as its automated-decision logic
    /// describes it (a site visit 1 point, an information request 5, an
    /// event 10; points older than 12 months count half): prospects that
    /// objected to direct marketing lose their score and are never scored
    /// again; new prospects (no score yet) are scored, unless their
    /// processing is restricted (Art. 18(2): storage only; they are scored
    /// once the restriction is lifted). Returns (scored,
    /// cleared). Other systems have nothing to score.
    #[allow(clippy::wildcard_enum_match_arm)]
    pub async fn score_prospects(
        self,
        db: &DatabaseConnection,
        today: NaiveDate,
    ) -> Result<(u64, u64), DbErr> {
        if self != Self::Crm {
            return Ok((0, 0));
        }
        let backend = db.get_database_backend();
        let objected = "objected_purposes LIKE '%direct_marketing%'";
        let cleared = db
            .execute_raw(sea_orm::Statement::from_string(
                backend,
                format!(
                    "UPDATE prospects SET lead_score = NULL, score_factors = NULL WHERE {objected} AND (lead_score IS NOT NULL OR score_factors IS NOT NULL)"
                ),
            ))
            .await?
            .rows_affected();
        let mut scored = 0;
        loop {
            let new = db
                .query_all_raw(sea_orm::Statement::from_string(
                    backend,
                    format!(
                        "SELECT id FROM prospects WHERE lead_score IS NULL AND restricted_at IS NULL AND (objected_purposes IS NULL OR NOT {objected}) ORDER BY id LIMIT 500"
                    ),
                ))
                .await?;
            if new.is_empty() {
                break;
            }
            for row in &new {
                let id: i64 = row.try_get_by_index(0)?;
                let interactions = db
                    .query_all_raw(sea_orm::Statement::from_sql_and_values(
                        backend,
                        match backend {
                            sea_orm::DbBackend::Postgres => {
                                "SELECT kind, CAST(occurred_on AS TEXT) FROM prospect_interactions WHERE prospect_id = $1"
                            }
                            sea_orm::DbBackend::MySql => {
                                "SELECT kind, CAST(occurred_on AS CHAR) FROM prospect_interactions WHERE prospect_id = ?"
                            }
                            _ => {
                                "SELECT kind, CAST(occurred_on AS TEXT) FROM prospect_interactions WHERE prospect_id = ?"
                            }
                        },
                        [id.into()],
                    ))
                    .await?;
                // Twice the points, so that half points stay whole.
                let mut doubled = 0i64;
                for i in &interactions {
                    let kind: Option<String> = i.try_get_by_index(0)?;
                    let on: Option<String> = i.try_get_by_index(1)?;
                    let pts = match kind.as_deref() {
                        Some("site_visit") => 1,
                        Some("information_request") => 5,
                        Some("event") => 10,
                        _ => 0,
                    };
                    let old = on
                        .and_then(|d| d.get(..10).and_then(|d| d.parse::<NaiveDate>().ok()))
                        .is_some_and(|d| d < today - Duration::days(365));
                    doubled += if old { pts } else { 2 * pts };
                }
                db.execute_raw(sea_orm::Statement::from_sql_and_values(
                    backend,
                    if backend == sea_orm::DbBackend::Postgres {
                        "UPDATE prospects SET lead_score = $1, score_factors = $2 WHERE id = $3"
                    } else {
                        "UPDATE prospects SET lead_score = ?, score_factors = ? WHERE id = ?"
                    },
                    [
                        (doubled / 2).into(),
                        format!("{} interactions", interactions.len()).into(),
                        id.into(),
                    ],
                ))
                .await?;
                scored += 1;
            }
        }
        Ok((scored, cleared))
    }

    /// An identity, as `type:value`, of a person this system holds when
    /// seeded from `seed` (for `dsr conformance`).
    pub fn sample_identity(self, seed: u64) -> String {
        let people = people(2, seed);
        match self {
            Self::Crm => format!("email:{}", people[0].email),
            Self::PrintMail => format!("customer_id:{}", people[1].customer_number),
            Self::Legal => format!("phone:{}", people[0].phone),
        }
    }

    /// Whether the system's database already holds people.
    pub async fn is_seeded(self, db: &DatabaseConnection) -> Result<bool, DbErr> {
        let table = match self {
            Self::Crm => "contacts",
            Self::PrintMail => "recipients",
            Self::Legal => "parties",
        };
        let mut sel = Query::select();
        sel.expr(sea_orm::sea_query::Expr::val(1))
            .from(Alias::new(table))
            .limit(1);
        Ok(!db.query_all(&sel).await?.is_empty())
    }

    /// Creates the schema, and seeds `subjects` people from `seed` when the
    /// database holds none. Returns the rows written (0 when it held people).
    pub async fn ensure(
        self,
        db: &DatabaseConnection,
        subjects: usize,
        seed: u64,
        base: NaiveDate,
    ) -> Result<usize, DbErr> {
        self.create_schema(db).await?;
        if self.is_seeded(db).await? {
            return Ok(0);
        }
        Ok(self
            .seed(db, subjects, seed, 0, base)
            .await?
            .iter()
            .map(|(_, n)| n)
            .sum())
    }

    /// Generates `subjects` people from `seed` and writes this system's share
    /// of them (and `extra_letters` more letters to the first recipient, for
    /// benchmarks), every date relative to `base` (the same rows for the
    /// same seed and date). Returns the rows written per table.
    pub async fn seed(
        self,
        db: &DatabaseConnection,
        subjects: usize,
        seed: u64,
        extra_letters: usize,
        base: NaiveDate,
    ) -> Result<Vec<(&'static str, usize)>, DbErr> {
        let people = people(subjects, seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ self.id().len() as u64 ^ 0x5eed);
        let mut out = Vec::new();
        match self {
            Self::Crm => {
                let mut companies = Rows::new(
                    "companies",
                    &[
                        "id",
                        "organisationsnummer",
                        "name",
                        "kind",
                        "controller_orgnr",
                        "relationship_start",
                        "relationship_end",
                    ],
                );
                let mut company_end: Option<NaiveDate> = None;
                let mut contacts = Rows::new(
                    "contacts",
                    &[
                        "id",
                        "company_id",
                        "controller_orgnr",
                        "full_name",
                        "job_title",
                        "email",
                        "phone",
                        "address",
                        "language",
                        "customer_number",
                        "personnummer",
                        "relationship_ended_on",
                    ],
                );
                let mut kyc = Rows::new(
                    "kyc_documents",
                    &[
                        "id",
                        "contact_id",
                        "document_type",
                        "document_number",
                        "issuing_country",
                        "expires_on",
                        "relationship_ended_on",
                    ],
                );
                let mut pep = Rows::new(
                    "pep_screenings",
                    &[
                        "id",
                        "contact_id",
                        "screened_on",
                        "is_pep",
                        "relative_is_pep",
                        "relationship_ended_on",
                    ],
                );
                let mut events = Rows::new(
                    "event_registrations",
                    &[
                        "id",
                        "contact_id",
                        "event_name",
                        "event_date",
                        "dietary_preferences",
                        "allergies",
                    ],
                );
                let mut surveys = Rows::new(
                    "survey_responses",
                    &["id", "contact_id", "answers", "ip_address", "responded_at"],
                );
                let mut prospects = Rows::new(
                    "prospects",
                    &[
                        "id",
                        "controller_orgnr",
                        "email",
                        "lead_score",
                        "score_factors",
                        "last_interaction_on",
                    ],
                );
                let mut interactions = Rows::new(
                    "prospect_interactions",
                    &["id", "prospect_id", "kind", "occurred_on", "detail"],
                );
                for p in &people {
                    let id = p.idx as i64 + 1;
                    let company = (p.idx / PER_COMPANY) as i64 + 1;
                    if p.idx % PER_COMPANY == 0 {
                        let start = base - Duration::days(rng.gen_range(3000..6000));
                        company_end = rng
                            .gen_bool(0.3)
                            .then(|| base - Duration::days(rng.gen_range(30..3000)));
                        if let Some(demo) = Demo::of_company(company) {
                            company_end = demo.relationship_end(base);
                        }
                        companies.push(vec![
                            company.into(),
                            organisationsnummer(&mut rng).into(),
                            format!(
                                "{} {}",
                                LAST[rng.gen_range(0..LAST.len())],
                                ["AB", "Handelsbolag", "Ekonomisk förening"][rng.gen_range(0..3)]
                            )
                            .into(),
                            ["customer", "supplier", "partner"][rng.gen_range(0..3)].into(),
                            p.controller.into(),
                            start.into(),
                            company_end.into(),
                        ]);
                    }
                    let ended = company_end;
                    contacts.push(vec![
                        id.into(),
                        company.into(),
                        p.controller.into(),
                        p.name().into(),
                        JOBS[rng.gen_range(0..JOBS.len())].into(),
                        p.email.clone().into(),
                        p.phone.clone().into(),
                        p.address().into(),
                        p.language.into(),
                        p.customer_number.clone().into(),
                        p.personnummer.clone().into(),
                        ended.into(),
                    ]);
                    if p.idx % 5 == 0 {
                        kyc.push(vec![
                            id.into(),
                            id.into(),
                            "passport".into(),
                            format!("SE{:08}", rng.gen_range(0..100_000_000u32)).into(),
                            "SE".into(),
                            (base + Duration::days(rng.gen_range(100..3000))).into(),
                            ended.into(),
                        ]);
                        pep.push(vec![
                            id.into(),
                            id.into(),
                            (base - Duration::days(rng.gen_range(1..700))).into(),
                            rng.gen_bool(0.05).into(),
                            rng.gen_bool(0.05).into(),
                            ended.into(),
                        ]);
                    }
                    if p.idx % 10 < 3 {
                        let diet =
                            ["vegetarian", "vegan", "no preference", "halal"][rng.gen_range(0..4)];
                        let allergy: Option<String> = rng.gen_bool(0.3).then(|| {
                            ["nuts", "gluten", "lactose", "shellfish"][rng.gen_range(0..4)]
                                .to_owned()
                        });
                        events.push(vec![
                            id.into(),
                            id.into(),
                            "Credit management day".into(),
                            (base - Duration::days(rng.gen_range(1..900))).into(),
                            diet.into(),
                            allergy.into(),
                        ]);
                    }
                    if p.idx % 4 == 1 {
                        surveys.push(vec![
                            id.into(),
                            id.into(),
                            format!(
                                "satisfaction={}; recommend={}",
                                rng.gen_range(1..=5),
                                rng.gen_range(0..=10)
                            )
                            .into(),
                            format!("192.0.2.{}", rng.gen_range(1..255)).into(),
                            format!(
                                "{}T10:{:02}:00Z",
                                base - Duration::days(rng.gen_range(1..400)),
                                rng.gen_range(0..60)
                            )
                            .into(),
                        ]);
                    }
                    if p.idx % 5 < 2 {
                        let n = rng.gen_range(1..=4);
                        let mut last = base - Duration::days(2000);
                        let mut score = 0;
                        for j in 0..n {
                            let (kind, pts) =
                                [("site_visit", 1), ("information_request", 5), ("event", 10)]
                                    [rng.gen_range(0..3)];
                            let on = base - Duration::days(rng.gen_range(1..1200));
                            last = last.max(on);
                            score += pts;
                            interactions.push(vec![
                                (id * 10 + j).into(),
                                id.into(),
                                kind.into(),
                                on.into(),
                                "web".into(),
                            ]);
                        }
                        prospects.push(vec![
                            id.into(),
                            p.controller.into(),
                            p.email.clone().into(),
                            i64::from(score).into(),
                            format!("{n} interactions").into(),
                            last.into(),
                        ]);
                    }
                }
                for rows in [
                    companies,
                    contacts,
                    kyc,
                    pep,
                    events,
                    surveys,
                    prospects,
                    interactions,
                ] {
                    out.push((rows.table, rows.write(db).await?));
                }
            }
            Self::PrintMail => {
                let mut recipients = Rows::new(
                    "recipients",
                    &[
                        "id",
                        "controller_orgnr",
                        "customer_number",
                        "full_name",
                        "street",
                        "postal_code",
                        "city",
                        "last_letter_on",
                    ],
                );
                let mut letters = Rows::new(
                    "letters",
                    &["id", "recipient_id", "sent_on", "template", "subject"],
                );
                let mut letter_id = 0i64;
                for p in people.iter().filter(|p| p.idx % 3 != 0) {
                    let id = p.idx as i64 + 1;
                    let n = rng.gen_range(1..=4);
                    let mut last = base - Duration::days(4000);
                    for _ in 0..n {
                        letter_id += 1;
                        let on = base - Duration::days(rng.gen_range(1..1500));
                        last = last.max(on);
                        letters.push(vec![
                            letter_id.into(),
                            id.into(),
                            on.into(),
                            "invoice-reminder".into(),
                            "Your invoice".into(),
                        ]);
                    }
                    recipients.push(vec![
                        id.into(),
                        p.controller.into(),
                        p.customer_number.clone().into(),
                        p.name().into(),
                        p.street.clone().into(),
                        p.postal_code.clone().into(),
                        p.city.into(),
                        last.into(),
                    ]);
                }
                for rows in [recipients, letters] {
                    out.push((rows.table, rows.write(db).await?));
                }
                if let Some(first) = people.iter().find(|p| p.idx % 3 != 0) {
                    let n = add_letters(db, first, extra_letters, base, seed).await?;
                    if let Some(l) = out.iter_mut().find(|(t, _)| *t == "letters") {
                        l.1 += n;
                    }
                }
            }
            Self::Legal => {
                let mut parties = Rows::new(
                    "parties",
                    &[
                        "id",
                        "controller_orgnr",
                        "full_name",
                        "phone",
                        "address",
                        "personnummer",
                        "last_case_closed_on",
                    ],
                );
                let mut cases = Rows::new(
                    "cases",
                    &[
                        "id",
                        "party_id",
                        "case_number",
                        "country",
                        "agent",
                        "opened_on",
                        "closed_on",
                        "claim_amount_sek",
                    ],
                );
                let mut docs = Rows::new(
                    "case_documents",
                    &["id", "case_id", "title", "filed_on", "case_closed_on"],
                );
                let (mut case_id, mut doc_id) = (0i64, 0i64);
                for p in people.iter().filter(|p| p.idx % 7 == 0) {
                    let id = p.idx as i64 + 1;
                    let mut last_closed: Option<NaiveDate> = None;
                    for _ in 0..rng.gen_range(1..=2) {
                        case_id += 1;
                        let opened = base - Duration::days(rng.gen_range(100..5000));
                        let closed = rng
                            .gen_bool(0.6)
                            .then(|| opened + Duration::days(rng.gen_range(30..700)))
                            .filter(|d| *d < base);
                        if let Some(c) = closed {
                            last_closed = Some(last_closed.map_or(c, |l| l.max(c)));
                        }
                        let (country, agent) = [
                            ("SE", "in house"),
                            ("RS", "collection-agent-rs"),
                            ("GB", "collection-agent-gb"),
                        ][rng.gen_range(0..3)];
                        cases.push(vec![
                            case_id.into(),
                            id.into(),
                            format!("L-{}-{case_id:05}", opened.year()).into(),
                            country.into(),
                            agent.into(),
                            opened.into(),
                            closed.into(),
                            rng.gen_range(1_000..500_000i64).into(),
                        ]);
                        for _ in 0..rng.gen_range(1..=3) {
                            doc_id += 1;
                            docs.push(vec![
                                doc_id.into(),
                                case_id.into(),
                                ["claim", "payment order", "judgment", "letter"]
                                    [rng.gen_range(0..4)]
                                .into(),
                                (opened + Duration::days(rng.gen_range(0..30))).into(),
                                closed.into(),
                            ]);
                        }
                    }
                    parties.push(vec![
                        id.into(),
                        p.controller.into(),
                        p.name().into(),
                        p.phone.clone().into(),
                        p.address().into(),
                        p.personnummer.clone().into(),
                        last_closed.into(),
                    ]);
                }
                for rows in [parties, cases, docs] {
                    out.push((rows.table, rows.write(db).await?));
                }
            }
        }
        analyze(db).await?;
        Ok(out)
    }
}

/// Gives PostgreSQL's planner the statistics of what was just loaded, as
/// its autovacuum would within a minute: right after a bulk load it would
/// otherwise guess, and walk a person's 100 000 letters for every page of
/// 200 it reads (12 ms a page instead of 0.2 ms, measured). SQLite plans by
/// its indexes alone, and needs none.
async fn analyze(db: &DatabaseConnection) -> Result<(), DbErr> {
    if db.get_database_backend() == sea_orm::DbBackend::Postgres {
        db.execute_unprepared("ANALYZE").await?;
    }
    Ok(())
}

/// Gives `person` `n` more monthly statements at the print-and-mail
/// vendor (for benchmarks: a person with many records), dated within 500
/// days before `base`; returns how many were written. The person must be
/// one of the vendor's recipients (index not a multiple of 3).
pub async fn add_letters(
    db: &DatabaseConnection,
    person: &Person,
    n: usize,
    base: NaiveDate,
    seed: u64,
) -> Result<usize, DbErr> {
    if n == 0 {
        return Ok(0);
    }
    let max = db
        .query_one(
            &Query::select()
                .expr(Func::max(Expr::col(Alias::new("id"))))
                .from(Alias::new("letters"))
                .to_owned(),
        )
        .await?
        .and_then(|r| r.try_get_by_index::<Option<i64>>(0).ok().flatten())
        .unwrap_or(0);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ person.idx as u64 ^ 0x1e77e2);
    let mut letters = Rows::new(
        "letters",
        &["id", "recipient_id", "sent_on", "template", "subject"],
    );
    for i in 0..n {
        letters.push(vec![
            (max + 1 + i as i64).into(),
            (person.idx as i64 + 1).into(),
            (base - Duration::days(rng.gen_range(1..500))).into(),
            "statement".into(),
            "Monthly statement".into(),
        ]);
    }
    let n = letters.write(db).await?;
    analyze(db).await?;
    Ok(n)
}

struct Rows {
    table: &'static str,
    columns: &'static [&'static str],
    rows: Vec<Vec<Value>>,
}

impl Rows {
    fn new(table: &'static str, columns: &'static [&'static str]) -> Self {
        Self {
            table,
            columns,
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: Vec<Value>) {
        debug_assert_eq!(row.len(), self.columns.len(), "{}", self.table);
        self.rows.push(row);
    }

    async fn write(self, db: &DatabaseConnection) -> Result<usize, DbErr> {
        let n = self.rows.len();
        for chunk in self.rows.chunks(200) {
            let mut ins: InsertStatement = Query::insert();
            ins.into_table(Alias::new(self.table))
                .columns(self.columns.iter().map(|c| Alias::new(*c)));
            for row in chunk {
                ins.values_panic(row.iter().cloned().map(SimpleExpr::from));
            }
            db.execute(&ins).await?;
        }
        Ok(n)
    }
}

const FIRST: [&str; 24] = [
    "Anna", "Erik", "Maria", "Lars", "Karin", "Anders", "Eva", "Johan", "Sara", "Per", "Lena",
    "Mikael", "Emma", "Karl", "Ingrid", "Nils", "Sofia", "Olof", "Elin", "Gustav", "Åsa", "Björn",
    "Linnéa", "Göran",
];
const LAST: [&str; 20] = [
    "Andersson",
    "Johansson",
    "Karlsson",
    "Nilsson",
    "Eriksson",
    "Larsson",
    "Olsson",
    "Persson",
    "Svensson",
    "Gustafsson",
    "Pettersson",
    "Jonsson",
    "Jansson",
    "Hansson",
    "Bengtsson",
    "Jönsson",
    "Lindberg",
    "Lindström",
    "Ström",
    "Åberg",
];
const STREETS: [&str; 12] = [
    "Storgatan",
    "Drottninggatan",
    "Kungsgatan",
    "Sveavägen",
    "Vasagatan",
    "Götgatan",
    "Hornsgatan",
    "Skolgatan",
    "Kyrkogatan",
    "Järnvägsgatan",
    "Parkvägen",
    "Ringvägen",
];
const CITIES: [(&str, &str); 8] = [
    ("Stockholm", "11"),
    ("Göteborg", "41"),
    ("Malmö", "21"),
    ("Uppsala", "75"),
    ("Västerås", "72"),
    ("Örebro", "70"),
    ("Linköping", "58"),
    ("Umeå", "90"),
];
const JOBS: [&str; 8] = [
    "CFO",
    "Accounts payable lead",
    "Purchasing manager",
    "Credit controller",
    "CEO",
    "Legal counsel",
    "Finance manager",
    "Procurement officer",
];
const DOMAINS: [&str; 6] = [
    "exempel.se",
    "foretaget.se",
    "leverantor.se",
    "bolaget.se",
    "handel.se",
    "industri.se",
];

/// Contacts per company in the CRM.
const PER_COMPANY: usize = 5;

/// A valid organisationsnummer of an aktiebolag-like group (group digit 5,
/// third and fourth digits at least 20, Luhn check digit).
fn organisationsnummer(rng: &mut ChaCha8Rng) -> String {
    let nine = format!(
        "5{}{}{:05}",
        rng.gen_range(0..10),
        rng.gen_range(20..100),
        rng.gen_range(0..100_000)
    );
    format!("{}-{}{}", &nine[..6], &nine[6..], luhn_digit(&nine))
}

/// A synthetic person.
#[derive(Clone, Debug)]
pub struct Person {
    /// Index from 0.
    pub idx: usize,
    /// First name.
    pub first: &'static str,
    /// Last name.
    pub last: &'static str,
    /// Email (normal form).
    pub email: String,
    /// Mobile phone (E.164).
    pub phone: String,
    /// Personnummer (12 digits), for about 40 %.
    pub personnummer: Option<String>,
    /// The controller's customer number.
    pub customer_number: String,
    /// Street address.
    pub street: String,
    /// Postal code.
    pub postal_code: String,
    /// City.
    pub city: &'static str,
    /// sv or en.
    pub language: &'static str,
    /// The controller the person's company deals with (the same for every
    /// contact of a company).
    pub controller: &'static str,
}

impl Person {
    /// Full name.
    pub fn name(&self) -> String {
        format!("{} {}", self.first, self.last)
    }

    /// One-line postal address.
    pub fn address(&self) -> String {
        format!("{}, {} {}", self.street, self.postal_code, self.city)
    }
}

fn ascii(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'å' | 'ä' | 'Å' | 'Ä' => 'a',
            'ö' | 'Ö' => 'o',
            'é' | 'É' => 'e',
            other => other.to_ascii_lowercase(),
        })
        .collect()
}

fn luhn_digit(nine: &str) -> u32 {
    let sum: u32 = nine
        .bytes()
        .enumerate()
        .map(|(i, b)| {
            let p = u32::from(b - b'0') * if i % 2 == 0 { 2 } else { 1 };
            if p > 9 { p - 9 } else { p }
        })
        .sum();
    (10 - sum % 10) % 10
}

/// `n` synthetic people from `seed`: the same seed always gives the same
/// people.
pub fn people(n: usize, seed: u64) -> Vec<Person> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|idx| {
            let first = FIRST[rng.gen_range(0..FIRST.len())];
            let last = LAST[rng.gen_range(0..LAST.len())];
            let email = format!(
                "{}.{}{}@{}",
                ascii(first),
                ascii(last),
                idx,
                DOMAINS[rng.gen_range(0..DOMAINS.len())]
            );
            let phone = format!(
                "+467{}{:07}",
                [0, 2, 3, 6][rng.gen_range(0..4)],
                idx * 7 + rng.gen_range(0..7)
            );
            let personnummer = rng.gen_bool(0.4).then(|| {
                let birth = NaiveDate::from_ymd_opt(1950, 1, 1).expect("valid")
                    + Duration::days(rng.gen_range(0..18_000));
                let nine = format!(
                    "{:02}{:02}{:02}{:03}",
                    birth.year() % 100,
                    birth.month(),
                    birth.day(),
                    rng.gen_range(1..1000)
                );
                format!("{}{}{}", birth.year() / 100, nine, luhn_digit(&nine))
            });
            let (city, zip) = CITIES[rng.gen_range(0..CITIES.len())];
            Person {
                idx,
                first,
                last,
                email,
                phone,
                personnummer,
                customer_number: format!("C-{:06}", idx + 1),
                street: format!(
                    "{} {}",
                    STREETS[rng.gen_range(0..STREETS.len())],
                    rng.gen_range(1..120)
                ),
                postal_code: format!("{zip}{} {:02}", rng.gen_range(0..10), rng.gen_range(0..100)),
                city,
                language: if rng.gen_bool(0.85) { "sv" } else { "en" },
                controller: CONTROLLERS[(idx / PER_COMPANY) % CONTROLLERS.len()],
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsr_domain::identity::{Identity, IdentityType};

    #[test]
    fn people_are_deterministic_and_valid() {
        let a = people(300, 7);
        let b = people(300, 7);
        assert_eq!(
            a.iter().map(|p| &p.email).collect::<Vec<_>>(),
            b.iter().map(|p| &p.email).collect::<Vec<_>>()
        );
        assert_ne!(people(3, 8)[0].email, a[0].email);
        for p in &a {
            for (t, v) in [
                (IdentityType::Email, &p.email),
                (IdentityType::Phone, &p.phone),
                (IdentityType::CustomerId, &p.customer_number),
            ] {
                let id = Identity::parse(t, v).unwrap_or_else(|e| panic!("{t}: {e}"));
                assert_eq!(id.value(), v, "stored in normal form");
            }
            if let Some(pnr) = &p.personnummer {
                assert_eq!(
                    Identity::parse(IdentityType::Personnummer, pnr)
                        .unwrap()
                        .value(),
                    pnr
                );
            }
        }
        assert!(a.iter().filter(|p| p.personnummer.is_some()).count() > 60);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..50 {
            let o = organisationsnummer(&mut rng);
            assert_eq!(
                dsr_domain::identity::Organisationsnummer::parse(&o)
                    .unwrap()
                    .as_str(),
                o
            );
        }
    }
}
