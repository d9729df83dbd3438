//! Discovery over the three reference systems, each a real system-sql server
//! on loopback with its own database (SQLite, or PostgreSQL with
//! DSR_TEST_POSTGRES_URL): a person known by email at the CRM is found at the
//! print vendor (customer number) and the legal vendor (phone) only through
//! identity expansion; a system that is down makes the map partial.

use std::sync::Arc;
use std::time::Duration;

use dsr_auth::{KeySet, TokenRequest, TokenSigner, Validator, ValidatorConfig};
use dsr_discovery::grpc::{self, GrpcSystems, SystemEndpoint};
use dsr_discovery::locator::Locator;
use dsr_proto::common::v1 as common;
use dsr_proto::discovery::v1 as pb;
use dsr_proto::discovery::v1::discovery_client::DiscoveryClient;
use dsr_store::testing::TestDb;
use dsr_system_sql::manifest::Manifest;
use dsr_system_sql::reference::{self, Reference};
use tonic::transport::Channel;

const ISSUER: &str = "mesh-test";

async fn serve(set: dsr_server::ServiceSet) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        dsr_server::serve(listener, set, &dsr_server::ServerConfig::default(), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (format!("http://{addr}"), stop)
}

fn validator(keys: &dsr_auth::DevKeyPair, audience: &str) -> Arc<Validator> {
    Arc::new(Validator::new(
        Arc::new(KeySet::from_jwks_json(&keys.jwks_json).unwrap()),
        ValidatorConfig {
            issuers: vec![ISSUER.into()],
            audience: audience.into(),
            leeway_secs: 5,
            grants: None,
        },
    ))
}

#[tokio::test]
async fn locate_expands_identities_across_the_reference_systems() {
    let keys = dsr_auth::generate_ed25519("mesh").unwrap();
    let signer =
        Arc::new(TokenSigner::from_ed25519_pem(&keys.private_pem, "mesh", ISSUER).unwrap());
    let mut dbs = Vec::new();
    let mut endpoints = Vec::new();
    let mut stops = Vec::new();
    for r in Reference::ALL {
        let db = TestDb::new().await.unwrap();
        dsr_store::migrate::<dsr_connector::migration::Migrator>(&db.db)
            .await
            .unwrap();
        r.ensure(&db.db, 60, 5, dsr_system_sql::reference::base_date())
            .await
            .unwrap();
        let m = Arc::new(Manifest::parse(r.manifest(), r.manifest_name()).unwrap());
        let system = dsr_system_sql::system::SqlSystem::new(
            db.db.clone(),
            m,
            dsr_connector::signing::ReceiptSigner::generate("r"),
            Arc::new(dsr_system_sql::grpc::ProtoReceipts),
        );
        let mut set = dsr_server::ServiceSet::new();
        set.add(dsr_system_sql::grpc::service(
            system,
            validator(&keys, r.id()),
        ));
        let (endpoint, stop) = serve(set).await;
        endpoints.push(SystemEndpoint {
            id: r.id().into(),
            endpoint,
            operator_recipient_id: String::new(),
        });
        stops.push(stop);
        dbs.push(db);
    }
    // A fourth system that is registered but not running.
    endpoints.push(SystemEndpoint {
        id: "archive".into(),
        endpoint: "http://127.0.0.1:9".into(),
        operator_recipient_id: String::new(),
    });

    let systems = Arc::new(GrpcSystems::new(endpoints, signer.clone()).unwrap());
    let locator = Locator::new(systems.clone(), Duration::from_secs(2));
    locator.refresh().await;
    let mut set = dsr_server::ServiceSet::new();
    set.add(grpc::service(
        locator,
        systems,
        validator(&keys, dsr_discovery::SERVICE_NAME),
    ));
    let (endpoint, stop) = serve(set).await;
    stops.push(stop);

    let token = signer
        .mint(&TokenRequest {
            subject: "service:orchestrator".into(),
            audiences: vec![dsr_discovery::SERVICE_NAME.into()],
            scopes: vec![grpc::SCOPE_LOCATE.into(), grpc::SCOPE_READ.into()],
            ttl: Duration::from_secs(60),
        })
        .unwrap();
    let mut client = DiscoveryClient::new(
        Channel::from_shared(endpoint)
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    fn with<T>(token: &str, m: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(m);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    }

    let listed = client
        .list_systems(with(&token, pb::ListSystemsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .systems;
    let reachable: Vec<(&str, bool)> = listed
        .iter()
        .map(|s| (s.system_id.as_str(), s.reachable))
        .collect();
    assert_eq!(
        reachable,
        [
            ("archive", false),
            ("crm", true),
            ("legal", true),
            ("print-mail", true)
        ]
    );

    // Person 7 is at the CRM (email), the print vendor (customer number) and the legal vendor (phone).
    let p = &reference::people(60, 5)[7];
    let resp = client
        .locate(with(
            &token,
            pb::LocateRequest {
                request_id: "7f0c2a4e-0000-4000-8000-000000000007".into(),
                controller: Some(common::ControllerRef {
                    organisation_number: p.controller.into(),
                }),
                due_date: Some(common::Date {
                    year: 2026,
                    month: 12,
                    day: 23,
                }),
                identities: vec![common::Identity {
                    r#type: common::IdentityType::Email as i32,
                    format: 0,
                    value: p.email.clone(),
                    hmac_key_id: String::new(),
                }],
                max_rounds: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .subject_map
        .unwrap();
    let by: std::collections::BTreeMap<&str, i32> = resp
        .systems
        .iter()
        .map(|s| (s.system_id.as_str(), s.outcome))
        .collect();
    assert_eq!(by["crm"], pb::Outcome::Found as i32);
    assert_eq!(
        by["print-mail"],
        pb::Outcome::Found as i32,
        "reached through the customer number"
    );
    assert_eq!(
        by["legal"],
        pb::Outcome::Found as i32,
        "reached through the phone number"
    );
    assert_eq!(by["archive"], pb::Outcome::Failed as i32);
    assert!(resp.partial, "a system that is down makes the map partial");
    assert!(resp.rounds >= 2);
    let print = resp
        .systems
        .iter()
        .find(|s| s.system_id == "print-mail")
        .unwrap();
    assert_eq!(
        print.asked_with,
        [common::IdentityType::CustomerId as i32],
        "asked only with what it accepts"
    );

    // Bad input names the field.
    let err = client
        .locate(with(
            &token,
            pb::LocateRequest {
                request_id: String::new(),
                controller: None,
                due_date: None,
                identities: vec![],
                max_rounds: 9,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    for stop in stops {
        let _ = stop.send(());
    }
    for db in dbs {
        db.finish().await;
    }
}
