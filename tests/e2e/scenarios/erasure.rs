use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_dsr_up_an_erasure_erases_retains_by_law_and_is_replayed_after_a_restore() {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = consecutive_ports(20);
    let up = dsr_up(&data, base, pg.as_ref().map(|p| p.url.as_str()));
    ready(base + 7, &up).await;
    ready(base + 8, &up).await;
    let crm = crm_db(&data, pg.as_ref()).await;

    // A seeded person of Intrum Sverige whose relationship ended about three
    // years ago (more than 24, less than 60 months), with AML documents, an
    // event registration and a prospect-register entry.
    let today = chrono::Utc::now().date_naive();
    let months_ago = |m: u32| today.checked_sub_months(chrono::Months::new(m)).unwrap();
    let found = rows(
        &crm,
        &format!(
            "SELECT c.id AS id, c.email AS email, CAST(c.relationship_ended_on AS TEXT) AS ended
             FROM contacts c
             WHERE c.controller_orgnr = '{SVERIGE}'
               AND c.relationship_ended_on > '{}' AND c.relationship_ended_on < '{}'
               AND EXISTS (SELECT 1 FROM kyc_documents k WHERE k.contact_id = c.id)
               AND EXISTS (SELECT 1 FROM pep_screenings s WHERE s.contact_id = c.id)
               AND EXISTS (SELECT 1 FROM event_registrations e WHERE e.contact_id = c.id)
               AND EXISTS (SELECT 1 FROM prospects p WHERE p.email = c.email)
             ORDER BY c.id LIMIT 1",
            months_ago(54),
            months_ago(30)
        ),
    )
    .await;
    let person = found.first().expect("a seeded person ended ~3 years ago");
    let id: i64 = person.try_get("", "id").unwrap();
    let who: String = person.try_get("", "email").unwrap();
    let ended: chrono::NaiveDate = person
        .try_get::<String>("", "ended")
        .unwrap()
        .get(..10)
        .unwrap()
        .parse()
        .unwrap();
    let aml_until = ended.checked_add_months(chrono::Months::new(60)).unwrap();

    // A backup of the CRM, taken before the erasure.
    for t in CRM_TABLES {
        exec(&crm, &format!("CREATE TABLE bak_{t} AS SELECT * FROM {t}")).await;
    }
    let before_erasure = chrono::Utc::now() - chrono::Duration::seconds(2);
    let counts_before = table_counts(&crm).await;

    let printed = ok(&cli(
        &data,
        base,
        &["request", "erase", "--email", &who, "--wait"],
    ));
    let rid = request_id(&printed);
    assert!(
        printed.contains("state      completed_with_retained"),
        "{printed}"
    );

    // The plan: contact, event and prospect data erased; the AML documents
    // and PEP screening retained with the AML ground until the end + 5 years.
    let plan = ok(&cli(&data, base, &["request", "plan", &rid]));
    let line = |store: &str| -> Vec<&str> {
        plan.lines()
            .filter(|l| l.trim_start().starts_with("crm") && l.contains(&format!(" {store} ")))
            .collect()
    };
    for store in [
        "contacts",
        "event_registrations",
        "prospects",
        "prospect_interactions",
    ] {
        let ls = line(store);
        assert!(!ls.is_empty(), "{store} not in the plan:\n{plan}");
        assert!(ls.iter().all(|l| l.contains(" erase ")), "{store}:\n{plan}");
    }
    for store in ["kyc_documents", "pep_screenings"] {
        let ls = line(store);
        assert!(!ls.is_empty(), "{store} not in the plan:\n{plan}");
        for l in ls {
            assert!(l.contains("RETAIN"), "{l}");
            assert!(l.contains(&format!("until {aml_until}")), "{l}");
            assert!(l.contains("17(3)(b)") && l.contains("2017:630"), "{l}");
        }
    }
    assert!(
        plan.contains(&format!(
            "first deferred erasure on {}",
            aml_until.succ_opt().unwrap()
        )),
        "{plan}"
    );
    let shown = ok(&cli(&data, base, &["request", "show", &rid]));
    assert!(shown.contains("deferred"), "{shown}");
    // The letters to the person are on the request.
    assert!(
        shown.contains("letters to the person\n  received "),
        "{shown}"
    );

    // Gone everywhere in the CRM; the AML records kept and restricted.
    let c = |sql: String| {
        let crm = crm.clone();
        async move { count(&crm, &sql).await }
    };
    assert_eq!(
        c(format!("SELECT id FROM contacts WHERE id = {id}")).await,
        0
    );
    assert_eq!(
        c(format!(
            "SELECT id FROM event_registrations WHERE contact_id = {id}"
        ))
        .await,
        0
    );
    assert_eq!(
        c(format!("SELECT id FROM prospects WHERE email = '{who}'")).await,
        0
    );
    let kept = c(format!(
        "SELECT id FROM kyc_documents WHERE id IN (SELECT id FROM bak_kyc_documents WHERE contact_id = {id}) AND restricted_at IS NOT NULL"
    ))
    .await;
    assert!(kept >= 1, "the AML documents are kept, restricted");
    assert_eq!(
        c(format!(
            "SELECT id FROM pep_screenings WHERE id IN (SELECT id FROM bak_pep_screenings WHERE contact_id = {id}) AND restricted_at IS NULL"
        ))
        .await,
        0,
        "every retained PEP screening is restricted"
    );

    // Every receipt verifies, against the keys each system publishes.
    let receipts = ok(&cli(&data, base, &["request", "receipts", &rid]));
    let receipt_lines: Vec<&str> = receipts
        .lines()
        .filter(|l| l.contains("signed by"))
        .collect();
    assert!(receipt_lines.len() >= 2, "{receipts}");
    assert!(
        receipt_lines.iter().all(|l| l.contains("verified yes")),
        "{receipts}"
    );
    assert!(receipts.contains(" crm "), "{receipts}");

    // A second identical request changes nothing.
    let counts_after = table_counts(&crm).await;
    assert_ne!(counts_before, counts_after);
    let again = ok(&cli(
        &data,
        base,
        &["request", "erase", "--email", &who, "--wait"],
    ));
    assert!(again.contains("state      completed"), "{again}");
    assert_eq!(table_counts(&crm).await, counts_after);

    // Restore the backup: the person is back. Replaying the erasures since
    // the backup erases them again, and nothing else.
    for t in CRM_TABLES.iter().rev() {
        exec(&crm, &format!("DELETE FROM {t}")).await;
    }
    for t in CRM_TABLES {
        exec(&crm, &format!("INSERT INTO {t} SELECT * FROM bak_{t}")).await;
    }
    assert_eq!(table_counts(&crm).await, counts_before);
    assert_eq!(
        c(format!("SELECT id FROM contacts WHERE id = {id}")).await,
        1
    );
    let replayed = ok(&cli(
        &data,
        base,
        &[
            "replay-erasures",
            "--since",
            &before_erasure.to_rfc3339(),
            "--system",
            "crm",
        ],
    ));
    assert!(replayed.contains("crm"), "{replayed}");
    assert_eq!(table_counts(&crm).await, counts_after, "{replayed}");
    assert_eq!(
        c(format!("SELECT id FROM contacts WHERE id = {id}")).await,
        0
    );
    assert_eq!(
        c(format!(
            "SELECT id FROM pep_screenings WHERE id IN (SELECT id FROM bak_pep_screenings WHERE contact_id = {id}) AND restricted_at IS NULL"
        ))
        .await,
        0,
        "restricted again"
    );

    // A person whose relationship goes on: the business-contact data is
    // retained on the contract, visibly.
    let open = rows(
        &crm,
        &format!(
            "SELECT c.email AS email FROM contacts c
             WHERE c.controller_orgnr = '{SVERIGE}' AND c.relationship_ended_on IS NULL
               AND c.email IS NOT NULL ORDER BY c.id LIMIT 1"
        ),
    )
    .await;
    let open_who: String = open.first().unwrap().try_get("", "email").unwrap();
    let printed = ok(&cli(
        &data,
        base,
        &["request", "erase", "--email", &open_who, "--wait"],
    ));
    assert!(
        printed.contains("state      completed_with_retained"),
        "{printed}"
    );
    let plan = ok(&cli(
        &data,
        base,
        &["request", "plan", &request_id(&printed)],
    ));
    let contact = plan
        .lines()
        .find(|l| l.trim_start().starts_with("crm") && l.contains(" contacts "))
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(
        contact.contains("RETAIN") && contact.contains("6(1)(b)"),
        "{contact}"
    );
    assert!(contact.contains("until (open)"), "{contact}");

    // The deferred erasure is never run ahead of its day.
    let dev_token = ok(&cli(&data, base, &["token"])).trim().to_owned();
    let mut erasure = ErasureClient::new(channel(base + 8).await);
    let early = erasure
        .execute_deferred(bearer(
            &dev_token,
            era::ExecuteDeferredRequest {
                request_id: rid.clone(),
                as_of: Some(date_pb(aml_until.succ_opt().unwrap())),
                due_date: Some(date_pb(today)),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(early.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        early.get_details_bad_request().unwrap().field_violations[0].field,
        "as_of"
    );
    let deferred = erasure
        .execute_deferred(bearer(
            &dev_token,
            era::ExecuteDeferredRequest {
                request_id: rid.clone(),
                as_of: None,
                due_date: Some(date_pb(today)),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap();
    assert!(
        deferred.systems.is_empty(),
        "nothing is due yet: {deferred:?}"
    );
    assert!(deferred.retained_count >= 2, "{deferred:?}");

    // A person whose relationship ended more than five years ago: the AML
    // period is over, the plan erases the documents, and the system agrees.
    let long_ago = rows(
        &crm,
        &format!(
            "SELECT c.email AS email, c.id AS id FROM contacts c
             WHERE c.controller_orgnr = '{SVERIGE}' AND c.relationship_ended_on < '{}'
               AND EXISTS (SELECT 1 FROM kyc_documents k WHERE k.contact_id = c.id)
             ORDER BY c.id LIMIT 1",
            months_ago(61)
        ),
    )
    .await;
    let old_who: String = long_ago.first().unwrap().try_get("", "email").unwrap();
    let old_id: i64 = long_ago.first().unwrap().try_get("", "id").unwrap();
    let printed = ok(&cli(
        &data,
        base,
        &["request", "erase", "--email", &old_who, "--wait"],
    ));
    let plan = ok(&cli(
        &data,
        base,
        &["request", "plan", &request_id(&printed)],
    ));
    assert!(
        plan.lines()
            .filter(|l| l.contains(" kyc_documents "))
            .all(|l| l.contains(" erase ")),
        "{plan}"
    );
    assert_eq!(
        c(format!(
            "SELECT id FROM kyc_documents WHERE contact_id = {old_id}"
        ))
        .await,
        0
    );

    // A legal hold on a person keeps everything over an erasure request,
    // restricted, until it is lifted.
    let held = rows(
        &crm,
        &format!(
            "SELECT c.email AS email FROM contacts c
             WHERE c.controller_orgnr = '{SVERIGE}' AND c.email IS NOT NULL
               AND c.email <> '{who}' AND c.email <> '{open_who}'
             ORDER BY c.id DESC LIMIT 1"
        ),
    )
    .await;
    let held_who: String = held.first().unwrap().try_get("", "email").unwrap();
    let placed = ok(&cli(
        &data,
        base,
        &[
            "hold",
            "place",
            "--email",
            &held_who,
            "--ground",
            "dispute 2026-T-1234: preserve evidence",
        ],
    ));
    let hold_id = placed.split_whitespace().next().unwrap().to_owned();
    assert!(
        !placed.contains(&held_who),
        "a hold shows no identity: {placed}"
    );
    let printed = ok(&cli(
        &data,
        base,
        &["request", "erase", "--email", &held_who, "--wait"],
    ));
    let plan = ok(&cli(
        &data,
        base,
        &["request", "plan", &request_id(&printed)],
    ));
    let planned: Vec<&str> = plan.lines().filter(|l| l.starts_with("  ")).collect();
    assert!(!planned.is_empty(), "{plan}");
    assert!(
        planned
            .iter()
            .all(|l| l.contains("RETAIN") && l.contains(&format!("legal hold {hold_id}"))),
        "{plan}"
    );
    assert_eq!(
        count(
            &crm,
            &format!(
                "SELECT id FROM contacts WHERE email = '{held_who}' AND restricted_at IS NOT NULL"
            )
        )
        .await,
        1
    );
    let listed = ok(&cli(&data, base, &["hold", "list"]));
    assert!(listed.contains(&hold_id), "{listed}");
    ok(&cli(&data, base, &["hold", "lift", &hold_id]));
    assert!(!ok(&cli(&data, base, &["hold", "list"])).contains(&hold_id));
    assert!(ok(&cli(&data, base, &["hold", "list", "--all"])).contains("lifted by"));

    // A retention sweep of the CRM: a dry run counts, then the sweep
    // removes exactly that, with receipts; nothing past its rule is left.
    let expired = format!(
        "SELECT id FROM contacts WHERE relationship_ended_on < '{}' AND restricted_at IS NULL",
        months_ago(24)
    );
    let held_contact =
        format!("SELECT id FROM contacts WHERE email = '{held_who}' AND restricted_at IS NOT NULL");
    let before = count(&crm, &expired).await;
    assert!(before > 0, "the seed holds contacts past their retention");
    let dry = ok(&cli(
        &data,
        base,
        &["sweep", "--system", "crm", "--dry-run"],
    ));
    assert!(dry.contains("would be removed"), "{dry}");
    assert_eq!(
        count(&crm, &expired).await,
        before,
        "a dry run changes nothing"
    );
    let swept = ok(&cli(
        &data,
        base,
        &["sweep", "--system", "crm", "--batch-size", "50"],
    ));
    assert_eq!(count(&crm, &expired).await, 0, "{swept}");
    assert_eq!(
        count(&crm, &held_contact).await,
        1,
        "a sweep never removes a restricted record"
    );
    let sweep_id = request_id(&swept);
    let removed = |out: &str| -> u64 {
        out.lines()
            .find(|l| l.trim_start().starts_with("crm"))
            .and_then(|l| l.split(", ").nth(1))
            .and_then(|w| w.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{out}"))
    };
    assert_eq!(removed(&dry), removed(&swept), "{dry}\n{swept}");
    assert!(removed(&swept) >= u64::try_from(before).unwrap());
    let receipts = ok(&cli(&data, base, &["request", "receipts", &sweep_id]));
    assert!(
        receipts
            .lines()
            .filter(|l| l.contains("verified yes"))
            .count()
            >= 1,
        "{receipts}"
    );

    let logs = up.kill();
    for secret in [
        who.as_str(),
        open_who.as_str(),
        held_who.as_str(),
        old_who.as_str(),
    ] {
        assert!(!logs.contains(secret), "an identity in the logs");
    }
    drop(crm);
    if let Some(p) = pg {
        p.finish().await;
    }
}
