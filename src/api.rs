//! The gRPC edge: tonic services, request validation, proto ⇄ domain
//! conversion, authentication and the one error → `Status` map, and the
//! webhook bodies (proto messages too). Nothing outside this module knows
//! proto types or `tonic::Status`.

mod convert;
pub mod detached;
pub mod edge;
mod error;
pub mod events;
mod settlements;

pub use detached::Detached;
pub use settlements::SettlementService;

use std::{collections::HashMap, sync::Arc};

use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        operation::{Operation, OperationKind},
        payment::Payment,
    },
    payments::{Payments, Viewer},
};

pub use error::ERROR_DOMAIN;

/// Generated code of `proto/payment_orchestrator/v1`.
pub mod proto {
    #![allow(missing_docs, clippy::all, missing_debug_implementations)]
    tonic::include_proto!("payment_orchestrator.v1");

    /// For server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("payment_orchestrator_descriptor");
}

/// The merchant a request was authenticated as (a request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merchant(pub String);

/// What a key may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Sessions and payments of one merchant.
    Merchant(String),
    /// `AdminService`, across merchants.
    Admin,
    /// `PartnerEventService`, for these partners (`None`: every partner).
    PartnerNotifier(Option<Vec<String>>),
}

/// The partners a partner-notifier key speaks for, `None`: all (a request
/// extension of `PartnerEventService`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notifier(pub Option<Vec<String>>);

/// A request authenticated with an admin key (a request extension of
/// services open to merchants and admins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operator;

/// The role a service needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Required {
    Merchant,
    Admin,
    /// A merchant (its own data) or an admin (everyone's).
    MerchantOrAdmin,
    PartnerNotifier,
}

/// API keys by their SHA-256 (hex); the key material itself is never kept.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    roles_by_hash: HashMap<String, Role>,
}

impl ApiKeys {
    /// From `(sha256 hex of the key, role)` pairs.
    pub fn from_hashes(pairs: impl IntoIterator<Item = (String, Role)>) -> Self {
        ApiKeys {
            roles_by_hash: pairs
                .into_iter()
                .map(|(hash, role)| (hash.to_ascii_lowercase(), role))
                .collect(),
        }
    }

    pub fn hash(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    fn role(&self, key: &str) -> Option<&Role> {
        self.roles_by_hash.get(&Self::hash(key))
    }

    /// The merchant an `authorization` header's key belongs to, if any.
    pub fn merchant_of(&self, authorization: &str) -> Option<&str> {
        let key = authorization.strip_prefix("Bearer ")?;
        match self.role(key.trim())? {
            Role::Merchant(merchant) => Some(merchant),
            _ => None,
        }
    }

    /// Every merchant some key belongs to.
    pub fn merchants(&self) -> impl Iterator<Item = &str> {
        self.roles_by_hash.values().filter_map(|role| match role {
            Role::Merchant(merchant) => Some(merchant.as_str()),
            _ => None,
        })
    }

    /// A tonic interceptor for a service that needs `required`:
    /// `authorization: Bearer <key>`; an unknown key is UNAUTHENTICATED, a
    /// known key of another role PERMISSION_DENIED.
    pub fn interceptor(
        self: Arc<Self>,
        required: Required,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
        move |mut request: Request<()>| {
            let role = request
                .metadata()
                .get("authorization")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .and_then(|key| self.role(key.trim()))
                .ok_or_else(|| Status::unauthenticated("missing or invalid API key"))?;
            match (required, role) {
                (Required::Merchant | Required::MerchantOrAdmin, Role::Merchant(merchant)) => {
                    tracing::Span::current().record("merchant", merchant.as_str());
                    let merchant = Merchant(merchant.clone());
                    request.extensions_mut().insert(merchant);
                }
                (Required::MerchantOrAdmin, Role::Admin) => {
                    request.extensions_mut().insert(Operator);
                }
                (Required::Admin, Role::Admin) => {}
                (Required::PartnerNotifier, Role::PartnerNotifier(partners)) => {
                    request.extensions_mut().insert(Notifier(partners.clone()));
                }
                _ => {
                    return Err(Status::permission_denied(
                        "this API key may not call this service",
                    ));
                }
            }
            Ok(request)
        }
    }
}

fn merchant<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .extensions()
        .get::<Merchant>()
        .map(|m| m.0.clone())
        // Only reachable if a service were mounted without the interceptor.
        .ok_or_else(|| Status::unauthenticated("missing or invalid API key"))
}

#[derive(Debug, Clone)]
pub struct SessionService {
    payments: Arc<Payments>,
    detached: Detached,
}

impl SessionService {
    /// Its mutating calls run as `detached` work.
    pub fn new(payments: Arc<Payments>, detached: Detached) -> Self {
        SessionService { payments, detached }
    }
}

#[tonic::async_trait]
impl proto::session_service_server::SessionService for SessionService {
    async fn list_sessions(
        &self,
        request: Request<proto::ListSessionsRequest>,
    ) -> Result<Response<proto::ListSessionsResponse>, Status> {
        let merchant = merchant(&request)?;
        let query = convert::list_sessions(request.into_inner())?;
        let page = self
            .payments
            .list_sessions(&merchant, query)
            .await
            .map_err(error::status_of)?;
        Ok(Response::new(proto::ListSessionsResponse {
            sessions: page.sessions.iter().map(convert::session).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn create_session(
        &self,
        request: Request<proto::CreateSessionRequest>,
    ) -> Result<Response<proto::Session>, Status> {
        let merchant = merchant(&request)?;
        let command =
            convert::create_session(request.into_inner(), self.payments.webhook_destinations())?;
        let payments = self.payments.clone();
        let view = self
            .detached
            .run(async move {
                payments
                    .create_session(&merchant, command)
                    .await
                    .map_err(error::status_of)
            })
            .await?;
        Ok(Response::new(convert::session(&view)))
    }

    async fn get_session(
        &self,
        request: Request<proto::GetSessionRequest>,
    ) -> Result<Response<proto::Session>, Status> {
        let merchant = merchant(&request)?;
        let id = convert::parse_id("session_id", &request.get_ref().session_id)?;
        let view = self
            .payments
            .session(&merchant, id)
            .await
            .map_err(error::status_of)?;
        Ok(Response::new(convert::session(&view)))
    }

    async fn submit_session(
        &self,
        request: Request<proto::SubmitSessionRequest>,
    ) -> Result<Response<proto::Payment>, Status> {
        let merchant = merchant(&request)?;
        let command = convert::submit_session(request.into_inner(), self.payments.partners())?;
        let payments = self.payments.clone();
        let payment = self
            .detached
            .run(async move {
                payments
                    .submit_session(&merchant, command)
                    .await
                    .map_err(error::status_of)
            })
            .await?;
        Ok(Response::new(convert::payment(&payment)))
    }

    async fn cancel_session(
        &self,
        request: Request<proto::CancelSessionRequest>,
    ) -> Result<Response<proto::Session>, Status> {
        let merchant = merchant(&request)?;
        let command = convert::cancel_session(request.into_inner())?;
        let payments = self.payments.clone();
        let view = self
            .detached
            .run(async move {
                payments
                    .cancel_session(&merchant, command)
                    .await
                    .map_err(error::status_of)
            })
            .await?;
        Ok(Response::new(convert::session(&view)))
    }

    async fn list_payment_methods(
        &self,
        request: Request<proto::ListPaymentMethodsRequest>,
    ) -> Result<Response<proto::ListPaymentMethodsResponse>, Status> {
        let merchant = merchant(&request)?;
        let currency = convert::optional_currency("currency", &request.get_ref().currency)?;
        Ok(Response::new(convert::payment_methods(
            self.payments.partners(),
            &merchant,
            currency,
        )))
    }
}

#[derive(Debug, Clone)]
pub struct PaymentService {
    payments: Arc<Payments>,
    detached: Detached,
}

impl PaymentService {
    /// Its mutating calls run as `detached` work.
    pub fn new(payments: Arc<Payments>, detached: Detached) -> Self {
        PaymentService { payments, detached }
    }

    async fn operate(
        &self,
        merchant: &str,
        kind: OperationKind,
        fields: convert::OperationFields,
    ) -> Result<Response<proto::OperationResult>, Status> {
        let command = convert::operation(kind, fields, self.payments.partners())?;
        tracing::Span::current().record(
            "payment_id",
            tracing::field::display(command.command.payment_id),
        );
        let (payments, merchant) = (self.payments.clone(), merchant.to_owned());
        let result = self
            .detached
            .run(async move {
                payments
                    .operate(&merchant, command)
                    .await
                    .map_err(error::status_of)
            })
            .await?;
        tracing::Span::current()
            .record("operation_id", tracing::field::display(result.operation.id));
        Ok(Response::new(convert::operation_result(&result)))
    }
}

#[tonic::async_trait]
impl proto::payment_service_server::PaymentService for PaymentService {
    async fn get_payment(
        &self,
        request: Request<proto::GetPaymentRequest>,
    ) -> Result<Response<proto::Payment>, Status> {
        let merchant = merchant(&request)?;
        let id = convert::parse_id("payment_id", &request.get_ref().payment_id)?;
        tracing::Span::current().record("payment_id", tracing::field::display(id));
        let payment = self
            .payments
            .payment(&merchant, id)
            .await
            .map_err(error::status_of)?;
        Ok(Response::new(convert::payment(&payment)))
    }

    async fn list_payments(
        &self,
        request: Request<proto::ListPaymentsRequest>,
    ) -> Result<Response<proto::ListPaymentsResponse>, Status> {
        let merchant = merchant(&request)?;
        let query = convert::list_payments(request.into_inner())?;
        let page = self
            .payments
            .list_payments(&merchant, query)
            .await
            .map_err(error::status_of)?;
        Ok(Response::new(convert::payment_page(&page)))
    }

    async fn list_operations(
        &self,
        request: Request<proto::ListOperationsRequest>,
    ) -> Result<Response<proto::ListOperationsResponse>, Status> {
        let merchant = merchant(&request)?;
        let query = convert::list_operations(request.into_inner())?;
        let page = self
            .payments
            .list_operations(Viewer::Merchant(&merchant), query)
            .await
            .map_err(error::status_of)?;
        Ok(Response::new(convert::operation_page(&page)))
    }

    async fn capture(
        &self,
        request: Request<proto::CaptureRequest>,
    ) -> Result<Response<proto::OperationResult>, Status> {
        let merchant = merchant(&request)?;
        self.operate(
            &merchant,
            OperationKind::Capture,
            request.into_inner().into(),
        )
        .await
    }

    async fn refund(
        &self,
        request: Request<proto::RefundRequest>,
    ) -> Result<Response<proto::OperationResult>, Status> {
        let merchant = merchant(&request)?;
        self.operate(
            &merchant,
            OperationKind::Refund,
            request.into_inner().into(),
        )
        .await
    }

    async fn void(
        &self,
        request: Request<proto::VoidRequest>,
    ) -> Result<Response<proto::OperationResult>, Status> {
        let merchant = merchant(&request)?;
        self.operate(&merchant, OperationKind::Void, request.into_inner().into())
            .await
    }

    async fn get_operation(
        &self,
        request: Request<proto::GetOperationRequest>,
    ) -> Result<Response<proto::Operation>, Status> {
        let merchant = merchant(&request)?;
        let id = convert::parse_id("operation_id", &request.get_ref().operation_id)?;
        tracing::Span::current().record("operation_id", tracing::field::display(id));
        let (payment, operation) = self
            .payments
            .operation(&merchant, id)
            .await
            .map_err(error::status_of)?;
        Ok(operation_of(&payment, &operation))
    }

    async fn wait_operation(
        &self,
        request: Request<proto::WaitOperationRequest>,
    ) -> Result<Response<proto::Operation>, Status> {
        let merchant = merchant(&request)?;
        let (id, timeout) = convert::wait(request.get_ref())?;
        let (payment, operation) = self
            .payments
            .wait_operation(&merchant, id, timeout)
            .await
            .map_err(error::status_of)?;
        Ok(operation_of(&payment, &operation))
    }
}

fn operation_of(payment: &Payment, operation: &Operation) -> Response<proto::Operation> {
    Response::new(convert::operation_proto(payment, operation))
}

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
        let id = convert::parse_id("operation_id", &request.get_ref().operation_id)?;
        tracing::Span::current().record("operation_id", tracing::field::display(id));
        let payments = self.payments.clone();
        let (payment, operation) = self
            .detached
            .run(async move { payments.sync_operation(id).await.map_err(error::status_of) })
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
            .run(async move {
                payments
                    .settle_operation(id, outcomes, reason)
                    .await
                    .map_err(error::status_of)
            })
            .await?;
        Ok(operation_of(&payment, &operation))
    }

    async fn list_operations(
        &self,
        request: Request<proto::ListOperationsRequest>,
    ) -> Result<Response<proto::ListOperationsResponse>, Status> {
        let query = convert::list_operations(request.into_inner())?;
        let page = self
            .payments
            .list_operations(Viewer::Operator, query)
            .await
            .map_err(error::status_of)?;
        Ok(Response::new(convert::operation_page(&page)))
    }

    async fn list_failed_webhooks(
        &self,
        request: Request<proto::ListFailedWebhooksRequest>,
    ) -> Result<Response<proto::ListFailedWebhooksResponse>, Status> {
        let merchant = request.get_ref().merchant.clone();
        let query = convert::webhooks::list_failed_webhooks(request.into_inner())?;
        let page = self
            .payments
            .failed_deliveries(query.merchant.as_deref(), query.after, query.limit)
            .await
            .map_err(error::status_of)?;
        Ok(Response::new(convert::webhooks::failed_page(
            &merchant, &page,
        )))
    }

    async fn redeliver_webhook(
        &self,
        request: Request<proto::RedeliverWebhookRequest>,
    ) -> Result<Response<proto::FailedWebhook>, Status> {
        let id = convert::parse_id("id", &request.get_ref().id)?;
        let delivery = self
            .payments
            .redeliver_webhook(id)
            .await
            .map_err(error::status_of)?
            .ok_or_else(|| Status::not_found("no failed webhook delivery has this id"))?;
        Ok(Response::new(convert::webhooks::failed_webhook(
            &delivery, None,
        )))
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
                .map(convert::settlements::partner_import)
                .collect(),
        }))
    }
}

#[derive(Debug, Clone)]
pub struct PartnerEventService {
    payments: Payments,
}

impl PartnerEventService {
    pub fn new(payments: Payments) -> Self {
        PartnerEventService { payments }
    }
}

#[tonic::async_trait]
impl proto::partner_event_service_server::PartnerEventService for PartnerEventService {
    async fn notify_partner_event(
        &self,
        request: Request<proto::NotifyPartnerEventRequest>,
    ) -> Result<Response<proto::NotifyPartnerEventResponse>, Status> {
        let may_speak_for = request.extensions().get::<Notifier>().cloned();
        let event = convert::partner_event(request.into_inner(), self.payments.partners())?;
        let allowed = may_speak_for.is_some_and(|Notifier(partners)| {
            partners.is_none_or(|partners| partners.contains(&event.partner))
        });
        if !allowed {
            return Err(Status::permission_denied(format!(
                "this API key may not report events of partner {}",
                event.partner
            )));
        }
        let result = self
            .payments
            .apply_partner_event(event)
            .await
            .map_err(error::status_of)?;
        Ok(Response::new(convert::notify_response(result)))
    }
}
