//! A service's clients of the data systems, against a real gRPC server on
//! loopback: Describe answers are reused, asked afresh on demand, and a
//! system not configured is named as such; every call carries a service
//! token for the system's audience.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dsr_mesh_client::{CallError, DataSystems, SystemEndpoint};
use dsr_proto::system::v1 as sys;
use dsr_proto::system::v1::data_system_server::{DataSystem, DataSystemServer};
use tonic::{Request, Response, Status};

/// A system that answers Describe with how often it was asked, and records
/// the audience-bearing header it was called with.
#[derive(Default)]
struct Counting {
    asked: AtomicUsize,
    bearer: std::sync::Mutex<Option<String>>,
}

/// What the server serves: the shared counter.
struct Served(Arc<Counting>);

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl DataSystem for Served {
    async fn describe(
        &self,
        req: Request<sys::DescribeRequest>,
    ) -> Result<Response<sys::DescribeResponse>, Status> {
        *self.0.bearer.lock().unwrap() = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let n = self.0.asked.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Response::new(sys::DescribeResponse {
            system_id: "crm".into(),
            display_name: format!("answer {n}"),
            ..Default::default()
        }))
    }
    async fn locate(
        &self,
        _: Request<sys::LocateRequest>,
    ) -> Result<Response<sys::LocateResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    type AccessStream = Stream<sys::AccessResponse>;
    async fn access(
        &self,
        _: Request<sys::AccessRequest>,
    ) -> Result<Response<Self::AccessStream>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn erase(
        &self,
        _: Request<sys::EraseRequest>,
    ) -> Result<Response<sys::EraseResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn rectify(
        &self,
        _: Request<sys::RectifyRequest>,
    ) -> Result<Response<sys::RectifyResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn restrict(
        &self,
        _: Request<sys::RestrictRequest>,
    ) -> Result<Response<sys::RestrictResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn object(
        &self,
        _: Request<sys::ObjectRequest>,
    ) -> Result<Response<sys::ObjectResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn get_operation(
        &self,
        _: Request<sys::GetOperationRequest>,
    ) -> Result<Response<sys::GetOperationResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    type WatchOperationStream = Stream<sys::WatchOperationResponse>;
    async fn watch_operation(
        &self,
        _: Request<sys::WatchOperationRequest>,
    ) -> Result<Response<Self::WatchOperationStream>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn sweep(
        &self,
        _: Request<sys::SweepRequest>,
    ) -> Result<Response<sys::SweepResponse>, Status> {
        Err(Status::unimplemented("test"))
    }
    type FindAffectedStream = Stream<sys::FindAffectedResponse>;
    async fn find_affected(
        &self,
        _: Request<sys::FindAffectedRequest>,
    ) -> Result<Response<Self::FindAffectedStream>, Status> {
        Err(Status::unimplemented("test"))
    }
}

#[tokio::test]
async fn describe_answers_are_reused_asked_afresh_on_demand_and_unknown_systems_named() {
    let system = Arc::new(Counting::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Served(system.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(DataSystemServer::new(served))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    let keys = dsr_auth::generate_ed25519("test").unwrap();
    let signer = Arc::new(
        dsr_auth::TokenSigner::from_ed25519_pem(&keys.private_pem, "test", "dsr-export").unwrap(),
    );
    let systems = DataSystems::new(
        "dsr-export",
        vec![SystemEndpoint {
            id: "crm".into(),
            endpoint: format!("http://{addr}"),
            operator_recipient_id: "crm-vendor".into(),
        }],
        signer,
        &["system:describe"],
    )
    .unwrap();
    assert!(systems.descriptions().is_empty());
    let first = systems.describe("crm", false).await.unwrap();
    let again = systems.describe("crm", false).await.unwrap();
    assert_eq!(first.display_name, "answer 1");
    assert_eq!(again.display_name, "answer 1", "reused, not asked again");
    assert_eq!(system.asked.load(Ordering::SeqCst), 1);
    let fresh = systems.describe("crm", true).await.unwrap();
    assert_eq!(fresh.display_name, "answer 2");
    assert_eq!(systems.descriptions()["crm"].display_name, "answer 2");
    // The call carried a token for the system, from the service.
    let bearer = system
        .bearer
        .lock()
        .unwrap()
        .clone()
        .expect("a bearer token");
    let token = bearer.strip_prefix("Bearer ").expect("Bearer");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], "crm");
    assert_eq!(claims["sub"], "service:dsr-export");
    assert_eq!(
        systems.describe("legal", false).await.unwrap_err(),
        CallError::UnknownSystem
    );
    assert_eq!(CallError::UnknownSystem.reason(), "UNKNOWN_SYSTEM");
    assert_eq!(systems.ids(), vec!["crm".to_owned()]);
}
