//! The server runtime against a real socket: health, reflection, request id,
//! timeouts, the concurrency limit, graceful shutdown, and mutual TLS.

use std::net::SocketAddr;
use std::time::Duration;

use dsr_proto::transfer::v1 as pb;
use dsr_proto::transfer::v1::transfer_registry_client::TransferRegistryClient;
use dsr_proto::transfer::v1::transfer_registry_server::{TransferRegistry, TransferRegistryServer};
use dsr_server::{ServerConfig, ServiceSet, TlsConfig, serve};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A test double: `GetRecipient` takes `delay` and answers; the rest is
/// unimplemented.
#[derive(Clone)]
struct Slow {
    delay: Duration,
}

#[tonic::async_trait]
impl TransferRegistry for Slow {
    async fn create_recipient(
        &self,
        _: Request<pb::CreateRecipientRequest>,
    ) -> Result<Response<pb::CreateRecipientResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn get_recipient(
        &self,
        req: Request<pb::GetRecipientRequest>,
    ) -> Result<Response<pb::GetRecipientResponse>, Status> {
        let request_id = req
            .extensions()
            .get::<dsr_server::RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        tokio::time::sleep(self.delay).await;
        Ok(Response::new(pb::GetRecipientResponse {
            recipient: Some(pb::Recipient {
                id: req.into_inner().id,
                name: request_id,
                ..Default::default()
            }),
        }))
    }
    async fn update_recipient(
        &self,
        _: Request<pb::UpdateRecipientRequest>,
    ) -> Result<Response<pb::UpdateRecipientResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn delete_recipient(
        &self,
        _: Request<pb::DeleteRecipientRequest>,
    ) -> Result<Response<pb::DeleteRecipientResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn list_recipients(
        &self,
        _: Request<pb::ListRecipientsRequest>,
    ) -> Result<Response<pb::ListRecipientsResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn list_disclosure_recipients(
        &self,
        _: Request<pb::ListDisclosureRecipientsRequest>,
    ) -> Result<Response<pb::ListDisclosureRecipientsResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn check_transfer(
        &self,
        _: Request<pb::CheckTransferRequest>,
    ) -> Result<Response<pb::CheckTransferResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn list_countries(
        &self,
        _: Request<pb::ListCountriesRequest>,
    ) -> Result<Response<pb::ListCountriesResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
    async fn list_reviews_due(
        &self,
        _: Request<pb::ListReviewsDueRequest>,
    ) -> Result<Response<pb::ListReviewsDueResponse>, Status> {
        Err(Status::unimplemented("test double"))
    }
}

const NAME: &str = "dsr.transfer.v1.TransferRegistry";

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<Result<(), dsr_server::Error>>,
}

async fn start(delay: Duration, cfg: ServerConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut set = ServiceSet::new();
    set.add(TransferRegistryServer::new(Slow { delay }))
        .describe(dsr_proto::FILE_DESCRIPTOR_SET);
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(async move {
        serve(listener, set, &cfg, async {
            let _ = stopped.await;
        })
        .await
    });
    Running {
        addr,
        stop: Some(stop),
        done,
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn get(ch: Channel, id: &str) -> Result<Response<pb::GetRecipientResponse>, Status> {
    TransferRegistryClient::new(ch)
        .get_recipient(pb::GetRecipientRequest { id: id.into() })
        .await
}

#[tokio::test]
async fn health_reflection_and_request_id() {
    let s = start(Duration::ZERO, ServerConfig::default()).await;
    let ch = channel(s.addr).await;
    let mut health = HealthClient::new(ch.clone());
    for service in [NAME, ""] {
        let st = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(st, ServingStatus::Serving as i32, "service {service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.v1.Nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // reflection v1alpha lists the service, health and reflection itself
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    let mut refl = ServerReflectionClient::new(ch.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in [
        NAME,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
    // Only what this port serves: the descriptor set describes the whole
    // mesh, but no other service of it is listed.
    assert!(
        names.iter().all(|n| n == NAME || n.starts_with("grpc.")),
        "{names:?}"
    );

    // A service of the mesh this port does not serve: UNIMPLEMENTED, and
    // the message says what the port serves.
    let mut other = dsr_proto::discovery::v1::discovery_client::DiscoveryClient::new(ch.clone());
    let st = other
        .list_systems(dsr_proto::discovery::v1::ListSystemsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::Unimplemented, "{st:?}");
    assert!(
        st.message()
            .starts_with("dsr.discovery.v1.Discovery is not served on this port")
            && st.message().contains(NAME),
        "{st:?}"
    );

    // a caller's request id is used and echoed; a bad one is replaced
    let mut req = Request::new(pb::GetRecipientRequest { id: "r".into() });
    req.metadata_mut()
        .insert("x-request-id", "req-123".parse().unwrap());
    let resp = TransferRegistryClient::new(ch.clone())
        .get_recipient(req)
        .await
        .unwrap();
    assert_eq!(resp.metadata().get("x-request-id").unwrap(), "req-123");
    assert_eq!(resp.into_inner().recipient.unwrap().name, "req-123");
    let mut req = Request::new(pb::GetRecipientRequest { id: "r".into() });
    req.metadata_mut()
        .insert("x-request-id", "bad id with spaces".parse().unwrap());
    let resp = TransferRegistryClient::new(ch)
        .get_recipient(req)
        .await
        .unwrap();
    let echoed = resp
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(echoed.len(), 36, "a UUID replaces the bad id");
}

#[tokio::test]
async fn grpc_timeout_is_honoured() {
    let s = start(Duration::from_secs(5), ServerConfig::default()).await;
    let mut req = Request::new(pb::GetRecipientRequest { id: "r".into() });
    req.set_timeout(Duration::from_millis(200));
    let started = std::time::Instant::now();
    let err = TransferRegistryClient::new(channel(s.addr).await)
        .get_recipient(req)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
        ),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn concurrency_limit_sheds_load_across_connections() {
    let cfg = ServerConfig {
        concurrency_limit: 1,
        ..ServerConfig::default()
    };
    let s = start(Duration::from_millis(800), cfg).await;
    let (a, b) = (channel(s.addr).await, channel(s.addr).await);
    let first = tokio::spawn(get(a, "a"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = get(b, "b").await.unwrap_err();
    assert_eq!(second.code(), tonic::Code::ResourceExhausted);
    first.await.unwrap().unwrap();
}

/// A stream holds its place for its whole life: while one is open at a limit
/// of one, a unary call is refused with RESOURCE_EXHAUSTED, health still
/// answers, and once the stream ends the next call goes through.
#[tokio::test]
async fn an_open_stream_counts_until_it_ends_and_health_is_never_refused() {
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;

    let cfg = ServerConfig {
        concurrency_limit: 1,
        ..ServerConfig::default()
    };
    let s = start(Duration::ZERO, cfg).await;
    let ch = channel(s.addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let ask = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    tx.send(ask()).await.unwrap();
    let mut stream = ServerReflectionClient::new(ch.clone())
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());

    // The stream's headers and first answer are long sent; it still counts.
    let refused = get(ch.clone(), "a").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    let health = HealthClient::new(ch.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, ServingStatus::Serving as i32);

    // The caller closes its side: the stream ends and gives its place back.
    drop(tx);
    assert!(stream.message().await.unwrap().is_none());
    let mut answered = None;
    for _ in 0..50 {
        match get(ch.clone(), "b").await {
            Ok(r) => {
                answered = Some(r);
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::ResourceExhausted);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    assert_eq!(
        answered
            .expect("never let in")
            .into_inner()
            .recipient
            .unwrap()
            .id,
        "b"
    );
}

#[tokio::test]
async fn shutdown_drains_in_flight_calls_and_refuses_new_ones() {
    let mut s = start(Duration::from_millis(700), ServerConfig::default()).await;
    let ch = channel(s.addr).await;
    let mut watch = HealthClient::new(ch.clone())
        .watch(HealthCheckRequest {
            service: NAME.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );

    let in_flight = tokio::spawn(get(ch.clone(), "in-flight"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    s.stop.take().unwrap().send(()).unwrap();

    // health turns NOT_SERVING first
    let next = tokio::time::timeout(Duration::from_secs(2), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.status, ServingStatus::NotServing as i32);
    // the call that was in flight completes
    let done = in_flight.await.unwrap().unwrap().into_inner();
    assert_eq!(done.recipient.unwrap().id, "in-flight");
    // the server stops cleanly, and new connections are refused
    drop(watch);
    tokio::time::timeout(Duration::from_secs(5), &mut s.done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let refused = Channel::from_shared(format!("http://{}", s.addr))
        .unwrap()
        .connect()
        .await;
    assert!(refused.is_err());
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate() {
    let tls = TlsConfig {
        cert: fixture("server.pem"),
        key: fixture("server.key"),
        client_ca: Some(fixture("ca.pem")),
    };
    let s = start(
        Duration::ZERO,
        ServerConfig {
            tls: Some(tls),
            ..ServerConfig::default()
        },
    )
    .await;
    let ca = Certificate::from_pem(std::fs::read(fixture("ca.pem")).unwrap());
    let url = format!("https://localhost:{}", s.addr.port());

    let with_cert = ClientTlsConfig::new()
        .ca_certificate(ca.clone())
        .domain_name("localhost")
        .identity(Identity::from_pem(
            std::fs::read(fixture("client.pem")).unwrap(),
            std::fs::read(fixture("client.key")).unwrap(),
        ));
    let ch = Channel::from_shared(url.clone())
        .unwrap()
        .tls_config(with_cert)
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert!(get(ch, "x").await.is_ok());

    let without = ClientTlsConfig::new()
        .ca_certificate(ca)
        .domain_name("localhost");
    let refused = match Channel::from_shared(url)
        .unwrap()
        .tls_config(without)
        .unwrap()
        .connect()
        .await
    {
        Err(_) => true,
        Ok(ch) => get(ch, "x").await.is_err(),
    };
    assert!(refused, "a client without a certificate was served");
}

#[tokio::test]
async fn the_call_span_continues_the_callers_trace() {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt as _;

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    // current-thread runtime: the server's tasks run on this thread, under this subscriber
    let _guard = tracing::subscriber::set_default(subscriber);

    let s = start(Duration::ZERO, ServerConfig::default()).await;
    let mut req = Request::new(pb::GetRecipientRequest { id: "r".into() });
    req.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    req.metadata_mut()
        .insert("x-request-id", "trace-test-1".parse().unwrap());
    TransferRegistryClient::new(channel(s.addr).await)
        .get_recipient(req)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let spans = exporter.get_finished_spans().unwrap();
    let span = spans
        .iter()
        .find(|s| s.name == "dsr.transfer.v1.TransferRegistry/GetRecipient")
        .unwrap_or_else(|| {
            panic!(
                "no call span in {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(
        span.span_context.trace_id().to_string(),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(span.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(
        span.attributes
            .iter()
            .any(|kv| kv.key.as_str() == "request_id" && kv.value.as_str() == "trace-test-1")
    );
}

/// A message whose field 1 is a number where GetRecipientRequest has a
/// string: not a valid GetRecipientRequest on the wire.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongWireType {
    #[prost(uint64, tag = "1")]
    id: u64,
}

#[tokio::test]
async fn a_malformed_message_is_invalid_argument_not_internal() {
    let s = start(Duration::ZERO, ServerConfig::default()).await;
    let mut grpc = tonic::client::Grpc::new(channel(s.addr).await);
    grpc.ready().await.unwrap();
    let err = grpc
        .unary::<WrongWireType, pb::GetRecipientResponse, _>(
            Request::new(WrongWireType { id: 7 }),
            "/dsr.transfer.v1.TransferRegistry/GetRecipient"
                .parse()
                .unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(!err.message().contains("wire type"), "{}", err.message());
    // A well-formed call still answers.
    assert!(get(channel(s.addr).await, "print-mail").await.is_ok());
}
