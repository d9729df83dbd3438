use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_one_trace_across_the_mesh_with_no_identity_in_spans_or_logs() {
    let _turn = TURN.lock().await;
    let pg = postgres().await;
    let collector = Collector::default();
    let endpoint = collector.start().await;
    let mut mesh = Mesh::with_env(
        pg.as_ref().map(|p| p.url.as_str()),
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
            // Everything at debug: the identity values must stay out of
            // every line, not only of those at info.
            (
                "RUST_LOG".into(),
                "debug,h2=info,hyper=info,tower=info,sqlx=info,sea_orm=info".into(),
            ),
        ],
    )
    .await;
    let token = mesh.token.clone();

    // The person's identity values, as seeded.
    let crm = mesh.db("system-crm").await;
    let row = rows(
        &crm,
        &format!(
            "SELECT full_name, email, phone, personnummer, customer_number, address FROM contacts \
             WHERE email = '{PERSON}' AND controller_orgnr = '{SVERIGE}'"
        ),
    )
    .await;
    let row = row.first().expect("the seeded person");
    let mut identity_values: Vec<String> = [
        "full_name",
        "email",
        "phone",
        "personnummer",
        "customer_number",
        "address",
    ]
    .iter()
    .filter_map(|c| row.try_get::<Option<String>>("", c).ok().flatten())
    .filter(|v| v.len() >= 6)
    .collect();
    // The phone also as typed (07…), the personnummer without its dash.
    let variants: Vec<String> = identity_values
        .iter()
        .filter_map(|v| {
            if let Some(rest) = v.strip_prefix("+46") {
                Some(format!("0{rest}"))
            } else if v.contains('-') && v.replace('-', "").bytes().all(|b| b.is_ascii_digit()) {
                Some(v.replace('-', ""))
            } else {
                None
            }
        })
        .collect();
    identity_values.extend(variants);
    assert!(identity_values.len() >= 3, "{identity_values:?}");

    // An access request and an erasure, from a portal's call.
    let vt = mesh.verification_token(PERSON).await;
    let access = mesh.submit_with_token("trace-access", &vt).await;
    let mut client = mesh.requests().await;
    wait_state(
        &mut client,
        &token,
        &access,
        pb::State::Completed,
        Duration::from_secs(90),
    )
    .await;
    let erasure = client
        .submit(bearer(
            &token,
            pb::SubmitRequest {
                kind: pb::Kind::Erasure as i32,
                controller: controller(SVERIGE),
                verification_token: mesh.attested_token(PERSON).await,
                idempotency_key: "trace-erasure".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .request
        .unwrap()
        .id;
    wait_finished(&mut client, &token, &erasure).await;

    // Every process stops as on Kubernetes (SIGTERM) and flushes its spans.
    let mut logs = String::new();
    for name in SERVICES {
        if let Some(p) = mesh.procs.remove(name) {
            logs.push_str(&p.terminate().await);
        }
    }
    let spans = collector.spans.lock().unwrap().clone();
    let metrics = collector.metrics.lock().unwrap().clone();

    for (id, kind, must) in [
        (
            &access,
            "access",
            &[
                "dsr-orchestrator",
                "dsr-discovery",
                "dsr-export",
                "dsr-transfer-registry",
                "dsr-system-crm",
                "dsr-system-print-mail",
                "dsr-system-legal",
            ][..],
        ),
        (
            &erasure,
            "erasure",
            &[
                "dsr-orchestrator",
                "dsr-discovery",
                "dsr-erasure",
                "dsr-system-crm",
                "dsr-system-legal",
            ][..],
        ),
    ] {
        // The orchestrator's work on the request names it and its kind...
        let work: Vec<&SeenSpan> = spans
            .iter()
            .filter(|s| s.attributes.get("dsr.request.id") == Some(id))
            .collect();
        assert!(!work.is_empty(), "no span names request {id}");
        let trace = work[0].trace_id.clone();
        assert!(
            work.iter().all(|s| s.trace_id == trace),
            "the spans naming {id} are in several traces: {work:#?}"
        );
        assert!(
            work.iter()
                .any(|s| s.attributes.get("dsr.request.kind").map(String::as_str) == Some(kind)),
            "{work:#?}"
        );
        // ... in the trace of the portal's Submit call...
        assert!(
            spans.iter().any(|s| s.trace_id == trace
                && s.service == "dsr-orchestrator"
                && s.attributes.get("rpc.method").map(String::as_str) == Some("Submit")),
            "Submit is not in the trace of {id}"
        );
        // ... which every service the request reached has spans in: the
        // RPCs they served, and the calls they made.
        let in_trace: BTreeSet<&str> = spans
            .iter()
            .filter(|s| s.trace_id == trace)
            .map(|s| s.service.as_str())
            .collect();
        for service in must {
            assert!(
                in_trace.contains(service),
                "{service} has no span in the trace of {kind} {id}: {in_trace:?}"
            );
        }
        let steps: BTreeSet<&str> = spans
            .iter()
            .filter(|s| s.trace_id == trace && s.attributes.contains_key("step"))
            .map(|s| s.name.as_str())
            .collect();
        assert!(steps.contains("step locate"), "{steps:?}");
        assert!(
            spans.iter().any(|s| s.trace_id == trace
                && s.kind == 3
                && s.attributes.get("peer").map(String::as_str) == Some("crm")),
            "no client span of a call to the CRM in the trace of {id}"
        );
    }

    // No identity value in any span of any trace, nor in any log line.
    for v in &identity_values {
        for s in &spans {
            assert!(
                !s.text.contains(v.as_str()),
                "an identity value is in a span of {}: {}",
                s.service,
                s.name
            );
        }
        assert!(
            !logs.contains(v.as_str()),
            "an identity value is in the logs"
        );
    }
    assert!(logs.contains("step done"), "the logs were not captured");

    // The metrics arrived too: per-system latency and errors, requests by
    // kind and state.
    let names: BTreeSet<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
    for name in [
        "dsr.client.call.duration",
        "dsr.requests.overdue",
        "dsr.orchestrator.step.duration",
    ] {
        assert!(names.contains(name), "{name} not exported: {names:?}");
    }
    assert!(
        metrics.iter().any(|m| m.name == "dsr.client.call.duration"
            && m.service == "dsr-erasure"
            && m.attributes
                .iter()
                .any(|a| a.get("peer").map(String::as_str) == Some("crm"))),
        "erasure's calls to the CRM are not measured"
    );
}
