//! Routing you can ask about and trust: per-merchant priority orders end to
//! end, why each operation's legs were chosen, and partner circuits that
//! walk around a failing partner (on one replica and across replicas).

use std::time::{Duration, Instant};

use payment_orchestrator::api::proto::{
    self, CircuitState,
    OperationStatus::{Failure, Success},
};

use super::support::{
    deployment::{Deployment, Redis},
    harness::*,
    redis_server::RedisServer,
    simulator::Partners,
    verbs::{PaymentCalls, SessionCalls},
    waits::eventually,
};

/// The first note of `operation`'s history: why its legs went in the order
/// they did.
fn why(operation: &proto::Operation) -> &str {
    let first = operation.history.first().map(|entry| entry.note.as_str());
    first.unwrap_or_default()
}

/// A payment of merchant `other`: 100.00 on a card, 20.00 on a gift card.
async fn other_card_and_gift(server: &TestServer) -> proto::Payment {
    let mut sessions = server.sessions_as(Some(OTHER_KEY));
    let session = sessions
        .opened(create_request(12000, proto::CaptureMode::Manual))
        .await;
    sessions
        .submitted(
            &session.id,
            vec![card(10000, "tok-other"), gift(2000, "tok-other")],
        )
        .await
}

#[tokio::test]
async fn a_merchants_own_refund_order_takes_the_gift_card_first_and_another_merchant_keeps_the_default()
 {
    let server =
        TestServer::start_with(&["--merchant-priorities", "demo:refund=*:giftcard|*:*"]).await;
    // The demo merchant refunds 30.00 of 120.00 captured: the gift card first.
    let payment = card_and_gift(&server, "tok", "tok").await;
    captured(&server, capture(&payment, None)).await;
    let demo = refunded(&server, refund(&payment, Some(3000))).await;
    assert_eq!(
        legs_of(&demo.operation),
        succeeded(&[("illicado", 2000), ("ingenico", 1000)])
    );
    let reason = why(&demo.operation);
    assert!(
        reason.starts_with("legs ordered by the merchant's priority [*:giftcard, *:*]"),
        "{reason}"
    );
    // Its captures keep the default, and say so.
    let next = card_and_gift(&server, "tok", "tok").await;
    let capture_done = captured(&server, capture(&next, Some(2500))).await;
    let reason = why(&capture_done.operation);
    assert!(
        reason.starts_with("legs ordered by the default priority"),
        "{reason}"
    );
    // Another merchant's refund: card money back first, as by default.
    let other = other_card_and_gift(&server).await;
    let mut payments = server.payments_as(Some(OTHER_KEY));
    payments.captured(capture(&other, None)).await;
    let theirs = payments.refunded(refund(&other, Some(3000))).await;
    assert_eq!(legs_of(&theirs.operation), succeeded(&[("ingenico", 3000)]));
    let reason = why(&theirs.operation);
    assert!(
        reason.starts_with("legs ordered by the default priority [*:creditcard, *:*]"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_merchants_own_capture_and_void_orders_change_which_leg_goes_first() {
    let server = TestServer::start_with(&[
        "--merchant-priorities",
        "demo:capture=*:creditcard|*:*;demo:void=*:giftcard|*:*",
    ])
    .await;
    let payment = card_and_gift(&server, "tok", "tok").await;
    let capture_done = captured(&server, capture(&payment, Some(2500))).await;
    assert_eq!(
        legs_of(&capture_done.operation),
        succeeded(&[("ingenico", 2500)])
    );
    let void_done = voided(&server, void(&payment, Some(3000))).await;
    assert_eq!(
        legs_of(&void_done.operation),
        succeeded(&[("illicado", 2000), ("ingenico", 1000)])
    );
    // The other merchant's capture still takes the gift card first.
    let other = other_card_and_gift(&server).await;
    let theirs = server
        .payments_as(Some(OTHER_KEY))
        .captured(capture(&other, Some(2500)))
        .await;
    assert_eq!(
        legs_of(&theirs.operation),
        succeeded(&[("illicado", 2000), ("ingenico", 500)])
    );
}

#[tokio::test]
async fn an_operation_records_the_request_order_and_a_fallback() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "capture=decline", "tok").await;
    let done = card_capture(&server, &payment, 1500).await;
    assert_eq!(
        legs_of(&done.operation)[1],
        ("illicado".into(), 1500, Success)
    );
    let notes: Vec<&str> = done
        .operation
        .history
        .iter()
        .map(|entry| entry.note.as_str())
        .collect();
    assert!(
        notes[0].starts_with("legs ordered by the request's priority [*:creditcard]"),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|note| note.starts_with("fallback: leg 0 (ingenico) declined; 1500")),
        "{notes:?}"
    );
}

async fn health_of(admin: &mut Admin, partner: &str) -> proto::PartnerHealth {
    let partners = admin
        .list_partner_health(proto::ListPartnerHealthRequest {})
        .await
        .answer()
        .partners;
    partners
        .into_iter()
        .find(|p| p.partner == partner)
        .expect("the partner is listed")
}

async fn methods_offered(sessions: &mut Sessions) -> Vec<String> {
    let request = proto::ListPaymentMethodsRequest::default();
    let offered = sessions.list_payment_methods(request).await.answer();
    offered
        .payment_methods
        .into_iter()
        .map(|m| m.partner)
        .collect()
}

/// `count` payments whose card partner answers every capture with a 5xx
/// after 300 ms. Authorized up front: an authorization the partner answers
/// is an answer, which closes its circuit.
async fn sick_card_payments(server: &TestServer, count: usize) -> Vec<proto::Payment> {
    let mut payments = Vec::new();
    for _ in 0..count {
        payments.push(card_and_gift(server, "capture=error,latency=300ms", "tok").await);
    }
    payments
}

/// A card-first capture of 15.00; how long it took, and what it came to.
async fn card_first_capture(
    server: &TestServer,
    payment: &proto::Payment,
) -> (Duration, proto::Operation) {
    let started = Instant::now();
    let done = card_capture(server, payment, 1500).await;
    (started.elapsed(), done.operation)
}

#[tokio::test]
async fn a_partner_that_keeps_failing_is_walked_around_until_a_trial_call_answers() {
    let server = TestServer::start_with(&["--circuit-failures", "3"]).await;
    let mut admin = server.admin();
    let mut sessions = server.sessions();
    // Operators only.
    let denied = server
        .admin_as(DEMO_KEY)
        .list_partner_health(proto::ListPartnerHealthRequest {})
        .await
        .refusal();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(
        methods_offered(&mut sessions)
            .await
            .contains(&"ingenico".to_owned())
    );
    let sick = sick_card_payments(&server, 5).await;
    let paid = card_and_gift(&server, "tok", "tok").await;
    captured(&server, capture(&paid, None)).await;
    // Three captures try the sick card partner first, wait for its answer,
    // and fall back to the gift card.
    let mut before = Vec::new();
    for payment in &sick[..3] {
        let (took, operation) = card_first_capture(&server, payment).await;
        assert_eq!(
            legs_of(&operation),
            vec![
                ("ingenico".into(), 1500, Failure),
                ("illicado".into(), 1500, Success)
            ]
        );
        before.push(took);
    }
    let health = health_of(&mut admin, "ingenico").await;
    assert_eq!(health.state(), CircuitState::Open, "{health:?}");
    assert_eq!(health.consecutive_failures, 3);
    assert_eq!(health.failures_to_open, 3);
    assert_eq!(
        health_of(&mut admin, "illicado").await.state(),
        CircuitState::Closed
    );
    // Shoppers are not offered its methods while it is open.
    let offered = methods_offered(&mut sessions).await;
    assert!(!offered.contains(&"ingenico".to_owned()), "{offered:?}");
    assert!(offered.contains(&"illicado".to_owned()), "{offered:?}");
    // Now a card-first capture goes to the gift card without calling it.
    let (after, operation) = card_first_capture(&server, &sick[3]).await;
    assert_eq!(legs_of(&operation), succeeded(&[("illicado", 1500)]));
    let reason = why(&operation);
    assert!(
        reason.contains("ingenico's circuit is open: its legs went last"),
        "{reason}"
    );
    eprintln!("card-first capture with a sick card partner: before {before:?}, after {after:?}");
    assert!(after < Duration::from_millis(300), "{after:?}");
    // A leg that must be used is still sent, and the operation says why.
    let large = card_capture(&server, &sick[4], 11000).await;
    assert_eq!(
        legs_of(&large.operation),
        vec![
            ("illicado".into(), 2000, Success),
            ("ingenico".into(), 9000, Failure)
        ]
    );
    let reason = why(&large.operation);
    assert!(
        reason.contains("the others could not cover the amount"),
        "{reason}"
    );
    // A refund keeps its order: money goes back where it came from.
    assert_eq!(
        health_of(&mut admin, "ingenico").await.state(),
        CircuitState::Open
    );
    let refund_done = refunded(&server, refund(&paid, Some(1000))).await;
    assert_eq!(
        legs_of(&refund_done.operation),
        succeeded(&[("ingenico", 1000)])
    );
    let reason = why(&refund_done.operation);
    assert!(reason.contains("a refund keeps its order"), "{reason}");
    // The refund answered: the circuit closed.
    assert_eq!(
        health_of(&mut admin, "ingenico").await.state(),
        CircuitState::Closed
    );
}

#[tokio::test]
async fn after_the_cool_down_one_trial_call_reopens_or_closes_the_circuit() {
    let server =
        TestServer::start_with(&["--circuit-failures", "2", "--circuit-cool-down", "30s"]).await;
    let mut admin = server.admin();
    let sick = sick_card_payments(&server, 3).await;
    let healthy = card_and_gift(&server, "tok", "tok").await;
    for payment in &sick[..2] {
        card_first_capture(&server, payment).await;
    }
    assert_eq!(
        health_of(&mut admin, "ingenico").await.state(),
        CircuitState::Open
    );
    // After the cool-down the next card-first capture is the trial: it is
    // sent to the sick partner, fails, and the circuit opens again.
    server.clock.advance(Duration::from_secs(30));
    let (_, trial) = card_first_capture(&server, &sick[2]).await;
    assert_eq!(legs_of(&trial)[0], ("ingenico".into(), 1500, Failure));
    assert_eq!(
        health_of(&mut admin, "ingenico").await.state(),
        CircuitState::Open
    );
    // The partner recovers: the next trial answers and closes it.
    server.clock.advance(Duration::from_secs(30));
    let (_, trial) = card_first_capture(&server, &healthy).await;
    assert_eq!(legs_of(&trial), succeeded(&[("ingenico", 1500)]));
    let health = health_of(&mut admin, "ingenico").await;
    assert_eq!(health.state(), CircuitState::Closed, "{health:?}");
    assert!(
        methods_offered(&mut server.sessions())
            .await
            .contains(&"ingenico".to_owned())
    );
}

/// The circuit gauge of `partner` on a replica's `/metrics`.
async fn circuit_gauge(deployment: &Deployment, replica: usize, partner: &str) -> Option<String> {
    let port = deployment.replicas[replica].metrics_port;
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let series = format!("payment_orchestrator_partner_circuit_open{{partner=\"{partner}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map(str::to_owned)
}

/// Waits until ingenico's circuit is `state` on both replicas, and checks
/// that each one's gauge says so.
async fn ingenico_circuit_everywhere(deployment: &Deployment, state: CircuitState) {
    let admin = |replica: usize| {
        proto::admin_service_client::AdminServiceClient::with_interceptor(
            deployment.channel(replica),
            Bearer::new(ADMIN_KEY),
        )
    };
    let gauge = if state == CircuitState::Open {
        "1"
    } else {
        "0"
    };
    for replica in 0..2 {
        eventually("the circuit's state on every replica", async || {
            health_of(&mut admin(replica), "ingenico").await.state() == state
        })
        .await;
        let shown = circuit_gauge(deployment, replica, "ingenico").await;
        assert_eq!(shown.as_deref(), Some(gauge), "replica {replica}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_opened_on_one_replica_opens_on_the_other_and_closes_on_both() {
    let redis = Redis::Single(RedisServer::start());
    let deployment = Deployment::start_with(
        redis,
        2,
        &[
            ("PAYMENT_ORCHESTRATOR_CIRCUIT_FAILURES", "2"),
            ("PAYMENT_ORCHESTRATOR_CIRCUIT_COOL_DOWN", "1s"),
        ],
    )
    .await;
    // Authorized up front (an answered authorization closes a circuit).
    let mut sick = Vec::new();
    for _ in 0..2 {
        let split = vec![card(10000, "capture=error"), gift(2000, "tok")];
        sick.push(deployment.authorized(0, split).await);
    }
    let payment = deployment
        .authorized(1, vec![card(10000, "tok"), gift(2000, "tok")])
        .await;
    // Two card-first captures on replica 0 find the card partner failing.
    for payment in &sick {
        let mut request = capture(payment, Some(1500));
        request.priority = vec![rule("*", "creditcard")];
        deployment.payments(0).captured(request).await;
    }
    ingenico_circuit_everywhere(&deployment, CircuitState::Open).await;
    // Replica 1 walks around it without having seen a failure itself.
    let mut request = capture(&payment, Some(1500));
    request.priority = vec![rule("*", "creditcard")];
    let around = deployment.payments(1).captured(request).await;
    assert_eq!(legs_of(&around.operation), succeeded(&[("illicado", 1500)]));
    // After the cool-down, replica 1's trial answers: closed on both.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut request = capture(&payment, Some(1500));
    request.priority = vec![rule("*", "creditcard")];
    let trial = deployment.payments(1).captured(request).await;
    assert_eq!(legs_of(&trial.operation), succeeded(&[("ingenico", 1500)]));
    ingenico_circuit_everywhere(&deployment, CircuitState::Closed).await;
}

/// `quantity` shirts at 20.00 plus 25 % VAT: 25.00 each.
fn shirts(quantity: i64) -> proto::ItemLine {
    proto::ItemLine {
        sku_reference: "shirt".into(),
        name: "Shirt".into(),
        quantity,
        unit_price: 2000,
        tax_rate: "25".into(),
        ..Default::default()
    }
}

/// Captures 75.00 of `payment` as three 25.00 shirts.
async fn three_shirts_captured(server: &TestServer, payment: &proto::Payment) -> proto::Operation {
    let request = proto::CaptureRequest {
        items: vec![shirts(3)],
        ..capture(payment, Some(7500))
    };
    captured(server, request).await.operation
}

fn history(operation: &proto::Operation) -> Vec<String> {
    operation.history.iter().map(|e| e.note.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_capture_sends_each_partner_the_item_lines_of_its_own_leg() {
    let (partners, server) = Partners::serving().await;
    let (order, payment) = partners.split_payment(&server, 5000, 2500).await;
    // Three shirts over 50.00 at Walley and the whole 25.00 WePay checkout.
    let operation = three_shirts_captured(&server, &payment).await;
    assert_eq!(
        operation
            .partner_transactions
            .iter()
            .map(|tx| (tx.partner.as_str(), tx.amount))
            .collect::<Vec<_>>(),
        [("walley", 5000), ("wepay", 2500)]
    );
    assert!(
        history(&operation).contains(
            &"item lines per leg: leg 0 (walley) 2 × shirt; leg 1 (wepay) 1 × shirt".into()
        ),
        "{:?}",
        history(&operation)
    );
    // Walley received two shirts adding up to its 50.00 (it refuses lines
    // that do not), VAT 25 % on each: 10.00 of the 50.00.
    let body: serde_json::Value =
        serde_json::from_str(&partners.walley.bodies("/captures").await[0]).unwrap();
    assert_eq!(body["amount"].to_string(), "50.00");
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["items"][0]["id"], "shirt");
    assert_eq!(body["items"][0]["quantity"], 2);
    assert_eq!(body["items"][0]["unitPrice"].to_string(), "25.00");
    assert_eq!(body["items"][0]["vat"].to_string(), "25");
    assert_eq!(
        partners.walley.executed("capture").await,
        [(order, "50.00".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leg_no_whole_units_add_up_to_goes_without_lines_and_the_operation_says_why() {
    let (partners, server) = Partners::serving().await;
    let (_, payment) = partners.split_payment(&server, 4000, 3500).await;
    // 40.00 and 35.00 are no number of 25.00 shirts.
    let operation = three_shirts_captured(&server, &payment).await;
    let notes = history(&operation);
    assert!(
        notes.iter().any(|note| note.starts_with(
            "item lines per leg: leg 0 (walley) goes without lines: no share of them adding up to 4000 was found"
        )),
        "{notes:?}"
    );
    let body: serde_json::Value =
        serde_json::from_str(&partners.walley.bodies("/captures").await[0]).unwrap();
    assert_eq!(body["amount"].to_string(), "40.00");
    assert!(
        body.get("items")
            .is_none_or(|items| items.as_array().is_some_and(Vec::is_empty)),
        "{body}"
    );
}
