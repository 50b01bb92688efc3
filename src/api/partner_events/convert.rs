//! A partner event in, its result out.

use tonic::Status;

use super::super::{proto, violations::Violations};
use crate::{
    partners::Partners,
    payments::{EventResult, PartnerEvent},
};

pub fn partner_event(
    request: proto::NotifyPartnerEventRequest,
    partners: &Partners,
) -> Result<PartnerEvent, Status> {
    let mut v = Violations::default();
    if partners.get(&request.partner).is_none() {
        v.add("partner", "not a configured partner");
    }
    v.text("event_id", &request.event_id, true);
    v.text("idempotency_key", &request.idempotency_key, true);
    let (succeeded, disputed) = match proto::PartnerEventOutcome::try_from(request.outcome) {
        Ok(proto::PartnerEventOutcome::Succeeded) => (true, false),
        Ok(proto::PartnerEventOutcome::Declined) => (false, false),
        Ok(proto::PartnerEventOutcome::Disputed) => (true, true),
        _ => {
            v.add("outcome", "SUCCEEDED, DECLINED or DISPUTED");
            (false, false)
        }
    };
    v.text("partner_reference", &request.partner_reference, false);
    v.text("partner_status", &request.partner_status, false);
    v.finish(|| PartnerEvent {
        partner: request.partner,
        event_id: request.event_id,
        idempotency_key: request.idempotency_key,
        succeeded,
        disputed,
        reference: request.partner_reference,
        partner_status: request.partner_status,
        description: request.description,
    })
}

pub fn notify_response(result: EventResult) -> proto::NotifyPartnerEventResponse {
    let result = match result {
        EventResult::Applied => proto::NotifyResult::Applied,
        EventResult::Duplicate => proto::NotifyResult::Duplicate,
        EventResult::IgnoredFinal => proto::NotifyResult::IgnoredFinal,
        EventResult::UnknownTransaction => proto::NotifyResult::UnknownTransaction,
    };
    proto::NotifyPartnerEventResponse {
        result: result.into(),
    }
}
