//! The idempotency contract: replay, key reuse, requests in flight.

use std::time::Duration;

use payment_orchestrator::{api::proto, domain::operation::OperationKind};
use prost::Message;
use tonic::Code;

use super::support::harness::*;

#[tokio::test]
async fn replay_returns_the_identical_response_without_a_second_partner_call() {
    let server = TestServer::start().await;
    let mut payments = server.payments();
    let payment = card_and_gift(&server, "tok", "tok").await;
    let request = capture(&payment, Some(5000));
    let first = payments.capture(request.clone()).await.answer();
    let calls =
        server.sandbox("ingenico").received().len() + server.sandbox("illicado").received().len();

    // Something else happens to the payment in between.
    payments.refunded(refund(&payment, Some(100))).await;
    let calls_after_refund = calls + 1;

    let replay = payments.capture(request).await.answer();
    assert_eq!(replay.encode_to_vec(), first.encode_to_vec());
    let calls_now =
        server.sandbox("ingenico").received().len() + server.sandbox("illicado").received().len();
    assert_eq!(calls_now, calls_after_refund, "the replay called a partner");
}

#[tokio::test]
async fn replayed_business_error_is_the_stored_one() {
    let server = TestServer::start().await;
    let mut payments = server.payments();
    let payment = card_and_gift(&server, "tok", "tok").await;
    let request = capture(&payment, Some(20000));
    let first = payments.capture(request.clone()).await.unwrap_err();
    let replay = payments.capture(request).await.unwrap_err();
    assert_eq!(
        (first.code(), first.message()),
        (replay.code(), replay.message())
    );
    // The stored error, detail for detail; each answer names its own call.
    use tonic_types::StatusExt;
    let (first, replay) = (first.get_error_details(), replay.get_error_details());
    assert_eq!(
        format!("{:?}", first.error_info()),
        format!("{:?}", replay.error_info())
    );
    assert_eq!(
        replay.error_info().map(|info| info.reason.as_str()),
        Some("AMOUNT_EXCEEDS_AVAILABLE")
    );
    let request_id = |details: &tonic_types::ErrorDetails| {
        details.request_info().map(|info| info.request_id.clone())
    };
    assert!(request_id(&first).is_some() && request_id(&first) != request_id(&replay));
}

#[tokio::test]
async fn create_session_replay_returns_the_same_session() {
    let server = TestServer::start().await;
    let request = create_request(12000, proto::CaptureMode::Manual);
    let first = server.sessions().opened(request.clone()).await;
    server.clock.advance(Duration::from_secs(5));
    let replay = server.sessions().opened(request).await;
    assert_eq!(replay.encode_to_vec(), first.encode_to_vec());
}

#[tokio::test]
async fn key_reused_for_a_different_request_is_refused() {
    let server = TestServer::start().await;
    let mut payments = server.payments();
    let payment = card_and_gift(&server, "tok", "tok").await;
    let request = capture(&payment, Some(5000));
    payments.captured(request.clone()).await;
    let mut different = request.clone();
    different.amount = Some(4000);
    let error = payments.capture(different).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    assert_eq!(reason(&error).as_deref(), Some("IDEMPOTENCY_KEY_REUSED"));

    // A refund with the capture's key is a different request too.
    let mut refund_request = refund(&payment, Some(100));
    refund_request.idempotency_key = request.idempotency_key.clone();
    let error = payments.refund(refund_request).await.unwrap_err();
    assert_eq!(reason(&error).as_deref(), Some("IDEMPOTENCY_KEY_REUSED"));

    let mut session_request = create_request(100, proto::CaptureMode::Manual);
    server.sessions().opened(session_request.clone()).await;
    session_request.amount = 200;
    let error = server
        .sessions()
        .create_session(session_request)
        .await
        .refusal();
    assert_eq!(reason(&error).as_deref(), Some("IDEMPOTENCY_KEY_REUSED"));
}

#[tokio::test]
async fn the_same_key_on_another_payment_is_another_request() {
    let server = TestServer::start().await;
    let mut payments = server.payments();
    let first = card_and_gift(&server, "tok", "tok").await;
    let second = card_and_gift(&server, "tok", "tok").await;
    let key = new_key();
    for payment in [&first, &second] {
        let mut request = capture(payment, Some(100));
        request.idempotency_key = key.clone();
        let done = payments.captured(request).await;
        assert_eq!(done.payment.id, payment.id);
    }
}

#[tokio::test]
async fn concurrent_duplicates_get_request_in_progress_and_one_partner_call() {
    let server = TestServer::start().await;
    let payment = authorized(&server, vec![card(12000, "latency=300ms")]).await;
    let request = capture(&payment, Some(5000));
    let calls = (0..20).map(|_| {
        let mut payments = server.payments();
        let request = request.clone();
        async move { payments.capture(request).await }
    });
    let (successes, in_progress) = answered_or_in_progress(concurrently(calls).await);
    assert!(
        in_progress > 0,
        "no duplicate arrived while the first was running"
    );
    assert!(!successes.is_empty());
    assert!(successes.windows(2).all(|pair| pair[0] == pair[1]));
    assert_eq!(server.sent("ingenico", OperationKind::Capture), 1);
    // Once it finished, the key replays the stored response.
    let replay = captured(&server, request).await.operation;
    assert_eq!(replay.status(), proto::OperationStatus::Success);
}
