use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_dsr_up_objection_rectification_and_restriction_reach_every_system() {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = consecutive_ports(20);
    let up = dsr_up(&data, base, pg.as_ref().map(|p| p.url.as_str()));
    ready(base + 7, &up).await;
    ready(base + 8, &up).await;
    let crm = crm_db(&data, pg.as_ref()).await;

    // A scored prospect who is also a contact in an open relationship.
    let found = rows(
        &crm,
        &format!(
            "SELECT p.email AS email FROM prospects p JOIN contacts c ON c.email = p.email
             WHERE p.controller_orgnr = '{SVERIGE}' AND p.lead_score IS NOT NULL
               AND c.relationship_ended_on IS NULL ORDER BY p.id LIMIT 1"
        ),
    )
    .await;
    let who: String = found.first().unwrap().try_get("", "email").unwrap();

    // Bad input is refused naming the field, and records nothing.
    let bad = cli(&data, base, &["request", "object", "--email", &who]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("InvalidArgument") && err.contains("purposes"),
        "{err}"
    );
    let bad = cli(
        &data,
        base,
        &["request", "rectify", "--email", &who, "--correct", "=x"],
    );
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("corrections[0].category_id"), "{err}");

    // Objection to direct marketing: the prospect entry is marked and its
    // score removed.
    let printed = ok(&cli(
        &data,
        base,
        &[
            "request",
            "object",
            "--email",
            &who,
            "--direct-marketing",
            "--wait",
        ],
    ));
    assert!(printed.contains("state      completed"), "{printed}");
    let objected = request_id(&printed);
    eventually(
        &crm,
        &format!(
            "SELECT id FROM prospects WHERE email = '{who}' AND lead_score IS NULL AND objected_purposes LIKE '%direct_marketing%'"
        ),
        1,
    )
    .await;

    // The marketing list is imported again, the email in another case, with
    // a newcomer beside it: the newcomer is scored, the person is not, and
    // their new entry carries the objection.
    let today = chrono::Utc::now().date_naive();
    exec(
        &crm,
        &format!(
            "INSERT INTO prospects (id, controller_orgnr, email, last_interaction_on) VALUES
               (9000001, '{SVERIGE}', '{}', '{today}'),
               (9000002, '{SVERIGE}', 'newcomer@example.se', '{today}')",
            who.to_uppercase()
        ),
    )
    .await;
    exec(
        &crm,
        &format!(
            "INSERT INTO prospect_interactions (id, prospect_id, kind, occurred_on, detail) VALUES
               (90000010, 9000001, 'event', '{today}', 'import'),
               (90000020, 9000002, 'event', '{today}', 'import')"
        ),
    )
    .await;
    eventually(
        &crm,
        "SELECT id FROM prospects WHERE id = 9000002 AND lead_score = 10",
        1,
    )
    .await;
    assert_eq!(
        count(
            &crm,
            "SELECT id FROM prospects WHERE id = 9000001 AND lead_score IS NULL AND objected_purposes LIKE '%direct_marketing%'"
        )
        .await,
        1,
        "the objection holds after the re-import"
    );

    // Art. 19: every recipient of the CRM's data is listed, the CRM vendor
    // told through its own system.
    let told = ok(&cli(&data, base, &["request", "notifications", &objected]));
    assert!(told.contains("crm-vendor"), "{told}");
    assert!(told.contains("told through its system crm"), "{told}");

    // A recipient of the CRM's data with no lawful transfer basis (India:
    // no adequacy decision, no safeguard recorded): listed NOT LAWFUL.
    let agent = dir.path().join("agent-in.toml");
    std::fs::write(
        &agent,
        format!(
            r#"[[recipient]]
id = "collection-agent-in"
name = {{ sv = "Inkassoombud (Indien)", en = "Debt-collection agent (India)" }}
role = "agent"
country = "IN"
controllers = ["{SVERIGE}"]
categories = ["contact.name", "contact.job_title"]
systems = ["crm"]
dpa_reference = "AGENCY-IN-2026-01"
purpose = {{ sv = "driver in fordringar från gäldenärer i Indien", en = "collects claims from debtors in India" }}
"#
        ),
    )
    .unwrap();
    ok(&cli(
        &data,
        base,
        &["transfers", "put", "--file", agent.to_str().unwrap()],
    ));
    let listed = ok(&cli(&data, base, &["transfers", "list"]));
    let entry = listed
        .split("collection-agent-in")
        .nth(1)
        .expect("listed")
        .split("\n")
        .take(6)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        entry.contains("transfer: NOT LAWFUL") && entry.contains("x "),
        "{listed}"
    );
    let shown = ok(&cli(&data, base, &["transfers", "get", "print-mail"]));
    assert!(shown.contains("transfer: lawful"), "{shown}");

    // Rectification reaches the CRM, with a verified receipt; the corrected
    // data does not go to the recipient with no lawful transfer: the
    // request and its notifications say why.
    let printed = ok(&cli(
        &data,
        base,
        &[
            "request",
            "rectify",
            "--email",
            &who,
            "--correct",
            "contact.job_title=Chief Credit Officer",
            "--wait",
        ],
    ));
    assert!(printed.contains("state      completed"), "{printed}");
    assert_eq!(
        count(
            &crm,
            &format!(
                "SELECT id FROM contacts WHERE email = '{who}' AND job_title = 'Chief Credit Officer'"
            )
        )
        .await,
        1
    );
    let receipts = ok(&cli(
        &data,
        base,
        &["request", "receipts", &request_id(&printed)],
    ));
    assert!(
        receipts.contains("rectify") && receipts.contains("verified yes"),
        "{receipts}"
    );
    assert!(
        printed.contains("! not sent to collection-agent-in")
            && printed.contains("no lawful transfer: refused"),
        "{printed}"
    );
    let told = ok(&cli(
        &data,
        base,
        &["request", "notifications", &request_id(&printed)],
    ));
    let line = told
        .lines()
        .find(|l| l.starts_with("collection-agent-in"))
        .unwrap_or_else(|| panic!("{told}"));
    assert!(
        line.contains("NOT SENT: no lawful transfer (refused)"),
        "{told}"
    );
    assert!(
        told.contains("told through its system crm"),
        "the lawful recipients are told: {told}"
    );

    // Restriction, then its lift once the person was told.
    let printed = ok(&cli(
        &data,
        base,
        &[
            "request",
            "restrict",
            "--email",
            &who,
            "--ground",
            "accuracy-contested",
            "--wait",
        ],
    ));
    assert!(printed.contains("state      completed"), "{printed}");
    let restricted =
        format!("SELECT id FROM contacts WHERE email = '{who}' AND restricted_at IS NOT NULL");
    assert_eq!(count(&crm, &restricted).await, 1);
    let told_at = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let printed = ok(&cli(
        &data,
        base,
        &[
            "request",
            "restrict",
            "--email",
            &who,
            "--lift",
            "--person-informed-at",
            &told_at,
            "--wait",
        ],
    ));
    assert!(printed.contains("state      completed"), "{printed}");
    assert_eq!(count(&crm, &restricted).await, 0);

    // Art. 18(2): a restricted prospect is stored, not processed. The CRM's
    // scoring job scores a newcomer but not the restricted person (their
    // score cleared, as when the model is run again); once lifted, they
    // are scored again.
    let found = rows(
        &crm,
        &format!(
            "SELECT email FROM prospects WHERE controller_orgnr = '{SVERIGE}'
               AND lead_score IS NOT NULL AND lower(email) <> lower('{who}')
               AND objected_purposes IS NULL ORDER BY id LIMIT 1"
        ),
    )
    .await;
    let scored: String = found.first().unwrap().try_get("", "email").unwrap();
    let printed = ok(&cli(
        &data,
        base,
        &[
            "request",
            "restrict",
            "--email",
            &scored,
            "--ground",
            "unlawful-processing",
            "--wait",
        ],
    ));
    assert!(printed.contains("state      completed"), "{printed}");
    exec(
        &crm,
        &format!(
            "UPDATE prospects SET lead_score = NULL, score_factors = NULL WHERE email = '{scored}'"
        ),
    )
    .await;
    exec(
        &crm,
        &format!(
            "INSERT INTO prospects (id, controller_orgnr, email, last_interaction_on) VALUES
               (9000003, '{SVERIGE}', 'second.newcomer@example.se', '{today}')"
        ),
    )
    .await;
    eventually(
        &crm,
        "SELECT id FROM prospects WHERE id = 9000003 AND lead_score IS NOT NULL",
        1,
    )
    .await;
    assert_eq!(
        count(
            &crm,
            &format!(
                "SELECT id FROM prospects WHERE email = '{scored}' AND lead_score IS NOT NULL"
            )
        )
        .await,
        0,
        "a restricted prospect is not scored"
    );
    let told_at = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    ok(&cli(
        &data,
        base,
        &[
            "request",
            "restrict",
            "--email",
            &scored,
            "--lift",
            "--person-informed-at",
            &told_at,
            "--wait",
        ],
    ));
    eventually(
        &crm,
        &format!("SELECT id FROM prospects WHERE email = '{scored}' AND lead_score IS NOT NULL"),
        1,
    )
    .await;

    let logs = up.kill();
    assert!(!logs.contains(who.as_str()), "an identity in the logs");
    assert!(!logs.contains(scored.as_str()), "an identity in the logs");
    drop(crm);
    if let Some(p) = pg {
        p.finish().await;
    }
}
