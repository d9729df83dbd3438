use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_dsr_up_access_and_portability_answer_in_full() {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let base = consecutive_ports(20);
    let up = dsr_up(&data, base, pg.as_ref().map(|p| p.url.as_str()));
    ready(base + 7, &up).await;

    // Access: the JSON, the report and the manifest, with their digests.
    let out = dir.path().join("access");
    let printed = ok(&cli(
        &data,
        base,
        &[
            "request",
            "access",
            "--email",
            PERSON,
            "--wait",
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(printed.contains("state      completed"), "{printed}");
    // The person is told, in Swedish, that it was received and where the
    // answer is (this mesh's privacy centre), never the data itself.
    let access_id = printed
        .lines()
        .find_map(|l| l.strip_prefix("request    "))
        .unwrap()
        .trim()
        .to_owned();
    let (_, body) = wait_letter(&data, PERSON, &access_id, "Vi har tagit emot din begäran").await;
    assert!(body.contains("Vi svarar senast"), "{body}");
    let (_, body) = wait_letter(&data, PERSON, &access_id, "Vi har besvarat din begäran").await;
    assert!(
        body.contains(&format!("http://127.0.0.1:{}/sv/fetch", base + 9)),
        "{body}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let listed: BTreeSet<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let name = f["name"].as_str().unwrap();
            let bytes = std::fs::read(out.join(name)).unwrap();
            use sha2::Digest as _;
            assert_eq!(
                f["sha256"].as_str().unwrap(),
                hex::encode(sha2::Sha256::digest(&bytes)),
                "{name}"
            );
            name
        })
        .collect();
    assert_eq!(listed, BTreeSet::from(["access.json", "report.html"]));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("access.json")).unwrap()).unwrap();
    assert_eq!(doc["schema"], "dsr.export.access/1");
    assert_eq!(doc["controller"]["name"], "Intrum Sverige AB");
    assert_eq!(doc["policy"]["version"], "2.1");
    assert_eq!(doc["policy"]["published"], "2024-02-27");
    let systems: BTreeSet<&str> = doc["systems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    // Only the email was claimed; the legal system knows the person by the
    // phone number the CRM linked.
    assert!(
        systems.contains("crm") && systems.contains("legal"),
        "{systems:?}"
    );
    let cats = doc["categories"].as_array().unwrap();
    // (a) purposes, (b) categories, (d) retention, (g) source.
    assert!(cats.len() > 5);
    for c in cats {
        assert!(!c["purposes"].as_array().unwrap().is_empty(), "{c}");
        assert!(!c["legal_basis"].as_str().unwrap().is_empty(), "{c}");
        assert!(!c["retention"].as_str().unwrap().is_empty(), "{c}");
    }
    // Every category has a source; the document is in the person's
    // language (Swedish here).
    for c in cats {
        assert!(!c["source"].as_str().unwrap().is_empty(), "{c}");
    }
    assert!(cats.iter().any(|c| {
        c["id"] == "aml.pep_status"
            && c["retention_legal_ground"]
                .as_str()
                .unwrap()
                .contains("GDPR art. 17.3 b")
    }));
    // (c) recipients and 15(2) transfers with their safeguards.
    let recipients = doc["recipients"].as_array().unwrap();
    assert!(recipients.iter().any(|r| r["recipient_id"] == "print-mail"));
    let abroad: Vec<_> = recipients
        .iter()
        .filter(|r| r["outside_eea"] == true)
        .collect();
    assert!(!abroad.is_empty());
    for r in &abroad {
        assert!(
            r["lawful"] == true && !r["safeguard"].as_str().unwrap().is_empty(),
            "{r}"
        );
    }
    // (e) rights, (f) complaint, (h) the automated lead score.
    let rights: BTreeSet<&str> = doc["rights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["right"].as_str().unwrap())
        .collect();
    for r in [
        "rectification",
        "erasure",
        "restriction",
        "objection",
        "portability",
    ] {
        assert!(rights.contains(r), "{r}");
    }
    assert_eq!(
        doc["complaint"]["data_protection_officer"],
        "DPO@se.intrum.com"
    );
    assert!(
        doc["complaint"]["supervisory_authority"]
            .as_str()
            .unwrap()
            .contains("IMY")
    );
    let automated = doc["automated_decisions"].as_array().unwrap();
    assert!(
        automated
            .iter()
            .any(|a| a["category"] == "prospect.score" && a["logic"].as_str().unwrap().len() > 50)
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for needle in [
        "<html lang=\"sv\">",
        "Registerutdrag",
        "Intrum Sverige AB",
        "art. 15.1 h",
        "Mottagare och överföringar",
        "Integritetsskyddsmyndigheten",
        "DPO@se.intrum.com",
        PERSON,
    ] {
        assert!(html.contains(needle), "report lacks {needle}");
    }
    // Everything the person reads is Swedish, from the systems' and the
    // registry's Swedish texts; a list item keeps its commas; every
    // category has a source, the derived one saying so.
    for needle in [
        "<td>Namn</td>",
        "<li>förhindra, upptäcka och bevisa bedrägeri och penningtvätt</li>",
        "härlett av oss ur dina kontakter med oss",
        "Varje kontakt ger poäng",
        "Molnlagringsleverantör (säkerhetskopior)",
        "EU–US Data Privacy Framework, beslut om adekvat skyddsnivå",
        "Koncernens CRM-system",
    ] {
        assert!(html.contains(needle), "the Swedish report lacks {needle}");
    }
    for row in html.split("<tr>").filter(|r| r.contains("</ul></td>")) {
        let cells: Vec<&str> = row.split("<td>").collect();
        assert!(
            cells.get(5).is_some_and(|c| !c.starts_with("</td>")),
            "a category without a source: {row}"
        );
    }
    // The same answer in English: no text of one equals one of the other
    // but what is declared the same in both (translate="no").
    let en_out = dir.path().join("access-en");
    ok(&cli(
        &data,
        base,
        &[
            "request",
            "access",
            "--email",
            PERSON,
            "--language",
            "en",
            "--out",
            en_out.to_str().unwrap(),
        ],
    ));
    let en_html = std::fs::read_to_string(en_out.join("report.html")).unwrap();
    for needle in [
        "<html lang=\"en\">",
        "<li>prevent, detect and prove fraud and money laundering</li>",
        "derived by us from your interactions with us",
        "Cloud storage provider (backups)",
    ] {
        assert!(
            en_html.contains(needle),
            "the English report lacks {needle}"
        );
    }
    let (sv_texts, en_texts) = (translatable_texts(&html), translatable_texts(&en_html));
    assert!(sv_texts.len() > 40, "{sv_texts:?}");
    let shared: Vec<&String> = sv_texts.intersection(&en_texts).collect();
    assert!(
        shared.is_empty(),
        "the same text in Swedish and English: {shared:?}"
    );

    // Portability: only what the person provided, on consent or contract.
    let pout = dir.path().join("portability");
    ok(&cli(
        &data,
        base,
        &[
            "request",
            "portability",
            "--email",
            PERSON,
            "--language",
            "en",
            "--out",
            pout.to_str().unwrap(),
        ],
    ));
    let zip_bytes = std::fs::read(pout.join("portability.zip")).unwrap();
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
    let mut names = Vec::new();
    for i in 0..zip.len() {
        names.push(zip.by_index(i).unwrap().name().unwrap().into_owned());
    }
    assert!(names.contains(&"data.json".to_owned()), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(".csv")), "{names:?}");
    let mut text = String::new();
    zip.by_name("data.json")
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let port: serde_json::Value = serde_json::from_str(&text).unwrap();
    // The fields the access report files under PEP screening, lead score or
    // IP address are not there.
    let excluded: BTreeSet<(String, String)> = doc["systems"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            let sid = s["id"].as_str().unwrap().to_owned();
            s["records"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r["fields"].as_array().unwrap().clone())
                .filter(|f| {
                    matches!(
                        f["category"].as_str().unwrap(),
                        "aml.pep_status" | "prospect.score" | "survey.ip_address"
                    )
                })
                .map(move |f| (sid.clone(), f["name"].as_str().unwrap().to_owned()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!excluded.is_empty(), "the person has PEP and score data");
    let mut portable_count = 0;
    for s in port["systems"].as_array().unwrap() {
        let sid = s["id"].as_str().unwrap();
        for r in s["records"].as_array().unwrap() {
            for (name, _) in r["fields"].as_object().unwrap() {
                portable_count += 1;
                assert!(
                    !excluded.contains(&(sid.to_owned(), name.clone())),
                    "{sid}.{name} is not portable"
                );
            }
        }
    }
    assert!(portable_count > 0);
    assert!(
        text.contains(PERSON),
        "the contact data the person gave is there"
    );

    // Seeded person 161 answered a survey and is known to all three systems;
    // only the email is claimed: the print-and-mail vendor knows the person
    // by customer number, the legal vendor by phone, both linked by the CRM.
    // The survey's IP address is left out of the portability package.
    let p161 = &dsr_system_sql::reference::people(162, 1)[161];
    assert_eq!(p161.controller, SVERIGE);
    let (aout, pout2) = (
        dir.path().join("access-161"),
        dir.path().join("portability-161"),
    );
    for (kind, out) in [("access", &aout), ("portability", &pout2)] {
        ok(&cli(
            &data,
            base,
            &[
                "request",
                kind,
                "--email",
                &p161.email,
                "--out",
                out.to_str().unwrap(),
            ],
        ));
    }
    let doc161: serde_json::Value =
        serde_json::from_slice(&std::fs::read(aout.join("access.json")).unwrap()).unwrap();
    let systems161: BTreeSet<&str> = doc161["systems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(systems161, BTreeSet::from(["crm", "legal", "print-mail"]));
    let ip = fields_of(&doc161, &["survey.ip_address"]);
    assert!(!ip.is_empty(), "the person answered a survey");
    let portable = portable_fields(&pout2.join("portability.zip"));
    assert!(!portable.is_empty());
    assert!(portable.is_disjoint(&ip), "{portable:?}");
    assert!(portable.is_disjoint(&fields_of(&doc161, &["aml.pep_status", "prospect.score"])));

    // Bad submissions: INVALID_ARGUMENT naming the field; nothing recorded.
    let token = ok(&cli(&data, base, &["token"])).trim().to_owned();
    let mut client = RequestsClient::new(channel(base + 7).await);
    let count = |c: &mut RequestsClient<Channel>| {
        let mut c = c.clone();
        let token = token.clone();
        async move {
            c.list(bearer(
                &token,
                pb::ListRequest {
                    page: Some(common::PageRequest {
                        page_size: 500,
                        page_token: String::new(),
                    }),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .requests
            .len()
        }
    };
    let before = count(&mut client).await;
    assert_eq!(
        before, 5,
        "access in Swedish and English, portability, and 161's two"
    );
    let good = pb::SubmitRequest {
        kind: pb::Kind::Access as i32,
        controller: controller(SVERIGE),
        claimed: vec![email(PERSON)],
        verification_token: String::new(),
        language: "sv".into(),
        idempotency_key: "portal-key-0001".into(),
        ..Default::default()
    };
    let personnummer = common::Identity {
        r#type: common::IdentityType::SePersonnummer as i32,
        format: 0,
        value: "19811218-9877".into(),
        hmac_key_id: String::new(),
    };
    let cases: Vec<(pb::SubmitRequest, &str)> = vec![
        (
            pb::SubmitRequest {
                claimed: vec![personnummer],
                ..good.clone()
            },
            "claimed[0].value",
        ),
        (
            pb::SubmitRequest {
                claimed: vec![email("anna.svensson@")],
                ..good.clone()
            },
            "claimed[0].value",
        ),
        (
            pb::SubmitRequest {
                claimed: (0..21)
                    .map(|i| email(&format!("person{i}@example.se")))
                    .collect(),
                ..good.clone()
            },
            "claimed",
        ),
        (
            pb::SubmitRequest {
                controller: controller("556016-0680"),
                ..good.clone()
            },
            "controller.organisation_number",
        ),
        (
            pb::SubmitRequest {
                idempotency_key: String::new(),
                ..good.clone()
            },
            "idempotency_key",
        ),
    ];
    for (req, field) in cases {
        let st = client.submit(bearer(&token, req)).await.unwrap_err();
        assert_eq!(st.code(), tonic::Code::InvalidArgument, "{field}: {st:?}");
        let br = st.get_error_details().bad_request().cloned().unwrap();
        assert!(
            br.field_violations.iter().any(|v| v.field == field),
            "{field}: {br:?}"
        );
        assert!(!st.message().contains("9877") && !st.message().contains("anna"));
    }
    assert_eq!(count(&mut client).await, before, "nothing recorded");
    // A portal reads only the requests it submitted; a case handler (the
    // CLI's token, requests:manage) reads them all.
    let portal = |subject: &str| {
        ok(&cli(
            &data,
            base,
            &[
                "token",
                "--subject",
                subject,
                "--scope",
                "requests:submit",
                "--scope",
                "requests:read",
            ],
        ))
        .trim()
        .to_owned()
    };
    let (portal_a, portal_b) = (portal("portal-a"), portal("portal-b"));
    let mine = client
        .submit(bearer(
            &portal_a,
            pb::SubmitRequest {
                kind: pb::Kind::Access as i32,
                controller: controller(SVERIGE),
                claimed: vec![email("someone.else@example.se")],
                idempotency_key: "portal-a-0001".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
        .id;
    let get_as = |token: &str| {
        let mut c = client.clone();
        let req = bearer(token, pb::GetRequest { id: mine.clone() });
        async move { c.get(req).await.map(|_| ()).map_err(|s| s.code()) }
    };
    assert_eq!(get_as(&portal_a).await, Ok(()));
    assert_eq!(get_as(&portal_b).await, Err(tonic::Code::NotFound));
    assert_eq!(get_as(&token).await, Ok(()));
    let listed = |token: &str| {
        let mut c = client.clone();
        let req = bearer(
            token,
            pb::ListRequest {
                page: Some(common::PageRequest {
                    page_size: 500,
                    page_token: String::new(),
                }),
                ..Default::default()
            },
        );
        async move {
            c.list(req)
                .await
                .unwrap()
                .into_inner()
                .requests
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed(&portal_a).await, vec![mine.clone()]);
    assert!(listed(&portal_b).await.is_empty());
    assert!(listed(&token).await.contains(&mine));
    // Due within N days: a month away is within 40 days, not within 1; 367
    // is refused, naming the field.
    for (days, found) in [(40u32, true), (1, false)] {
        let ids: Vec<String> = client
            .list(bearer(
                &token,
                pb::ListRequest {
                    due_within_days: days,
                    page: Some(common::PageRequest {
                        page_size: 500,
                        page_token: String::new(),
                    }),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .requests
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids.contains(&mine), found, "due within {days} days");
    }
    let st = client
        .list(bearer(
            &token,
            pb::ListRequest {
                due_within_days: 367,
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        st.get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "due_within_days"
    );
    let watch_as = |token: &str| {
        let mut c = client.clone();
        let req = bearer(token, pb::WatchRequest { id: mine.clone() });
        async move { c.watch(req).await.map(|_| ()).map_err(|s| s.code()) }
    };
    assert_eq!(watch_as(&portal_a).await, Ok(()));
    assert_eq!(watch_as(&portal_b).await, Err(tonic::Code::NotFound));
    // The case file (identities, subject map, audit trail) is a case
    // handler's alone: not even the portal that submitted reads it.
    let file_as = |token: &str| {
        let mut c = client.clone();
        let req = bearer(token, pb::GetCaseFileRequest { id: mine.clone() });
        async move { c.get_case_file(req).await.map(|r| r.into_inner()) }
    };
    assert_eq!(
        file_as(&portal_a).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );
    let file = file_as(&token).await.unwrap();
    assert_eq!(
        file.claimed_identities
            .iter()
            .map(|i| i.value.as_str())
            .collect::<Vec<_>>(),
        vec!["someone.else@example.se"]
    );
    assert!(file.verified_identities.is_empty() && !file.identities_purged);
    assert_eq!(
        file.audit_entries.first().map(|e| e.action.as_str()),
        Some("submitted:access")
    );
    assert!(
        file.audit_entries
            .iter()
            .all(|e| e.hash.len() == 64 && !e.actor.is_empty() && e.time.is_some()),
        "{:?}",
        file.audit_entries
    );
    // A 3 MiB reason is refused, naming the field (listings stay readable).
    let st = client
        .cancel(bearer(
            &token,
            pb::CancelRequest {
                id: "00000000-0000-4000-8000-000000000000".into(),
                reason: "x".repeat(3 << 20),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    let br = st.get_error_details().bad_request().cloned().unwrap();
    assert!(
        br.field_violations.iter().any(|v| v.field == "reason"),
        "{br:?}"
    );

    // Idempotency, the case handler's moves, and their refusals.
    let first = client
        .submit(bearer(&token, good.clone()))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    let again = client
        .submit(bearer(&token, good.clone()))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(
        first.id, again.id,
        "same key, same payload: the same request"
    );
    let other = client
        .submit(bearer(
            &token,
            pb::SubmitRequest {
                kind: pb::Kind::Portability as i32,
                ..good.clone()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::AlreadyExists);
    let waiting = wait_state(
        &mut client,
        &token,
        &first.id,
        pb::State::Verifying,
        Duration::from_secs(30),
    )
    .await;
    let no_reason = client
        .extend(bearer(
            &token,
            pb::ExtendRequest {
                id: waiting.id.clone(),
                months: 1,
                reason: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(no_reason.code(), tonic::Code::InvalidArgument);
    let extended = client
        .extend(bearer(
            &token,
            pb::ExtendRequest {
                id: waiting.id.clone(),
                months: 2,
                reason: "many systems to search".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    let d = extended.deadline.unwrap();
    assert_eq!(d.extended_months, 2);
    assert_eq!(d.extension_reason, "many systems to search");
    assert_ne!(d.due, d.original_due);
    let more = client
        .extend(bearer(
            &token,
            pb::ExtendRequest {
                id: waiting.id.clone(),
                months: 1,
                reason: "still more".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        more.code(),
        tonic::Code::FailedPrecondition,
        "at most two months"
    );
    // Told of the extension, with its reason, at the address they gave.
    let (_, body) = wait_letter(&data, PERSON, &waiting.id, "Vi behöver längre tid").await;
    assert!(
        body.contains("med 2 månad(er)") && body.contains("many systems to search"),
        "{body}"
    );
    let cancelled = client
        .cancel(bearer(
            &token,
            pb::CancelRequest {
                id: waiting.id.clone(),
                reason: "withdrawn by the person".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    assert_eq!(cancelled.state, pb::State::Cancelled as i32);
    assert_eq!(cancelled.cancel_reason, "withdrawn by the person");
    // A refusal tells the reason and the way to IMY and a court.
    let refused = client
        .submit(bearer(
            &token,
            pb::SubmitRequest {
                idempotency_key: "portal-key-refused".into(),
                ..good.clone()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap();
    wait_state(
        &mut client,
        &token,
        &refused.id,
        pb::State::Verifying,
        Duration::from_secs(30),
    )
    .await;
    client
        .reject(bearer(
            &token,
            pb::RejectRequest {
                id: refused.id.clone(),
                reason: pb::RejectionReason::ManifestlyUnfoundedOrExcessive as i32,
                note: "The same request every day this week.".into(),
            },
        ))
        .await
        .unwrap();
    let (_, body) = wait_letter(&data, PERSON, &refused.id, "Besked om din begäran").await;
    for told in [
        "artikel 12.5",
        "The same request every day",
        "Integritetsskyddsmyndigheten (IMY), https://www.imy.se",
        "domstol",
    ] {
        assert!(body.contains(told), "{told:?} not in {body}");
    }
    let completed_id = {
        let list = client
            .list(bearer(
                &token,
                pb::ListRequest {
                    state: pb::State::Completed as i32,
                    kind: pb::Kind::Portability as i32,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .requests;
        assert_eq!(list.len(), 2, "the two completed portability requests");
        list[0].id.clone()
    };
    let late = client
        .cancel(bearer(
            &token,
            pb::CancelRequest {
                id: completed_id,
                reason: "too late".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(late.code(), tonic::Code::FailedPrecondition);
    let unknown = client
        .get(bearer(
            &token,
            pb::GetRequest {
                id: "00000000-0000-0000-0000-000000000000".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // The audit trail verifies.
    let mut audit = Command::new(&*DSR);
    audit
        .args(["audit", "verify", "--data-dir", data.to_str().unwrap()])
        .env_remove(POSTGRES_ENV);
    if let Some(p) = &pg {
        audit.env("DSR_DATABASE__URL", &p.url);
    }
    let printed = ok(&audit.output().unwrap());
    assert!(printed.contains("audit trail intact"), "{printed}");

    let log = up.kill();
    // No identity value in the mesh's logs.
    for secret in [
        PERSON,
        "+46720000003",
        "Per Johansson",
        p161.email.as_str(),
        p161.phone.as_str(),
    ] {
        assert!(!log.contains(secret), "{secret} in the logs");
    }
    if let Some(p) = pg {
        p.finish().await;
    }
}
