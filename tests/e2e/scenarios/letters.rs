use crate::support::*;

/// Art. 12 and 18(3) as the person reads them: a request's life writes
/// each letter once, in the request's language, to the verified address in
/// the outbox (received with its due date, extended with its months and
/// reason, completed with where to fetch the answer, never the data); a
/// refusal tells the reason and the way to the DPO, IMY and a court; each
/// letter is recorded on the request; no identity reaches the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_person_is_told_of_each_step_in_their_language() {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let mut mesh = Mesh::new(pg.as_ref().map(|p| p.url.as_str())).await;
    let token = mesh.token.clone();
    let mut client = mesh.requests().await;

    // In English, answered at once: received, then completed.
    let vt = mesh.verification_token(PERSON).await;
    let a = mesh.submit_with_token("e2e-letters-0001", &vt).await;
    let done = wait_state(
        &mut client,
        &token,
        &a,
        pb::State::Completed,
        Duration::from_secs(60),
    )
    .await;
    let due = done.deadline.unwrap().due.unwrap();
    let due = format!("{:04}-{:02}-{:02}", due.year, due.month, due.day);
    let (_, body) = wait_letter(&mesh.data, PERSON, &a, "We have received your request").await;
    assert!(body.contains(&format!("We will answer by {due}")), "{body}");
    assert!(body.contains("access to your data") && body.contains("Intrum Sverige AB"));
    let (_, body) = wait_letter(&mesh.data, PERSON, &a, "We have answered your request").await;
    assert!(
        body.contains("https://mina-uppgifter.bolaget.se/en/fetch"),
        "{body}"
    );
    assert!(!body.contains("Per Johansson"), "never the data itself");

    // In Swedish, for a controller whose answers a case handler approves:
    // the extension is told with its months and reason.
    let b = mesh
        .submit_finans(
            "e2e-letters-0002",
            &mesh.attested_token(PERSON).await,
            pb::Kind::Access,
        )
        .await;
    wait_state(
        &mut client,
        &token,
        &b,
        pb::State::AwaitingApproval,
        Duration::from_secs(60),
    )
    .await;
    wait_letter(&mesh.data, PERSON, &b, "Vi har tagit emot din begäran").await;
    let extended = client
        .extend(bearer(
            &token,
            pb::ExtendRequest {
                id: b.clone(),
                months: 1,
                reason: "Uppgifter hos våra ombud utomlands behöver sammanställas.".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    let due = extended.deadline.unwrap().due.unwrap();
    let due = format!("{:04}-{:02}-{:02}", due.year, due.month, due.day);
    let (_, body) = wait_letter(&mesh.data, PERSON, &b, "Vi behöver längre tid").await;
    assert!(body.contains("med 1 månad(er)") && body.contains(&format!("senast {due}")));
    assert!(
        body.contains("ombud utomlands") && body.contains("artikel 12.3"),
        "{body}"
    );
    client
        .approve(bearer(
            &token,
            pb::ApproveRequest {
                id: b.clone(),
                note: String::new(),
            },
        ))
        .await
        .unwrap();
    wait_letter(&mesh.data, PERSON, &b, "Vi har besvarat din begäran").await;

    // Refused: the reason, the handler's explanation, the DPO, IMY and a
    // court.
    let c = mesh
        .submit_finans(
            "e2e-letters-0003",
            &mesh.attested_token(PERSON).await,
            pb::Kind::Access,
        )
        .await;
    wait_state(
        &mut client,
        &token,
        &c,
        pb::State::AwaitingApproval,
        Duration::from_secs(60),
    )
    .await;
    client
        .reject(bearer(
            &token,
            pb::RejectRequest {
                id: c.clone(),
                reason: pb::RejectionReason::ManifestlyUnfoundedOrExcessive as i32,
                note: "Tredje likadana begäran denna vecka.".into(),
            },
        ))
        .await
        .unwrap();
    let (_, body) = wait_letter(&mesh.data, PERSON, &c, "Besked om din begäran").await;
    for told in [
        "uppenbart ogrundad eller orimlig (artikel 12.5)",
        "Tredje likadana begäran",
        "DPO@se.intrum.com",
        "Integritetsskyddsmyndigheten (IMY), https://www.imy.se",
        "domstol",
    ] {
        assert!(body.contains(told), "{told:?} not in {body}");
    }

    // Each letter is on its request: what, when, by which channel.
    let letters = get(&mut client, &token, &a).await.letters;
    let seen: Vec<(i32, i32, &str)> = letters
        .iter()
        .map(|l| (l.kind, l.status, l.channel.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                pb::LetterKind::Received as i32,
                pb::LetterStatus::Sent as i32,
                "email (verified)"
            ),
            (
                pb::LetterKind::Completed as i32,
                pb::LetterStatus::Sent as i32,
                "email (verified)"
            ),
        ]
    );
    assert!(letters.iter().all(|l| l.send_time.is_some()));

    let log = mesh.stop("orchestrator") + &mesh.stop("identity");
    assert!(!log.contains(PERSON), "an identity in the logs");
    drop(mesh);
    if let Some(p) = pg {
        p.finish().await;
    }
}
