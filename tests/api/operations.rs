//! Operation outcomes, reservations and the amount invariants.

use payment_orchestrator::{
    api::proto::{self, OperationStatus},
    domain::operation::OperationKind,
};
use tonic::Code;
use tonic_types::StatusExt;

use super::support::harness::*;

/// Refused with FAILED_PRECONDITION `AMOUNT_EXCEEDS_AVAILABLE`, saying
/// `available`.
fn assert_exceeds(error: &tonic::Status, available: &str) {
    assert_eq!(error.code(), Code::FailedPrecondition);
    let info = error.get_error_details().error_info().cloned().unwrap();
    assert_eq!(
        (
            info.reason.as_str(),
            info.metadata.get("available").map(String::as_str)
        ),
        ("AMOUNT_EXCEEDS_AVAILABLE", Some(available))
    );
}

#[tokio::test]
async fn every_leg_declined_is_a_failure_that_reserves_nothing() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "capture=decline", "capture=decline").await;
    let done = captured(&server, capture(&payment, Some(5000))).await;
    assert_eq!(done.operation.status(), OperationStatus::Failure);
    assert_eq!(capture_totals(&done.payment), (0, 0, 12000));
}

#[tokio::test]
async fn uncertain_capture_keeps_its_reservation_so_nothing_can_over_capture() {
    let server = TestServer::start().await;
    let mut payments = server.payments();
    let payment = card_and_gift(&server, "capture=timeout", "tok").await;
    let done = captured(&server, capture(&payment, None)).await;
    assert_eq!(done.operation.status(), OperationStatus::Uncertain);
    assert_eq!(
        legs_of(&done.operation),
        vec![
            ("illicado".into(), 2000, OperationStatus::Success),
            ("ingenico".into(), 10000, OperationStatus::Uncertain),
        ]
    );
    assert_eq!(capture_totals(&done.payment), (2000, 10000, 0));

    // The timeout was applied at the partner: a second capture must not be
    // able to take that money again.
    let error = payments.capture(capture(&payment, Some(1))).await.refusal();
    assert_exceeds(&error, "0");
    let void_error = payments.void(void(&payment, None)).await.unwrap_err();
    assert_eq!(reason(&void_error).as_deref(), Some("NOTHING_AVAILABLE"));
    let ledger = ledger(&server, "ingenico");
    assert_eq!(ledger[0].captured, 10000);
}

#[tokio::test]
async fn pending_refund_is_reserved_and_not_final() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "refund=pending", "tok").await;
    captured(&server, capture(&payment, None)).await;
    let done = refunded(&server, refund(&payment, Some(4000))).await;
    assert_eq!(done.operation.status(), OperationStatus::Pending);
    let a = amounts(&done.payment);
    assert_eq!((a.refund_pending, a.available_to_refund), (4000, 8000));
}

#[tokio::test]
async fn amount_above_available_changes_nothing_and_says_what_is_available() {
    let server = TestServer::start().await;
    let mut payments = server.payments();
    let payment = card_and_gift(&server, "tok", "tok").await;
    let error = payments
        .capture(capture(&payment, Some(12001)))
        .await
        .refusal();
    assert_exceeds(&error, "12000");
    assert_eq!(payment_now(&server, &payment.id).await.captures.len(), 0);
    let ingenico = server.sandbox("ingenico");
    assert_eq!(ingenico.received_count(OperationKind::Capture), 0);
    let refund_error = payments.refund(refund(&payment, None)).await.unwrap_err();
    assert_eq!(reason(&refund_error).as_deref(), Some("NOTHING_AVAILABLE"));
}

#[tokio::test]
async fn concurrent_captures_never_exceed_authorized() {
    let server = TestServer::start().await;
    // Partner latency keeps many captures in flight at once.
    let payment = card_and_gift(&server, "latency=5ms", "latency=5ms").await;
    // 60 captures of 3.00 race for 120.00: exactly 40 can succeed.
    let calls = (0..60).map(|_| {
        let mut payments = server.payments();
        let request = capture(&payment, Some(300));
        async move { payments.capture(request).await }
    });
    let mut succeeded = 0;
    for result in concurrently(calls).await {
        match result {
            Ok(result) => {
                Done::from(result).succeeded();
                succeeded += 1;
            }
            Err(status) => assert_eq!(
                reason(&status).as_deref(),
                Some("AMOUNT_EXCEEDS_AVAILABLE"),
                "{status:?}"
            ),
        }
    }
    assert_eq!(succeeded, 40);
    let payment = payment_now(&server, &payment.id).await;
    assert_eq!(amounts(&payment).total_captured, 12000);
    assert_eq!(payment.state(), proto::PaymentState::Captured);
    for ledger in [server.sandbox("ingenico"), server.sandbox("illicado")] {
        for totals in ledger.authorizations().into_values() {
            assert_eq!(totals.captured, totals.authorized);
        }
    }
}

#[tokio::test]
async fn get_operation_returns_the_operation_to_its_merchant_only() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "tok", "tok").await;
    let operation = captured(&server, capture(&payment, Some(100)))
        .await
        .operation;
    assert_eq!(operation_now(&server, &operation.id).await, operation);
    let authorization = payment.authorization.unwrap();
    let read = operation_now(&server, &authorization.id).await;
    assert_eq!(read.kind(), proto::OperationKind::Authorization);
    let error = server
        .payments_as(Some(OTHER_KEY))
        .get_operation(proto::GetOperationRequest {
            operation_id: operation.id,
        })
        .await
        .refusal();
    assert_eq!(error.code(), Code::NotFound);
}
