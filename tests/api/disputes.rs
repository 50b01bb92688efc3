//! Disputes: a chargeback a partner reports opens a dispute on the payment,
//! announced to its webhook; disputed money is not refundable; a dispute the
//! partner clears is closed. WePay's chargebacks show only in its checkout,
//! so captured WePay legs are read again (the simulation run as a real
//! process).

use std::time::Duration;

use payment_orchestrator::api::proto::{
    self, partner_event_service_client::PartnerEventServiceClient,
};
use serde_json::json;

use super::support::{
    harness::*,
    simulator::{Partners, wepay},
};

/// The payments with an open dispute.
async fn disputed_payments(server: &TestServer) -> Vec<String> {
    let request = proto::ListPaymentsRequest {
        open_disputes: true,
        ..Default::default()
    };
    listed_payments(server, request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wepay_checkout_charged_back_opens_a_dispute_that_holds_refunds_until_it_is_won() {
    let receiver = webhook_receiver().await;
    let (partners, server) = Partners::serving().await;
    let card = partners.wepay.card(json!({})).await;
    let webhook = Some(format!("{}/hooks", receiver.uri()));
    let session = open_session_with_webhook(&server, 6_000, webhook).await;
    let payment = submit(&server, &session.id, vec![wepay(6_000, &card)])
        .await
        .unwrap();
    let capture = captured(&server, capture(&payment, None)).await.operation;
    let checkout: i64 = capture.partner_transactions[0]
        .partner_reference
        .parse()
        .unwrap();
    // Untouched, a day on: nothing disputed; a partner notification that
    // says otherwise is checked with WePay, which says the checkout is clear.
    server.resolve_after(Duration::from_secs(86_400 + 60)).await;
    assert!(payment_now(&server, &payment.id).await.disputes.is_empty());
    let mut notifier = PartnerEventServiceClient::with_interceptor(
        server.channel(),
        Bearer::new("sk_test_partner"),
    );
    let disputed_event = |event_id: &str| proto::NotifyPartnerEventRequest {
        partner: "wepay".into(),
        event_id: event_id.into(),
        idempotency_key: format!("{}:0", capture.id),
        outcome: proto::PartnerEventOutcome::Disputed.into(),
        ..Default::default()
    };
    let told = notifier
        .notify_partner_event(disputed_event("evt-early"))
        .await
        .answer();
    assert_eq!(told.result(), proto::NotifyResult::Duplicate);
    assert!(payment_now(&server, &payment.id).await.disputes.is_empty());

    // The card holder's bank takes 20.00 back.
    partners.wepay.charge_back(checkout, "20.00").await;
    // WePay's notification makes it immediate: no day to wait.
    let told = notifier
        .notify_partner_event(disputed_event("evt-charged-back"))
        .await
        .answer();
    assert_eq!(told.result(), proto::NotifyResult::Applied);
    let disputed = payment_now(&server, &payment.id).await;
    assert_eq!(disputed.disputes.len(), 1, "{disputed:#?}");
    let dispute = &disputed.disputes[0];
    assert_eq!(
        (
            dispute.partner.as_str(),
            dispute.partner_reference.as_str(),
            dispute.amount,
            dispute.status(),
            dispute.leg
        ),
        (
            "wepay",
            checkout.to_string().as_str(),
            2_000,
            proto::DisputeStatus::Open,
            0
        )
    );
    let held = amounts(&disputed);
    assert_eq!(
        (held.total_disputed, held.available_to_refund),
        (2_000, 4_000)
    );
    assert_eq!(disputed_payments(&server).await, [payment.id.as_str()]);
    server.resolve_after(Duration::ZERO).await;
    let opened = webhook_events(&receiver, "dispute.opened").await;
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0]["data"]["dispute"]["amount"], "2000");
    assert_eq!(opened[0]["data"]["paymentId"], payment.id.as_str());

    // A refund never pays the shopper back what the bank took: 60.00 is
    // refused before anything is sent.
    let request = refund(&payment, Some(6_000));
    let refused = server.payments().refund(request).await.refusal();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(partners.wepay.bodies("/checkout/refund").await.is_empty());

    // The merchant wins: WePay gives it back, and the dispute closes.
    partners.wepay.charge_back(checkout, "0").await;
    server.resolve_after(Duration::from_secs(86_400 + 60)).await;
    let won = payment_now(&server, &payment.id).await;
    assert_eq!(won.disputes[0].status(), proto::DisputeStatus::Won);
    assert!(won.disputes[0].closed_at.is_some());
    assert_eq!(amounts(&won).total_disputed, 0);
    assert!(disputed_payments(&server).await.is_empty());
    server.resolve_after(Duration::ZERO).await;
    assert_eq!(webhook_events(&receiver, "dispute.closed").await.len(), 1);
    assert_eq!(
        webhook_events(&receiver, "dispute.opened").await.len(),
        1,
        "once"
    );
    // Won, all of it is refundable again.
    let refunded = refunded(&server, refund(&payment, Some(6_000)))
        .await
        .operation;
    assert_eq!(refunded.status(), proto::OperationStatus::Success);
}
