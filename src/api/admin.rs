//! `AdminService`: operators settle operations, list what needs review,
//! retry failed webhooks and start settlement imports, across merchants.

mod convert;

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    Detached, error,
    payments::{convert as payments_convert, operation_of},
    proto, settlements, violations,
};
use crate::payments::{Payments, Viewer};

#[derive(Debug, Clone)]
pub struct AdminService {
    payments: Arc<Payments>,
    detached: Detached,
}

impl AdminService {
    /// Its mutating calls run as `detached` work.
    pub fn new(payments: Arc<Payments>, detached: Detached) -> Self {
        AdminService { payments, detached }
    }
}

#[tonic::async_trait]
impl proto::admin_service_server::AdminService for AdminService {
    async fn sync_operation(
        &self,
        request: Request<proto::SyncOperationRequest>,
    ) -> Result<Response<proto::Operation>, Status> {
        let id = violations::parse_id("operation_id", &request.get_ref().operation_id)?;
        tracing::Span::current().record("operation_id", tracing::field::display(id));
        let payments = self.payments.clone();
        let (payment, operation) = self
            .detached
            .run(async move { payments.sync_operation(id).await })
            .await?;
        Ok(operation_of(&payment, &operation))
    }

    async fn resolve_operation(
        &self,
        request: Request<proto::ResolveOperationRequest>,
    ) -> Result<Response<proto::Operation>, Status> {
        let (id, outcomes, reason) = convert::resolve_operation(request.into_inner())?;
        let payments = self.payments.clone();
        let (payment, operation) = self
            .detached
            .run(async move { payments.settle_operation(id, outcomes, reason).await })
            .await?;
        Ok(operation_of(&payment, &operation))
    }

    async fn list_operations(
        &self,
        request: Request<proto::ListOperationsRequest>,
    ) -> Result<Response<proto::ListOperationsResponse>, Status> {
        let query = payments_convert::list_operations(request.into_inner())?;
        let page = error::answer(self.payments.list_operations(Viewer::Operator, query)).await?;
        Ok(Response::new(payments_convert::operation_page(&page)))
    }

    async fn list_failed_webhooks(
        &self,
        request: Request<proto::ListFailedWebhooksRequest>,
    ) -> Result<Response<proto::ListFailedWebhooksResponse>, Status> {
        let merchant = request.get_ref().merchant.clone();
        let query = convert::list_failed_webhooks(request.into_inner())?;
        let page = error::answer(self.payments.failed_deliveries(
            query.merchant.as_deref(),
            query.after,
            query.limit,
        ))
        .await?;
        Ok(Response::new(convert::failed_page(&merchant, &page)))
    }

    async fn purge_failed_webhooks(
        &self,
        request: Request<proto::PurgeFailedWebhooksRequest>,
    ) -> Result<Response<proto::PurgeFailedWebhooksResponse>, Status> {
        let (merchant, before) = convert::purge_failed_webhooks(request.into_inner())?;
        let purged = error::answer(
            self.payments
                .purge_failed_deliveries(merchant.as_deref(), before),
        )
        .await?;
        Ok(Response::new(proto::PurgeFailedWebhooksResponse {
            purged: i64::try_from(purged).unwrap_or(i64::MAX),
        }))
    }

    async fn list_partner_health(
        &self,
        _request: Request<proto::ListPartnerHealthRequest>,
    ) -> Result<Response<proto::ListPartnerHealthResponse>, Status> {
        let partners = self.payments.partners().health().snapshot();
        Ok(Response::new(convert::partner_health(&partners)))
    }

    async fn redeliver_webhook(
        &self,
        request: Request<proto::RedeliverWebhookRequest>,
    ) -> Result<Response<proto::FailedWebhook>, Status> {
        let id = violations::parse_id("id", &request.get_ref().id)?;
        let delivery = error::answer(self.payments.redeliver_webhook(id))
            .await?
            .ok_or_else(|| Status::not_found("no failed webhook delivery has this id"))?;
        Ok(Response::new(convert::failed_webhook(&delivery, None)))
    }

    async fn import_settlements(
        &self,
        request: Request<proto::ImportSettlementsRequest>,
    ) -> Result<Response<proto::ImportSettlementsResponse>, Status> {
        let partner = request.into_inner().partner;
        // Its own task: a caller that gives up (or a deadline) does not stop
        // an import halfway; it finishes in the background.
        let payments = self.payments.clone();
        let imports = tokio::spawn(async move {
            let only = (!partner.is_empty()).then_some(partner.as_str());
            payments.import_settlements(only).await
        })
        .await
        .map_err(|_| Status::internal("internal error"))?
        .map_err(error::status_of)?;
        Ok(Response::new(proto::ImportSettlementsResponse {
            partners: imports
                .iter()
                .map(settlements::convert::partner_import)
                .collect(),
        }))
    }
}
