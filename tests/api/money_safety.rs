//! Money safety against the Walley and WePay simulations, run as real
//! processes: an instrument belongs to one payer; a partner call without an
//! idempotency key is sent once, whatever Syncs, resolvers and clocks do;
//! an unknown outcome stays unknown until an authoritative answer; a
//! partner's answer for another amount goes to review.

use std::time::Duration;

use payment_orchestrator::api::proto::{self, OperationStatus::*};
use serde_json::json;
use tonic::Code;

use super::support::{
    harness::*,
    redis_server::RedisServer,
    simulator::{Partners, walley, wepay},
};

/// A session of the merchant with API key `key` (the harness's order
/// reference).
async fn session_of(server: &TestServer, key: &str, amount: i64) -> proto::Session {
    let request = create_request(amount, proto::CaptureMode::Manual);
    server.sessions_as(Some(key)).opened(request).await
}

async fn submit_as(
    server: &TestServer,
    key: &str,
    session: &str,
    split: Vec<proto::SplitLeg>,
) -> Result<proto::Payment, tonic::Status> {
    server
        .sessions_as(Some(key))
        .try_submit(session, split)
        .await
}

/// Refused with `PAYMENT_TOKEN_IN_USE`, naming the leg, the session still
/// OPEN.
async fn assert_in_use(
    server: &TestServer,
    key: &str,
    session: &proto::Session,
    result: Result<proto::Payment, tonic::Status>,
) {
    let status = result.expect_err("another payer's instrument is refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status).as_deref(), Some("PAYMENT_TOKEN_IN_USE"));
    let now = server.sessions_as(Some(key)).session(&session.id).await;
    assert_eq!(now.status(), proto::SessionStatus::Open);
    assert!(now.payment_id.is_empty(), "no payment was opened");
}

/// Another merchant submitting the WePay card `card` is refused, and no
/// checkout is created beyond the `checkouts` made before.
async fn another_merchant_is_refused(
    partners: &Partners,
    server: &TestServer,
    card: &str,
    checkouts: usize,
) {
    let theirs = session_of(server, OTHER_KEY, 9900).await;
    let refused = submit_as(server, OTHER_KEY, &theirs.id, vec![wepay(9900, card)]).await;
    assert_in_use(server, OTHER_KEY, &theirs, refused).await;
    assert_eq!(
        partners.wepay.requests("/checkout/create").await,
        checkouts,
        "no checkout was created for another merchant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walley_order_backs_one_payment_of_one_merchant() {
    let (partners, server) = Partners::serving().await;
    let order = partners
        .walley
        .order(json!({ "amount": 50.00, "currency": "EUR" }))
        .await;
    let ours = session_of(&server, DEMO_KEY, 5000).await;
    let payment = submit_as(&server, DEMO_KEY, &ours.id, vec![walley(5000, &order)])
        .await
        .unwrap();
    assert_eq!(payment.state(), proto::PaymentState::Authorized);
    let reads = partners
        .walley
        .requests(&format!("/manage/orders/{order}"))
        .await;

    // Another merchant with the same order.
    let theirs = session_of(&server, OTHER_KEY, 5000).await;
    let refused = submit_as(&server, OTHER_KEY, &theirs.id, vec![walley(5000, &order)]).await;
    assert_in_use(&server, OTHER_KEY, &theirs, refused).await;
    // The same merchant, a second payment on the same order.
    let second = session_of(&server, DEMO_KEY, 5000).await;
    let refused = submit_as(&server, DEMO_KEY, &second.id, vec![walley(5000, &order)]).await;
    assert_in_use(&server, DEMO_KEY, &second, refused).await;
    assert_eq!(
        partners
            .walley
            .requests(&format!("/manage/orders/{order}"))
            .await,
        reads,
        "no partner was called for a refused instrument"
    );

    // The owner's payment is untouched: its capture takes the whole order.
    let captured = captured(&server, capture(&payment, None)).await.operation;
    assert_ne!(captured.status(), Failure, "{captured:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wepay_card_belongs_to_the_first_merchant_which_may_reuse_it() {
    let (partners, server) = Partners::serving().await;
    let card = partners.wepay.card(json!({})).await;
    let first = session_of(&server, DEMO_KEY, 4000).await;
    let payment = submit_as(&server, DEMO_KEY, &first.id, vec![wepay(4000, &card)])
        .await
        .unwrap();
    assert_eq!(payment.state(), proto::PaymentState::Authorized);
    let checkouts = partners.wepay.requests("/checkout/create").await;

    another_merchant_is_refused(&partners, &server, &card, checkouts).await;

    // The owner reuses its shopper's card for another payment.
    let again = session_of(&server, DEMO_KEY, 2500).await;
    let reused = submit_as(&server, DEMO_KEY, &again.id, vec![wepay(2500, &card)])
        .await
        .unwrap();
    assert_eq!(reused.state(), proto::PaymentState::Authorized);
}

#[tokio::test]
async fn a_wepay_card_spelt_with_leading_zeros_is_still_its_first_merchants() {
    let (partners, server) = Partners::serving().await;
    let card = partners.wepay.card(json!({})).await;
    let first = session_of(&server, DEMO_KEY, 4000).await;
    submit_as(&server, DEMO_KEY, &first.id, vec![wepay(4000, &card)])
        .await
        .unwrap();
    let checkouts = partners.wepay.requests("/checkout/create").await;

    // WePay reads `00<card>` as the same number: the same shopper's card.
    another_merchant_is_refused(&partners, &server, &format!("00{card}"), checkouts).await;
}

/// A partner configuration beside the simulations': WePay with a timeout
/// long enough to wait for a slow refund.
fn patient_wepay(partners: &Partners) -> String {
    let at = partners
        .config
        .find("[partners.wepay]")
        .expect("wepay table");
    let (before, after) = partners.config.split_at(at);
    format!(
        "{before}{}",
        after.replacen("timeout = \"1s\"", "timeout = \"10s\"", 1)
    )
}

/// A captured WePay payment whose refund of 10.00 WePay answers after 6 s.
async fn slow_refund(
    partners: &Partners,
    server: &TestServer,
) -> (proto::Payment, proto::RefundRequest) {
    let card = partners
        .wepay
        .card(json!({ "faults": [{ "on": "refund", "effect": "slow:6000" }] }))
        .await;
    let payment = authorized(server, vec![wepay(5000, &card)]).await;
    captured(server, capture(&payment, None)).await;
    let request = refund(&payment, Some(1000));
    (payment, request)
}

/// Until WePay has the refund POST: the refund is on its way, and WePay
/// answers it only seconds later.
async fn refund_at_wepay(partners: &Partners) {
    eventually("the refund to reach WePay", async || {
        partners.wepay.requests("/checkout/refund").await == 1
    })
    .await;
}

/// A server with [`patient_wepay`] and the `extra` settings.
async fn patient_server(partners: &Partners, extra: &[&str]) -> TestServer {
    TestServer::start_configured(&patient_wepay(partners), extra).await
}

/// One refund POST and one refund on WePay's ledger, the operation SUCCESS.
async fn refunded_once(partners: &Partners, server: &TestServer, operation: &str) {
    assert_eq!(partners.wepay.requests("/checkout/refund").await, 1);
    assert_eq!(partners.wepay.executed("refund").await.len(), 1);
    assert_eq!(operation_now(server, operation).await.status(), Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_syncs_during_a_slow_wepay_refund_send_it_once() {
    let partners = Partners::start().await;
    let server = patient_server(&partners, &[]).await;
    let (payment, request) = slow_refund(&partners, &server).await;
    let mut payments = server.payments();
    let refunding = tokio::spawn(async move { payments.refunded(request).await });
    refund_at_wepay(&partners).await;
    let stored = payment_now(&server, &payment.id).await;
    let operation = stored.refunds[0].id.clone();
    let syncs = (0..3).map(|_| {
        let mut admin = server.admin();
        let id = operation.clone();
        tokio::spawn(async move {
            admin
                .sync_operation(proto::SyncOperationRequest { operation_id: id })
                .await
        })
    });
    for sync in futures_util::future::join_all(syncs).await {
        let synced = sync.unwrap().unwrap().into_inner();
        // Answered as it stands: the refund is still on its way.
        assert!(!synced.status().eq(&Failure), "{synced:?}");
    }
    let refunded = refunding.await.unwrap().operation;
    assert_eq!(refunded.status(), Success);
    refunded_once(&partners, &server, &operation).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_whose_claim_runs_out_mid_item_never_sends_a_refund_again() {
    let partners = Partners::start().await;
    let server = patient_server(&partners, &["--resolver-lease", "1s"]).await;
    let (payment, request) = slow_refund(&partners, &server).await;
    let mut payments = server.payments();
    let refunding = tokio::spawn(async move { payments.refunded(request).await });
    refund_at_wepay(&partners).await;
    // Past the operation lease (every claim ran out by the server's clock):
    // resolver steps, each lease of 1 s outlived by its item, one after the
    // other while the refund is still on its way.
    server.clock.advance(Duration::from_secs(61));
    for _ in 0..4 {
        let resolver = server.resolver.clone();
        let now = server.clock.now_time();
        tokio::spawn(async move { resolver.resolve_due(now).await });
        // Time passing is the point: the step's lease of 1 s runs out (by the
        // wall clock) while its item still waits on WePay.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        server.clock.advance(Duration::from_secs(2));
    }
    let operation = refunding.await.unwrap().operation;
    // The refund either answered in time or is found by the next lookup.
    server.resolve_after(Duration::from_secs(60)).await;
    refunded_once(&partners, &server, &operation.id).await;
    let amounts = amounts(&payment_now(&server, &payment.id).await);
    assert_eq!((amounts.total_refunded, amounts.refund_pending), (1000, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_clock_jumps_ten_minutes_never_sends_a_refund_again() {
    let partners = Partners::start().await;
    let redis = RedisServer::start();
    let url = redis.url();
    let config = config_file(&patient_wepay(&partners));
    let flags = [config[0].as_str(), &config[1], "--redis-url", &url];
    let a = TestServer::start_with(&flags).await;
    let b = TestServer::start_on(
        &flags,
        payment_orchestrator::clock::ManualClock::new(a.clock.now_time()),
        None,
    )
    .await;
    let (_, request) = slow_refund(&partners, &a).await;
    let mut payments = a.payments();
    let refunding = tokio::spawn(async move { payments.refunded(request).await });
    refund_at_wepay(&partners).await;
    // B's clock jumps ten minutes: everything A holds looks due to it.
    b.clock.advance(Duration::from_secs(600));
    let report = b.resolver.resolve_due(b.clock.now_time()).await;
    assert_eq!(report.finalized, 0, "{report:?}");
    let operation = refunding.await.unwrap().operation;
    assert_eq!(operation.status(), Success);
    b.clock.advance(Duration::from_secs(600));
    b.resolver.resolve_due(b.clock.now_time()).await;
    refunded_once(&partners, &a, &operation.id).await;
}

/// A 40.00 Walley payment whose order carries `faults`, and its capture of
/// 30.00 as answered.
async fn walley_capture(
    partners: &Partners,
    server: &TestServer,
    faults: serde_json::Value,
) -> (proto::Payment, proto::Operation) {
    let faults = json!({ "faults": faults });
    let (_, payment) = partners.walley_payment(server, 4000, faults).await;
    let operation = captured(server, capture(&payment, Some(3000)))
        .await
        .operation;
    (payment, operation)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walley_resend_refused_after_a_lost_first_attempt_stays_uncertain() {
    let (partners, server) = Partners::serving().await;
    let faults = json!([
        { "on": "capture", "effect": "lost" },
        { "on": "capture", "effect": "429", "times": 50 },
    ]);
    let (payment, operation) = walley_capture(&partners, &server, faults).await;
    assert_eq!(
        operation.status(),
        Uncertain,
        "the first attempt's answer is lost"
    );
    // The partner has no trace of it; every re-send is refused for now.
    for _ in 0..3 {
        server.resolve_after(Duration::from_secs(61)).await;
        let now = operation_now(&server, &operation.id).await;
        assert_eq!(now.status(), Uncertain, "{now:?}");
        let held = amounts(&payment_now(&server, &payment.id).await);
        assert_eq!(
            (held.capture_pending, held.available_to_capture),
            (3000, 1000),
            "the reservation is kept"
        );
    }
    assert!(partners.walley.requests("/captures").await >= 2, "re-sent");
    assert!(partners.walley.executed("capture").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walley_action_booked_for_another_amount_goes_to_review() {
    let (partners, server) = Partners::serving().await;
    let faults = json!([{ "on": "capture", "effect": "alter" }]);
    let (payment, operation) = walley_capture(&partners, &server, faults).await;
    assert_eq!(operation.status(), Pending, "accepted, processed later");
    server.resolve_after(Duration::from_secs(5)).await;
    let now = operation_now(&server, &operation.id).await;
    assert_eq!(
        now.status(),
        Uncertain,
        "never booked at our amount: {now:?}"
    );
    assert!(now.requires_review);
    let note = &now.history.last().unwrap().note;
    assert!(
        note.contains("29.99") && note.contains("30.00"),
        "both figures: {note}"
    );
    let held = amounts(&payment_now(&server, &payment.id).await);
    assert_eq!((held.total_captured, held.capture_pending), (0, 3000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wepay_checkout_for_another_amount_goes_to_review() {
    let (partners, server) = Partners::serving().await;
    let card = partners
        .wepay
        .card(json!({ "faults": [{ "on": "create", "effect": "alter" }] }))
        .await;
    let session = open_session(&server, 2500, proto::CaptureMode::Manual).await;
    let payment = submit(&server, &session.id, vec![wepay(2500, &card)])
        .await
        .unwrap();
    let authorization = payment.authorization.unwrap();
    assert_eq!(authorization.status(), Uncertain, "{authorization:?}");
    assert!(authorization.requires_review);
    assert!(
        authorization
            .history
            .iter()
            .any(|h| h.note.contains("24.99") && h.note.contains("25.00")),
        "{:?}",
        authorization.history
    );
}
