//! Records as formats 1 to 4 wrote them where format 5 changed them: a
//! kept answer's snapshot of the payment without what each leg held. Read
//! into today's types with no legs (the answer then shows the legs as the
//! payment holds them when it is replayed).

use std::time::SystemTime;

use serde::Deserialize;
use uuid::Uuid;

use super::{Kept, StoredOutcome as StoredOutcomeNow};
use crate::domain::{
    amounts::Amounts, payment, precondition::Precondition, session::SessionView,
    status::OperationStatus,
};

pub const FORMAT: u8 = 4;

#[derive(Debug, Clone, Copy, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Snapshot {
    pub totals: Amounts,
    pub authorization: OperationStatus,
    pub updated_at: SystemTime,
}

impl From<Snapshot> for payment::Snapshot {
    fn from(old: Snapshot) -> Self {
        payment::Snapshot {
            totals: old.totals,
            authorization: old.authorization,
            updated_at: old.updated_at,
            legs: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub enum StoredOutcome {
    Session(SessionView),
    SessionAsCreated(Uuid),
    Payment {
        snapshot: Snapshot,
        payment: Uuid,
        operations: Vec<Kept>,
    },
    Operation {
        snapshot: Snapshot,
        payment: Uuid,
        operation: Kept,
    },
    Refused(Precondition),
}

impl From<StoredOutcome> for StoredOutcomeNow {
    fn from(old: StoredOutcome) -> Self {
        match old {
            StoredOutcome::Session(view) => StoredOutcomeNow::Session(view),
            StoredOutcome::SessionAsCreated(id) => StoredOutcomeNow::SessionAsCreated(id),
            StoredOutcome::Payment {
                snapshot,
                payment,
                operations,
            } => StoredOutcomeNow::Payment {
                snapshot: snapshot.into(),
                payment,
                operations,
            },
            StoredOutcome::Operation {
                snapshot,
                payment,
                operation,
            } => StoredOutcomeNow::Operation {
                snapshot: snapshot.into(),
                payment,
                operation,
            },
            StoredOutcome::Refused(precondition) => StoredOutcomeNow::Refused(precondition),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::money::Amount, store::redis::codec};

    fn snapshot() -> Snapshot {
        Snapshot {
            totals: Amounts {
                authorized: Amount::from_minor(12_000).unwrap(),
                ..Amounts::ZERO
            },
            authorization: OperationStatus::Success,
            updated_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn an_answer_kept_by_format_4_reads_without_its_legs() {
        let old = StoredOutcome::Operation {
            snapshot: snapshot(),
            payment: Uuid::from_u128(1),
            operation: Kept::Final(Uuid::from_u128(2)),
        };
        let bytes = postcard::to_extend(&old, vec![FORMAT]).unwrap();
        let read: StoredOutcomeNow = codec::decode(&bytes).unwrap();
        let StoredOutcomeNow::Operation { snapshot, .. } = read else {
            panic!("{read:?}");
        };
        assert_eq!(snapshot.totals.authorized.minor(), 12_000);
        assert!(snapshot.legs.is_empty());
    }

    #[test]
    fn an_answer_kept_today_keeps_its_legs() {
        let legs = vec![snapshot().totals, Amounts::ZERO];
        let now = StoredOutcomeNow::Payment {
            snapshot: payment::Snapshot {
                legs: legs.clone(),
                ..snapshot().into()
            },
            payment: Uuid::from_u128(1),
            operations: vec![Kept::Final(Uuid::from_u128(2))],
        };
        let read: StoredOutcomeNow = codec::decode(&codec::encode(&now).unwrap()).unwrap();
        let StoredOutcomeNow::Payment { snapshot, .. } = read else {
            panic!("{read:?}");
        };
        assert_eq!(snapshot.legs, legs);
    }
}
