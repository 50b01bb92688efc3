//! Business rules that refuse a request: the answer is stored under the
//! request's idempotency key like a response, so a replay gets the same
//! refusal.

use serde::{Deserialize, Serialize};

use super::{
    capabilities::Unsupported,
    money::Amount,
    payment::OperationError,
    session::{SessionError, SessionStatus},
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Precondition {
    #[error("the session has expired")]
    SessionExpired,
    #[error("the session is not open")]
    SessionNotOpen { status: SessionStatus },
    #[error("the requested amount {requested} exceeds the available {available}")]
    AmountExceedsAvailable {
        requested: Amount,
        available: Amount,
    },
    #[error("nothing is available for this operation")]
    NothingAvailable,
    #[error("the payment is not authorized")]
    PaymentNotAuthorized,
    #[error("the operation is not waiting for review")]
    OperationNotUnderReview,
    /// Enough is available, but a leg that would have to take part cannot
    /// take its part (e.g. a partial capture on a full-capture-only partner).
    #[error("partner {partner} cannot take its part: {}", because.as_str())]
    NotRoutable {
        because: Unsupported,
        partner: String,
    },
    #[error("the payment has {max} operations, the most one may have")]
    TooManyOperations { max: u32 },
    /// A leg's payment token (an instrument) already backs another payer:
    /// a single-use one another payment, a reusable one another merchant.
    #[error("the payment token of split[{leg}] is already used by another payer")]
    PaymentTokenInUse { leg: usize },
    /// The shopper completed the session's hosted checkout at `partner`:
    /// what it was completed for can no longer change.
    #[error(
        "the shopper completed the session's {partner} checkout: its amount and lines can no longer change"
    )]
    CheckoutCompleted { partner: String },
}

impl From<SessionError> for Precondition {
    fn from(error: SessionError) -> Self {
        match error {
            SessionError::Expired => Precondition::SessionExpired,
            SessionError::NotOpen(status) => Precondition::SessionNotOpen { status },
        }
    }
}

impl From<OperationError> for Precondition {
    fn from(error: OperationError) -> Self {
        match error {
            OperationError::NotAuthorized => Precondition::PaymentNotAuthorized,
            OperationError::ExceedsAvailable {
                requested,
                available,
            } => Precondition::AmountExceedsAvailable {
                requested,
                available,
            },
            OperationError::NothingAvailable => Precondition::NothingAvailable,
            OperationError::NotRoutable { partner, because } => {
                Precondition::NotRoutable { because, partner }
            }
            OperationError::TooManyOperations { max } => Precondition::TooManyOperations { max },
        }
    }
}
