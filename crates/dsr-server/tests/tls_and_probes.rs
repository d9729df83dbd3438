//! Mutual TLS between services as on Kubernetes: a server with TLS on its
//! API port and plain health on its probe port, and a client that reaches an
//! `https://` endpoint with the process's client TLS settings
//! (`dsr_mesh_client::client`). A file of its own: those settings are set once
//! per process.

use std::time::Duration;

use dsr_server::{ServerConfig, ServiceSet, TlsConfig, serve};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

async fn health(ch: Channel) -> Result<i32, tonic::Status> {
    Ok(HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status)
}

#[tokio::test]
async fn https_endpoints_use_the_client_tls_settings_and_probes_stay_plain() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let probe = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cfg = ServerConfig {
        tls: Some(TlsConfig {
            cert: fixture_path("server.pem"),
            key: fixture_path("server.key"),
            client_ca: Some(fixture_path("ca.pem")),
        }),
        health_listen: Some(probe),
        ..ServerConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        serve(listener, ServiceSet::new(), &cfg, async {
            let _ = stopped.await;
        })
        .await
    });
    let url = format!("https://localhost:{port}");

    // Before the settings: an https endpoint is refused, naming the setting.
    let err = dsr_mesh_client::client::lazy_channel(&url).unwrap_err();
    assert!(err.contains("client.tls_ca"), "{err}");

    // The probe port answers in plain gRPC, the API port does not.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let plain = loop {
        if let Ok(ch) = Channel::from_shared(format!("http://{probe}"))
            .unwrap()
            .connect()
            .await
        {
            break ch;
        }
        assert!(std::time::Instant::now() < deadline, "no probe port");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        health(plain.clone()).await.unwrap(),
        ServingStatus::Serving as i32
    );
    // The ops port also describes health (for grpcurl) and serves
    // Prometheus text at /metrics over plain HTTP/1.1.
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        let ask = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new(plain)
            .server_reflection_info(tokio_stream::iter([ask]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("no service list");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["grpc.health.v1.Health"]);
    }
    {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = tokio::net::TcpStream::connect(probe).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("text/plain; version=0.0.4"), "{answer}");
    }
    let api_plain = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    assert!(health(api_plain).await.is_err());

    // With the mesh CA and a client certificate: through.
    assert!(dsr_mesh_client::client::set_client_tls(
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(fixture("ca.pem")))
            .identity(Identity::from_pem(
                fixture("client.pem"),
                fixture("client.key")
            ))
    ));
    let ch = dsr_mesh_client::client::lazy_channel(&url).unwrap();
    assert_eq!(health(ch).await.unwrap(), ServingStatus::Serving as i32);
    let cli = dsr_mesh_client::client::endpoint(&url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(health(cli).await.unwrap(), ServingStatus::Serving as i32);

    // The probe port stops with the server.
    stop.send(()).unwrap();
    done.await.unwrap().unwrap();
    assert!(
        Channel::from_shared(format!("http://{probe}"))
            .unwrap()
            .connect()
            .await
            .is_err()
    );
}
