//! Business rules that refuse a request: the answer is stored under the
//! request's idempotency key like a response, so a replay gets the same
//! refusal.

use serde::{Deserialize, Serialize};

use super::{
    money::Amount,
    payment::OperationError,
    routing::AllocationError,
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
            OperationError::Allocation(AllocationError::ExceedsAvailable {
                requested,
                available,
            }) => Precondition::AmountExceedsAvailable {
                requested,
                available,
            },
            OperationError::Allocation(AllocationError::NothingAvailable) => {
                Precondition::NothingAvailable
            }
        }
    }
}
