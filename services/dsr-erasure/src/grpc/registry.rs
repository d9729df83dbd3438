//! The transfer registry over gRPC.

use std::sync::Arc;

use dsr_auth::TokenSigner;
use dsr_mesh_client::client::{Calls, Outgoing, calls, lazy_channel};
use dsr_proto::transfer::v1 as tr;
use dsr_proto::transfer::v1::transfer_registry_client::TransferRegistryClient;

use crate::model::{Header, Recipient, Registry, SystemError};

use super::convert::controller_pb;
use super::systems::failed;

type RegistryClient = TransferRegistryClient<Calls>;

/// The transfer registry over gRPC.
#[derive(Debug)]
pub struct GrpcRegistry {
    client: RegistryClient,
}

impl GrpcRegistry {
    /// A client calling as `service:dsr-erasure` with `transfers:read`.
    pub fn new(endpoint: &str, audience: &str, signer: Arc<TokenSigner>) -> Result<Self, String> {
        let channel = lazy_channel(endpoint).map_err(|e| format!("transfer registry: {e}"))?;
        let out = Outgoing::new(signer, crate::SERVICE_NAME, audience, &["transfers:read"]);
        Ok(Self {
            client: TransferRegistryClient::new(calls(channel, out, "dsr-transfer-registry")),
        })
    }
}

#[tonic::async_trait]
impl Registry for GrpcRegistry {
    async fn recipients(
        &self,
        h: &Header,
        systems: &[String],
        categories: &[String],
    ) -> Result<Vec<Recipient>, SystemError> {
        let resp = self
            .client
            .clone()
            .list_disclosure_recipients(tr::ListDisclosureRecipientsRequest {
                controller: controller_pb(h.controller.as_str()),
                system_ids: systems.to_vec(),
                category_ids: categories.to_vec(),
            })
            .await
            .map_err(|s| failed("transfer-registry", &s))?
            .into_inner();
        Ok(resp
            .disclosures
            .into_iter()
            .filter_map(|d| {
                let a = d.assessment.unwrap_or_default();
                d.recipient.map(|r| Recipient {
                    id: r.id,
                    name: r.name,
                    country: r.country,
                    lawful: a.lawful,
                    blocking_reasons: a
                        .reasons
                        .into_iter()
                        .filter(|x| x.blocking)
                        .map(|x| format!("{}: {}", x.code, x.message))
                        .collect(),
                })
            })
            .collect())
    }
}
