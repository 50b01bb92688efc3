//! The README's walkthrough, through the client crate: a 120.00 EUR session
//! paid 100.00 by card and 20.00 by gift card, a capture, a refund, a void
//! of the rest, and the payment's state. Against `cargo run`:
//!
//! ```sh
//! cargo run -p payment-orchestrator-client --example walkthrough -- http://127.0.0.1:50051
//! ```
//!
//! Exits non-zero if any step does not come out as the README shows.

// The steps' report on stdout is this example's output.
#![allow(clippy::print_stdout)]

use payment_orchestrator_client::{Client, Error, idempotency_key, proto};

fn legs(operation: &proto::Operation) -> Vec<(String, i64)> {
    operation
        .partner_transactions
        .iter()
        .map(|tx| (tx.partner.clone(), tx.amount))
        .collect()
}

fn check(what: &str, ok: bool) -> Result<(), Error> {
    println!("{} {what}", if ok { "ok  " } else { "FAIL" });
    if ok {
        Ok(())
    } else {
        Err(Error::Setup(format!("{what}: not as the README shows")))
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let client = Client::connect(&url, "sk_test_demo").await?;

    // 1. A checkout session for 120.00 EUR, captured manually.
    let key = idempotency_key();
    let session = client
        .call(|| {
            let mut sessions = client.sessions();
            let request = proto::CreateSessionRequest {
                idempotency_key: key.clone(),
                order_reference: "order-1001".into(),
                amount: 12_000,
                currency: "EUR".into(),
                capture_mode: proto::CaptureMode::Manual.into(),
                ..Default::default()
            };
            async move { sessions.create_session(request).await }
        })
        .await?;

    // 2. 100.00 by card, 20.00 by gift card: both legs authorized.
    let key = idempotency_key();
    let payment = client
        .call(|| {
            let mut sessions = client.sessions();
            let request = proto::SubmitSessionRequest {
                session_id: session.id.clone(),
                idempotency_key: key.clone(),
                split: vec![
                    proto::SplitLeg {
                        partner: "ingenico".into(),
                        method: "creditcard".into(),
                        amount: 10_000,
                        payment_token: "tok_visa_4242".into(),
                        ..Default::default()
                    },
                    proto::SplitLeg {
                        partner: "illicado".into(),
                        method: "giftcard".into(),
                        amount: 2_000,
                        payment_token: "tok_gift_0001".into(),
                        ..Default::default()
                    },
                ],
            };
            async move { sessions.submit_session(request).await }
        })
        .await?;
    check(
        "the payment is authorized",
        payment.state() == proto::PaymentState::Authorized,
    )?;

    // 3. Capture 50.00: the gift card first, then the card.
    let key = idempotency_key();
    let captured = client
        .call(|| {
            let mut payments = client.payments();
            let request = proto::CaptureRequest {
                payment_id: payment.id.clone(),
                idempotency_key: key.clone(),
                amount: Some(5_000),
                ..Default::default()
            };
            async move { payments.capture(request).await }
        })
        .await?
        .operation
        .unwrap_or_default();
    check(
        "capture 50.00: 20.00 from the gift card, 30.00 from the card",
        legs(&captured) == [("illicado".into(), 2_000), ("ingenico".into(), 3_000)],
    )?;

    // 4. Refund 10.00: card money first.
    let key = idempotency_key();
    let refunded = client
        .call(|| {
            let mut payments = client.payments();
            let request = proto::RefundRequest {
                payment_id: payment.id.clone(),
                idempotency_key: key.clone(),
                amount: Some(1_000),
                reason: "one item returned".into(),
                ..Default::default()
            };
            async move { payments.refund(request).await }
        })
        .await?
        .operation
        .unwrap_or_default();
    check(
        "refund 10.00 on the card",
        legs(&refunded) == [("ingenico".into(), 1_000)],
    )?;

    // A capture beyond what is left: a typed reason, not retried.
    let too_much = client
        .call(|| {
            let mut payments = client.payments();
            let request = proto::CaptureRequest {
                payment_id: payment.id.clone(),
                idempotency_key: idempotency_key(),
                amount: Some(1_000_000),
                ..Default::default()
            };
            async move { payments.capture(request).await }
        })
        .await
        .err();
    check(
        "a capture of 10 000.00 is AMOUNT_EXCEEDS_AVAILABLE",
        too_much.and_then(|e| e.reason()) == Some(proto::ErrorReason::AmountExceedsAvailable),
    )?;

    // 5. Void the rest: 70.00 on the card.
    let key = idempotency_key();
    let voided = client
        .call(|| {
            let mut payments = client.payments();
            let request = proto::VoidRequest {
                payment_id: payment.id.clone(),
                idempotency_key: key.clone(),
                ..Default::default()
            };
            async move { payments.void(request).await }
        })
        .await?
        .operation
        .unwrap_or_default();
    check(
        "void the remaining 70.00",
        voided.amount == 7_000 && legs(&voided) == [("ingenico".into(), 7_000)],
    )?;

    // 6. The payment: partially refunded, 50.00 captured, 10.00 refunded.
    let now = client
        .call(|| {
            let mut payments = client.payments();
            let request = proto::GetPaymentRequest {
                payment_id: payment.id.clone(),
            };
            async move { payments.get_payment(request).await }
        })
        .await?;
    let amounts = now.amounts.unwrap_or_default();
    check(
        "the payment is partially refunded with the README's amounts",
        now.state() == proto::PaymentState::PartiallyRefunded
            && (
                amounts.total_captured,
                amounts.total_refunded,
                amounts.total_voided,
            ) == (5_000, 1_000, 7_000),
    )?;
    println!("walkthrough done: payment {}", payment.id);
    Ok(())
}
