//! Format 1: records as the release before partner capabilities wrote them.
//! Legs had no capabilities or lifetime, the header no authorization time,
//! operations no item lines. Read into today's types with what that release
//! did: every leg takes any amount, and an authorization's expiry (already
//! on the due-queue at the global lifetime) releases every leg.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use uuid::Uuid;

use super::v4::{self, PartnerTransaction};
use crate::domain::{
    amounts::Amounts,
    capabilities::Capabilities,
    money::{Amount, Currency},
    operation::{HistoryEntry, OperationKind, Origin, TriggeredBy},
    payment::{self, PaymentToken},
    session::{CaptureMode, Webhook},
    status::OperationStatus,
};

pub const FORMAT: u8 = 1;

/// What a format-1 leg's authorization lifetime is taken to be (the global
/// default then); its expiry item was scheduled by that release already.
const LIFETIME: Duration = Duration::from_secs(7 * 86_400);

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
struct Leg {
    partner: String,
    method: String,
    amount: Amount,
    token: PaymentToken,
}

#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub struct Payment {
    id: Uuid,
    merchant: String,
    session_id: Uuid,
    order_reference: String,
    amount: Amount,
    currency: Currency,
    capture_mode: CaptureMode,
    legs: Vec<Leg>,
    webhook: Option<Webhook>,
    ledger: Vec<Amounts>,
    references: Vec<Option<String>>,
    authorization_id: Uuid,
    authorization_status: OperationStatus,
    operations: u32,
    created_at: SystemTime,
    updated_at: SystemTime,
}

impl From<Payment> for payment::Payment {
    fn from(p: Payment) -> Self {
        payment::Payment {
            id: p.id,
            merchant: p.merchant,
            session_id: p.session_id,
            order_reference: p.order_reference,
            amount: p.amount,
            currency: p.currency,
            capture_mode: p.capture_mode,
            legs: p
                .legs
                .into_iter()
                .map(|leg| payment::Leg {
                    partner: leg.partner,
                    method: leg.method,
                    amount: leg.amount,
                    token: leg.token,
                    capabilities: Capabilities::ALL,
                    authorization_lifetime: LIFETIME,
                })
                .collect(),
            webhook: p.webhook,
            ledger: p.ledger,
            references: p.references,
            authorization_id: p.authorization_id,
            authorization_status: p.authorization_status,
            // Unknown. The release that wrote it scheduled the expiry at its
            // global lifetime; counting from the epoch, every leg that still
            // holds something is released when that item comes.
            authorized_at: (p.authorization_status == OperationStatus::Success)
                .then_some(SystemTime::UNIX_EPOCH),
            operations: p.operations,
            created_at: p.created_at,
            updated_at: p.updated_at,
            disputes: Vec::new(),
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
    history: Vec<HistoryEntry>,
    created_at: SystemTime,
    updated_at: SystemTime,
}

impl From<Operation> for crate::domain::operation::Operation {
    fn from(o: Operation) -> Self {
        crate::domain::operation::Operation {
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
            items: Vec::new(),
            history: o.history,
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

/// An answer as format 1 kept it: as formats 2 to 4 did, with format-1
/// operations.
pub type StoredOutcome = v4::StoredOutcome<Operation>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::{payment::Payment as PaymentNow, precondition::Precondition},
        store::redis::codec::{
            self, Kept as KeptNow, StoredOutcome as StoredOutcomeNow, v4::Snapshot,
        },
    };

    fn format_1<T: serde::Serialize>(record: &T) -> Vec<u8> {
        postcard::to_extend(record, vec![FORMAT]).unwrap()
    }

    fn amount(minor: i64) -> Amount {
        Amount::from_minor(minor).unwrap()
    }

    fn operation() -> Operation {
        Operation {
            id: Uuid::from_u128(2),
            payment_id: Uuid::from_u128(1),
            sequence: 1,
            kind: OperationKind::Capture,
            amount: amount(300),
            status: OperationStatus::Pending,
            merchant_reference: "m-1".into(),
            reason: String::new(),
            triggered_by: TriggeredBy::Merchant,
            route: vec![0, 1],
            fallback: true,
            transactions: Vec::new(),
            requires_review: false,
            origin: None,
            history: Vec::new(),
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_header_written_by_format_1_reads_with_unrestricted_legs_that_expire_with_its_item() {
        let leg = |partner: &str| Leg {
            partner: partner.into(),
            method: "creditcard".into(),
            amount: amount(500),
            token: PaymentToken::new("tok".into()),
        };
        let held = Amounts {
            authorized: amount(500),
            ..Amounts::ZERO
        };
        let old = Payment {
            id: Uuid::from_u128(1),
            merchant: "demo".into(),
            session_id: Uuid::from_u128(3),
            order_reference: "order-1".into(),
            amount: amount(1000),
            currency: Currency::parse("EUR").unwrap(),
            capture_mode: CaptureMode::Manual,
            legs: vec![leg("a"), leg("b")],
            webhook: None,
            ledger: vec![held, held],
            references: vec![Some("r-a".into()), Some("r-b".into())],
            authorization_id: Uuid::from_u128(4),
            authorization_status: OperationStatus::Success,
            operations: 1,
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        };
        let read: PaymentNow = codec::decode(&format_1(&old)).unwrap();
        assert_eq!(read.legs[1].partner, "b");
        assert_eq!(read.legs[0].capabilities, Capabilities::ALL);
        assert_eq!(read.references[1].as_deref(), Some("r-b"));
        // Its expiry item (scheduled by the old release) releases both legs.
        assert_eq!(read.expired_legs(SystemTime::now()), vec![0, 1]);
        // Written again, it is format 2 and reads back the same.
        let again: PaymentNow = codec::decode(&codec::encode(&read).unwrap()).unwrap();
        assert_eq!(again, read);
    }

    #[test]
    fn operations_and_stored_answers_written_by_format_1_read_without_items() {
        let read: crate::domain::operation::Operation =
            codec::decode(&format_1(&operation())).unwrap();
        assert_eq!((read.amount, read.route.clone()), (amount(300), vec![0, 1]));
        assert!(read.items.is_empty());

        let snapshot = Snapshot {
            totals: Amounts::ZERO,
            authorization: OperationStatus::Success,
            updated_at: SystemTime::UNIX_EPOCH,
        };
        let answer = StoredOutcome::Operation {
            snapshot,
            payment: Uuid::from_u128(1),
            operation: v4::Kept::Copy(Box::new(operation())),
        };
        let read: StoredOutcomeNow = codec::decode(&format_1(&answer)).unwrap();
        match read {
            StoredOutcomeNow::Operation {
                operation: KeptNow::Copy(operation),
                ..
            } => assert_eq!(operation.merchant_reference, "m-1"),
            other => panic!("{other:?}"),
        }
        let refused = StoredOutcome::Refused(Precondition::NothingAvailable);
        let read: StoredOutcomeNow = codec::decode(&format_1(&refused)).unwrap();
        assert!(matches!(
            read,
            StoredOutcomeNow::Refused(Precondition::NothingAvailable)
        ));
    }
}

/// A webhook delivery as formats 1 and 2 wrote it: without its last error.
#[derive(Debug, Deserialize)]
pub struct WebhookDelivery {
    id: Uuid,
    merchant: String,
    url: String,
    headers: std::collections::BTreeMap<String, crate::domain::session::HeaderValue>,
    body: String,
    attempts: u32,
    created_at: SystemTime,
}

impl From<WebhookDelivery> for crate::store::WebhookDelivery {
    fn from(old: WebhookDelivery) -> Self {
        crate::store::WebhookDelivery {
            id: old.id,
            merchant: old.merchant,
            url: old.url,
            headers: old.headers,
            body: old.body,
            attempts: old.attempts,
            created_at: old.created_at,
            last_error: None,
        }
    }
}
