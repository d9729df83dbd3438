//! Identity verification served for real: a gRPC server on loopback, a real
//! database (SQLite, or PostgreSQL with DSR_TEST_POSTGRES_URL), the outbox,
//! real JWTs. Every test captures its logs and checks that no code,
//! identity value or token appears in them.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dsr_auth::{KeySet, TokenRequest, TokenSigner, Validator, ValidatorConfig};
use dsr_identity::grpc;
use dsr_identity::migration::Migrator;
use dsr_identity::notifier::Outbox;
use dsr_identity::tokens::{self, TokenIssuer, VerificationClaims};
use dsr_identity::verifier::{Settings, Verifier};
use dsr_proto::common::v1 as common;
use dsr_proto::identity::v1 as pb;
use dsr_proto::identity::v1::identity_verification_client::IdentityVerificationClient;
use dsr_store::testing::TestDb;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tonic::transport::Channel;
use tonic::{Code, Request};
use tonic_types::StatusExt;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct Harness {
    client: IdentityVerificationClient<Channel>,
    verifier: Verifier,
    clock: dsr_domain::clock::Clock,
    outbox: tempfile::TempDir,
    signer: TokenSigner,
    logs: Captured,
    _log_guard: tracing::subscriber::DefaultGuard,
    db: Option<TestDb>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

const IDP_ISSUER: &str = "https://idp.test";

async fn harness(settings: Settings, token_ttl: chrono::Duration) -> Harness {
    let clock = dsr_domain::clock::Clock::starting_at(chrono::Utc::now());
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::DEBUG)
        .json()
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    let db = TestDb::new().await.unwrap();
    dsr_store::migrate::<Migrator>(&db.db).await.unwrap();
    let outbox = tempfile::tempdir().unwrap();
    let idp = Arc::new(Validator::new(
        Arc::new(
            KeySet::from_jwks_json(include_str!(
                "../../../crates/dsr-auth/tests/fixtures/jwks.json"
            ))
            .unwrap(),
        ),
        ValidatorConfig {
            issuers: vec![IDP_ISSUER.into()],
            audience: dsr_identity::SERVICE_NAME.into(),
            leeway_secs: 5,
            grants: None,
        },
    ));
    let verifier = Verifier::new(
        db.db.clone(),
        settings,
        Arc::new(Outbox::new(outbox.path().to_path_buf())),
        TokenIssuer::generate(token_ttl).unwrap(),
        [7u8; 32],
        Some(idp),
    )
    .with_clock(clock.clone());
    let keys = dsr_auth::generate_ed25519("portal").unwrap();
    let validator = Arc::new(Validator::new(
        Arc::new(KeySet::from_jwks_json(&keys.jwks_json).unwrap()),
        ValidatorConfig {
            issuers: vec!["portal".into()],
            audience: dsr_identity::SERVICE_NAME.into(),
            leeway_secs: 5,
            grants: None,
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut set = dsr_server::ServiceSet::new();
    set.add(grpc::service(verifier.clone(), validator));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        dsr_server::serve(listener, set, &dsr_server::ServerConfig::default(), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    let client = IdentityVerificationClient::new(
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    Harness {
        client,
        verifier,
        clock,
        outbox,
        signer: TokenSigner::from_ed25519_pem(&keys.private_pem, "portal", "portal").unwrap(),
        logs,
        _log_guard: guard,
        db: Some(db),
        stop: Some(stop),
    }
}

impl Harness {
    fn req<T>(&self, m: T, scopes: &[&str]) -> Request<T> {
        let token = self
            .signer
            .mint(&TokenRequest {
                subject: "case-handler-7".into(),
                audiences: vec![dsr_identity::SERVICE_NAME.into()],
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                ttl: Duration::from_secs(60),
            })
            .unwrap();
        let mut r = Request::new(m);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    }

    async fn start_email(
        &mut self,
        email: &str,
    ) -> Result<pb::StartVerificationResponse, tonic::Status> {
        self.start_email_dry(email, false).await
    }

    async fn start_email_dry(
        &mut self,
        email: &str,
        dry_run: bool,
    ) -> Result<pb::StartVerificationResponse, tonic::Status> {
        let req = self.req(
            pb::StartVerificationRequest {
                claimed: vec![common::Identity {
                    r#type: common::IdentityType::Email as i32,
                    format: 0,
                    value: email.into(),
                    hmac_key_id: String::new(),
                }],
                method: pb::Method::EmailCode as i32,
                idp_assertion: String::new(),
                attestation: None,
                language: "en".into(),
                dry_run,
            },
            &[grpc::SCOPE_VERIFY],
        );
        self.client
            .start_verification(req)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn complete(
        &mut self,
        challenge: &str,
        code: &str,
    ) -> Result<pb::VerificationToken, tonic::Status> {
        let req = self.req(
            pb::CompleteVerificationRequest {
                challenge_id: challenge.into(),
                code: code.into(),
            },
            &[grpc::SCOPE_VERIFY],
        );
        self.client
            .complete_verification(req)
            .await
            .map(|r| r.into_inner().token.unwrap())
    }

    /// The code in the newest outbox message.
    fn code_from_outbox(&self) -> String {
        let mut files: Vec<_> = std::fs::read_dir(self.outbox.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let text = std::fs::read_to_string(files.last().unwrap()).unwrap();
        let i = text.find("code is ").unwrap() + "code is ".len();
        text[i..i + 6].to_owned()
    }

    /// The service's published keys, as another service would load them.
    async fn verify(
        &mut self,
        jwt: &str,
        leeway: u64,
    ) -> Result<VerificationClaims, dsr_auth::Error> {
        let jwks = self
            .client
            .get_jwks(self.req(pb::GetJwksRequest {}, &[]))
            .await
            .unwrap()
            .into_inner()
            .jwks;
        Validator::new(
            Arc::new(KeySet::from_jwks_json(&jwks).unwrap()),
            ValidatorConfig {
                issuers: vec![tokens::ISSUER.into()],
                audience: tokens::AUDIENCE.into(),
                leeway_secs: leeway,
                grants: None,
            },
        )
        .decode(jwt, &["exp", "iss", "aud", "sub"])
    }

    async fn finish(mut self, secrets: &[&str]) {
        self.stop.take().unwrap().send(()).unwrap();
        let logs = self.logs.text();
        assert!(logs.contains("verification attempt"), "logs were captured");
        for s in secrets {
            assert!(!logs.contains(s), "a secret appears in the logs: {s}");
        }
        self.db.take().unwrap().finish().await;
    }
}

fn reason(s: &tonic::Status) -> String {
    s.get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

#[tokio::test]
async fn code_flow_lockout_and_single_use() {
    let mut h = harness(Settings::default(), chrono::Duration::minutes(15)).await;
    let started = h.start_email(" Anna.Svensson@Example.SE ").await.unwrap();
    let code = h.code_from_outbox();
    let token = h.complete(&started.challenge_id, &code).await.unwrap();
    assert_eq!(token.assurance, pb::Assurance::Low as i32);
    assert_eq!(token.identities[0].value, "anna.svensson@example.se");
    // another service accepts it offline, with the published keys
    let claims = h.verify(&token.jwt, 0).await.unwrap();
    assert_eq!(claims.identities[0].value, "anna.svensson@example.se");
    assert_eq!(claims.acr, tokens::Assurance::Low);
    // a completed challenge cannot be used again
    let err = h.complete(&started.challenge_id, &code).await.unwrap_err();
    assert_eq!(reason(&err), "CHALLENGE_USED");

    // five wrong codes lock the challenge; the right one is then refused
    let locked = h.start_email("bo.berg@example.se").await.unwrap();
    let right = h.code_from_outbox();
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    for remaining in (0..5).rev() {
        let err = h.complete(&locked.challenge_id, wrong).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let info = err.get_details_error_info().unwrap();
        assert_eq!(info.metadata["remaining_attempts"], remaining.to_string());
    }
    let err = h.complete(&locked.challenge_id, &right).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::FailedPrecondition, "CHALLENGE_LOCKED")
    );
    h.finish(&[&code, &right, &token.jwt, "anna.svensson", "bo.berg"])
        .await;
}

#[tokio::test]
async fn expired_codes_and_tokens_are_refused() {
    let settings = Settings {
        code_ttl: chrono::Duration::seconds(1),
        ..Settings::default()
    };
    let mut h = harness(settings, chrono::Duration::seconds(1)).await;
    let started = h.start_email("cecilia@example.se").await.unwrap();
    let code = h.code_from_outbox();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let err = h.complete(&started.challenge_id, &code).await.unwrap_err();
    assert_eq!(reason(&err), "CHALLENGE_EXPIRED");

    // a token replayed after its expiry is refused
    let started = h.start_email("cecilia@example.se").await.unwrap();
    let code2 = h.code_from_outbox();
    let token = h.complete(&started.challenge_id, &code2).await.unwrap();
    assert!(h.verify(&token.jwt, 0).await.is_ok());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        h.verify(&token.jwt, 0).await.unwrap_err(),
        dsr_auth::Error::Expired
    );
    h.finish(&[&code, &code2, &token.jwt, "cecilia@"]).await;
}

/// A challenge's identities live until it has expired and its grace hour
/// passed, by the clock: then the row and the bytes on disk are gone.
#[tokio::test]
async fn an_expired_challenge_takes_the_persons_identity_with_it() {
    let mut h = harness(Settings::default(), chrono::Duration::minutes(15)).await;
    let who = "dora.purged@example.se";
    h.start_email(who).await.unwrap();
    let db = h.db.as_ref().unwrap();
    assert_ne!(
        db.file_contains(who).await,
        Some(false),
        "the identity is stored"
    );
    // Expired (ten minutes) but inside the grace hour: kept.
    h.clock.advance(chrono::Duration::minutes(30));
    assert_eq!(
        h.verifier.purge(chrono::Duration::hours(1)).await.unwrap(),
        0
    );
    h.clock.advance(chrono::Duration::hours(1));
    assert_eq!(
        h.verifier.purge(chrono::Duration::hours(1)).await.unwrap(),
        1
    );
    assert_ne!(
        db.file_contains(who).await,
        Some(true),
        "the identity is still on disk"
    );
    h.finish(&[who]).await;
}

#[tokio::test]
async fn rate_limit_per_identity_without_revealing_anyone() {
    let settings = Settings {
        per_hour: 3,
        ..Settings::default()
    };
    let mut h = harness(settings, chrono::Duration::minutes(15)).await;
    // a person nobody knows and one the CRM knows get the same answer shape
    let a = h.start_email("unknown.person@example.se").await.unwrap();
    let b = h.start_email("per.johansson0@bolaget.se").await.unwrap();
    assert!(!a.challenge_id.is_empty() && !b.challenge_id.is_empty());
    assert_eq!(
        (a.token.is_none(), a.challenge_expires_at.is_some()),
        (b.token.is_none(), b.challenge_expires_at.is_some())
    );
    for _ in 0..2 {
        h.start_email("Unknown.Person@example.se").await.unwrap();
    }
    let err = h
        .start_email("unknown.person@example.se")
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::ResourceExhausted, "IDENTITY_RATE_LIMITED")
    );
    // A dry run (what the orchestrator asks at Submit) answers the same,
    // with when a code could go, and sends and records nothing.
    let in_outbox = std::fs::read_dir(h.outbox.path()).unwrap().count();
    let err = h
        .start_email_dry("unknown.person@example.se", true)
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::ResourceExhausted, "IDENTITY_RATE_LIMITED")
    );
    let wait = err
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(3600),
        "{wait:?}"
    );
    let fresh = h
        .start_email_dry("fresh.person@example.se", true)
        .await
        .unwrap();
    assert!(fresh.challenge_id.is_empty() && fresh.token.is_none());
    assert_eq!(
        std::fs::read_dir(h.outbox.path()).unwrap().count(),
        in_outbox,
        "a dry run sends nothing"
    );
    // Once the RetryInfo's time has passed, a code can go again.
    h.clock
        .advance(chrono::Duration::from_std(wait).unwrap() + chrono::Duration::seconds(1));
    h.start_email_dry("unknown.person@example.se", true)
        .await
        .unwrap();
    h.start_email("unknown.person@example.se").await.unwrap();
    // other people are not affected
    h.start_email("someone.else@example.se").await.unwrap();
    // bad input names the field, not the value
    let err = h.start_email("not an email").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_details_bad_request().unwrap().field_violations[0].field,
        "claimed[0].value"
    );
    assert!(!format!("{err:?}").contains("not an email"));
    h.finish(&["unknown.person", "per.johansson0", "someone.else"])
        .await;
}

#[tokio::test]
async fn parallel_code_requests_for_one_identity_send_no_more_than_the_limit() {
    let settings = Settings {
        per_hour: 5,
        ..Settings::default()
    };
    let h = harness(settings, chrono::Duration::minutes(15)).await;
    let mut calls = Vec::new();
    for _ in 0..200 {
        let mut client = h.client.clone();
        let req = h.req(
            pb::StartVerificationRequest {
                claimed: vec![common::Identity {
                    r#type: common::IdentityType::Email as i32,
                    format: 0,
                    value: "burst@example.se".into(),
                    hmac_key_id: String::new(),
                }],
                method: pb::Method::EmailCode as i32,
                idp_assertion: String::new(),
                attestation: None,
                language: "sv".into(),
                dry_run: false,
            },
            &[grpc::SCOPE_VERIFY],
        );
        calls.push(tokio::spawn(
            async move { client.start_verification(req).await },
        ));
    }
    let mut sent = 0;
    for c in calls {
        match c.await.unwrap() {
            Ok(_) => sent += 1,
            Err(e) => assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}"),
        }
    }
    assert_eq!(sent, 5, "exactly the limit");
    let in_outbox = std::fs::read_dir(h.outbox.path()).unwrap().count();
    assert_eq!(in_outbox, 5, "codes sent");
    h.finish(&["burst@example.se"]).await;
}

fn idp_assertion(alg: Algorithm, key: &EncodingKey, kid: &str, aud: &str, acr: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = serde_json::json!({
        "iss": IDP_ISSUER, "aud": aud, "sub": "bankid-session-1", "exp": now + 300, "iat": now,
        "acr": acr, "personnummer": "198112189876", "email": "Anna@Example.se", "email_verified": true
    });
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

#[tokio::test]
async fn idp_assertions_and_attestations() {
    let mut h = harness(Settings::default(), chrono::Duration::minutes(15)).await;
    let ed = EncodingKey::from_ed_pem(include_bytes!(
        "../../../crates/dsr-auth/tests/fixtures/ed-1.pem"
    ))
    .unwrap();
    let start = |assertion: String| pb::StartVerificationRequest {
        claimed: vec![],
        method: pb::Method::IdpAssertion as i32,
        idp_assertion: assertion,
        attestation: None,
        language: String::new(),
        dry_run: false,
    };
    let good = idp_assertion(
        Algorithm::EdDSA,
        &ed,
        "ed-1",
        dsr_identity::SERVICE_NAME,
        "http://id.elegnamnden.se/loa/1.0/loa3-substantial",
    );
    let resp = h
        .client
        .start_verification(h.req(start(good.clone()), &[grpc::SCOPE_VERIFY]))
        .await
        .unwrap()
        .into_inner();
    let token = resp.token.unwrap();
    assert_eq!(token.assurance, pb::Assurance::Substantial as i32);
    let values: Vec<&str> = token.identities.iter().map(|i| i.value.as_str()).collect();
    assert_eq!(values, ["198112189876", "anna@example.se"]);
    assert_eq!(
        h.verify(&token.jwt, 0).await.unwrap().acr,
        tokens::Assurance::Substantial
    );

    // signed by a key the IdP does not publish (same kid), alg none, wrong audience
    let stranger = dsr_auth::generate_ed25519("ed-1").unwrap();
    let forged = idp_assertion(
        Algorithm::EdDSA,
        &EncodingKey::from_ed_pem(stranger.private_pem.as_bytes()).unwrap(),
        "ed-1",
        dsr_identity::SERVICE_NAME,
        "loa3-substantial",
    );
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    use base64::Engine as _;
    parts[0] =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"ed-1"}"#);
    parts[2] = String::new();
    let none = parts.join(".");
    let wrong_aud = idp_assertion(
        Algorithm::EdDSA,
        &ed,
        "ed-1",
        "someone-else",
        "loa3-substantial",
    );
    for (name, jwt, want) in [
        ("unknown key", forged, "TOKEN_SIGNATURE"),
        ("alg none", none, "TOKEN_MALFORMED"),
        ("wrong audience", wrong_aud, "TOKEN_AUDIENCE"),
    ] {
        let err = h
            .client
            .start_verification(h.req(start(jwt), &[grpc::SCOPE_VERIFY]))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), reason(&err)),
            (Code::Unauthenticated, want.to_owned()),
            "{name}"
        );
    }

    // an attestation needs the case handler's scope
    let attest = pb::StartVerificationRequest {
        claimed: vec![common::Identity {
            r#type: common::IdentityType::SePersonnummer as i32,
            format: 0,
            value: "811218-9876".into(),
            hmac_key_id: String::new(),
        }],
        method: pb::Method::CaseHandlerAttestation as i32,
        idp_assertion: String::new(),
        attestation: Some(pb::Attestation {
            evidence: pb::AttestationEvidence::InPerson as i32,
            note: "ID checked at the office".into(),
        }),
        language: String::new(),
        dry_run: false,
    };
    let err = h
        .client
        .start_verification(h.req(attest.clone(), &[grpc::SCOPE_VERIFY]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let token2 = h
        .client
        .start_verification(h.req(attest, &[grpc::SCOPE_VERIFY, grpc::SCOPE_ATTEST]))
        .await
        .unwrap()
        .into_inner()
        .token
        .unwrap();
    assert_eq!(token2.assurance, pb::Assurance::Attested as i32);
    assert_eq!(token2.identities[0].value, "198112189876");
    h.finish(&[
        &token.jwt,
        &token2.jwt,
        &good,
        "198112189876",
        "anna@example",
    ])
    .await;
}

#[tokio::test]
async fn a_letter_goes_out_through_the_notifier_to_a_valid_address_only_with_the_notify_scope() {
    let mut h = harness(Settings::default(), chrono::Duration::minutes(15)).await;
    let letter = |to: common::Identity, subject: &str| pb::SendLetterRequest {
        to: Some(to),
        subject: subject.into(),
        body: "Hej,\n\nVi har tagit emot din begäran.\n".into(),
    };
    let email = |v: &str| common::Identity {
        r#type: common::IdentityType::Email as i32,
        format: 0,
        value: v.into(),
        hmac_key_id: String::new(),
    };
    // Without the scope (a portal's verify scope only): refused, nothing sent.
    let st = h
        .client
        .send_letter(h.req(
            letter(email("anna@example.se"), "Mottaget"),
            &[grpc::SCOPE_VERIFY],
        ))
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::PermissionDenied);
    // Bad input names its fields, never the value.
    let st = h
        .client
        .send_letter(h.req(
            letter(email("not an address"), "two\nlines"),
            &[grpc::SCOPE_NOTIFY],
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
        fields.iter().any(|f| f.starts_with("to")) && fields.contains(&"subject".to_owned()),
        "{fields:?}"
    );
    assert!(!st.message().contains("not an address"));
    assert_eq!(std::fs::read_dir(h.outbox.path()).unwrap().count(), 0);
    // With it: in the outbox, to the address, with its subject and text.
    h.client
        .send_letter(h.req(
            letter(email("Anna@Example.se"), "Vi har tagit emot din begäran"),
            &[grpc::SCOPE_NOTIFY],
        ))
        .await
        .unwrap();
    let files: Vec<_> = std::fs::read_dir(h.outbox.path())
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(files[0].path()).unwrap();
    assert!(
        text.starts_with("To: anna@example.se\n")
            && text.contains("Vi har tagit emot din begäran")
            && text.contains("Hej,"),
        "{text}"
    );
    // The codes still go out beside the letters.
    h.start_email("bo@example.se").await.unwrap();
    h.finish(&["anna@example.se", "Vi har tagit emot din begäran"])
        .await;
}
