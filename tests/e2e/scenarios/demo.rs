use crate::support::*;

/// The README's demo people, under `dsr up` started on a date years from
/// now (the seed is dated relative to the clock): the one whose
/// relationship ended 400 days ago keeps the AML records, retained until
/// five years after the end; the one whose relationship ended six years
/// ago is erased in full; the one in an ongoing relationship keeps what
/// the contract needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_people_tell_the_readmes_stories_whatever_the_date() {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = consecutive_ports(20);
    let day = chrono::NaiveDate::from_ymd_opt(2029, 2, 28).unwrap();
    let up = dsr_up_with(
        &data,
        base,
        pg.as_ref().map(|p| p.url.as_str()),
        Some("2029-02-28T09:00:00Z"),
    );
    ready(base + 7, &up).await;
    ready(base + 8, &up).await;
    let emails: Vec<String> = dsr_system_sql::reference::Demo::ALL
        .iter()
        .map(|d| d.email(1000, 1).unwrap())
        .collect();
    let erase = |who: &str| {
        let printed = ok(&cli(
            &data,
            base,
            &["request", "erase", "--email", who, "--wait"],
        ));
        let plan = ok(&cli(
            &data,
            base,
            &["request", "plan", &request_id(&printed)],
        ));
        (printed, plan)
    };

    let (printed, plan) = erase(&emails[0]);
    assert!(
        printed.contains("state      completed_with_retained"),
        "{printed}"
    );
    let aml_until = day - chrono::Duration::days(400) + chrono::Months::new(60);
    for store in ["kyc_documents", "pep_screenings"] {
        let line = plan.lines().find(|l| l.contains(store)).unwrap();
        assert!(
            line.contains("RETAIN") && line.contains(&format!("until {aml_until}")),
            "{plan}"
        );
    }
    assert!(
        plan.lines()
            .any(|l| l.contains(" contacts ") && l.contains("erase")),
        "{plan}"
    );

    let (printed, plan) = erase(&emails[1]);
    assert!(printed.contains("state      completed\n"), "{printed}");
    assert!(
        plan.contains("0 retained") && plan.contains("kyc_documents"),
        "{plan}"
    );

    let (printed, plan) = erase(&emails[2]);
    assert!(
        printed.contains("state      completed_with_retained"),
        "{printed}"
    );
    let contact = plan.lines().find(|l| l.contains(" contacts ")).unwrap();
    assert!(
        contact.contains("RETAIN") && contact.contains("Art. 6(1)(b)"),
        "{plan}"
    );

    let logs = up.kill();
    for e in &emails {
        assert!(!logs.contains(e.as_str()), "an identity in the logs");
    }
    if let Some(p) = pg {
        p.finish().await;
    }
}
