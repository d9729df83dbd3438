use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_erasure_erases_on_its_date_and_a_restriction_or_a_difference_waits_for_a_handler()
 {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = consecutive_ports(20);
    let up = dsr_up(&data, base, pg.as_ref().map(|p| p.url.as_str()));
    ready(base + 7, &up).await;
    ready(base + 8, &up).await;
    let crm = crm_db(&data, pg.as_ref()).await;

    // Two seeded people whose relationship ended about three years ago:
    // their AML documents and PEP screenings are kept for five years.
    let today = chrono::Utc::now().date_naive();
    let months_ago = |m: u32| today.checked_sub_months(chrono::Months::new(m)).unwrap();
    let people = rows(
        &crm,
        &format!(
            "SELECT c.id AS id, c.email AS email, CAST(c.relationship_ended_on AS TEXT) AS ended
             FROM contacts c
             WHERE c.controller_orgnr = '{SVERIGE}' AND c.email IS NOT NULL
               AND c.relationship_ended_on > '{}' AND c.relationship_ended_on < '{}'
               AND EXISTS (SELECT 1 FROM kyc_documents k WHERE k.contact_id = c.id)
             ORDER BY c.id LIMIT 2",
            months_ago(54),
            months_ago(30)
        ),
    )
    .await;
    assert_eq!(people.len(), 2, "two seeded people ended ~3 years ago");
    let person = |i: usize| {
        let r = &people[i];
        let id: i64 = r.try_get("", "id").unwrap();
        let email: String = r.try_get("", "email").unwrap();
        let ended: chrono::NaiveDate = r
            .try_get::<String>("", "ended")
            .unwrap()
            .get(..10)
            .unwrap()
            .parse()
            .unwrap();
        (
            id,
            email,
            ended.checked_add_months(chrono::Months::new(60)).unwrap(),
        )
    };
    let (a_id, a_email, a_until) = person(0);
    let (b_id, b_email, b_until) = person(1);
    let aml_rows = |id: i64| {
        format!(
            "SELECT id FROM kyc_documents WHERE contact_id = {id}
             UNION ALL SELECT id FROM pep_screenings WHERE contact_id = {id}"
        )
    };
    let a_kyc: Vec<i64> = rows(
        &crm,
        &format!("SELECT id FROM kyc_documents WHERE contact_id = {a_id}"),
    )
    .await
    .iter()
    .map(|r| r.try_get("", "id").unwrap())
    .collect();
    let b_kyc: Vec<i64> = rows(
        &crm,
        &format!("SELECT id FROM kyc_documents WHERE contact_id = {b_id}"),
    )
    .await
    .iter()
    .map(|r| r.try_get("", "id").unwrap())
    .collect();
    assert!(count(&crm, &aml_rows(a_id)).await >= 1);
    let kyc_left = |ids: &[i64]| {
        format!(
            "SELECT id FROM kyc_documents WHERE id IN ({})",
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    };

    // A: erased, the AML records retained until their date.
    let printed = ok(&cli(
        &data,
        base,
        &["request", "erase", "--email", &a_email, "--wait"],
    ));
    let a_req = request_id(&printed);
    assert!(
        printed.contains("state      completed_with_retained"),
        "{printed}"
    );
    assert_eq!(count(&crm, &kyc_left(&a_kyc)).await, a_kyc.len() as i64);

    // B restricted their data first (Art. 18(1)(c)), then asked for
    // erasure: the CRM keeps what the restriction covers and says so in its
    // receipt; the plan erased it; the request waits for a case handler,
    // showing the difference, and the audit trail names each one.
    let printed = ok(&cli(
        &data,
        base,
        &[
            "request",
            "restrict",
            "--email",
            &b_email,
            "--ground",
            "needed-for-legal-claims",
            "--wait",
        ],
    ));
    assert!(printed.contains("state      completed"), "{printed}");
    let out = cli(
        &data,
        base,
        &["request", "erase", "--email", &b_email, "--wait"],
    );
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !out.status.success(),
        "a request awaiting review is not done"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("awaits a case handler"),
        "{out:?}"
    );
    let b_req = request_id(&printed);
    assert!(printed.contains("state      awaiting_review"), "{printed}");
    let shown = ok(&cli(&data, base, &["request", "show", &b_req]));
    assert!(
        shown.lines().any(|l| l.starts_with("! crm contacts")
            && l.contains("expected removed, the receipt says retained (restricted: request)")),
        "{shown}"
    );
    let plan = ok(&cli(&data, base, &["request", "plan", &b_req]));
    assert!(
        plan.contains("discrepancies: the receipts differ from this plan"),
        "{plan}"
    );
    assert_eq!(
        count(&crm, &format!("SELECT id FROM contacts WHERE id = {b_id}")).await,
        1,
        "the restriction kept the contact"
    );
    // The handler accepts the outcome as the receipts show it.
    ok(&cli(&data, base, &["request", "approve", &b_req]));
    wait_shown(&data, base, &b_req, "completed_with_retained").await;
    let logs = up.kill();

    // The clock moves past both retention dates; the mesh starts again on
    // the same data and the deferred erasures run by themselves.
    let later = a_until.max(b_until) + chrono::Days::new(2);
    let later = later.to_string();
    let up = dsr_up_with(
        &data,
        base,
        pg.as_ref().map(|p| p.url.as_str()),
        Some(&later),
    );
    ready(base + 7, &up).await;
    ready(base + 8, &up).await;

    // A: the KYC documents and PEP screenings are erased, the receipt
    // counts them, nothing is retained.
    let shown = wait_shown(&data, base, &a_req, "completed").await;
    assert!(shown.contains("; 0 retained"), "{shown}");
    assert_eq!(count(&crm, &kyc_left(&a_kyc)).await, 0, "{shown}");
    let receipts = ok(&cli(&data, base, &["request", "receipts", &a_req]));
    assert!(receipts.contains("deferred:"), "{receipts}");

    // B: the restriction keeps the AML records past their date; the
    // deferred erasure's receipt says why, and the request waits again.
    let shown = wait_shown(&data, base, &b_req, "awaiting_review").await;
    assert!(
        shown.lines().any(|l| l.starts_with("! crm kyc_documents")
            && l.contains("deferred:")
            && l.contains("(restricted: request)")),
        "{shown}"
    );
    assert_eq!(count(&crm, &kyc_left(&b_kyc)).await, b_kyc.len() as i64);

    let logs = logs + &up.kill();
    for secret in [a_email.as_str(), b_email.as_str()] {
        assert!(!logs.contains(secret), "an identity in the logs");
    }
    drop(crm);
    if let Some(p) = pg {
        p.finish().await;
    }
}
