//! Operation requests in (capture, refund and void share their fields),
//! listings and waits checked, pages out.

use std::time::Duration;

use tonic::Status;
use uuid::Uuid;

use super::super::{
    proto,
    views::{self, operation_kind, operation_status},
    violations::Violations,
};
use crate::{
    domain::{operation::OperationKind, payment::PaymentState, status::OperationStatus},
    partners::Partners,
    payments::{
        DEFAULT_PAGE_SIZE, Idempotent, ListOperations, ListPayments, MAX_PAGE_SIZE, MAX_WAIT,
        OperationCommand, OperationFilter, OperationPage, PaymentFilter, PaymentPage,
    },
};

/// The fields capture, refund and void share.
pub struct OperationFields {
    pub payment_id: String,
    pub idempotency_key: String,
    pub amount: Option<i64>,
    pub merchant_reference: String,
    pub priority: Vec<proto::PriorityRule>,
    pub items: Vec<proto::ItemLine>,
    pub disable_fallback: bool,
    pub reason: String,
    pub validate_only: bool,
}

/// `From<request>` for each of the three requests; a capture has no reason.
macro_rules! operation_fields {
    ($($request:ty => |$r:ident| $reason:expr;)+) => {$(
        impl From<$request> for OperationFields {
            fn from($r: $request) -> Self {
                OperationFields {
                    reason: $reason,
                    payment_id: $r.payment_id,
                    idempotency_key: $r.idempotency_key,
                    amount: $r.amount,
                    merchant_reference: $r.merchant_reference,
                    priority: $r.priority,
                    items: $r.items,
                    disable_fallback: $r.disable_fallback,
                    validate_only: $r.validate_only,
                }
            }
        }
    )+};
}

operation_fields! {
    proto::CaptureRequest => |r| String::new();
    proto::RefundRequest => |r| r.reason;
    proto::VoidRequest => |r| r.reason;
}

pub fn operation(
    kind: OperationKind,
    fields: OperationFields,
    partners: &Partners,
) -> Result<Idempotent<OperationCommand>, Status> {
    let mut v = Violations::default();
    let payment_id = v.id("payment_id", &fields.payment_id);
    let key = v.idempotency_key(&fields.idempotency_key);
    let amount = fields
        .amount
        .map(|minor| v.positive_amount("amount", minor));
    v.text("merchant_reference", &fields.merchant_reference, false);
    v.text("reason", &fields.reason, false);
    let priority = v.priority(fields.priority, partners);
    let items_against = match amount {
        None => Err("required when items are given: the lines must add up to it"),
        Some(amount) => Ok(amount),
    };
    let items = v.items("items", fields.items, items_against);
    let (Some(payment_id), Some(key), Some(amount)) =
        (payment_id, key, amount.map_or(Some(None), |a| a.map(Some)))
    else {
        return Err(v.into_status());
    };
    v.finish(|| Idempotent {
        key,
        command: OperationCommand {
            payment_id,
            kind,
            amount,
            priority,
            disable_fallback: fields.disable_fallback,
            merchant_reference: fields.merchant_reference,
            reason: fields.reason,
            items,
        },
    })
}

/// `WaitOperation`: the id, and the timeout (default 30 s, capped at 60 s).
pub fn wait(request: &proto::WaitOperationRequest) -> Result<(Uuid, Duration), Status> {
    let mut v = Violations::default();
    let id = v.id("operation_id", &request.operation_id);
    let timeout = match request.timeout.map(Duration::try_from) {
        None => Duration::from_secs(30),
        Some(Ok(timeout)) => timeout.min(MAX_WAIT),
        Some(Err(_)) => {
            v.add("timeout", "must be a non-negative duration");
            Duration::ZERO
        }
    };
    match id {
        Some(id) => v.finish(|| (id, timeout)),
        None => Err(v.into_status()),
    }
}

pub fn list_payments(request: proto::ListPaymentsRequest) -> Result<ListPayments, Status> {
    let mut v = Violations::default();
    if !request.order_reference.is_empty() {
        v.text("order_reference", &request.order_reference, false);
    }
    let state = v
        .parsed(
            "state",
            proto::PaymentState::try_from(request.state),
            "unknown payment state",
        )
        .filter(|state| *state != proto::PaymentState::Unspecified)
        .map(payment_state);
    let created_after = v.instant("created_after", request.created_after);
    let created_before = v.instant("created_before", request.created_before);
    let page_size = v.page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
    let newest_first = match proto::ListOrder::try_from(request.order) {
        Ok(proto::ListOrder::OldestFirst) => false,
        Ok(_) => true,
        Err(_) => {
            v.add("order", "unknown order");
            true
        }
    };
    let page_token = v.page_token(request.page_token);
    v.finish(|| ListPayments {
        filter: PaymentFilter {
            order_reference: Some(request.order_reference).filter(|r| !r.is_empty()),
            state,
            created_after,
            created_before,
            newest_first,
            open_disputes: request.open_disputes,
        },
        page_size,
        page_token,
    })
}

fn payment_state(state: proto::PaymentState) -> PaymentState {
    match state {
        proto::PaymentState::Authorizing | proto::PaymentState::Unspecified => {
            PaymentState::Authorizing
        }
        proto::PaymentState::Failed => PaymentState::Failed,
        proto::PaymentState::PartiallyRefunded => PaymentState::PartiallyRefunded,
        proto::PaymentState::Refunded => PaymentState::Refunded,
        proto::PaymentState::PartiallyCaptured => PaymentState::PartiallyCaptured,
        proto::PaymentState::Captured => PaymentState::Captured,
        proto::PaymentState::Voided => PaymentState::Voided,
        proto::PaymentState::Authorized => PaymentState::Authorized,
    }
}

pub fn payment_page(page: &PaymentPage) -> proto::ListPaymentsResponse {
    proto::ListPaymentsResponse {
        payments: page.items.iter().map(views::payment).collect(),
        next_page_token: page.next_page_token.clone().unwrap_or_default(),
    }
}

pub fn list_operations(request: proto::ListOperationsRequest) -> Result<ListOperations, Status> {
    let mut v = Violations::default();
    let status = v
        .parsed(
            "status",
            proto::OperationStatus::try_from(request.status),
            "unknown operation status",
        )
        .filter(|status| *status != proto::OperationStatus::Unspecified)
        .and_then(|status| {
            [
                OperationStatus::Success,
                OperationStatus::Pending,
                OperationStatus::Failure,
                OperationStatus::Conflict,
                OperationStatus::Uncertain,
            ]
            .into_iter()
            .find(|s| operation_status(*s) == status)
        });
    let kind = v
        .parsed(
            "kind",
            proto::OperationKind::try_from(request.kind),
            "unknown operation kind",
        )
        .filter(|kind| *kind != proto::OperationKind::Unspecified)
        .and_then(|kind| {
            [
                OperationKind::Authorization,
                OperationKind::Capture,
                OperationKind::Refund,
                OperationKind::Void,
            ]
            .into_iter()
            .find(|k| operation_kind(*k) == kind)
        });
    let mut optional_text = |field: &str, value: String| {
        (!value.is_empty()).then(|| {
            v.text(field, &value, false);
            value
        })
    };
    let merchant_reference = optional_text("merchant_reference", request.merchant_reference);
    let partner_reference = optional_text("partner_reference", request.partner_reference);
    let merchant = optional_text("merchant", request.merchant);
    let created_after = v.instant("created_after", request.created_after);
    let created_before = v.instant("created_before", request.created_before);
    let page_size = v.page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
    let page_token = v.page_token(request.page_token);
    v.finish(|| ListOperations {
        filter: OperationFilter {
            status,
            kind,
            requires_review: request.requires_review,
            created_after,
            created_before,
            merchant_reference,
            partner_reference,
            merchant,
        },
        page_size,
        page_token,
    })
}

pub fn operation_page(page: &OperationPage) -> proto::ListOperationsResponse {
    proto::ListOperationsResponse {
        operations: page
            .items
            .iter()
            .map(|(payment, operation)| views::operation_proto(payment, operation))
            .collect(),
        next_page_token: page.next_page_token.clone().unwrap_or_default(),
    }
}
