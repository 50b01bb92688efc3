//! The one map from use-case errors to `tonic::Status`, with rich details
//! (google.rpc BadRequest / ErrorInfo / RetryInfo). Internal error text never
//! reaches the client; it is logged here, once.

use std::{collections::HashMap, time::Duration};

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::payments::{PaymentError, Precondition};

/// The `domain` of every ErrorInfo this service returns.
pub const ERROR_DOMAIN: &str = "payment-orchestrator";

pub fn invalid_argument(violations: Vec<FieldViolation>) -> Status {
    let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
    let message = format!("invalid request: {}", fields.join(", "));
    Status::with_error_details(
        Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request(violations),
    )
}

fn error_info(
    code: Code,
    message: &str,
    reason: &str,
    metadata: HashMap<String, String>,
) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

/// Too much work detached from its calls: refused before anything happened.
pub fn overloaded() -> Status {
    let mut details = ErrorDetails::with_retry_info(Some(Duration::from_millis(200)));
    details.set_error_info("IN_FLIGHT_LIMIT", ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(
        Code::ResourceExhausted,
        "overloaded: too much work in flight; retry",
        details,
    )
}

/// What the use case `work` answers, an error as its `Status`.
pub async fn answer<T>(work: impl Future<Output = Result<T, PaymentError>>) -> Result<T, Status> {
    work.await.map_err(status_of)
}

pub fn status_of(error: PaymentError) -> Status {
    match error {
        PaymentError::NotFound => Status::not_found("not found"),
        PaymentError::InvalidArgument { field, description } => {
            invalid_argument(vec![FieldViolation::new(field, description)])
        }
        PaymentError::Precondition(precondition) => precondition_status(&precondition),
        PaymentError::IdempotencyKeyReused => error_info(
            Code::InvalidArgument,
            "the idempotency key was already used for a different request",
            "IDEMPOTENCY_KEY_REUSED",
            HashMap::new(),
        ),
        PaymentError::RequestInProgress => {
            let mut details =
                ErrorDetails::with_error_info("REQUEST_IN_PROGRESS", ERROR_DOMAIN, HashMap::new());
            details.set_retry_info(Some(Duration::from_secs(1)));
            Status::with_error_details(
                Code::Aborted,
                "a request with this idempotency key is still in progress",
                details,
            )
        }
        PaymentError::TooManyWaiters { max } => {
            let mut details = ErrorDetails::with_error_info(
                "TOO_MANY_WAITERS",
                ERROR_DOMAIN,
                HashMap::from([("max_waiters".to_owned(), max.to_string())]),
            );
            details.set_retry_info(Some(Duration::from_secs(1)));
            Status::with_error_details(
                Code::ResourceExhausted,
                format!(
                    "too many WaitOperation calls open for this merchant (at most {max}); \
                     retry later or use GetOperation"
                ),
                details,
            )
        }
        PaymentError::WebhookSecretMissing => error_info(
            Code::FailedPrecondition,
            "the merchant has no webhook signing secret configured (--webhook-secrets): its \
             webhooks could not be signed, so none would be delivered; create the session \
             without a webhook, or configure a secret first",
            "WEBHOOK_SECRET_MISSING",
            HashMap::new(),
        ),
        PaymentError::Unavailable(source) => {
            tracing::warn!(error = %source, "storage unavailable");
            Status::with_error_details(
                Code::Unavailable,
                "temporarily unavailable, nothing was changed; retry",
                ErrorDetails::with_retry_info(Some(Duration::from_secs(1))),
            )
        }
        PaymentError::Partner { partner, error } => partner_status(&partner, &error),
        PaymentError::Internal(source) => {
            tracing::error!(error = %source, "internal error");
            Status::internal("internal error")
        }
    }
}

fn precondition_status(precondition: &Precondition) -> Status {
    let (reason, metadata) = match precondition {
        Precondition::SessionExpired => ("SESSION_EXPIRED", HashMap::new()),
        Precondition::SessionNotOpen { status } => (
            "SESSION_NOT_OPEN",
            HashMap::from([("status".to_owned(), status.as_str().to_uppercase())]),
        ),
        // One metadata entry only: a replay must encode to the same bytes,
        // and ErrorInfo's metadata is an unordered map.
        Precondition::AmountExceedsAvailable { available, .. } => (
            "AMOUNT_EXCEEDS_AVAILABLE",
            HashMap::from([("available".to_owned(), available.to_string())]),
        ),
        Precondition::NothingAvailable => (
            "NOTHING_AVAILABLE",
            HashMap::from([("available".to_owned(), "0".to_owned())]),
        ),
        Precondition::PaymentNotAuthorized => ("PAYMENT_NOT_AUTHORIZED", HashMap::new()),
        Precondition::OperationNotUnderReview => ("OPERATION_NOT_UNDER_REVIEW", HashMap::new()),
        Precondition::NotRoutable { because, partner } => (
            because.as_str(),
            HashMap::from([("partner".to_owned(), partner.clone())]),
        ),
        Precondition::TooManyOperations { max } => (
            "TOO_MANY_OPERATIONS",
            HashMap::from([("max_operations".to_owned(), max.to_string())]),
        ),
        Precondition::PaymentTokenInUse { leg } => (
            "PAYMENT_TOKEN_IN_USE",
            HashMap::from([("leg".to_owned(), leg.to_string())]),
        ),
        Precondition::CheckoutCompleted { partner } => (
            "CHECKOUT_COMPLETED",
            HashMap::from([("partner".to_owned(), partner.clone())]),
        ),
    };
    error_info(
        Code::FailedPrecondition,
        &precondition.to_string(),
        reason,
        metadata,
    )
}

/// A partner's refusal (or silence) on a call that moves no money.
fn partner_status(partner: &str, error: &crate::partners::PartnerError) -> Status {
    use crate::partners::PartnerError;
    let metadata = HashMap::from([("partner".to_owned(), partner.to_owned())]);
    match error {
        PartnerError::Declined { description, .. }
        | PartnerError::Contradiction { description } => error_info(
            Code::FailedPrecondition,
            &format!("partner {partner} refused: {description}"),
            "PARTNER_REFUSED",
            metadata,
        ),
        PartnerError::Unavailable { .. } | PartnerError::Unknown { .. } => {
            let mut details =
                ErrorDetails::with_error_info("PARTNER_UNAVAILABLE", ERROR_DOMAIN, metadata);
            details.set_retry_info(Some(Duration::from_secs(1)));
            Status::with_error_details(
                Code::Unavailable,
                format!("partner {partner} did not answer; nothing was changed, retry"),
                details,
            )
        }
    }
}
