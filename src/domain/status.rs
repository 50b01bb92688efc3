//! Operation status, aggregated by amounts over partner transactions.

use serde::{Deserialize, Serialize};

use super::money::Amount;

/// The status of one partner transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TransactionStatus {
    Success,
    /// The partner accepted the request; its answer comes later.
    Pending,
    Failure,
    /// The answer was lost, or the call has not been answered yet.
    Uncertain,
}

impl TransactionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TransactionStatus::Success => "success",
            TransactionStatus::Pending => "pending",
            TransactionStatus::Failure => "failure",
            TransactionStatus::Uncertain => "uncertain",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            TransactionStatus::Success | TransactionStatus::Failure
        )
    }
}

/// The status of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OperationStatus {
    Success,
    Pending,
    Failure,
    Conflict,
    Uncertain,
}

impl OperationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OperationStatus::Success => "success",
            OperationStatus::Pending => "pending",
            OperationStatus::Failure => "failure",
            OperationStatus::Conflict => "conflict",
            OperationStatus::Uncertain => "uncertain",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, OperationStatus::Pending | OperationStatus::Uncertain)
    }
}

/// Capture, refund and void: any UNCERTAIN leg → UNCERTAIN; else any PENDING →
/// PENDING; else succeeded == requested → SUCCESS; succeeded == 0 → FAILURE;
/// else CONFLICT.
pub fn aggregate(
    requested: Amount,
    transactions: impl IntoIterator<Item = (TransactionStatus, Amount)>,
) -> OperationStatus {
    let mut succeeded: i64 = 0;
    let mut pending = false;
    for (status, amount) in transactions {
        match status {
            TransactionStatus::Uncertain => return OperationStatus::Uncertain,
            TransactionStatus::Pending => pending = true,
            TransactionStatus::Success => succeeded = succeeded.saturating_add(amount.minor()),
            TransactionStatus::Failure => {}
        }
    }
    if pending {
        OperationStatus::Pending
    } else if succeeded == requested.minor() {
        OperationStatus::Success
    } else if succeeded == 0 {
        OperationStatus::Failure
    } else {
        OperationStatus::Conflict
    }
}

/// Authorization is all or nothing: a declined leg fails the whole
/// authorization (the legs that succeeded are voided by compensation).
pub fn aggregate_authorization(
    transactions: impl IntoIterator<Item = TransactionStatus>,
) -> OperationStatus {
    let mut result = OperationStatus::Success;
    for status in transactions {
        result = match (result, status) {
            (_, TransactionStatus::Uncertain) | (OperationStatus::Uncertain, _) => {
                OperationStatus::Uncertain
            }
            (_, TransactionStatus::Pending) | (OperationStatus::Pending, _) => {
                OperationStatus::Pending
            }
            (_, TransactionStatus::Failure) | (OperationStatus::Failure, _) => {
                OperationStatus::Failure
            }
            _ => OperationStatus::Success,
        };
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::amount;
    use TransactionStatus::*;
    use proptest::prelude::*;

    #[test]
    fn aggregation_follows_the_status_table() {
        let s = |legs: &[(TransactionStatus, i64)]| {
            aggregate(amount(100), legs.iter().map(|&(st, a)| (st, amount(a))))
        };
        assert_eq!(s(&[(Success, 60), (Success, 40)]), OperationStatus::Success);
        assert_eq!(s(&[(Failure, 60), (Failure, 40)]), OperationStatus::Failure);
        assert_eq!(
            s(&[(Success, 60), (Failure, 40)]),
            OperationStatus::Conflict
        );
        assert_eq!(s(&[(Success, 60), (Pending, 40)]), OperationStatus::Pending);
        assert_eq!(
            s(&[(Pending, 60), (Uncertain, 40)]),
            OperationStatus::Uncertain
        );
        // Fallback: the declined leg's amount was taken by another leg.
        assert_eq!(
            s(&[(Failure, 40), (Success, 60), (Success, 40)]),
            OperationStatus::Success
        );
    }

    #[test]
    fn one_declined_leg_fails_an_authorization() {
        assert_eq!(
            aggregate_authorization([Success, Failure]),
            OperationStatus::Failure
        );
        assert_eq!(
            aggregate_authorization([Success, Pending, Failure]),
            OperationStatus::Pending
        );
        assert_eq!(
            aggregate_authorization([Success, Success]),
            OperationStatus::Success
        );
    }

    fn status() -> impl Strategy<Value = TransactionStatus> {
        prop_oneof![Just(Success), Just(Pending), Just(Failure), Just(Uncertain)]
    }

    proptest! {
        #[test]
        fn aggregation_does_not_depend_on_leg_order(
            legs in prop::collection::vec((status(), 1i64..1000), 1..6),
            rotate in 0usize..6,
        ) {
            let requested = amount(legs.iter().map(|l| l.1).sum());
            let as_amounts = |legs: &[(TransactionStatus, i64)]| {
                legs.iter().map(|&(s, a)| (s, amount(a))).collect::<Vec<_>>()
            };
            let mut shuffled = legs.clone();
            let len = shuffled.len();
            shuffled.rotate_left(rotate % len);
            shuffled.reverse();
            prop_assert_eq!(
                aggregate(requested, as_amounts(&legs)),
                aggregate(requested, as_amounts(&shuffled))
            );
            prop_assert_eq!(
                aggregate_authorization(legs.iter().map(|l| l.0)),
                aggregate_authorization(shuffled.iter().map(|l| l.0))
            );
        }
    }
}
