//! `PartnerEventService`: partners (or their relays) report outcomes.

mod convert;

use tonic::{Request, Response, Status};

use super::{auth::Notifier, error, proto};
use crate::payments::Payments;

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
        let result = error::answer(self.payments.apply_partner_event(event)).await?;
        Ok(Response::new(convert::notify_response(result)))
    }
}
