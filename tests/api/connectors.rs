//! The Walley and WePay connectors against their simulations, run as real
//! processes: every call crosses HTTP, every amount is checked on the wire,
//! and the simulations' ledgers show what was executed (never twice).

use std::time::Duration;

use payment_orchestrator::api::proto::{self, OperationStatus::*};
use serde_json::json;
use tonic::Code;

use super::support::{
    harness::*,
    simulator::{Partners, Simulator, walley, wepay},
};

const A_MOMENT: Duration = Duration::from_secs(2);

/// Steps the resolver twice: the first lookups, and whatever they left due.
async fn settle(server: &TestServer) {
    server.resolve_after(A_MOMENT).await;
    server.resolve_after(Duration::from_secs(60)).await;
}

fn first(priority: &str) -> Vec<proto::PriorityRule> {
    vec![rule(priority, "*"), rule("*", "*")]
}

/// `operation`'s status after a resolver step `A_MOMENT` on.
async fn status_after_a_moment(
    server: &TestServer,
    operation: &proto::Operation,
) -> proto::OperationStatus {
    server.resolve_after(A_MOMENT).await;
    operation_now(server, &operation.id).await.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walley_and_wepay_split_is_authorized_captured_refunded_with_items_and_voided() {
    let (partners, server) = Partners::serving().await;
    let (order, payment) = partners.split_payment(&server, 5000, 3000).await;
    assert_eq!(partners.wepay.executed("authorize").await.len(), 1);

    // WePay first, but it captures whole checkouts only: 20.00 goes to Walley,
    // accepted (202) and PENDING until the order shows it processed.
    let request = proto::CaptureRequest {
        priority: first("wepay"),
        ..capture(&payment, Some(2000))
    };
    let operation = captured(&server, request).await.operation;
    assert_eq!(legs_of(&operation), vec![("walley".into(), 2000, Pending)]);
    assert_eq!(status_after_a_moment(&server, &operation).await, Success);

    // The whole WePay checkout: captured at once.
    let request = proto::CaptureRequest {
        priority: first("wepay"),
        ..capture(&payment, Some(3000))
    };
    let operation = captured(&server, request).await.operation;
    assert_eq!(legs_of(&operation), succeeded(&[("wepay", 3000)]));

    // A refund with its item line reaches Walley with the line (VAT included).
    let refund = refunded(
        &server,
        proto::RefundRequest {
            priority: first("walley"),
            items: vec![proto::ItemLine {
                sku_reference: "sku-7".into(),
                name: "Scarf".into(),
                quantity: 2,
                unit_price: 400,
                tax_rate: "25".into(),
                ..Default::default()
            }],
            reason: "returned".into(),
            ..refund(&payment, Some(1000))
        },
    )
    .await
    .operation;
    assert_eq!(legs_of(&refund), vec![("walley".into(), 1000, Pending)]);
    assert_eq!(refund.items.len(), 1);
    assert_eq!(status_after_a_moment(&server, &refund).await, Success);
    let body: serde_json::Value =
        serde_json::from_str(&partners.walley.bodies("/refunds").await[0]).unwrap();
    assert_eq!(body["amount"].to_string(), "10.00");
    assert_eq!(body["description"], "returned");
    assert_eq!(body["items"][0]["id"], "sku-7");
    assert_eq!(body["items"][0]["quantity"], 2);
    assert_eq!(body["items"][0]["unitPrice"].to_string(), "5.00");
    assert_eq!(body["items"][0]["vat"].to_string(), "25");

    // Void: Walley's cancel releases the 30.00 not captured.
    let void = voided(&server, void(&payment, None)).await.operation;
    assert_eq!(legs_of(&void), vec![("walley".into(), 3000, Pending)]);
    assert_eq!(status_after_a_moment(&server, &void).await, Success);
    let payment = payment_now(&server, &payment.id).await;
    let a = amounts(&payment);
    assert_eq!(
        (
            a.total_captured,
            a.total_refunded,
            a.total_voided,
            a.available_to_capture
        ),
        (5000, 1000, 3000, 0)
    );

    // Each executed exactly once.
    assert_eq!(
        partners.walley.executed("capture").await,
        [(order.clone(), "20.00".into())]
    );
    assert_eq!(
        partners.walley.executed("refund").await,
        [(order.clone(), "10.00".into())]
    );
    assert_eq!(
        partners.walley.executed("cancel").await,
        [(order, "30.00".into())]
    );
    assert_eq!(partners.wepay.executed("capture").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_walley_capture_stays_pending_until_processed_then_succeeds() {
    let (partners, server) = Partners::serving().await;
    let extra = json!({ "processing_ms": 3000 });
    let (_, payment) = partners.walley_payment(&server, 10000, extra).await;
    let operation = captured(&server, capture(&payment, Some(4000)))
        .await
        .operation;
    assert_eq!(operation.status(), Pending);
    assert_eq!(legs_of(&operation)[0].2, Pending);

    // Looked up while Walley still processes: still PENDING.
    assert_eq!(status_after_a_moment(&server, &operation).await, Pending);
    // Time passing is the point: Walley processes by its own (real) clock.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    server.resolve_after(Duration::from_secs(60)).await;
    assert_eq!(
        operation_now(&server, &operation.id).await.status(),
        Success
    );
    assert_eq!(partners.walley.executed("capture").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_not_visible_yet_is_retried_with_backoff_within_the_window() {
    let (partners, server) = Partners::serving().await;
    // 404 for 0.7 s after it was placed; the window is 2 s.
    let extra = json!({ "invisible_for_ms": 700 });
    let (order, _) = partners.walley_payment(&server, 3000, extra).await;
    let reads = partners
        .walley
        .requests(&format!("/manage/orders/{order}"))
        .await;
    assert!(reads >= 2, "retried: {reads} reads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_retry_window_runs_out_the_leg_fails_and_fallback_applies() {
    let (partners, server) = Partners::serving().await;
    let order = partners
        .walley
        .order(json!({
            "amount": 50.00, "currency": "EUR",
            "faults": [{ "on": "capture", "effect": "404", "times": 1000 }],
        }))
        .await;
    let card = partners.wepay.card(json!({})).await;
    let payment = authorized(&server, vec![walley(5000, &order), wepay(3000, &card)]).await;

    let request = proto::CaptureRequest {
        priority: first("walley"),
        ..capture(&payment, Some(3000))
    };
    let operation = captured(&server, request).await.operation;
    assert_eq!(
        legs_of(&operation),
        vec![
            ("walley".into(), 3000, Failure),
            ("wepay".into(), 3000, Success)
        ]
    );
    assert_eq!(operation.status(), Success);
    let attempts = partners.walley.requests("/captures").await;
    assert!(attempts >= 3, "backed off and retried: {attempts} attempts");
    assert!(partners.walley.executed("capture").await.is_empty());
}

/// A capture whose answer is lost (`timeout`: executed, no answer) or whose
/// request is lost (`lost`: not executed, no answer) ends UNCERTAIN and is
/// resolved by a lookup; the simulation executed it exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_walley_answer_or_request_is_resolved_by_lookup_and_executed_once() {
    let (partners, server) = Partners::serving().await;
    for effect in ["timeout", "lost"] {
        let faults = json!({ "faults": [{ "on": "capture", "effect": effect }] });
        let (order, payment) = partners.walley_payment(&server, 2000, faults).await;
        let operation = captured(&server, capture(&payment, Some(1500)))
            .await
            .operation;
        assert_eq!(legs_of(&operation)[0].2, Uncertain, "{effect}");

        settle(&server).await;
        assert_eq!(
            operation_now(&server, &operation.id).await.status(),
            Success,
            "{effect}"
        );
        let executed: Vec<_> = partners
            .walley
            .executed("capture")
            .await
            .into_iter()
            .filter(|(on, _)| *on == order)
            .collect();
        assert_eq!(executed, [(order.clone(), "15.00".into())], "{effect}");
    }
}

/// A Walley cancel releases all that is not captured: sent while a capture
/// has no answer, it would release that capture's hold too (the capture then
/// fails at Walley while our books still hold it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walley_void_waits_for_a_capture_without_an_answer() {
    let (partners, server) = Partners::serving().await;
    let faults = json!({ "faults": [{ "on": "capture", "effect": "lost" }] });
    let (order, payment) = partners.walley_payment(&server, 2000, faults).await;
    let operation = captured(&server, capture(&payment, Some(1500)))
        .await
        .operation;
    assert_eq!(legs_of(&operation)[0].2, Uncertain);

    let refused = server.payments().void(void(&payment, None)).await.refusal();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused).as_deref(), Some("CAPTURE_IN_PROGRESS"));
    assert_eq!(partners.walley.requests("/cancel").await, 0, "nothing sent");

    // Once the capture has its answer, the rest is voided.
    settle(&server).await;
    assert_eq!(
        operation_now(&server, &operation.id).await.status(),
        Success
    );
    let void = voided(&server, void(&payment, None)).await.operation;
    assert_eq!(status_after_a_moment(&server, &void).await, Success);
    assert_eq!(legs_of(&void)[0].1, 500);
    let on_order = |executed: Vec<(String, String)>| {
        executed.into_iter().filter(|(on, _)| *on == order).count()
    };
    assert_eq!(on_order(partners.walley.executed("capture").await), 1);
    assert_eq!(on_order(partners.walley.executed("cancel").await), 1);
}

/// Two Walley orders expire together while a capture on the first is still
/// processed: the expiry voids the second at once (Walley declines it), and
/// the first once its capture has its answer — in a void of its own, not
/// mistaken for the one already opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiry_voids_a_leg_left_out_for_a_capture_in_flight_once_it_ends() {
    let partners = Partners::start().await;
    let lifetime = &["--authorization-lifetime", "1h"];
    let server = TestServer::start_configured(&partners.config, lifetime).await;
    let slow = json!({ "amount": 20.00, "currency": "EUR", "processing_ms": 3000 });
    let first = partners.walley.order(slow).await;
    let declines = json!({ "amount": 10.00, "currency": "EUR",
                           "faults": [{ "on": "cancel", "effect": "decline" }] });
    let second = partners.walley.order(declines).await;
    let split = vec![walley(2000, &first), walley(1000, &second)];
    let payment = authorized_in(&server, "EUR", split).await;
    let capture = captured(&server, capture(&payment, Some(1500)))
        .await
        .operation;
    assert_eq!(legs_of(&capture), [("walley".into(), 1500, Pending)]);
    let cancels = async |order: &str| {
        let path = format!("/manage/orders/{order}/cancel");
        partners.walley.requests(&path).await
    };

    // Their lifetime ends while Walley still processes the capture.
    server.resolve_after(Duration::from_secs(3_700)).await;
    assert_eq!((cancels(&first).await, cancels(&second).await), (0, 1));

    // Time passing is the point: Walley processes by its own (real) clock.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    server.resolve_after(Duration::from_secs(3_600)).await;
    assert_eq!(operation_now(&server, &capture.id).await.status(), Success);
    server.resolve_after(Duration::from_secs(3_600)).await;
    assert_eq!(cancels(&first).await, 1, "the first order's remainder");
    let payment = payment_now(&server, &payment.id).await;
    let on_first: Vec<_> = payment
        .voids
        .iter()
        .flat_map(|void| &void.partner_transactions)
        .filter(|tx| tx.amount == 500)
        .collect();
    assert_eq!(on_first.len(), 1, "{:?}", payment.voids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_wepay_answer_or_request_is_resolved_by_lookup_and_executed_once() {
    let (partners, server) = Partners::serving().await;
    for effect in ["timeout", "lost"] {
        let card = partners
            .wepay
            .card(json!({ "faults": [
                { "on": "create", "effect": effect },
                { "on": "capture", "effect": effect },
            ]}))
            .await;
        let session = open_session(&server, 2500, proto::CaptureMode::Manual).await;
        // The authorization's answer is lost: the checkout is found by our
        // reference (timeout) or created by the resolver's re-send (lost).
        let payment = submit(&server, &session.id, vec![wepay(2500, &card)])
            .await
            .unwrap();
        assert_eq!(
            payment.state(),
            proto::PaymentState::Authorizing,
            "{effect}"
        );
        settle(&server).await;
        let payment = payment_now(&server, &payment.id).await;
        assert_eq!(payment.state(), proto::PaymentState::Authorized, "{effect}");

        let operation = captured(&server, capture(&payment, None)).await.operation;
        assert_eq!(legs_of(&operation)[0].2, Uncertain, "{effect}");
        settle(&server).await;
        assert_eq!(
            operation_now(&server, &operation.id).await.status(),
            Success,
            "{effect}"
        );
    }
    assert_eq!(partners.wepay.executed("authorize").await.len(), 2);
    assert_eq!(partners.wepay.executed("capture").await.len(), 2);
}

/// WePay has no idempotency key for refunds: a refund is sent at most
/// once. An executed refund whose answer was lost is found by the
/// checkout's refunded total; one that never arrived is never sent again —
/// it stays UNCERTAIN with its reservation and goes to review, where an
/// operator settles it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wepay_refund_is_never_executed_twice() {
    let (partners, server) = Partners::serving().await;
    let mut admin = server.admin();
    for effect in ["timeout", "lost"] {
        let faults = json!({ "faults": [{ "on": "refund", "effect": effect }] });
        let (_, payment) = partners.wepay_payment(&server, 6000, faults).await;
        captured(&server, capture(&payment, None)).await;
        let first = refunded(&server, refund(&payment, Some(2500)))
            .await
            .operation;
        assert_eq!(legs_of(&first)[0].2, Uncertain, "{effect}: {first:?}");
        settle(&server).await;
        let resolved = operation_now(&server, &first.id).await;
        if effect == "timeout" {
            assert_eq!(resolved.status(), Success, "{effect}");
        } else {
            // Never sent again: held, and handed to an operator.
            assert_eq!(resolved.status(), Uncertain, "{effect}");
            assert!(resolved.requires_review, "{effect}: {resolved:?}");
            let held = amounts(&payment_now(&server, &payment.id).await);
            assert_eq!(held.refund_pending, 2500);
            let settled = admin
                .resolve_operation(proto::ResolveOperationRequest {
                    operation_id: first.id.clone(),
                    reason: "WePay shows no refund for this checkout".into(),
                    outcomes: vec![proto::TransactionResolution {
                        partner_transaction_id: first.partner_transactions[0].id.clone(),
                        status: proto::OperationStatus::Failure.into(),
                    }],
                })
                .await
                .answer();
            assert_eq!(settled.status(), proto::OperationStatus::Failure);
        }
        // A second refund reads the total the first one left.
        let second = refunded(&server, refund(&payment, Some(1000)))
            .await
            .operation;
        assert_eq!(second.status(), Success, "{effect}");
    }
    let refunds: Vec<String> = partners
        .wepay
        .executed("refund")
        .await
        .into_iter()
        .map(|(_, amount)| amount)
        .collect();
    assert_eq!(refunds, ["25.00", "10.00", "10.00"]);
    let posts = partners.wepay.bodies("/checkout/refund").await.len();
    assert_eq!(posts, 4, "one POST per refund operation, never a re-send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wepay_refund_refunded_elsewhere_is_not_sent_and_goes_to_review() {
    let (partners, server) = Partners::serving().await;
    let (_, payment) = partners.wepay_payment(&server, 6000, json!({})).await;
    let capture = captured(&server, capture(&payment, None)).await.operation;
    let checkout = capture.partner_transactions[0].partner_reference.clone();
    // Someone refunds in WePay's dashboard: our books no longer agree.
    let http = reqwest::Client::new();
    http.post(format!("{}/checkout/refund", partners.wepay.url))
        .bearer_auth("demo-token")
        .json(&json!({ "checkout_id": checkout.parse::<i64>().unwrap(), "refund_reason": "by hand", "amount": 5.00 }))
        .send()
        .await
        .unwrap();
    let ours = refunded(&server, refund(&payment, Some(2500)))
        .await
        .operation;
    assert_eq!(legs_of(&ours)[0].2, Uncertain);
    server.resolve_after(Duration::from_secs(60)).await;
    assert_eq!(operation_now(&server, &ours.id).await.status(), Uncertain);
    // Never settled by guessing: an operator looks.
    server.resolve_after(Duration::from_secs(25 * 3600)).await;
    assert!(operation_now(&server, &ours.id).await.requires_review);
    assert_eq!(
        partners.wepay.executed("refund").await.len(),
        1,
        "only the one by hand"
    );
}

/// The `amount` field of the last request body sent to a path ending with
/// `suffix`, as written on the wire.
async fn wire_amount(simulator: &Simulator, suffix: &str) -> String {
    let bodies = simulator.bodies(suffix).await;
    let body: serde_json::Value = serde_json::from_str(bodies.last().expect("sent")).unwrap();
    body["amount"].to_string()
}

/// JPY has no decimals, EUR two, BHD three: the same minor units through the
/// API become exactly these major units on each connector's wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jpy_eur_and_bhd_amounts_are_exact_through_the_api_and_on_each_connectors_wire() {
    let (partners, server) = Partners::serving().await;
    for (currency, total, total_major, part, part_major) in [
        ("JPY", 12345, "12345", 1001, "1001"),
        ("EUR", 12345, "123.45", 1001, "10.01"),
        ("BHD", 12345, "12.345", 1001, "1.001"),
    ] {
        // Walley: the order's amount is verified, a partial capture sent.
        let order = partners
            .walley
            .order(json!({ "amount": total_major.parse::<serde_json::Number>().unwrap(), "currency": currency }))
            .await;
        let payment = authorized_in(&server, currency, vec![walley(total, &order)]).await;
        assert_eq!(payment.amount, total);
        captured(&server, capture(&payment, Some(part))).await;
        assert_eq!(
            wire_amount(&partners.walley, "/captures").await,
            part_major,
            "{currency}"
        );

        // WePay: the checkout is created for the whole amount, a part refunded.
        let card = partners.wepay.card(json!({})).await;
        let payment = authorized_in(&server, currency, vec![wepay(total, &card)]).await;
        assert_eq!(
            wire_amount(&partners.wepay, "/checkout/create").await,
            total_major,
            "{currency}"
        );
        captured(&server, capture(&payment, None)).await;
        refunded(&server, refund(&payment, Some(part))).await;
        assert_eq!(
            wire_amount(&partners.wepay, "/checkout/refund").await,
            part_major,
            "{currency}"
        );
        let after = payment_now(&server, &payment.id).await;
        assert_eq!(amounts(&after).total_refunded, part, "{currency}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncaptured_wepay_checkout_is_released_after_fourteen_days() {
    let (partners, server) = Partners::serving().await;
    let (_, payment) = partners.wepay_payment(&server, 4000, json!({})).await;
    // A week: the default lifetime of other partners; WePay's is 14 days.
    server.resolve_after(Duration::from_secs(8 * 86_400)).await;
    assert!(payment_now(&server, &payment.id).await.voids.is_empty());
    server.resolve_after(Duration::from_secs(6 * 86_400)).await;
    let payment = payment_now(&server, &payment.id).await;
    assert_eq!(payment.voids.len(), 1);
    assert_eq!(legs_of(&payment.voids[0]), succeeded(&[("wepay", 4000)]));
    assert_eq!(partners.wepay.executed("cancel").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_wepay_cancelled_after_fourteen_days_reads_as_voided_without_a_second_cancel() {
    let (partners, server) = Partners::serving().await;
    let (_, payment) = partners.wepay_payment(&server, 4000, json!({})).await;
    // WePay cancels it on its own first.
    partners.wepay.advance(15 * 86_400).await;
    server.resolve_after(Duration::from_secs(14 * 86_400)).await;
    let payment = payment_now(&server, &payment.id).await;
    assert_eq!(legs_of(&payment.voids[0]), succeeded(&[("wepay", 4000)]));
    assert!(partners.wepay.executed("cancel").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_walley_order_is_declined() {
    let (partners, server) = Partners::serving().await;
    let order = partners
        .walley
        .order(json!({ "amount": 10.00, "currency": "EUR", "expires_in_seconds": 1800 }))
        .await;
    partners.walley.advance(1801).await;
    let session = open_session(&server, 1000, proto::CaptureMode::Manual).await;
    let payment = submit(&server, &session.id, vec![walley(1000, &order)])
        .await
        .unwrap();
    assert_eq!(payment.state(), proto::PaymentState::Failed);
    let authorization = payment.authorization.unwrap();
    assert_eq!(
        authorization.partner_transactions[0].partner_status,
        "ORDER_NOT_OPEN"
    );
}

mod status_mapping {
    //! Each documented HTTP status, served by the simulation, as the port
    //! sees it.

    use payment_orchestrator::{
        domain::{
            money::{Amount, Currency},
            operation::OperationKind,
            payment::PaymentToken,
        },
        partners::{Partner, PartnerError, PartnerRequest, Secret, walley, wepay},
    };
    use serde_json::json;

    use super::super::support::simulator::Simulator;

    fn request(kind: OperationKind, token: &str, reference: Option<&str>) -> PartnerRequest {
        PartnerRequest {
            kind,
            idempotency_key: uuid::Uuid::now_v7().to_string(),
            amount: Amount::from_minor(1000).unwrap(),
            currency: Currency::parse("EUR").unwrap(),
            method: "m".into(),
            token: PaymentToken::new(token.into()),
            authorization_reference: reference.map(str::to_owned),
            order_reference: super::super::support::harness::ORDER_REFERENCE.into(),
            merchant_reference: String::new(),
            reason: String::new(),
            items: Vec::new(),
            refunded_before: Amount::ZERO,
        }
    }

    fn class(
        result: Result<payment_orchestrator::partners::PartnerAnswer, PartnerError>,
    ) -> &'static str {
        match result {
            Ok(answer) if answer.settled => "done",
            Ok(_) => "pending",
            Err(PartnerError::Declined { .. }) => "declined",
            Err(PartnerError::Unavailable { .. }) => "unavailable",
            Err(PartnerError::Unknown { .. }) => "unknown",
            Err(PartnerError::Contradiction { .. }) => "contradiction",
        }
    }

    #[tokio::test]
    async fn walley_statuses_map_onto_the_port() {
        let simulator = Simulator::start("walley").await;
        let order = simulator
            .order(json!({ "amount": 10.00, "currency": "EUR" }))
            .await;
        let walley = walley::Walley::new(walley::Settings {
            base_url: simulator.url.clone(),
            client_id: "demo-client".into(),
            client_secret: Secret::new("demo-secret".into()),
            scope: String::new(),
            ca_pem: None,
            paths: walley::Paths::default(),
            store_id: None,
            country_code: "SE".into(),
        })
        .unwrap();
        let authorized = walley
            .send(&request(OperationKind::Authorization, &order, None))
            .await
            .unwrap();
        let capture = || PartnerRequest {
            amount: Amount::from_minor(1).unwrap(),
            ..request(OperationKind::Capture, &order, Some(&authorized.reference))
        };
        // Unfailed: accepted, processed later.
        assert_eq!(class(walley.send(&capture()).await), "pending");
        for (status, times, expected) in [
            (200, 1, "done"),
            (201, 1, "done"),
            (202, 1, "pending"),
            (409, 1, "pending"),
            (400, 1, "declined"),
            (422, 1, "declined"),
            // A 401 renews the token once; refused again, nothing was done.
            (401, 2, "unavailable"),
            (403, 1, "unavailable"),
            (404, 1, "unavailable"),
            (429, 1, "unavailable"),
            (503, 1, "unavailable"),
            (500, 1, "unknown"),
            (502, 1, "unknown"),
            (504, 1, "unknown"),
        ] {
            simulator.fail_next(status, times).await;
            assert_eq!(
                class(walley.send(&capture()).await),
                expected,
                "HTTP {status}"
            );
        }
        // Only the unfailed capture executed.
        assert_eq!(simulator.executed("capture").await.len(), 1);
    }

    #[tokio::test]
    async fn wepay_statuses_map_onto_the_port() {
        let simulator = Simulator::start("wepay").await;
        let card = simulator.card(json!({})).await;
        let wepay = wepay::Wepay::new(wepay::Settings {
            base_url: simulator.url.clone(),
            account_id: 1001,
            access_token: Secret::new("demo-token".into()),
            ca_pem: None,
        })
        .unwrap();
        let authorized = wepay
            .send(&request(OperationKind::Authorization, &card, None))
            .await
            .unwrap();
        let capture = || request(OperationKind::Capture, &card, Some(&authorized.reference));
        for (status, expected) in [
            (400, "declined"),
            (402, "declined"),
            (403, "declined"),
            (404, "declined"),
            (401, "unavailable"),
            (429, "unavailable"),
            (503, "unavailable"),
            (500, "unknown"),
            (502, "unknown"),
            (504, "unknown"),
        ] {
            simulator.fail_next(status, 1).await;
            assert_eq!(
                class(wepay.send(&capture()).await),
                expected,
                "HTTP {status}"
            );
        }
        assert!(simulator.executed("capture").await.is_empty());
        // Unfailed: captured; captured again, the state says it is done.
        assert_eq!(class(wepay.send(&capture()).await), "done");
        assert_eq!(class(wepay.send(&capture()).await), "done");
        assert_eq!(simulator.executed("capture").await.len(), 1);
    }
}
