//! The transfer registry served for real: a gRPC server on a loopback port,
//! a real database (SQLite, or PostgreSQL with DSR_TEST_POSTGRES_URL), real
//! JWTs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dsr_auth::{KeySet, TokenRequest, TokenSigner, Validator, ValidatorConfig};
use dsr_domain::transfer::CountryTables;
use dsr_proto::common::v1 as common;
use dsr_proto::transfer::v1 as pb;
use dsr_proto::transfer::v1::transfer_registry_client::TransferRegistryClient;
use dsr_server::{ServerConfig, ServiceSet, serve};
use dsr_store::testing::TestDb;
use dsr_transfer_registry::{Registry, SERVICE_NAME, grpc, migration::Migrator, seed};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

const ISSUER: &str = "dsr-test";

struct Mesh {
    addr: SocketAddr,
    signer: TokenSigner,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl Mesh {
    async fn start(db_url: &str, keys: &dsr_auth::DevKeyPair) -> Self {
        let db = dsr_store::connect(db_url, &dsr_store::StoreConfig::default())
            .await
            .unwrap();
        dsr_store::migrate::<Migrator>(&db).await.unwrap();
        let tables = Arc::new(CountryTables::shipped());
        let seeded = seed::parse(seed::SHIPPED, &tables, chrono::Utc::now().date_naive()).unwrap();
        let registry = Registry::new(db, tables, Arc::new(seeded.policy));
        registry.seed(seeded.recipients).await.unwrap();
        let validator = Arc::new(Validator::new(
            Arc::new(KeySet::from_jwks_json(&keys.jwks_json).unwrap()),
            ValidatorConfig {
                issuers: vec![ISSUER.into()],
                audience: SERVICE_NAME.into(),
                leeway_secs: 5,
                grants: None,
            },
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut set = ServiceSet::new();
        set.add(grpc::service(registry, validator))
            .describe(dsr_proto::FILE_DESCRIPTOR_SET);
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            serve(listener, set, &ServerConfig::default(), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let signer = TokenSigner::from_ed25519_pem(&keys.private_pem, &keys.kid, ISSUER).unwrap();
        Self {
            addr,
            signer,
            stop: Some(stop),
            done,
        }
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.done.await.unwrap();
    }

    fn token(&self, scopes: &[&str], audience: &str, ttl: Duration) -> String {
        self.signer
            .mint(&TokenRequest {
                subject: "case-handler-7".into(),
                audiences: vec![audience.into()],
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                ttl,
            })
            .unwrap()
    }

    async fn client(&self) -> TransferRegistryClient<Channel> {
        TransferRegistryClient::new(
            Channel::from_shared(format!("http://{}", self.addr))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        )
    }

    fn rw(&self) -> String {
        self.token(
            &[grpc::SCOPE_READ, grpc::SCOPE_WRITE],
            SERVICE_NAME,
            Duration::from_secs(120),
        )
    }
}

fn authed<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|i| i.reason)
        .unwrap_or_default()
}

fn controller(org: &str) -> Option<common::ControllerRef> {
    Some(common::ControllerRef {
        organisation_number: org.into(),
    })
}

fn date(y: i32, m: i32, d: i32) -> Option<common::Date> {
    Some(common::Date {
        year: y,
        month: m,
        day: d,
    })
}

fn new_recipient(
    id: &str,
    country: &str,
    safeguard: Option<pb::safeguard::Mechanism>,
) -> pb::Recipient {
    pb::Recipient {
        id: id.into(),
        name: format!("Recipient {id}"),
        role: pb::RecipientRole::Processor as i32,
        country: country.into(),
        controllers: vec![common::ControllerRef {
            organisation_number: "5561341248".into(),
        }],
        category_ids: vec!["contact.email".into(), "contact.name".into()],
        system_ids: vec!["crm".into()],
        dpa_reference: "DPA-TEST-1".into(),
        safeguard: safeguard.map(|m| pb::Safeguard { mechanism: Some(m) }),
        purpose: "test".into(),
        name_sv: format!("Mottagare {id}"),
        purpose_sv: "test på svenska".into(),
        ..Default::default()
    }
}

async fn check(
    c: &mut TransferRegistryClient<Channel>,
    token: &str,
    id: &str,
    cats: &[&str],
) -> pb::TransferAssessment {
    c.check_transfer(authed(
        pb::CheckTransferRequest {
            recipient_id: id.into(),
            category_ids: cats.iter().map(|s| (*s).to_owned()).collect(),
            controller: controller("556134-1248"),
            at: None,
        },
        token,
    ))
    .await
    .unwrap()
    .into_inner()
    .assessment
    .unwrap()
}

fn codes(a: &pb::TransferAssessment) -> Vec<&str> {
    a.reasons.iter().map(|r| r.code.as_str()).collect()
}

#[tokio::test]
async fn authentication_is_required_and_checked() {
    let db = TestDb::new().await.unwrap();
    let keys = dsr_auth::generate_ed25519("test-1").unwrap();
    let mesh = Mesh::start(&db.url, &keys).await;
    let mut c = mesh.client().await;
    let get = || pb::GetRecipientRequest {
        id: "print-mail".into(),
    };

    let err = c.get_recipient(Request::new(get())).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::Unauthenticated, "TOKEN_MISSING")
    );

    let wrong_aud = mesh.token(&[grpc::SCOPE_READ], "dsr-erasure", Duration::from_secs(60));
    let err = c
        .get_recipient(authed(get(), &wrong_aud))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::Unauthenticated, "TOKEN_AUDIENCE")
    );

    let expired = mesh.token(&[grpc::SCOPE_READ], SERVICE_NAME, Duration::ZERO);
    tokio::time::sleep(Duration::from_secs(7)).await; // past the 5 s leeway
    let err = c.get_recipient(authed(get(), &expired)).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::Unauthenticated, "TOKEN_EXPIRED")
    );

    let other_keys = dsr_auth::generate_ed25519("test-1").unwrap();
    let forged = TokenSigner::from_ed25519_pem(&other_keys.private_pem, "test-1", ISSUER)
        .unwrap()
        .mint(&TokenRequest {
            subject: "x".into(),
            audiences: vec![SERVICE_NAME.into()],
            scopes: vec![grpc::SCOPE_READ.into()],
            ttl: Duration::from_secs(60),
        })
        .unwrap();
    let err = c.get_recipient(authed(get(), &forged)).await.unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::Unauthenticated, "TOKEN_SIGNATURE")
    );

    let read_only = mesh.token(&[grpc::SCOPE_READ], SERVICE_NAME, Duration::from_secs(60));
    let got = c
        .get_recipient(authed(get(), &read_only))
        .await
        .unwrap()
        .into_inner()
        .recipient
        .unwrap();
    assert_eq!(got.name, "Print and mail service");
    let err = c
        .delete_recipient(authed(
            pb::DeleteRecipientRequest {
                id: "print-mail".into(),
                expected_revision: 0,
            },
            &read_only,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::PermissionDenied, "SCOPE_MISSING")
    );

    mesh.stop().await;
    db.finish().await;
}

#[tokio::test]
async fn transfer_checks_follow_chapter_v() {
    let db = TestDb::new().await.unwrap();
    let keys = dsr_auth::generate_ed25519("test-1").unwrap();
    let mesh = Mesh::start(&db.url, &keys).await;
    let mut c = mesh.client().await;
    let t = mesh.rw();
    use pb::safeguard::Mechanism;

    // a recipient outside the EEA without any mechanism
    c.create_recipient(authed(
        pb::CreateRecipientRequest {
            recipient: Some(new_recipient("vendor-in", "IN", None)),
        },
        &t,
    ))
    .await
    .unwrap();
    let a = check(&mut c, &t, "vendor-in", &["contact.email"]).await;
    assert!(!a.lawful);
    assert_eq!(a.basis, pb::TransferBasis::None as i32);
    assert_eq!(codes(&a), ["NO_SAFEGUARD"]);
    assert!(a.reasons[0].blocking);

    // an adequate country (the seeded UK agent)
    let a = check(&mut c, &t, "collection-agent-gb", &["contact.email"]).await;
    assert!(a.lawful);
    assert_eq!(a.basis, pb::TransferBasis::Adequacy as i32);
    assert_eq!(a.decision_reference, "(EU) 2021/1772, renewed 2025-12-19");

    // SCC module 2 (the seeded Serbian agent)
    let a = check(&mut c, &t, "collection-agent-rs", &["contact.email"]).await;
    assert!(a.lawful, "{:?}", a.reasons);
    assert_eq!(
        a.basis,
        pb::TransferBasis::StandardContractualClauses as i32
    );

    // SCC of a module that does not fit a processor
    let scc1 = Mechanism::Scc(pb::StandardContractualClauses {
        module: pb::SccModule::ControllerToController as i32,
        signed_on: date(2023, 3, 1),
        assessed_on: date(2023, 2, 1),
        review_by: None,
    });
    c.create_recipient(authed(
        pb::CreateRecipientRequest {
            recipient: Some(new_recipient("vendor-ph", "PH", Some(scc1))),
        },
        &t,
    ))
    .await
    .unwrap();
    let a = check(&mut c, &t, "vendor-ph", &["contact.email"]).await;
    assert!(!a.lawful);
    assert_eq!(codes(&a), ["SCC_MODULE_MISMATCH"]);

    // the United States: DPF-certified (seeded) vs not certified
    let a = check(&mut c, &t, "storage-us", &["contact.email"]).await;
    assert!(a.lawful, "{:?}", a.reasons);
    assert_eq!(a.basis, pb::TransferBasis::DataPrivacyFramework as i32);
    assert_eq!(a.decision_reference, "(EU) 2023/1795");
    let uncertified = Mechanism::Dpf(pb::DataPrivacyFrameworkCertification {
        active: false,
        verified_on: date(2026, 1, 10),
        review_by: date(2027, 1, 10),
    });
    c.create_recipient(authed(
        pb::CreateRecipientRequest {
            recipient: Some(new_recipient("vendor-us", "US", Some(uncertified))),
        },
        &t,
    ))
    .await
    .unwrap();
    let a = check(&mut c, &t, "vendor-us", &["contact.email"]).await;
    assert!(!a.lawful);
    assert_eq!(codes(&a), ["DPF_NOT_CERTIFIED"]);

    // survey data stays in the EEA whatever the safeguard; a category not agreed is refused
    let a = check(&mut c, &t, "collection-agent-rs", &["survey.answers"]).await;
    assert!(!a.lawful);
    assert!(
        codes(&a).contains(&"EEA_ONLY_CATEGORY") && codes(&a).contains(&"CATEGORY_NOT_AGREED"),
        "{:?}",
        codes(&a)
    );

    // the Art. 15 listing: recipients of the CRM's data for Intrum Finans AB
    let resp = c
        .list_disclosure_recipients(authed(
            pb::ListDisclosureRecipientsRequest {
                controller: controller("556885-5265"),
                system_ids: vec!["crm".into()],
                category_ids: vec!["contact.email".into()],
            },
            &t,
        ))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = resp
        .disclosures
        .iter()
        .map(|d| d.recipient.as_ref().unwrap().id.as_str())
        .collect();
    assert!(
        ids.contains(&"crm-vendor") && ids.contains(&"storage-us"),
        "{ids:?}"
    );
    assert!(
        !ids.contains(&"marketing-consultants"),
        "serves only Intrum Sverige AB"
    );
    assert!(
        resp.disclosures
            .iter()
            .all(|d| d.assessment.as_ref().unwrap().lawful)
    );

    // bad input names the fields
    let err = c
        .check_transfer(authed(
            pb::CheckTransferRequest {
                recipient_id: "Bad Id".into(),
                category_ids: vec![],
                controller: controller("123"),
                at: None,
            },
            &t,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        fields(&err),
        [
            "recipient_id",
            "category_ids",
            "controller.organisation_number"
        ]
    );
    let err = c
        .check_transfer(authed(
            pb::CheckTransferRequest {
                recipient_id: "nobody".into(),
                category_ids: vec!["contact.email".into()],
                controller: None,
                at: None,
            },
            &t,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    mesh.stop().await;
    db.finish().await;
}

#[tokio::test]
async fn recipients_are_managed_and_survive_a_restart() {
    let db = TestDb::new().await.unwrap();
    let keys = dsr_auth::generate_ed25519("test-1").unwrap();
    let mesh = Mesh::start(&db.url, &keys).await;
    let mut c = mesh.client().await;
    let t = mesh.rw();

    let created = c
        .create_recipient(authed(
            pb::CreateRecipientRequest {
                recipient: Some(new_recipient("new-vendor", "SE", None)),
            },
            &t,
        ))
        .await
        .unwrap()
        .into_inner()
        .recipient
        .unwrap();
    assert_eq!(created.revision, 1);
    assert_eq!(
        created.controllers[0].organisation_number, "556134-1248",
        "normalised"
    );
    let err = c
        .create_recipient(authed(
            pb::CreateRecipientRequest {
                recipient: Some(new_recipient("new-vendor", "SE", None)),
            },
            &t,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);

    // validation names every bad field
    let mut bad = new_recipient("x", "XX", None);
    bad.role = 0;
    bad.dpa_reference.clear();
    bad.controllers.push(common::ControllerRef {
        organisation_number: "556134-1247".into(),
    });
    bad.category_ids.push("Not A Category".into());
    let err = c
        .create_recipient(authed(
            pb::CreateRecipientRequest {
                recipient: Some(bad),
            },
            &t,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        fields(&err),
        [
            "recipient.id",
            "recipient.role",
            "recipient.country",
            "recipient.controllers[1]",
            "recipient.category_ids[2]"
        ]
    );
    assert!(!err.message().contains("556134"), "no values in messages");
    let mut bad = new_recipient("dpf-abroad", "NO", None);
    bad.safeguard = Some(pb::Safeguard {
        mechanism: Some(pb::safeguard::Mechanism::Dpf(
            pb::DataPrivacyFrameworkCertification {
                active: true,
                verified_on: date(2026, 2, 30),
                review_by: None,
            },
        )),
    });
    let err = c
        .create_recipient(authed(
            pb::CreateRecipientRequest {
                recipient: Some(bad),
            },
            &t,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        fields(&err),
        [
            "recipient.safeguard.dpf.verified_on",
            "recipient.safeguard.dpf.review_by"
        ]
    );

    // optimistic concurrency
    let mut changed = created.clone();
    changed.name = "Renamed vendor".into();
    let updated = c
        .update_recipient(authed(
            pb::UpdateRecipientRequest {
                recipient: Some(changed.clone()),
                expected_revision: 1,
            },
            &t,
        ))
        .await
        .unwrap()
        .into_inner()
        .recipient
        .unwrap();
    assert_eq!(
        (updated.revision, updated.name.as_str()),
        (2, "Renamed vendor")
    );
    let err = c
        .update_recipient(authed(
            pb::UpdateRecipientRequest {
                recipient: Some(changed),
                expected_revision: 1,
            },
            &t,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), reason(&err).as_str()),
        (Code::Aborted, "REVISION_MISMATCH")
    );

    // paging and filters
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_recipients(authed(
                pb::ListRecipientsRequest {
                    page: Some(common::PageRequest {
                        page_size: 5,
                        page_token: token.clone(),
                    }),
                    ..Default::default()
                },
                &t,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.recipients.len() <= 5);
        seen.extend(page.recipients.into_iter().map(|r| r.id));
        token = page.page.unwrap().next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    assert_eq!(
        seen.len(),
        seed::parse(
            seed::SHIPPED,
            &CountryTables::shipped(),
            chrono::Utc::now().date_naive()
        )
        .unwrap()
        .recipients
        .len()
            + 1
    );
    let abroad = c
        .list_recipients(authed(
            pb::ListRecipientsRequest {
                country: "rs".into(),
                ..Default::default()
            },
            &t,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        abroad
            .recipients
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["collection-agent-rs"]
    );
    let err = c
        .list_recipients(authed(
            pb::ListRecipientsRequest {
                page: Some(common::PageRequest {
                    page_size: 501,
                    page_token: "!!".into(),
                }),
                ..Default::default()
            },
            &t,
        ))
        .await
        .unwrap_err();
    assert_eq!(fields(&err), ["page.page_size", "page.page_token"]);

    // delete a seeded one, then restart on the same database
    c.delete_recipient(authed(
        pb::DeleteRecipientRequest {
            id: "customers".into(),
            expected_revision: 0,
        },
        &t,
    ))
    .await
    .unwrap();
    mesh.stop().await;
    let mesh = Mesh::start(&db.url, &keys).await;
    let mut c = mesh.client().await;
    let t = mesh.rw();
    let got = c
        .get_recipient(authed(
            pb::GetRecipientRequest {
                id: "new-vendor".into(),
            },
            &t,
        ))
        .await
        .unwrap()
        .into_inner()
        .recipient
        .unwrap();
    assert_eq!((got.name.as_str(), got.revision), ("Renamed vendor", 2));
    // the seed fills only an empty registry: the deletion sticks
    let err = c
        .get_recipient(authed(
            pb::GetRecipientRequest {
                id: "customers".into(),
            },
            &t,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // reviews due: the DPF certification of the seeded storage provider falls within a year
    let due = c
        .list_reviews_due(authed(pb::ListReviewsDueRequest { within_days: 365 }, &t))
        .await
        .unwrap()
        .into_inner();
    assert!(due.reviews.iter().any(|r| r.recipient_id == "storage-us"
        && r.basis == pb::TransferBasis::DataPrivacyFramework as i32));
    let countries = c
        .list_countries(authed(pb::ListCountriesRequest {}, &t))
        .await
        .unwrap()
        .into_inner()
        .countries;
    assert_eq!(
        countries
            .iter()
            .filter(|c| c.status == pb::CountryStatus::Eea as i32)
            .count(),
        30
    );
    assert!(
        countries
            .iter()
            .any(|c| c.code == "US" && c.scope.contains("Data Privacy Framework"))
    );

    mesh.stop().await;
    db.finish().await;
}

#[test]
fn every_rpc_has_a_scope_rule() {
    let fds = prost_types::FileDescriptorSet::decode(dsr_proto::FILE_DESCRIPTOR_SET).unwrap();
    let service = fds
        .file
        .iter()
        .flat_map(|f| f.service.iter().map(move |s| (f.package(), s)))
        .find(|(p, s)| *p == "dsr.transfer.v1" && s.name() == "TransferRegistry")
        .unwrap()
        .1;
    let mut methods: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    let mut rules: Vec<&str> = grpc::SCOPES.iter().map(|r| r.method).collect();
    methods.sort();
    rules.sort();
    assert_eq!(methods, rules);
}
