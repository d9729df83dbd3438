//! Who may fetch a package, over a real server and real tokens: the portal
//! that submitted the request, and case handlers; another portal gets
//! NOT_FOUND from GetPackage and Download alike, as for a package that does
//! not exist.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use dsr_auth::{KeySet, TokenRequest, TokenSigner, Validator, ValidatorConfig};
use dsr_export::exporter::Exporter;
use dsr_export::grpc::GrpcSources;
use dsr_export::model::Kind;
use dsr_export::store::NewFile;
use dsr_proto::export::v1 as pb;
use dsr_proto::export::v1::export_client::ExportClient;
mod support;
use tonic::Code;
use tonic::transport::Channel;

const ISSUER: &str = "portals";

fn bearer<T>(token: &str, m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

async fn download(
    c: &mut ExportClient<Channel>,
    token: &str,
    package: &str,
) -> Result<Vec<u8>, tonic::Status> {
    let mut s = c
        .download(bearer(
            token,
            pb::DownloadRequest {
                package_id: package.into(),
                file_name: "access.json".into(),
            },
        ))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.extend(m.chunk);
    }
    Ok(out)
}

#[tokio::test]
async fn a_portal_fetches_only_the_packages_of_its_own_requests() {
    let (db, _dir, packages) = support::store(7).await;
    let now = Utc::now();
    let mut ids = Vec::new();
    for (req, owner) in [("req-a", Some("portals portal-a")), ("req-old", None)] {
        let id = uuid::Uuid::new_v4().to_string();
        packages
            .save(
                &id,
                req,
                Kind::Access,
                vec![NewFile {
                    name: "access.json".into(),
                    media_type: "application/json".into(),
                    bytes: b"{\"records\":[]}".to_vec(),
                }],
                0,
                &[],
                now,
                now + chrono::Duration::days(30),
                owner,
            )
            .await
            .unwrap();
        ids.push(id);
    }

    let keys = dsr_auth::generate_ed25519("portals").unwrap();
    let signer =
        Arc::new(TokenSigner::from_ed25519_pem(&keys.private_pem, "portals", ISSUER).unwrap());
    let validator = Arc::new(Validator::new(
        Arc::new(KeySet::from_jwks_json(&keys.jwks_json).unwrap()),
        ValidatorConfig {
            issuers: vec![ISSUER.into()],
            audience: dsr_export::SERVICE_NAME.into(),
            leeway_secs: 5,
            grants: None,
        },
    ));
    let group = Arc::new(
        dsr_domain::group::Group::from_toml(include_str!(
            "../../../crates/dsr-domain/data/group.toml"
        ))
        .unwrap(),
    );
    let sources = GrpcSources::new(
        &[],
        "http://127.0.0.1:9",
        "dsr-transfer-registry",
        signer.clone(),
    )
    .unwrap();
    let exporter = Exporter::new(
        Arc::new(sources),
        packages,
        group,
        chrono::Duration::days(30),
    );
    let mut set = dsr_server::ServiceSet::new();
    set.add(dsr_export::grpc::service(exporter, validator));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        dsr_server::serve(listener, set, &dsr_server::ServerConfig::default(), async {
            let _ = stopped.await;
        })
        .await
    });
    let mut c = ExportClient::new(
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let token = |subject: &str, scopes: &[&str]| {
        signer
            .mint(&TokenRequest {
                subject: subject.into(),
                audiences: vec![dsr_export::SERVICE_NAME.into()],
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                ttl: Duration::from_secs(600),
            })
            .unwrap()
    };
    let own = token("portal-a", &["export:read"]);
    let other = token("portal-b", &["export:read"]);
    let handler = token("handler-1", &["export:read", "requests:manage"]);

    // The submitter: its package, described and downloaded.
    let got = c
        .get_package(bearer(
            &own,
            pb::GetPackageRequest {
                package_id: ids[0].clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .package
        .unwrap();
    assert_eq!(got.request_id, "req-a");
    assert_eq!(
        download(&mut c, &own, &ids[0]).await.unwrap(),
        b"{\"records\":[]}"
    );

    // Another portal: as if it did not exist, in both calls.
    let e = c
        .get_package(bearer(
            &other,
            pb::GetPackageRequest {
                package_id: ids[0].clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(
        download(&mut c, &other, &ids[0]).await.unwrap_err().code(),
        Code::NotFound
    );
    // A package with no recorded submitter: case handlers only.
    assert_eq!(
        download(&mut c, &own, &ids[1]).await.unwrap_err().code(),
        Code::NotFound
    );

    // A case handler: every package.
    for id in &ids {
        assert_eq!(
            download(&mut c, &handler, id).await.unwrap(),
            b"{\"records\":[]}"
        );
    }
    let _ = stop.send(());
    served.await.unwrap().unwrap();
    db.finish().await;
}
