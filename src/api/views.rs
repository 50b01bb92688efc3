//! The proto form of what the services answer with and webhook bodies
//! carry: sessions, payments and their operations. One spelling, shared by
//! every service.

use std::borrow::Cow;

use super::proto;
use crate::{
    domain::{
        amounts::{Amounts, Coverage},
        dispute::{self, Dispute, DisputeStatus},
        items::ItemLine,
        money::Amount,
        operation::{Operation, OperationKind, PartnerTransaction, TriggeredBy, books_after},
        payment::{Payment, PaymentState},
        session::{CaptureMode, SessionStatus, SessionView},
        status::{OperationStatus, TransactionStatus},
    },
    payments::{OperationResult, PaymentView},
};

pub(crate) fn timestamp(time: std::time::SystemTime) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp::from(time))
}

fn item_line(line: &ItemLine) -> proto::ItemLine {
    proto::ItemLine {
        sku_reference: line.sku_reference.clone(),
        name: line.name.clone(),
        quantity: line.quantity,
        unit_price: line.unit_price.minor(),
        tax_rate: line.tax_rate.to_string(),
        discount_amount: line.discount_amount.minor(),
        net_amount: line.net_amount.minor(),
        tax_amount: line.tax_amount.minor(),
    }
}

fn capture_mode_proto(mode: CaptureMode) -> proto::CaptureMode {
    match mode {
        CaptureMode::Automatic => proto::CaptureMode::Automatic,
        CaptureMode::Manual => proto::CaptureMode::Manual,
    }
}

pub fn partner_checkout(
    checkout: &crate::domain::checkout::HostedCheckout,
) -> proto::PartnerCheckout {
    proto::PartnerCheckout {
        partner: checkout.partner.clone(),
        id: checkout.id.clone(),
        public_token: checkout.public_token.clone(),
        redirect_url: checkout.redirect_url.clone(),
        expires_at: timestamp(checkout.expires_at),
        amount: checkout.amount.minor(),
    }
}

pub fn session(view: &SessionView) -> proto::Session {
    let s = &view.session;
    let status = match view.status {
        SessionStatus::Open => proto::SessionStatus::Open,
        SessionStatus::Processing => proto::SessionStatus::Processing,
        SessionStatus::Submitted => proto::SessionStatus::Submitted,
        SessionStatus::Expired => proto::SessionStatus::Expired,
        SessionStatus::Cancelled => proto::SessionStatus::Cancelled,
    };
    proto::Session {
        id: s.id.to_string(),
        order_reference: s.order_reference.clone(),
        amount: s.amount.minor(),
        currency: s.currency.code().to_owned(),
        capture_mode: capture_mode_proto(s.capture_mode).into(),
        status: status.into(),
        items: s.items.iter().map(item_line).collect(),
        webhook: s.webhook.as_ref().map(|w| proto::Webhook {
            url: w.url.clone(),
            headers: w
                .headers
                .keys()
                .map(|name| (name.clone(), "<redacted>".to_owned()))
                .collect(),
        }),
        metadata: s.metadata.clone(),
        created_at: timestamp(s.created_at),
        updated_at: timestamp(s.updated_at),
        expires_at: timestamp(s.expires_at),
        payment_id: s.payment_id.map(|id| id.to_string()).unwrap_or_default(),
        cancellation_reason: s.cancellation_reason.clone(),
        // Read for GetSession only (see `api::sessions`).
        partner_checkouts: Vec::new(),
    }
}

pub fn operation_kind(kind: OperationKind) -> proto::OperationKind {
    match kind {
        OperationKind::Authorization => proto::OperationKind::Authorization,
        OperationKind::Capture => proto::OperationKind::Capture,
        OperationKind::Refund => proto::OperationKind::Refund,
        OperationKind::Void => proto::OperationKind::Void,
    }
}

pub fn operation_status(status: OperationStatus) -> proto::OperationStatus {
    match status {
        OperationStatus::Success => proto::OperationStatus::Success,
        OperationStatus::Pending => proto::OperationStatus::Pending,
        OperationStatus::Failure => proto::OperationStatus::Failure,
        OperationStatus::Conflict => proto::OperationStatus::Conflict,
        OperationStatus::Uncertain => proto::OperationStatus::Uncertain,
    }
}

fn transaction_status(status: TransactionStatus) -> proto::OperationStatus {
    match status {
        TransactionStatus::Success => proto::OperationStatus::Success,
        TransactionStatus::Pending => proto::OperationStatus::Pending,
        TransactionStatus::Failure => proto::OperationStatus::Failure,
        TransactionStatus::Uncertain => proto::OperationStatus::Uncertain,
    }
}

/// `books`: each leg's books after the transaction's operation.
fn partner_transaction(
    payment: &Payment,
    op: &Operation,
    tx: &PartnerTransaction,
    books: &[Amounts],
) -> proto::PartnerTransaction {
    let leg = payment.legs.get(tx.leg);
    proto::PartnerTransaction {
        id: tx.id.to_string(),
        partner: leg.map(|l| l.partner.clone()).unwrap_or_default(),
        method: leg.map(|l| l.method.clone()).unwrap_or_default(),
        amount: tx.amount.minor(),
        status: transaction_status(tx.status).into(),
        partner_reference: tx.partner_reference.clone().unwrap_or_default(),
        partner_status: tx.partner_status.clone(),
        partner_status_description: tx.partner_status_description.clone(),
        created_at: timestamp(tx.created_at),
        updated_at: timestamp(tx.updated_at),
        partner_token: tx.partner_token.clone().unwrap_or_default(),
        remaining_amount: books
            .get(tx.leg)
            .map_or(0, |books| op.remaining(books).minor()),
    }
}

/// An operation on its own: what it left on its legs is read from the
/// payment's books as they are.
pub fn operation_proto(payment: &Payment, op: &Operation) -> proto::Operation {
    operation_after(payment, op, &payment.ledger)
}

/// An operation, `books` each leg's books after it.
fn operation_after(payment: &Payment, op: &Operation, books: &[Amounts]) -> proto::Operation {
    proto::Operation {
        id: op.id.to_string(),
        payment_id: payment.id.to_string(),
        kind: operation_kind(op.kind).into(),
        amount: op.amount.minor(),
        status: operation_status(op.status).into(),
        merchant_reference: op.merchant_reference.clone(),
        triggered_by: match op.triggered_by {
            TriggeredBy::Merchant => proto::TriggeredBy::Merchant,
            TriggeredBy::System => proto::TriggeredBy::System,
        }
        .into(),
        partner_transactions: op
            .transactions
            .iter()
            .map(|tx| partner_transaction(payment, op, tx, books))
            .collect(),
        requires_review: op.requires_review,
        created_at: timestamp(op.created_at),
        updated_at: timestamp(op.updated_at),
        reason: op.reason.clone(),
        items: op.items.iter().map(item_line).collect(),
        history: op
            .history
            .iter()
            .map(|entry| proto::OperationHistoryEntry {
                at: timestamp(entry.at),
                note: entry.note.clone(),
            })
            .collect(),
    }
}

/// The amounts: `disputed` what disputes hold, `kept` what of it would be
/// refundable otherwise.
fn amounts(a: &Amounts, disputed: Amount, kept: Amount) -> proto::Amounts {
    proto::Amounts {
        total_authorized: a.authorized.minor(),
        total_captured: a.captured.minor(),
        total_refunded: a.refunded.minor(),
        total_voided: a.voided.minor(),
        available_to_capture: a.available_to_capture().minor(),
        available_to_refund: a.available_to_refund().saturating_sub(kept).minor(),
        total_disputed: disputed.minor(),
        available_to_void: a.available_to_void().minor(),
        authorize_pending: a.authorize_pending.minor(),
        capture_pending: a.capture_pending.minor(),
        refund_pending: a.refund_pending.minor(),
        void_pending: a.void_pending.minor(),
    }
}

fn coverage(c: Coverage) -> i32 {
    match c {
        Coverage::Not => proto::Coverage::Not,
        Coverage::Partially => proto::Coverage::Partially,
        Coverage::Totally => proto::Coverage::Totally,
    }
    .into()
}

/// A payment as the view shows it: the header's fixed part, the snapshot's
/// amounts and state, and the operations the view carries.
pub fn payment(view: &PaymentView) -> proto::Payment {
    let payment = &view.header;
    let totals = view.snapshot.totals;
    let disputed = dispute::held(&view.disputes, None);
    let kept = dispute::kept_from_refunds(&view.disputes, &payment.ledger);
    let overview = view.snapshot.overview();
    let state = match view.snapshot.state() {
        PaymentState::Authorizing => proto::PaymentState::Authorizing,
        PaymentState::Failed => proto::PaymentState::Failed,
        PaymentState::PartiallyRefunded => proto::PaymentState::PartiallyRefunded,
        PaymentState::Refunded => proto::PaymentState::Refunded,
        PaymentState::PartiallyCaptured => proto::PaymentState::PartiallyCaptured,
        PaymentState::Captured => proto::PaymentState::Captured,
        PaymentState::Voided => proto::PaymentState::Voided,
        PaymentState::Authorized => proto::PaymentState::Authorized,
    };
    // The operations a payment view carries are all it had then (a submit's
    // answer: the authorization and its follow-up): each shows what it left.
    let after = books_after(&view.operations, payment.legs.len());
    let shown = |index: usize| operation_after(payment, &view.operations[index], &after[index]);
    let legs = &legs_of(view);
    let of_kind = |kind| {
        (0..view.operations.len())
            .filter(|&index| view.operations[index].kind == kind)
            .map(shown)
            .collect()
    };
    proto::Payment {
        id: payment.id.to_string(),
        session_id: payment.session_id.to_string(),
        order_reference: payment.order_reference.clone(),
        amount: payment.amount.minor(),
        currency: payment.currency.code().to_owned(),
        capture_mode: capture_mode_proto(payment.capture_mode).into(),
        state: state.into(),
        split: split(payment, legs, &view.disputes),
        authorization: (0..view.operations.len())
            .find(|&index| view.operations[index].kind == OperationKind::Authorization)
            .map(shown),
        captures: of_kind(OperationKind::Capture),
        refunds: of_kind(OperationKind::Refund),
        voids: of_kind(OperationKind::Void),
        amounts: Some(amounts(&totals, disputed, kept)),
        overview: Some(proto::Overview {
            consumed: coverage(overview.consumed),
            captured: coverage(overview.captured),
            voided: coverage(overview.voided),
            refunded: coverage(overview.refunded),
        }),
        allowed_operations: view
            .snapshot
            .allowed_operations()
            .into_iter()
            .filter(|kind| {
                // What disputes keep, leg by leg: one leg's dispute does not
                // hide what the others can refund.
                *kind != OperationKind::Refund
                    || !totals.available_to_refund().saturating_sub(kept).is_zero()
            })
            .map(|kind| operation_kind(kind).into())
            .collect(),
        disputes: view.disputes.iter().map(dispute).collect(),
        created_at: timestamp(payment.created_at),
        updated_at: timestamp(view.snapshot.updated_at),
    }
}

/// What each leg held as the view shows the payment. An answer kept before
/// the legs were kept with it has its totals only: they are its one leg's,
/// or for several legs the payment's legs are shown as it holds them now.
fn legs_of(view: &PaymentView) -> Cow<'_, [Amounts]> {
    match (view.snapshot.legs.is_empty(), view.header.legs.len()) {
        (false, _) => Cow::Borrowed(&view.snapshot.legs),
        (true, 1) => Cow::Owned(vec![view.snapshot.totals]),
        (true, _) => Cow::Borrowed(&view.header.ledger),
    }
}

/// The legs with what each holds (`legs`). What open disputes of a leg hold
/// is not refundable: the legs' `available_to_refund` add up to the
/// payment's.
fn split(payment: &Payment, legs: &[Amounts], disputes: &[Dispute]) -> Vec<proto::PaymentLeg> {
    let idle = Amounts::ZERO;
    payment
        .legs
        .iter()
        .enumerate()
        .map(|(index, leg)| {
            let books = legs.get(index).unwrap_or(&idle);
            let disputed = dispute::held(disputes, Some(index));
            proto::PaymentLeg {
                partner: leg.partner.clone(),
                method: leg.method.clone(),
                amount: leg.amount.minor(),
                authorized: books.authorized.minor(),
                captured: books.captured.minor(),
                refunded: books.refunded.minor(),
                voided: books.voided.minor(),
                available_to_capture: books.available_to_capture().minor(),
                available_to_refund: books.available_to_refund().saturating_sub(disputed).minor(),
                available_to_void: books.available_to_void().minor(),
                disputed: disputed.minor(),
            }
        })
        .collect()
}

/// An operation's answer: the operation shows what it left as the answer's
/// payment holds it.
pub fn operation_result(result: &OperationResult) -> proto::OperationResult {
    let header = &result.payment.header;
    let mut operation = operation_after(header, &result.operation, &legs_of(&result.payment));
    if result.dry_run {
        // Nothing was executed: no status is an outcome.
        operation.status = proto::OperationStatus::Unspecified.into();
        for tx in &mut operation.partner_transactions {
            tx.status = proto::OperationStatus::Unspecified.into();
        }
    }
    proto::OperationResult {
        operation: Some(operation),
        payment: Some(payment(&result.payment)),
    }
}

/// A dispute as the API shows it.
pub fn dispute(dispute: &Dispute) -> proto::Dispute {
    proto::Dispute {
        id: dispute.id.to_string(),
        partner: dispute.partner.clone(),
        partner_reference: dispute.partner_reference.clone(),
        amount: dispute.amount.minor(),
        reason: dispute.reason.clone(),
        status: match dispute.status {
            DisputeStatus::Open => proto::DisputeStatus::Open,
            DisputeStatus::Won => proto::DisputeStatus::Won,
            DisputeStatus::Lost => proto::DisputeStatus::Lost,
        }
        .into(),
        opened_at: timestamp(dispute.opened_at),
        closed_at: dispute.closed_at.map(timestamp).unwrap_or_default(),
        leg: i32::try_from(dispute.leg).unwrap_or(i32::MAX),
    }
}
