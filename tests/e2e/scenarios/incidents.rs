use crate::support::*;

/// A personal-data breach on the CRM's KYC documents (Art. 33-34): the
/// systems say who is affected, per controller, as the CRM's own tables
/// count it; the 72 hours run from discovery; the notification to IMY is
/// drafted with every Art. 33(3) item (what is still missing said); at high
/// risk each affected person with an address gets a notice in their
/// language; the register lists it. Then a complaint reaches the DPO's
/// queue and its answer is sent with the way to IMY. No identity in the
/// logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_is_counted_from_the_systems_notified_and_registered_and_a_complaint_answered() {
    use dsr_proto::incident::v1 as inc;
    use dsr_proto::incident::v1::complaints_client::ComplaintsClient;
    use dsr_proto::incident::v1::incidents_client::IncidentsClient;
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let mut mesh = Mesh::new(pg.as_ref().map(|p| p.url.as_str())).await;
    let token = mesh.token.clone();
    let mut incidents = IncidentsClient::new(channel(mesh.ports["orchestrator"]).await);
    let now = chrono::Utc::now();
    let ts = |t: chrono::DateTime<chrono::Utc>| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    };
    // Bad input names its field and records nothing.
    let st = incidents
        .report(bearer(
            &token,
            inc::ReportRequest {
                summary: String::new(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::InvalidArgument);
    let fields: Vec<String> = st
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|f| f.field.clone())
        .collect();
    assert!(
        fields.contains(&"summary".to_owned()) && fields.contains(&"discovered_time".to_owned())
    );

    let reported = incidents
        .report(bearer(
            &token,
            inc::ReportRequest {
                summary: "En kopia av KYC-dokument i CRM-systemet lästes av en obehörig användare."
                    .into(),
                start_time: Some(ts(now - chrono::Duration::hours(30))),
                discovered_time: Some(ts(now - chrono::Duration::hours(2))),
                system_ids: vec!["crm".into()],
                category_ids: vec!["aml.identity_document".into()],
                approximate_people: 150,
                containment: "Användarens behörighet spärrades.".into(),
                source: inc::Source::Staff as i32,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    let id = reported.id.clone();
    // The 72 hours run from discovery.
    assert!(
        (69..=70).contains(&reported.hours_left),
        "{}",
        reported.hours_left
    );
    assert!(!reported.authority_overdue);
    assert_eq!(
        reported.authority_due_time.unwrap().seconds,
        (now - chrono::Duration::hours(2) + chrono::Duration::hours(72)).timestamp()
    );

    // Who is affected, as the CRM's own tables count it.
    let found = incidents
        .find_affected(bearer(&token, inc::FindAffectedRequest { id: id.clone() }))
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    let affected = found.affected.unwrap();
    assert!(affected.failed_systems.is_empty(), "{affected:?}");
    assert_eq!(affected.systems_answered, vec!["crm".to_owned()]);
    let crm = mesh.db("system-crm").await;
    let counted = rows(
        &crm,
        "SELECT c.controller_orgnr, COUNT(DISTINCT c.id), COUNT(k.id) FROM contacts c \
         JOIN kyc_documents k ON k.contact_id = c.id GROUP BY c.controller_orgnr ORDER BY 1",
    )
    .await;
    let want: Vec<(String, u64, u64)> = counted
        .iter()
        .map(|r| {
            (
                r.try_get_by_index::<String>(0).unwrap(),
                r.try_get_by_index::<i64>(1).unwrap() as u64,
                r.try_get_by_index::<i64>(2).unwrap() as u64,
            )
        })
        .collect();
    let got: Vec<(String, u64, u64)> = affected
        .counts
        .iter()
        .map(|c| {
            (
                c.controller.clone().unwrap().organisation_number,
                c.people,
                c.records,
            )
        })
        .collect();
    assert_eq!(got, want);
    assert!(want.len() >= 2, "more than one controller: {want:?}");
    let people: u64 = want.iter().map(|w| w.1).sum();
    assert_eq!(affected.people, people);
    assert_eq!(affected.reachable, people, "every contact has an address");

    // The draft names what is still missing, in Swedish; then complete.
    let draft = incidents
        .draft_notification(bearer(
            &token,
            inc::DraftNotificationRequest {
                id: id.clone(),
                language: "sv".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        draft.missing.contains(&"consequences".to_owned()),
        "{:?}",
        draft.missing
    );
    let assessed = incidents
        .assess(bearer(
            &token,
            inc::AssessRequest {
                id: id.clone(),
                risk: inc::Risk::High as i32,
                reasoning: "Passuppgifter kan användas för identitetsstöld.".into(),
                consequences: "Risk för identitetsstöld och bedrägeri i ditt namn.".into(),
                measures: "Åtkomsten är spärrad; byt gärna ut din identitetshandling.".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(assessed.risk, inc::Risk::High as i32);
    for (lang, heads) in [
        (
            "sv",
            [
                "Vad som har hänt (artikel 33.3 a)",
                "Dataskyddsombud, kontaktuppgifter (artikel 33.3 b)",
                "Sannolika konsekvenser (artikel 33.3 c)",
                "Vidtagna och föreslagna åtgärder (artikel 33.3 d)",
            ],
        ),
        (
            "en",
            [
                "The nature of the breach (Article 33(3)(a))",
                "Data protection officer, contact details (Article 33(3)(b))",
                "Likely consequences (Article 33(3)(c))",
                "Measures taken or proposed (Article 33(3)(d))",
            ],
        ),
    ] {
        let d = incidents
            .draft_notification(bearer(
                &token,
                inc::DraftNotificationRequest {
                    id: id.clone(),
                    language: lang.into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(d.missing.is_empty(), "{lang}: {:?}", d.missing);
        for h in heads {
            assert!(d.text.contains(h), "{lang}: {h:?} not in\n{}", d.text);
        }
        assert!(d.text.contains("DPO@se.intrum.com"));
        assert!(d.text.contains("Risk för identitetsstöld"));
        let unit = if lang == "sv" {
            ("personer", "poster")
        } else {
            ("people", "records")
        };
        assert!(d.text.contains(&format!(
            "aml.identity_document: {} {}, {} {}",
            want[0].1, unit.0, want[0].2, unit.1
        )));
        assert!(d.text.contains(&people.to_string()));
    }

    // High risk: a notice to each, in their language.
    let notified = incidents
        .notify_people(bearer(&token, inc::NotifyPeopleRequest { id: id.clone() }))
        .await
        .unwrap()
        .into_inner()
        .incident
        .unwrap();
    assert_eq!(notified.notices.unwrap().queued, people);
    let again = incidents
        .notify_people(bearer(&token, inc::NotifyPeopleRequest { id: id.clone() }))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition);
    let one = rows(
        &crm,
        "SELECT c.email, c.language FROM contacts c JOIN kyc_documents k ON k.contact_id = c.id \
         ORDER BY c.id LIMIT 1",
    )
    .await;
    let (email_of_one, language) = (
        one[0].try_get_by_index::<String>(0).unwrap(),
        one[0].try_get_by_index::<String>(1).unwrap(),
    );
    let subject = if language == "en" {
        "Important information about your personal data"
    } else {
        "Viktig information om dina personuppgifter"
    };
    let (_, body) = wait_letter(&mesh.data, &email_of_one.to_lowercase(), "", subject).await;
    assert!(
        body.contains("KYC-dokument") && body.contains("Risk för identitetsstöld"),
        "{body}"
    );
    assert!(
        body.contains(&id) && body.contains("DPO@se.intrum.com"),
        "{body}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let i = incidents
            .get(bearer(&token, inc::GetRequest { id: id.clone() }))
            .await
            .unwrap()
            .into_inner()
            .incident
            .unwrap();
        let n = i.notices.unwrap();
        if n.sent == people {
            assert_eq!(n.failed, 0);
            break;
        }
        assert!(Instant::now() < deadline, "notices not all sent: {n:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The authority told within the 72 hours; the register lists it.
    incidents
        .record_authority_notified(bearer(
            &token,
            inc::RecordAuthorityNotifiedRequest {
                id: id.clone(),
                notified_time: Some(ts(chrono::Utc::now())),
                authority_reference: "IMY-2026-1234".into(),
                late_reason: String::new(),
            },
        ))
        .await
        .unwrap();
    let register = incidents
        .list(bearer(&token, inc::ListRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .incidents;
    let listed = register
        .iter()
        .find(|i| i.id == id)
        .expect("in the register");
    assert_eq!(listed.authority_reference, "IMY-2026-1234");
    assert!(!listed.authority_overdue);

    // A complaint reaches the DPO's queue and its answer is sent.
    let mut complaints = ComplaintsClient::new(channel(mesh.ports["orchestrator"]).await);
    let filed = complaints
        .file(bearer(
            &token,
            inc::FileRequest {
                controller: controller(SVERIGE),
                text: "Jag fick reklam fast jag har invänt.".into(),
                reply_to: Some(email(PERSON)),
                language: "en".into(),
                request_ids: vec![],
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .complaint
        .unwrap();
    let due = filed.answer_due_time.unwrap().seconds - filed.file_time.unwrap().seconds;
    assert_eq!(due, 30 * 24 * 3600);
    let queue = complaints
        .list_complaints(bearer(
            &token,
            inc::ListComplaintsRequest {
                open_only: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .complaints;
    assert!(queue.iter().any(|c| c.id == filed.id && !c.overdue));
    complaints
        .answer(bearer(
            &token,
            inc::AnswerRequest {
                id: filed.id.clone(),
                answer: "We have stopped all marketing to you and checked why it happened.".into(),
            },
        ))
        .await
        .unwrap();
    let (_, body) = wait_letter(&mesh.data, PERSON, &filed.id, "Answer to your complaint").await;
    assert!(body.contains("stopped all marketing") && body.contains("https://www.imy.se"));
    let open = complaints
        .list_complaints(bearer(
            &token,
            inc::ListComplaintsRequest {
                open_only: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .complaints;
    assert!(
        !open.iter().any(|c| c.id == filed.id),
        "answered: off the open queue"
    );

    let log = mesh.stop("orchestrator") + &mesh.stop("identity") + &mesh.stop("discovery");
    for secret in [PERSON, email_of_one.as_str()] {
        assert!(!log.contains(secret), "an identity in the logs");
    }
    drop(mesh);
    if let Some(p) = pg {
        p.finish().await;
    }
}
