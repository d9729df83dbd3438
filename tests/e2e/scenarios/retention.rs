use crate::support::*;

/// The mesh's own SQLite databases (not the data systems' `system-*.db`)
/// whose bytes, free pages and write-ahead log included, hold `needle`.
fn mesh_files_holding(data: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(data).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("system-") || !name.contains(".db") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            found.push(name);
        }
    }
    found
}

/// Under `dsr up`, a person's access request and another's erasure are
/// answered; the mesh's databases hold their identities while needed. Run
/// again with the clock past the identities' retention (30 days after the
/// answer): no identity value of either person (email, phone,
/// personnummer, customer number) remains in any of the mesh's own
/// databases, bytes on disk included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_identity_remains_in_the_meshs_databases_once_its_retention_passed() {
    let _turn = TURN.lock().await;
    // The files are read: SQLite, whatever the environment names.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = consecutive_ports(20);
    let up = dsr_up(&data, base, None);
    ready(base + 7, &up).await;
    ready(base + 8, &up).await;

    let people = dsr_system_sql::reference::people(1000, 1);
    let reader = people.iter().find(|p| p.email == PERSON).unwrap();
    let erased_email = dsr_system_sql::reference::Demo::ALL[1]
        .email(1000, 1)
        .unwrap();
    let erased = people.iter().find(|p| p.email == erased_email).unwrap();
    let out = dir.path().join("access");
    let printed = ok(&cli(
        &data,
        base,
        &[
            "request",
            "access",
            "--email",
            &reader.email,
            "--wait",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(printed.contains("state      completed"), "{printed}");
    let printed = ok(&cli(
        &data,
        base,
        &["request", "erase", "--email", &erased.email, "--wait"],
    ));
    assert!(printed.contains("state      completed"), "{printed}");
    let logs = up.kill();

    let mut values = Vec::new();
    for p in [reader, erased] {
        values.push(p.email.clone());
        values.push(p.phone.clone());
        values.push(p.customer_number.clone());
        values.extend(p.personnummer.clone());
    }
    // While the requests are recent, the ledger still holds them (so the
    // check below can fail).
    assert!(
        !mesh_files_holding(&data, &reader.email).is_empty(),
        "the ledger holds the identities of a recent request"
    );

    // Forty days on: the purges run as the services start.
    let later = (chrono::Utc::now() + chrono::Duration::days(40)).to_rfc3339();
    let up = dsr_up_with(&data, base, None, Some(&later));
    ready(base + 7, &up).await;
    ready(base + 8, &up).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut left = Vec::new();
        for v in &values {
            left.extend(
                mesh_files_holding(&data, v)
                    .into_iter()
                    .map(|f| format!("{f}: a value of the person's")),
            );
        }
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "identities still at rest: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let logs = logs + &up.kill();
    // Checked again after a clean stop (checkpointed, WAL gone).
    for v in &values {
        assert_eq!(mesh_files_holding(&data, v), Vec::<String>::new());
        assert!(!logs.contains(v.as_str()), "an identity in the logs");
    }
}
