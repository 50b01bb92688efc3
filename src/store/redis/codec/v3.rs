//! Records as formats 2 and 3 wrote them where format 4 changed them:
//! payment headers without disputes; and settlements (as formats 1 to 3
//! wrote them) with line amounts without a sign (a refund's was positive),
//! every line readable, totals without adjustments or chargebacks, issues
//! without a lifecycle. Read into today's types with what those releases
//! meant: no payment was disputed, a refund line took money back, and every
//! issue was open.

use std::{collections::BTreeMap, time::SystemTime};

use rust_decimal::Decimal;
use serde::Deserialize;
use uuid::Uuid;

use crate::domain::{
    amounts::Amounts,
    money::{Amount, Currency},
    payment::{self, Leg},
    session::{CaptureMode, Webhook},
    settlement::{
        self, Day, EntryKind, Line, Match, ReconciliationIssue as IssueNow,
        Settlement as SettlementNow, SettlementTransaction as TransactionNow, Totals as TotalsNow,
        VatAmount,
    },
    status::OperationStatus,
};

#[derive(Debug, Deserialize)]
pub struct SettlementEntry {
    kind: EntryKind,
    amount: Amount,
    currency: Currency,
    order_reference: String,
    partner_reference: String,
    action_reference: String,
    transaction_date: Day,
    vat: Vec<VatAmount>,
}

impl From<SettlementEntry> for settlement::SettlementEntry {
    fn from(old: SettlementEntry) -> Self {
        let sign = if old.kind == EntryKind::Refund { -1 } else { 1 };
        settlement::SettlementEntry {
            kind: old.kind,
            amount: old.amount.minor() * sign,
            currency: old.currency,
            order_reference: old.order_reference,
            partner_reference: old.partner_reference,
            action_reference: old.action_reference,
            transaction_date: old.transaction_date,
            vat: old.vat,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct SettlementTransaction {
    index: u64,
    entry: SettlementEntry,
    matched: Match,
    operation_id: Option<Uuid>,
    partner_transaction_id: Option<Uuid>,
    payment_id: Option<Uuid>,
}

impl From<SettlementTransaction> for TransactionNow {
    fn from(old: SettlementTransaction) -> Self {
        TransactionNow {
            index: old.index,
            line: Line::Entry(old.entry.into()),
            matched: old.matched,
            operation_id: old.operation_id,
            partner_transaction_id: old.partner_transaction_id,
            payment_id: old.payment_id,
        }
    }
}

#[derive(Debug, Deserialize)]
struct Totals {
    captured: i64,
    refunded: i64,
    fees: i64,
    net: i64,
    vat: BTreeMap<Decimal, i64>,
    count: u64,
}

#[derive(Debug, Deserialize)]
pub struct Settlement {
    id: Uuid,
    partner: String,
    reference: String,
    payout_reference: String,
    date: Day,
    currency: Currency,
    totals: Totals,
    issues: u64,
    merchant: Option<String>,
    imported_at: SystemTime,
}

impl From<Settlement> for SettlementNow {
    fn from(old: Settlement) -> Self {
        let totals = old.totals;
        SettlementNow {
            id: old.id,
            partner: old.partner,
            reference: old.reference,
            payout_reference: old.payout_reference,
            date: old.date,
            currency: old.currency,
            lines: totals.count,
            totals: TotalsNow {
                captured: totals.captured,
                refunded: totals.refunded,
                fees: totals.fees,
                adjustments: 0,
                chargebacks: 0,
                net: totals.net,
                vat: totals.vat,
                count: totals.count,
            },
            issues: old.issues,
            merchant: old.merchant,
            imported_at: old.imported_at,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ReconciliationIssue {
    id: Uuid,
    kind: Match,
    partner: String,
    merchant: Option<String>,
    settlement_id: Option<Uuid>,
    line: Option<u64>,
    payment_id: Option<Uuid>,
    operation_id: Option<Uuid>,
    partner_transaction_id: Option<Uuid>,
    reference: String,
    currency: Currency,
    expected: Amount,
    settled: Amount,
    description: String,
    created_at: SystemTime,
}

impl From<ReconciliationIssue> for IssueNow {
    fn from(old: ReconciliationIssue) -> Self {
        IssueNow {
            id: old.id,
            kind: old.kind,
            partner: old.partner,
            merchant: old.merchant,
            settlement_id: old.settlement_id,
            line: old.line,
            payment_id: old.payment_id,
            operation_id: old.operation_id,
            partner_transaction_id: old.partner_transaction_id,
            reference: old.reference,
            currency: old.currency,
            expected: old.expected,
            settled: old.settled,
            description: old.description,
            created_at: old.created_at,
            resolved_at: None,
            resolution: String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
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
    authorized_at: Option<SystemTime>,
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
            legs: p.legs,
            webhook: p.webhook,
            ledger: p.ledger,
            references: p.references,
            authorization_id: p.authorization_id,
            authorization_status: p.authorization_status,
            authorized_at: p.authorized_at,
            operations: p.operations,
            created_at: p.created_at,
            updated_at: p.updated_at,
            disputes: Vec::new(),
        }
    }
}
