use crate::support::*;

/// An erasure, configured to need substantial assurance, submitted with an
/// email code's token (low): no code is sent, the request waits in
/// VERIFYING saying what it needs, `Verify` with the weak token is refused
/// (ASSURANCE_TOO_LOW), and a case handler's attestation moves it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_that_needs_stronger_verification_waits_for_it() {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let mesh = Mesh::with_env(
        pg.as_ref().map(|p| p.url.as_str()),
        vec![(
            "DSR_ORCHESTRATOR__MIN_ASSURANCE".into(),
            "{ erasure = \"substantial\" }".into(),
        )],
    )
    .await;
    let token = mesh.token.clone();
    let weak = mesh.verification_token(PERSON).await;
    let codes = codes_sent(&mesh.data);
    let mut client = mesh.requests().await;
    let id = client
        .submit(bearer(
            &token,
            pb::SubmitRequest {
                kind: pb::Kind::Erasure as i32,
                controller: controller(SVERIGE),
                claimed: vec![email(PERSON)],
                verification_token: weak.clone(),
                idempotency_key: "e2e-assurance-0001".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
        .id;
    let waiting = wait_state(
        &mut client,
        &token,
        &id,
        pb::State::Verifying,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(waiting.required_assurance, "substantial");
    assert_eq!(codes_sent(&mesh.data), codes, "no code is sent");
    // The person is told how to prove who they are (in Swedish, the
    // request's language).
    let (_, body) = wait_letter(&mesh.data, PERSON, &id, "Vi behöver veta att det är du").await;
    assert!(body.contains("BankID"), "{body}");
    let st = client
        .verify(bearer(
            &token,
            pb::VerifyRequest {
                id: id.clone(),
                code: String::new(),
                verification_token: weak,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::FailedPrecondition, "{st:?}");
    assert_eq!(
        st.get_error_details().error_info().unwrap().reason,
        "ASSURANCE_TOO_LOW"
    );
    assert_eq!(
        get(&mut client, &token, &id).await.state,
        pb::State::Verifying as i32
    );
    // Submitted with the weak token alone (no claimed identities, as a
    // portal does): the token still names the person, so a stronger proof
    // of somebody else does not move the request on.
    let weak_alone = mesh.verification_token(PERSON).await;
    let alone = client
        .submit(bearer(
            &token,
            pb::SubmitRequest {
                kind: pb::Kind::Erasure as i32,
                controller: controller(SVERIGE),
                verification_token: weak_alone,
                idempotency_key: "e2e-assurance-0002".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
        .id;
    wait_state(
        &mut client,
        &token,
        &alone,
        pb::State::Verifying,
        Duration::from_secs(30),
    )
    .await;
    let someone_else = mesh.attested_token("someone.else@example.se").await;
    let st = client
        .verify(bearer(
            &token,
            pb::VerifyRequest {
                id: alone.clone(),
                code: String::new(),
                verification_token: someone_else,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::PermissionDenied, "{st:?}");
    assert_eq!(
        st.get_error_details().error_info().unwrap().reason,
        "VERIFICATION_NOT_THE_PERSON"
    );
    assert_eq!(
        get(&mut client, &token, &alone).await.state,
        pb::State::Verifying as i32
    );
    // A case handler identifies the person: the erasure goes on.
    let strong = mesh.attested_token(PERSON).await;
    client
        .verify(bearer(
            &token,
            pb::VerifyRequest {
                id: id.clone(),
                code: String::new(),
                verification_token: strong,
            },
        ))
        .await
        .unwrap();
    assert_ne!(
        get(&mut client, &token, &id).await.state,
        pb::State::Verifying as i32
    );
    drop(mesh);
    if let Some(p) = pg {
        p.finish().await;
    }
}
