//! `SessionService`: checkout sessions and the payment methods offered.

mod convert;

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Detached, auth::merchant, error, proto, views, violations};
use crate::payments::Payments;

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
        let page = error::answer(self.payments.list_sessions(&merchant, query)).await?;
        Ok(Response::new(proto::ListSessionsResponse {
            sessions: page.items.iter().map(views::session).collect(),
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
            .run(async move { payments.create_session(&merchant, command).await })
            .await?;
        Ok(Response::new(views::session(&view)))
    }

    async fn get_session(
        &self,
        request: Request<proto::GetSessionRequest>,
    ) -> Result<Response<proto::Session>, Status> {
        let merchant = merchant(&request)?;
        let id = violations::parse_id("session_id", &request.get_ref().session_id)?;
        let (view, checkouts) =
            error::answer(self.payments.session_with_checkouts(&merchant, id)).await?;
        let mut session = views::session(&view);
        session.partner_checkouts = checkouts.iter().map(views::partner_checkout).collect();
        Ok(Response::new(session))
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
            .run(async move { payments.submit_session(&merchant, command).await })
            .await?;
        Ok(Response::new(views::payment(&payment)))
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
            .run(async move { payments.cancel_session(&merchant, command).await })
            .await?;
        Ok(Response::new(views::session(&view)))
    }

    async fn update_session(
        &self,
        request: Request<proto::UpdateSessionRequest>,
    ) -> Result<Response<proto::Session>, Status> {
        let merchant = merchant(&request)?;
        let command =
            convert::update_session(request.into_inner(), self.payments.webhook_destinations())?;
        let payments = self.payments.clone();
        let view = self
            .detached
            .run(async move { payments.update_session(&merchant, command).await })
            .await?;
        Ok(Response::new(views::session(&view)))
    }

    async fn start_partner_checkout(
        &self,
        request: Request<proto::StartPartnerCheckoutRequest>,
    ) -> Result<Response<proto::PartnerCheckout>, Status> {
        let merchant = merchant(&request)?;
        let (session_id, partner) = convert::start_partner_checkout(request.get_ref())?;
        let payments = self.payments.clone();
        let checkout = self
            .detached
            .run(async move {
                payments
                    .start_partner_checkout(&merchant, session_id, &partner)
                    .await
            })
            .await?;
        Ok(Response::new(views::partner_checkout(&checkout)))
    }

    async fn list_payment_methods(
        &self,
        request: Request<proto::ListPaymentMethodsRequest>,
    ) -> Result<Response<proto::ListPaymentMethodsResponse>, Status> {
        let merchant = merchant(&request)?;
        let currency = violations::optional_currency("currency", &request.get_ref().currency)?;
        Ok(Response::new(convert::payment_methods(
            self.payments.partners(),
            &merchant,
            currency,
        )))
    }
}
