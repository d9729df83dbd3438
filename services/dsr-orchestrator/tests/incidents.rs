//! The register of personal-data breaches on a real database, the clock
//! moved: the 72 hours, a late notification's reasons, who is affected
//! merged across systems, the notices only at high risk, and a complaint's
//! answer queued as a letter.

use dsr_domain::clock::Clock;
use dsr_domain::deadline::HolidayCalendar;
use dsr_domain::identity::{Identity, IdentityType, Organisationsnummer};
use dsr_orchestrator::incidents::{Error, Report, Risk};
use dsr_orchestrator::ledger::Ledger;
use dsr_orchestrator::mesh::{AffectedPerson, SystemAffected};
use dsr_orchestrator::migration::Migrator;
use dsr_store::testing::TestDb;

async fn ledger() -> (TestDb, Ledger, Clock) {
    let db = TestDb::new().await.unwrap();
    dsr_store::migrate::<Migrator>(&db.db).await.unwrap();
    let clock = Clock::system();
    let l = Ledger::new(db.db.clone(), HolidayCalendar::swedish()).with_clock(clock.clone());
    (db, l, clock)
}

fn report(clock: &Clock) -> Report {
    Report {
        summary: "KYC documents read by an unauthorised user".into(),
        started_at: None,
        discovered_at: clock.now(),
        systems: vec!["crm".into()],
        categories: vec!["aml.identity_document".into()],
        approximate_people: 10,
        containment: "Access revoked".into(),
        source: "staff".into(),
    }
}

fn person(email: &str, records: u64) -> AffectedPerson {
    AffectedPerson {
        contacts: vec![Identity::parse(IdentityType::Email, email).unwrap()],
        language: "en".into(),
        categories: vec!["aml.identity_document".into()],
        records,
        window_applied: false,
    }
}

#[tokio::test]
async fn the_72_hours_run_from_discovery_and_a_late_notification_needs_its_reasons() {
    let (db, ledger, clock) = ledger().await;
    let i = ledger.report_incident(report(&clock), "dpo").await.unwrap();
    assert!(!i.authority_overdue(clock.now()));
    assert_eq!(ledger.incidents_overdue().await.unwrap(), 0);
    clock.advance(chrono::TimeDelta::hours(73));
    let i = ledger.incident(&i.id).await.unwrap();
    assert!(i.authority_overdue(clock.now()));
    assert_eq!(ledger.incidents_overdue().await.unwrap(), 1);
    // Told now, without saying why so late: refused, naming the field.
    match ledger
        .authority_notified(&i.id, clock.now(), String::new(), String::new(), "dpo")
        .await
    {
        Err(Error::Invalid(v)) => assert_eq!(v[0].0, "late_reason"),
        other => panic!("{other:?}"),
    }
    let (_, missing) = dsr_orchestrator::incidents::draft(
        &i,
        &dsr_domain::letters::Letters::shipped(),
        &dsr_domain::group::Group::shipped(),
        dsr_domain::text::Lang::En,
        clock.now(),
    );
    assert!(missing.contains(&"late_reason"), "{missing:?}");
    let told = ledger
        .authority_notified(
            &i.id,
            clock.now(),
            "IMY-1".into(),
            "The extent was only known after the systems were asked.".into(),
            "dpo",
        )
        .await
        .unwrap();
    assert!(!told.authority_overdue(clock.now()));
    assert_eq!(ledger.incidents_overdue().await.unwrap(), 0);
    let trail: Vec<String> = ledger
        .audit_of(&i.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(
        trail.contains(&"incident:authority_notified late".to_owned()),
        "{trail:?}"
    );

    // Assessed as no risk: recorded, never overdue.
    let quiet = ledger.report_incident(report(&clock), "dpo").await.unwrap();
    ledger
        .assess_incident(
            &quiet.id,
            Risk::None,
            "Encrypted laptop, key not with it".into(),
            String::new(),
            String::new(),
            "dpo",
        )
        .await
        .unwrap();
    clock.advance(chrono::TimeDelta::hours(100));
    assert_eq!(ledger.incidents_overdue().await.unwrap(), 0);
    assert_eq!(ledger.incidents(false, 0, 10).await.unwrap().len(), 2);
    db.finish().await;
}

#[tokio::test]
async fn who_is_affected_is_merged_across_systems_and_notices_need_a_high_risk() {
    let (db, ledger, clock) = ledger().await;
    let i = ledger.report_incident(report(&clock), "dpo").await.unwrap();
    let sverige = Organisationsnummer::parse("556134-1248").unwrap();
    let answers = vec![(
        sverige.clone(),
        vec![
            SystemAffected {
                system_id: "crm".into(),
                outcome: "found".into(),
                people: vec![person("anna@example.se", 2), person("bo@example.se", 1)],
                error_reason: String::new(),
            },
            SystemAffected {
                system_id: "print-mail".into(),
                outcome: "found".into(),
                people: vec![person("anna@example.se", 3)],
                error_reason: String::new(),
            },
            SystemAffected {
                system_id: "legal".into(),
                outcome: "failed".into(),
                people: vec![],
                error_reason: "UNIMPLEMENTED".into(),
            },
        ],
    )];
    let found = ledger
        .record_affected(&i.id, &answers, "dpo")
        .await
        .unwrap();
    let a = found.affected.unwrap();
    assert_eq!((a.people, a.records, a.reachable), (2, 6, 2));
    assert_eq!(a.failed_systems, vec!["legal: UNIMPLEMENTED".to_owned()]);
    assert_eq!(a.counts[0].people, 2);
    // Only at high risk.
    assert!(matches!(
        ledger.notify_people(&i.id, "dpo").await,
        Err(Error::Precondition("RISK_NOT_HIGH"))
    ));
    // Assessed below high: no one is notified, so their addresses go; a
    // high assessment later asks the systems again.
    ledger
        .assess_incident(
            &i.id,
            Risk::Risk,
            "Passports, but encrypted at rest".into(),
            "Little".into(),
            "Revoked".into(),
            "dpo",
        )
        .await
        .unwrap();
    ledger
        .assess_incident(
            &i.id,
            Risk::High,
            "The key was on the same disk".into(),
            "Identity theft".into(),
            "Revoked".into(),
            "dpo",
        )
        .await
        .unwrap();
    assert_eq!(
        ledger
            .notify_people(&i.id, "dpo")
            .await
            .unwrap()
            .notices
            .queued,
        0,
        "the addresses went with the first assessment"
    );
    let i = ledger.report_incident(report(&clock), "dpo").await.unwrap();
    ledger
        .record_affected(&i.id, &answers, "dpo")
        .await
        .unwrap();
    ledger
        .assess_incident(
            &i.id,
            Risk::High,
            "Passports".into(),
            "Identity theft".into(),
            "Revoked".into(),
            "dpo",
        )
        .await
        .unwrap();
    let n = ledger.notify_people(&i.id, "dpo").await.unwrap();
    assert_eq!(n.notices.queued, 2);
    // The people's contacts left with their notices: asking again cannot
    // replace what was sent.
    assert!(matches!(
        ledger.record_affected(&i.id, &answers, "dpo").await,
        Err(Error::Precondition("INCIDENT_PEOPLE_SETTLED"))
    ));
    db.finish().await;
}

#[tokio::test]
async fn a_complaint_waits_in_the_queue_until_answered_once() {
    let (db, ledger, clock) = ledger().await;
    let c = ledger
        .file_complaint(
            dsr_orchestrator::complaints::Filing {
                controller: Organisationsnummer::parse("556134-1248").unwrap(),
                text: "Marketing after my objection".into(),
                reply_to: Identity::parse(IdentityType::Email, "anna@example.se").unwrap(),
                language: "sv".into(),
                request_ids: vec![],
            },
            chrono::TimeDelta::days(30),
            "portal",
        )
        .await
        .unwrap();
    assert_eq!(ledger.complaints(true, 0, 10).await.unwrap().len(), 1);
    clock.advance(chrono::TimeDelta::days(31));
    assert!(ledger.complaint(&c.id).await.unwrap().overdue(clock.now()));
    let answered = ledger
        .answer_complaint(&c.id, "Stopped, and checked why".into(), "dpo")
        .await
        .unwrap();
    assert_eq!(
        answered.letter_status,
        Some(dsr_orchestrator::letters::Status::Pending)
    );
    assert!(ledger.complaints(true, 0, 10).await.unwrap().is_empty());
    assert!(matches!(
        ledger.answer_complaint(&c.id, "again".into(), "dpo").await,
        Err(Error::Precondition("COMPLAINT_ANSWERED"))
    ));
    db.finish().await;
}
