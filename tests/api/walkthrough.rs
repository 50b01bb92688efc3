//! The README's grpcurl walkthrough, with exact amounts.

use payment_orchestrator::api::proto::{self, Coverage, OperationKind, PaymentState};

use super::support::harness::*;

#[tokio::test]
async fn readme_walkthrough_routes_and_totals_exactly() {
    let server = TestServer::start().await;
    let mut payments = server.payments();

    // Create a 120.00 EUR session and submit 100.00 card + 20.00 gift card.
    let session = open_session(&server, 12000, proto::CaptureMode::Manual).await;
    assert_eq!(session.status(), proto::SessionStatus::Open);
    let payment = submit(
        &server,
        &session.id,
        vec![card(10000, "tok_visa_4242"), gift(2000, "tok_gift_0001")],
    )
    .await
    .unwrap();
    assert_eq!(payment.state(), PaymentState::Authorized);
    assert_eq!(
        payment.authorization.as_ref().unwrap().status(),
        proto::OperationStatus::Success
    );
    assert!(payment.split.iter().all(|leg| leg.amount > 0));

    // Capture 50.00: 20.00 from the gift card, 30.00 from the card.
    let operation = payments
        .captured(capture(&payment, Some(5000)))
        .await
        .operation;
    assert_eq!(operation.status(), proto::OperationStatus::Success);
    let expected = succeeded(&[("illicado", 2000), ("ingenico", 3000)]);
    assert_eq!(legs_of(&operation), expected);

    // Refund 10.00: taken from the card.
    let operation = payments
        .refunded(refund(&payment, Some(1000)))
        .await
        .operation;
    assert_eq!(legs_of(&operation), succeeded(&[("ingenico", 1000)]));

    // Void the rest: 70.00, all on the card.
    let operation = payments.voided(void(&payment, None)).await.operation;
    assert_eq!(operation.amount, 7000);
    assert_eq!(legs_of(&operation), succeeded(&[("ingenico", 7000)]));

    // The payment with its amounts and overview.
    let payment = payments.payment(&payment.id).await;
    assert_eq!(
        amounts(&payment),
        proto::Amounts {
            total_authorized: 12000,
            total_captured: 5000,
            total_refunded: 1000,
            total_voided: 7000,
            available_to_capture: 0,
            available_to_refund: 4000,
            available_to_void: 0,
            authorize_pending: 0,
            capture_pending: 0,
            refund_pending: 0,
            void_pending: 0,
            total_disputed: 0,
        }
    );
    let overview = payment.overview.unwrap();
    assert_eq!(overview.consumed(), Coverage::Totally);
    assert_eq!(overview.captured(), Coverage::Partially);
    assert_eq!(overview.voided(), Coverage::Partially);
    assert_eq!(overview.refunded(), Coverage::Partially);
    assert_eq!(payment.state(), PaymentState::PartiallyRefunded);
    assert_eq!(
        payment.allowed_operations().collect::<Vec<_>>(),
        vec![OperationKind::Refund]
    );
    assert_eq!(
        (
            payment.captures.len(),
            payment.refunds.len(),
            payment.voids.len()
        ),
        (1, 1, 1)
    );

    // The partners' own ledgers agree.
    let card_ledger = ledger(&server, "ingenico");
    assert_eq!(
        (
            card_ledger[0].authorized,
            card_ledger[0].captured,
            card_ledger[0].refunded,
            card_ledger[0].voided
        ),
        (10000, 3000, 1000, 7000)
    );
    let gift_ledger = ledger(&server, "illicado");
    assert_eq!(
        (gift_ledger[0].authorized, gift_ledger[0].captured),
        (2000, 2000)
    );
    server.stop().await;
}
