//! What Walley's answers mean: an HTTP status and its problem body, and
//! the state of an action on an order.

use reqwest::StatusCode;

use super::wire::{self, Problem};
use crate::partners::{
    PartnerAnswer, PartnerError, PartnerRequest,
    http::{self, unreadable},
};

/// What a POST was answered.
pub(super) enum Posted {
    Done,
    Accepted,
}

/// An HTTP answer to a POST (or a failed GET) as the port sees it.
pub(super) fn classify(status: StatusCode, body: &[u8]) -> Result<Posted, PartnerError> {
    let problem = || serde_json::from_slice::<Problem>(body).unwrap_or_default();
    match status.as_u16() {
        200 | 201 => Ok(Posted::Done),
        202 | 409 => Ok(Posted::Accepted),
        400 | 422 => {
            let problem = problem();
            Err(PartnerError::Declined {
                code: if problem.code.is_empty() {
                    status.as_u16().to_string()
                } else {
                    problem.code
                },
                description: problem.title,
            })
        }
        401 => Err(unavailable("the partner refused our credentials")),
        403 | 404 => Err(unavailable(
            "the order is not visible yet (eventual consistency)",
        )),
        429 | 503 => Err(unavailable(&format!(
            "the partner refused the request for now ({status})"
        ))),
        _ => Err(PartnerError::Unknown {
            description: format!("the partner answered {status}"),
        }),
    }
}

/// A status other than the one a read or a checkout call expects.
pub(super) fn refusal(status: StatusCode, body: &[u8]) -> PartnerError {
    match classify(status, body) {
        Ok(_) => unreadable(status),
        Err(error) => error,
    }
}

pub(super) fn unavailable(description: &str) -> PartnerError {
    PartnerError::Unavailable {
        description: description.to_owned(),
    }
}

/// An action as the order lists it, as an answer to `request`: an action
/// for another amount than asked is a contradiction, never booked at ours.
pub(super) fn action_answer(
    action: &wire::Action,
    request: &PartnerRequest,
) -> Result<PartnerAnswer, PartnerError> {
    let reference = request.idempotency_key.as_str();
    let amount = http::minor(action.amount, request.currency)?;
    if amount != request.amount {
        return Err(PartnerError::Contradiction {
            description: format!(
                "Walley's action {reference} is for {} {}, we asked for {} {}",
                action.amount,
                request.currency.code(),
                http::major(request.amount, request.currency),
                request.currency.code()
            ),
        });
    }
    action_status(action, reference)
}

/// What an action's status says.
pub(super) fn action_status(
    action: &wire::Action,
    reference: &str,
) -> Result<PartnerAnswer, PartnerError> {
    match action.status.as_str() {
        "Completed" => Ok(PartnerAnswer {
            settled: true,
            reference: reference.to_owned(),
            partner_status: action.status.clone(),
            description: String::new(),
            instrument: None,
        }),
        "Failed" => Err(PartnerError::Declined {
            code: "FAILED".into(),
            description: action.failure_reason.clone().unwrap_or_default(),
        }),
        _ => Ok(PartnerAnswer {
            settled: false,
            reference: reference.to_owned(),
            partner_status: action.status.clone(),
            description: "accepted; processed asynchronously".into(),
            instrument: None,
        }),
    }
}
