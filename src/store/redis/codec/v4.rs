//! Records as formats 1 to 4 wrote them where format 5 changed them: a
//! partner transaction without the instrument its partner answered with
//! (formats 1 to 4), an operation with such transactions (formats 2 to 4),
//! a kept answer's snapshot of the payment without what each leg held, and
//! a session without what CreateSession set of the fields an update
//! changes (formats 1 to 4). Read into today's types with no instrument, no
//! legs (an answer then shows the legs as the payment holds them when it is
//! replayed) and no update yet (there was none).

use std::{collections::BTreeMap, time::SystemTime};

use serde::Deserialize;
use uuid::Uuid;

use super::{Kept as KeptNow, StoredOutcome as StoredOutcomeNow};
use crate::domain::{
    amounts::Amounts,
    items::ItemLine,
    money::Amount,
    money::Currency,
    operation::Fingerprint,
    operation::{self, HistoryEntry, OperationKind, Origin, TriggeredBy},
    payment,
    precondition::Precondition,
    session::{self, CaptureMode, SessionStatus, Webhook},
    status::{OperationStatus, TransactionStatus},
};

pub const FORMAT: u8 = 4;

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct PartnerTransaction {
    pub id: Uuid,
    pub leg: usize,
    pub amount: Amount,
    pub status: TransactionStatus,
    pub attempts: u32,
    pub partner_reference: Option<String>,
    pub partner_status: String,
    pub partner_status_description: String,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

impl From<PartnerTransaction> for operation::PartnerTransaction {
    fn from(old: PartnerTransaction) -> Self {
        operation::PartnerTransaction {
            id: old.id,
            leg: old.leg,
            amount: old.amount,
            status: old.status,
            attempts: old.attempts,
            partner_reference: old.partner_reference,
            partner_status: old.partner_status,
            partner_status_description: old.partner_status_description,
            created_at: old.created_at,
            updated_at: old.updated_at,
            partner_token: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Operation {
    id: Uuid,
    payment_id: Uuid,
    sequence: u32,
    kind: OperationKind,
    amount: Amount,
    status: OperationStatus,
    merchant_reference: String,
    reason: String,
    triggered_by: TriggeredBy,
    route: Vec<usize>,
    fallback: bool,
    transactions: Vec<PartnerTransaction>,
    requires_review: bool,
    origin: Option<Origin>,
    items: Vec<ItemLine>,
    history: Vec<HistoryEntry>,
    created_at: SystemTime,
    updated_at: SystemTime,
}

impl From<Operation> for operation::Operation {
    fn from(o: Operation) -> Self {
        operation::Operation {
            id: o.id,
            payment_id: o.payment_id,
            sequence: o.sequence,
            kind: o.kind,
            amount: o.amount,
            status: o.status,
            merchant_reference: o.merchant_reference,
            reason: o.reason,
            triggered_by: o.triggered_by,
            route: o.route,
            fallback: o.fallback,
            transactions: o.transactions.into_iter().map(Into::into).collect(),
            requires_review: o.requires_review,
            origin: o.origin,
            items: o.items,
            history: o.history,
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

/// An operation an answer showed: a copy, or the id of a final one. `O`
/// is the operation as the answer's format wrote it.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub enum Kept<O = Operation> {
    Copy(Box<O>),
    Final(Uuid),
}

impl<O: Into<operation::Operation>> From<Kept<O>> for KeptNow {
    fn from(kept: Kept<O>) -> Self {
        match kept {
            Kept::Copy(operation) => KeptNow::Copy(Box::new((*operation).into())),
            Kept::Final(id) => KeptNow::Final(id),
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Session {
    id: Uuid,
    merchant: String,
    order_reference: String,
    amount: Amount,
    currency: Currency,
    capture_mode: CaptureMode,
    items: Vec<ItemLine>,
    webhook: Option<Webhook>,
    metadata: BTreeMap<String, String>,
    status: SessionStatus,
    cancellation_reason: String,
    created_at: SystemTime,
    updated_at: SystemTime,
    expires_at: SystemTime,
    payment_id: Option<Uuid>,
    fingerprint: Fingerprint,
}

impl From<Session> for session::Session {
    fn from(old: Session) -> Self {
        session::Session {
            id: old.id,
            merchant: old.merchant,
            order_reference: old.order_reference,
            amount: old.amount,
            currency: old.currency,
            capture_mode: old.capture_mode,
            items: old.items,
            webhook: old.webhook,
            metadata: old.metadata,
            status: old.status,
            cancellation_reason: old.cancellation_reason,
            created_at: old.created_at,
            updated_at: old.updated_at,
            expires_at: old.expires_at,
            payment_id: old.payment_id,
            fingerprint: old.fingerprint,
            created: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct SessionView {
    session: Session,
    status: SessionStatus,
}

impl From<SessionView> for session::SessionView {
    fn from(old: SessionView) -> Self {
        session::SessionView {
            session: old.session.into(),
            status: old.status,
        }
    }
}

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

/// An answer as formats 1 to 4 kept it (`O`: their operations).
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub enum StoredOutcome<O = Operation> {
    Session(SessionView),
    SessionAsCreated(Uuid),
    Payment {
        snapshot: Snapshot,
        payment: Uuid,
        operations: Vec<Kept<O>>,
    },
    Operation {
        snapshot: Snapshot,
        payment: Uuid,
        operation: Kept<O>,
    },
    Refused(Precondition),
}

impl<O: Into<operation::Operation>> From<StoredOutcome<O>> for StoredOutcomeNow {
    fn from(old: StoredOutcome<O>) -> Self {
        match old {
            StoredOutcome::Session(view) => StoredOutcomeNow::Session(view.into()),
            StoredOutcome::SessionAsCreated(id) => StoredOutcomeNow::SessionAsCreated(id),
            StoredOutcome::Payment {
                snapshot,
                payment,
                operations,
            } => StoredOutcomeNow::Payment {
                snapshot: snapshot.into(),
                payment,
                operations: operations.into_iter().map(Into::into).collect(),
            },
            StoredOutcome::Operation {
                snapshot,
                payment,
                operation,
            } => StoredOutcomeNow::Operation {
                snapshot: snapshot.into(),
                payment,
                operation: operation.into(),
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
        let old: StoredOutcome = StoredOutcome::Operation {
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

    fn transaction() -> PartnerTransaction {
        PartnerTransaction {
            id: Uuid::from_u128(3),
            leg: 0,
            amount: Amount::from_minor(500).unwrap(),
            status: TransactionStatus::Success,
            attempts: 1,
            partner_reference: Some("ref-1".into()),
            partner_status: "APPROVED".into(),
            partner_status_description: String::new(),
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn an_operation_written_by_format_4_reads_without_instruments() {
        let old = Operation {
            id: Uuid::from_u128(2),
            payment_id: Uuid::from_u128(1),
            sequence: 0,
            kind: OperationKind::Authorization,
            amount: Amount::from_minor(500).unwrap(),
            status: OperationStatus::Success,
            merchant_reference: String::new(),
            reason: String::new(),
            triggered_by: TriggeredBy::Merchant,
            route: vec![0],
            fallback: true,
            transactions: vec![transaction()],
            requires_review: false,
            origin: None,
            items: Vec::new(),
            history: Vec::new(),
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        };
        let bytes = postcard::to_extend(&old, vec![FORMAT]).unwrap();
        let mut read: operation::Operation = codec::decode(&bytes).unwrap();
        // Formats 2 and 3 wrote operations alike.
        for format in [2, 3] {
            let bytes = postcard::to_extend(&old, vec![format]).unwrap();
            let same: operation::Operation = codec::decode(&bytes).unwrap();
            assert_eq!(same, read, "format {format}");
        }
        let tx = &read.transactions[0];
        assert_eq!(
            (tx.partner_reference.as_deref(), tx.partner_token.as_deref()),
            (Some("ref-1"), None)
        );
        // Written today, the instrument stays.
        read.transactions[0].partner_token = Some("inst-1".into());
        let again: operation::Operation = codec::decode(&codec::encode(&read).unwrap()).unwrap();
        assert_eq!(again, read);
    }

    #[test]
    fn a_session_written_by_format_4_reads_as_never_updated() {
        let old = old_session();
        let bytes = postcard::to_extend(&old, vec![FORMAT]).unwrap();
        let read: session::Session = codec::decode(&bytes).unwrap();
        assert_eq!((read.amount.minor(), read.created.is_none()), (700, true));
        // Formats 1 to 3 wrote sessions alike.
        for format in [1, 2, 3] {
            let bytes = postcard::to_extend(&old, vec![format]).unwrap();
            let same: session::Session = codec::decode(&bytes).unwrap();
            assert_eq!(same, read, "format {format}");
        }
        assert_eq!(read.as_created(), read);
        let again: session::Session = codec::decode(&codec::encode(&read).unwrap()).unwrap();
        assert_eq!(again, read);
        // And kept in an answer.
        let answer: StoredOutcome = StoredOutcome::Session(SessionView {
            session: old_session(),
            status: SessionStatus::Open,
        });
        let bytes = postcard::to_extend(&answer, vec![FORMAT]).unwrap();
        let StoredOutcomeNow::Session(view) = codec::decode(&bytes).unwrap() else {
            panic!("a session answer");
        };
        assert_eq!(view.session, read);
    }

    fn old_session() -> Session {
        Session {
            id: Uuid::from_u128(5),
            merchant: "demo".into(),
            order_reference: "o-1".into(),
            amount: Amount::from_minor(700).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            capture_mode: CaptureMode::Manual,
            items: Vec::new(),
            webhook: None,
            metadata: BTreeMap::new(),
            status: SessionStatus::Open,
            cancellation_reason: String::new(),
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
            expires_at: SystemTime::UNIX_EPOCH,
            payment_id: None,
            fingerprint: Fingerprint([1; 16]),
        }
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
            operations: vec![KeptNow::Final(Uuid::from_u128(2))],
        };
        let read: StoredOutcomeNow = codec::decode(&codec::encode(&now).unwrap()).unwrap();
        let StoredOutcomeNow::Payment { snapshot, .. } = read else {
            panic!("{read:?}");
        };
        assert_eq!(snapshot.legs, legs);
    }
}
