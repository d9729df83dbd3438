//! The gRPC edge: thin handlers, conversions, the error mapping, and the
//! table of scopes per RPC. Only this module knows tonic and prost.

mod convert;
mod error;

use std::collections::BTreeSet;
use std::sync::Arc;

use dsr_auth::{AuthLayer, AuthService, ScopeRule, Validator};
use dsr_proto::transfer::v1 as pb;
use dsr_proto::transfer::v1::transfer_registry_server::{TransferRegistry, TransferRegistryServer};
use tonic::{Request, Response, Status};
use tower_layer::Layer;

use crate::registry::{DEFAULT_PAGE_SIZE, ListFilter, MAX_PAGE_SIZE, Registry};
pub use convert::recipient_to_pb;
use convert::{Violations, date_to_pb};

/// Scope to read the registry.
pub const SCOPE_READ: &str = "transfers:read";
/// Scope to change it.
pub const SCOPE_WRITE: &str = "transfers:write";

/// Required scopes per RPC (every RPC must be listed: unlisted ones are
/// refused).
pub const SCOPES: &[ScopeRule] = &[
    ScopeRule {
        method: "CreateRecipient",
        scopes: &[SCOPE_WRITE],
    },
    ScopeRule {
        method: "GetRecipient",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "UpdateRecipient",
        scopes: &[SCOPE_WRITE],
    },
    ScopeRule {
        method: "DeleteRecipient",
        scopes: &[SCOPE_WRITE],
    },
    ScopeRule {
        method: "ListRecipients",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "ListDisclosureRecipients",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "CheckTransfer",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "ListCountries",
        scopes: &[SCOPE_READ],
    },
    ScopeRule {
        method: "ListReviewsDue",
        scopes: &[SCOPE_READ],
    },
];

/// The tonic service, behind authentication.
pub type Service = AuthService<TransferRegistryServer<Handlers>>;

/// Builds the authenticated gRPC service over `registry`.
pub fn service(registry: Registry, validator: Arc<Validator>) -> Service {
    AuthLayer::new(validator, SCOPES).layer(TransferRegistryServer::new(Handlers { registry }))
}

/// The RPC handlers.
#[derive(Clone, Debug)]
pub struct Handlers {
    registry: Registry,
}

#[tonic::async_trait]
impl TransferRegistry for Handlers {
    #[tracing::instrument(skip_all)]
    async fn create_recipient(
        &self,
        req: Request<pb::CreateRecipientRequest>,
    ) -> Result<Response<pb::CreateRecipientResponse>, Status> {
        let pb::CreateRecipientRequest { recipient } = req.into_inner();
        let recipient = convert::recipient(recipient, self.registry.tables())?;
        let stored = self.registry.create(recipient).await?;
        Ok(Response::new(pb::CreateRecipientResponse {
            recipient: Some(convert::stored_to_pb(
                &stored,
                &self.registry.standing(&stored),
            )),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_recipient(
        &self,
        req: Request<pb::GetRecipientRequest>,
    ) -> Result<Response<pb::GetRecipientResponse>, Status> {
        let pb::GetRecipientRequest { id } = req.into_inner();
        let stored = self.registry.get(&convert::required_id(&id, "id")?).await?;
        Ok(Response::new(pb::GetRecipientResponse {
            recipient: Some(convert::stored_to_pb(
                &stored,
                &self.registry.standing(&stored),
            )),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update_recipient(
        &self,
        req: Request<pb::UpdateRecipientRequest>,
    ) -> Result<Response<pb::UpdateRecipientResponse>, Status> {
        let pb::UpdateRecipientRequest {
            recipient,
            expected_revision,
        } = req.into_inner();
        let recipient = convert::recipient(recipient, self.registry.tables())?;
        let stored = self
            .registry
            .update(
                recipient,
                (expected_revision > 0).then_some(expected_revision),
            )
            .await?;
        Ok(Response::new(pb::UpdateRecipientResponse {
            recipient: Some(convert::stored_to_pb(
                &stored,
                &self.registry.standing(&stored),
            )),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_recipient(
        &self,
        req: Request<pb::DeleteRecipientRequest>,
    ) -> Result<Response<pb::DeleteRecipientResponse>, Status> {
        let pb::DeleteRecipientRequest {
            id,
            expected_revision,
        } = req.into_inner();
        let id = convert::required_id(&id, "id")?;
        self.registry
            .delete(&id, (expected_revision > 0).then_some(expected_revision))
            .await?;
        Ok(Response::new(pb::DeleteRecipientResponse {}))
    }

    #[tracing::instrument(skip_all)]
    async fn list_recipients(
        &self,
        req: Request<pb::ListRecipientsRequest>,
    ) -> Result<Response<pb::ListRecipientsResponse>, Status> {
        let pb::ListRecipientsRequest {
            page,
            controller,
            system_ids,
            category_ids,
            country,
        } = req.into_inner();
        let mut v = Violations::default();
        let (page_size, after) = v.page(page, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
        let filter = ListFilter {
            controller: v.controller(controller, "controller", false),
            systems: v.slugs(system_ids, "system_ids"),
            categories: v.categories(category_ids, "category_ids"),
            country: (!country.is_empty())
                .then(|| v.country(&country, "country", self.registry.tables()))
                .flatten(),
        };
        v.finish()?;
        let (items, next) = self
            .registry
            .list(&filter, after.as_deref(), page_size)
            .await?;
        Ok(Response::new(pb::ListRecipientsResponse {
            recipients: items
                .iter()
                .map(|s| convert::stored_to_pb(s, &self.registry.standing(s)))
                .collect(),
            page: Some(convert::page_response(next)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_disclosure_recipients(
        &self,
        req: Request<pb::ListDisclosureRecipientsRequest>,
    ) -> Result<Response<pb::ListDisclosureRecipientsResponse>, Status> {
        let pb::ListDisclosureRecipientsRequest {
            controller,
            system_ids,
            category_ids,
        } = req.into_inner();
        let mut v = Violations::default();
        let controller = v.controller(controller, "controller", true);
        let systems = v.slugs(system_ids, "system_ids");
        let categories = v.categories(category_ids, "category_ids");
        v.finish()?;
        let Some(controller) = controller else {
            return Err(Status::internal("internal error"));
        };
        let found = self
            .registry
            .disclosures(&controller, &systems, &categories)
            .await?;
        Ok(Response::new(pb::ListDisclosureRecipientsResponse {
            disclosures: found
                .iter()
                .map(|d| convert::disclosure_to_pb(d, &self.registry.standing(&d.recipient)))
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn check_transfer(
        &self,
        req: Request<pb::CheckTransferRequest>,
    ) -> Result<Response<pb::CheckTransferResponse>, Status> {
        let pb::CheckTransferRequest {
            recipient_id,
            category_ids,
            controller,
            at,
        } = req.into_inner();
        let mut v = Violations::default();
        let id = v.id(&recipient_id, "recipient_id");
        let categories: BTreeSet<String> = v.categories(category_ids, "category_ids");
        if categories.is_empty() {
            v.push("category_ids", "at least one category");
        }
        let controller = v.controller(controller, "controller", false);
        let on = v.day(at, "at", self.registry.today());
        v.finish()?;
        let assessment = self
            .registry
            .check(&id, &categories, controller.as_ref(), on)
            .await?;
        Ok(Response::new(pb::CheckTransferResponse {
            assessment: Some(convert::assessment_to_pb(&assessment)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_countries(
        &self,
        req: Request<pb::ListCountriesRequest>,
    ) -> Result<Response<pb::ListCountriesResponse>, Status> {
        let pb::ListCountriesRequest {} = req.into_inner();
        Ok(Response::new(pb::ListCountriesResponse {
            countries: convert::countries(self.registry.tables()),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_reviews_due(
        &self,
        req: Request<pb::ListReviewsDueRequest>,
    ) -> Result<Response<pb::ListReviewsDueResponse>, Status> {
        let pb::ListReviewsDueRequest { within_days } = req.into_inner();
        if within_days > 3650 {
            return Err(convert::invalid("within_days", "0 to 3650"));
        }
        let due = self.registry.reviews_due(within_days).await?;
        Ok(Response::new(pb::ListReviewsDueResponse {
            reviews: due
                .into_iter()
                .map(|r| pb::ReviewDue {
                    recipient_id: r.recipient_id,
                    recipient_name: r.recipient_name,
                    basis: convert::basis_to_pb(r.basis) as i32,
                    review_by: Some(date_to_pb(r.review_by)),
                    overdue: r.overdue,
                })
                .collect(),
        }))
    }
}
