//! Merchant webhooks: Standard Webhooks signatures (checked with the
//! maintained `standardwebhooks` verifier), retried until accepted,
//! deduplicated by id, bodies in the proto3 JSON mapping.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use payment_orchestrator::api::proto;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use super::support::harness::*;

/// The demo merchant's webhook secret (the embedded default).
pub const DEMO_WEBHOOK_SECRET: &str =
    "whsec_ZGVtby13ZWJob29rLXNpZ25pbmctc2VjcmV0LW5vdC1mb3ItcHJvZHVjdGlvbg==";

/// What a receiver does: check the signature with an off-the-shelf
/// Standard Webhooks verifier and the shared secret, then read the event.
pub fn verify(request: &wiremock::Request, secret: &str) -> serde_json::Value {
    let mut headers = http::HeaderMap::new();
    for (name, value) in &request.headers {
        headers.insert(name.clone(), value.clone());
    }
    standardwebhooks::Webhook::new(secret)
        .expect("a whsec_ secret")
        .verify(&request.body, &headers)
        .expect("a valid Standard Webhooks signature");
    serde_json::from_slice(&request.body).unwrap()
}

/// A MANUAL payment of `split`, its session's webhook at `url`, as
/// submitted.
async fn paid_with_webhook(
    server: &TestServer,
    url: String,
    split: Vec<proto::SplitLeg>,
) -> proto::Payment {
    let total = split.iter().map(|l| l.amount).sum();
    let session = open_session_with_webhook(server, total, Some(url)).await;
    submit(server, &session.id, split).await.unwrap()
}

/// A receiver at which every POST answers `status`.
async fn answering(status: u16) -> MockServer {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&receiver)
        .await;
    receiver
}

/// Two socks at 20.00 + 25 % tax: 50.00.
fn socks() -> proto::ItemLine {
    proto::ItemLine {
        sku_reference: "sku-1".into(),
        name: "Socks".into(),
        quantity: 2,
        unit_price: 2000,
        tax_rate: "25".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn webhooks_are_signed_retried_after_errors_and_processed_once() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&receiver)
        .await;

    let server = TestServer::start().await;
    let mut request = create_request(12000, proto::CaptureMode::Manual);
    request.webhook = Some(proto::Webhook {
        url: format!("{}/hooks", receiver.uri()),
        headers: BTreeMap::from([("X-Merchant-Token".into(), "t0k3n".into())]),
    });
    let session = server.sessions().opened(request).await;
    assert_eq!(
        session.webhook.unwrap().headers["X-Merchant-Token"],
        "<redacted>"
    );
    let split = vec![card(10000, "tok"), gift(2000, "tok")];
    let payment = submit(&server, &session.id, split).await.unwrap();
    let capture_id = captured(&server, capture(&payment, Some(5000)))
        .await
        .operation
        .id;

    // Deliveries are due at once; the first POST gets a 503.
    let report = server.resolve_after(Duration::ZERO).await;
    assert_eq!((report.delivered, report.retrying), (1, 1), "{report:?}");
    // Nothing is retried before its time; after a minute it is.
    assert_eq!(
        server.resolve_after(Duration::from_secs(30)).await.claimed,
        0
    );
    let report = server.resolve_after(Duration::from_secs(31)).await;
    assert_eq!(report.delivered, 1, "{report:?}");

    let received = receiver.received_requests().await.unwrap();
    assert_eq!(received.len(), 3);
    let mut processed = BTreeSet::new();
    let mut events = Vec::new();
    for request in &received {
        assert_eq!(request.headers.get("X-Merchant-Token").unwrap(), "t0k3n");
        let event = verify(request, DEMO_WEBHOOK_SECRET);
        let id = request.headers.get("webhook-id").unwrap().to_str().unwrap();
        assert_eq!(event["id"], id);
        if processed.insert(id.to_owned()) {
            events.push(event);
        }
    }
    assert_eq!(events.len(), 2, "two events, one delivered twice");
    let kinds: BTreeSet<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["data"]["operation"]["kind"].as_str().unwrap().into(),
                e["data"]["operation"]["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    // The spelling grpcurl shows.
    assert!(kinds.contains(&(
        "OPERATION_KIND_AUTHORIZATION".into(),
        "OPERATION_STATUS_SUCCESS".into()
    )));
    assert!(kinds.contains(&(
        "OPERATION_KIND_CAPTURE".into(),
        "OPERATION_STATUS_SUCCESS".into()
    )));
    let capture_event = events
        .iter()
        .find(|e| e["data"]["operation"]["kind"] == "OPERATION_KIND_CAPTURE")
        .unwrap();
    assert_eq!(capture_event["type"], "operation.final");
    assert_eq!(
        capture_event["data"]["operation"]["id"],
        capture_id.as_str()
    );
    assert_eq!(capture_event["data"]["paymentId"], payment.id.as_str());
    assert!(
        capture_event["data"]["operation"]["partnerTransactions"].is_array(),
        "{capture_event}"
    );
    // Delivered: nothing left to do.
    assert_eq!(
        server
            .resolve_after(Duration::from_secs(24 * 3600))
            .await
            .claimed,
        0
    );
}

#[tokio::test]
async fn item_lines_are_kept_on_the_operation_sent_in_webhooks_and_to_a_leg_taking_the_whole_amount()
 {
    let receiver = answering(200).await;
    let server = TestServer::start().await;
    let url = format!("{}/hooks", receiver.uri());
    let split = vec![card(10000, "tok"), gift(2000, "tok")];
    let payment = paid_with_webhook(&server, url, split).await;
    // Two socks, 50.00, all on the card.
    let request = proto::CaptureRequest {
        items: vec![socks()],
        priority: vec![rule("*", "creditcard")],
        ..capture(&payment, Some(5000))
    };
    let operation = captured(&server, request.clone()).await.operation;
    assert_eq!(legs_of(&operation).len(), 1, "{operation:?}");
    let expected = proto::ItemLine {
        net_amount: 4000,
        tax_amount: 1000,
        ..socks()
    };
    assert_eq!(operation.items, vec![expected.clone()]);
    // A replay and a read answer the same lines.
    let replay = captured(&server, request).await.operation;
    assert_eq!(replay.items, vec![expected]);
    assert_eq!(operation_now(&server, &operation.id).await.items.len(), 1);

    // The partner of the leg that took the whole amount got them.
    let sent = server.sandbox("ingenico").received();
    let capture_sent = sent
        .iter()
        .find(|r| r.kind == payment_orchestrator::domain::operation::OperationKind::Capture)
        .unwrap();
    assert_eq!(capture_sent.items.len(), 1);
    assert_eq!(capture_sent.items[0].tax_amount.minor(), 1000);

    server.resolve_after(Duration::ZERO).await;
    let events: Vec<serde_json::Value> = receiver
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| verify(r, DEMO_WEBHOOK_SECRET))
        .collect();
    let capture_event = events
        .iter()
        .find(|e| e["data"]["operation"]["kind"] == "OPERATION_KIND_CAPTURE")
        .expect("a capture event");
    let line = &capture_event["data"]["operation"]["items"][0];
    assert_eq!(line["skuReference"], "sku-1");
    assert_eq!(line["taxRate"], "25");
    assert_eq!(
        (line["netAmount"].as_str(), line["taxAmount"].as_str()),
        (Some("4000"), Some("1000"))
    );
}

#[tokio::test]
async fn session_item_lines_reach_the_authorization_of_a_leg_taking_the_whole_amount() {
    let server = TestServer::start().await;
    let mut request = create_request(5000, proto::CaptureMode::Manual);
    request.items = vec![socks()];
    let session = server.sessions().opened(request).await;
    assert_eq!(session.items[0].tax_amount, 1000);
    let payment = submit(&server, &session.id, vec![card(5000, "tok")])
        .await
        .unwrap();
    assert_eq!(payment.authorization.unwrap().items.len(), 1);
    let sent = server.sandbox("ingenico").received();
    assert_eq!(
        sent[0].kind,
        payment_orchestrator::domain::operation::OperationKind::Authorization
    );
    assert_eq!(sent[0].items.len(), 1);
    assert_eq!(sent[0].items[0].net_amount.minor(), 4000);
}

/// A merchant's endpoint that takes 10 s to answer ties up its own delivery
/// only: the delivery worker waits on it while the resolver settles another
/// merchant's pending capture at once.
#[tokio::test]
async fn a_slow_webhook_endpoint_does_not_delay_another_merchants_resolution() {
    let slow = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(10)))
        .mount(&slow)
        .await;
    let server = TestServer::start().await;
    let url = format!("{}/hooks", slow.uri());
    paid_with_webhook(&server, url, vec![card(12000, "tok")]).await;

    // The other merchant's capture is pending at its partner.
    let other_payment = authorized_as_other(&server, 5000, "capture=pending").await;
    let mut other = server.payments_as(Some(OTHER_KEY));
    let request = capture(&other_payment, Some(5000));
    let pending = other.captured(request).await.operation;
    assert_eq!(pending.status(), proto::OperationStatus::Pending);

    server.clock.advance(Duration::from_secs(60));
    let now = server.clock.now_time();
    let deliveries = server.deliveries.clone();
    let delivering = tokio::spawn(async move { deliveries.deliver_due(now).await });
    eventually("the delivery to reach the slow endpoint", async || {
        slow.received_requests().await.unwrap().len() == 1
    })
    .await;
    let started = std::time::Instant::now();
    let report = server.resolver.resolve_due(now).await;
    let took = started.elapsed();
    assert_eq!(report.finalized, 1, "{report:?}");
    assert!(took < Duration::from_secs(3), "resolution took {took:?}");
    assert!(
        !delivering.is_finished(),
        "the slow delivery is still waiting on its endpoint"
    );
    let resolved = other.operation(&pending.id).await;
    assert_eq!(resolved.status(), proto::OperationStatus::Success);
    // The slow endpoint got its delivery; with a 10 s timeout the attempt
    // counts as failed and is retried later.
    let delivered = delivering.await.unwrap();
    assert_eq!(delivered.claimed, 1, "{delivered:?}");
    assert_eq!(slow.received_requests().await.unwrap().len(), 1);
}

/// A delivery that fails every attempt is given up after the last one and
/// kept, with its last error; an operator lists it and sends it again.
#[tokio::test]
async fn a_given_up_delivery_is_kept_listed_and_redelivered_by_an_operator() {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(8)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&receiver)
        .await;
    let server = TestServer::start().await;
    let url = format!("{}/hooks?token=secret-in-query", receiver.uri());
    paid_with_webhook(&server, url, vec![card(12000, "tok")]).await;

    let mut admin = server.admin();
    let mut given_up = 0;
    assert_eq!(server.resolve_after(Duration::ZERO).await.retrying, 1);
    for pause in payment_orchestrator::webhooks::RETRY_SCHEDULE {
        let report = server.resolve_after(pause).await;
        given_up += report.given_up;
        assert_eq!(report.delivered, 0, "{report:?}");
    }
    assert_eq!(given_up, 1, "given up after the last attempt");
    assert_eq!(receiver.received_requests().await.unwrap().len(), 8);
    // Nothing more is attempted on its own.
    server.resolve_after(Duration::from_secs(2 * 86_400)).await;
    assert_eq!(receiver.received_requests().await.unwrap().len(), 8);

    let listed = admin
        .list_failed_webhooks(proto::ListFailedWebhooksRequest::default())
        .await
        .answer();
    assert_eq!(listed.webhooks.len(), 1, "{listed:?}");
    let failed = &listed.webhooks[0];
    assert_eq!(
        (
            failed.merchant.as_str(),
            failed.attempts,
            failed.last_error.as_str()
        ),
        ("demo", 8, "the receiver answered HTTP 500")
    );
    assert_eq!(failed.event_type, "operation.final");
    assert!(
        !failed.endpoint.contains("secret-in-query"),
        "{}",
        failed.endpoint
    );
    assert!(failed.given_up_at.is_some());
    // Another merchant's filter shows none of it.
    let other = admin
        .list_failed_webhooks(proto::ListFailedWebhooksRequest {
            merchant: "other".into(),
            ..Default::default()
        })
        .await
        .answer();
    assert!(other.webhooks.is_empty());
    // Merchants cannot list them.
    assert_eq!(
        server
            .admin_as(DEMO_KEY)
            .list_failed_webhooks(proto::ListFailedWebhooksRequest::default())
            .await
            .refusal()
            .code(),
        tonic::Code::PermissionDenied
    );

    let unknown = admin
        .redeliver_webhook(proto::RedeliverWebhookRequest {
            id: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .refusal();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let again = admin
        .redeliver_webhook(proto::RedeliverWebhookRequest {
            id: failed.id.clone(),
        })
        .await
        .answer();
    assert_eq!(again.attempts, 0);
    let report = server.resolve_after(Duration::ZERO).await;
    assert_eq!(report.delivered, 1, "{report:?}");
    assert!(
        admin
            .list_failed_webhooks(proto::ListFailedWebhooksRequest::default())
            .await
            .answer()
            .webhooks
            .is_empty()
    );
}

/// Rotation: with two active secrets every delivery carries two signatures,
/// so a receiver verifies with the old secret or the new one; a secret that
/// is not configured verifies nothing.
#[tokio::test]
async fn with_two_secrets_a_receiver_verifies_with_either() {
    const OLD: &str = "whsec_b2xkLXNlY3JldC1vZi10aGUtZGVtby1tZXJjaGFudC0wMDAx";
    const NEW: &str = "whsec_bmV3LXNlY3JldC1vZi10aGUtZGVtby1tZXJjaGFudC0wMDAy";
    let receiver = answering(204).await;
    let secrets = format!("demo:{OLD},demo:{NEW}");
    let server = TestServer::start_with(&["--webhook-secrets", &secrets]).await;
    let url = format!("{}/hooks", receiver.uri());
    paid_with_webhook(&server, url, vec![card(5000, "tok")]).await;
    assert_eq!(server.resolve_after(Duration::ZERO).await.delivered, 1);
    let received = receiver.received_requests().await.unwrap();
    let delivery = &received[0];
    let signatures = delivery.headers.get("webhook-signature").unwrap();
    assert_eq!(
        signatures.to_str().unwrap().split(' ').count(),
        2,
        "{signatures:?}"
    );
    assert_eq!(verify(delivery, OLD)["type"], "operation.final");
    assert_eq!(verify(delivery, NEW)["type"], "operation.final");
    let mut headers = http::HeaderMap::new();
    for (name, value) in &delivery.headers {
        headers.insert(name.clone(), value.clone());
    }
    assert!(
        standardwebhooks::Webhook::new(DEMO_WEBHOOK_SECRET)
            .unwrap()
            .verify(&delivery.body, &headers)
            .is_err(),
        "a secret that is not configured does not verify"
    );
}

/// A merchant without a signing secret cannot ask for a webhook: its events
/// could never be signed, so every one would fail and be kept. The refusal
/// stores nothing, so the same key works once the webhook is left out.
#[tokio::test]
async fn a_webhook_of_a_merchant_without_a_signing_secret_is_refused_and_nothing_is_stored() {
    let server = TestServer::start().await;
    let mut sessions = server.sessions_as(Some(OTHER_KEY));
    let mut request = create_request(5000, proto::CaptureMode::Manual);
    request.webhook = Some(proto::Webhook {
        url: "http://127.0.0.1:9/hooks".into(),
        headers: Default::default(),
    });
    let refused = sessions.create_session(request.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason(&refused).as_deref(), Some("WEBHOOK_SECRET_MISSING"));
    assert!(
        refused.message().contains("--webhook-secrets"),
        "{refused:?}"
    );
    let listed = sessions
        .list_sessions(proto::ListSessionsRequest::default())
        .await
        .answer();
    assert!(listed.sessions.is_empty(), "{listed:?}");
    // The same key without the webhook: a session.
    request.webhook = None;
    let session = sessions.opened(request).await;
    assert_eq!(session.amount, 5000);
    // The demo merchant has a secret: its webhook is taken.
    open_session_with_webhook(&server, 5000, Some("http://127.0.0.1:9/hooks".into())).await;
}

/// Pays `amount` with a webhook to `receiver` (which refuses everything)
/// and steps the delivery worker through every retry: given up.
async fn given_up_delivery(server: &TestServer, receiver: &MockServer, token: &str) {
    let url = format!("{}/hooks", receiver.uri());
    paid_with_webhook(server, url, vec![card(1000, token)]).await;
    let mut given_up = server.resolve_after(Duration::ZERO).await.given_up;
    for pause in payment_orchestrator::webhooks::RETRY_SCHEDULE {
        given_up += server.resolve_after(pause).await.given_up;
    }
    assert_eq!(given_up, 1);
}

async fn failed_ids(server: &TestServer) -> Vec<String> {
    let request = proto::ListFailedWebhooksRequest::default();
    let failed = server.admin().list_failed_webhooks(request).await.answer();
    failed.webhooks.into_iter().map(|w| w.id).collect()
}

fn purge(
    merchant: &str,
    before: Option<std::time::SystemTime>,
) -> proto::PurgeFailedWebhooksRequest {
    proto::PurgeFailedWebhooksRequest {
        merchant: merchant.into(),
        given_up_before: before.map(Into::into),
    }
}

/// Given-up deliveries do not pile up: an operator purges them by age (and
/// merchant), and the worker deletes them after their retention.
#[tokio::test]
async fn given_up_deliveries_are_purged_by_an_operator_and_expire_after_their_retention() {
    let receiver = answering(500).await;
    let server = TestServer::start().await;
    let mut admin = server.admin();
    given_up_delivery(&server, &receiver, "tok-1").await;
    assert_eq!(failed_ids(&server).await.len(), 1);
    // Refused without an instant; another merchant's or an earlier instant
    // deletes nothing; now deletes it.
    let refused = admin.purge_failed_webhooks(purge("", None)).await.refusal();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let now = server.clock.now_time();
    let purged = |answer: Result<
        tonic::Response<proto::PurgeFailedWebhooksResponse>,
        tonic::Status,
    >| { answer.expect("purged").into_inner().purged };
    assert_eq!(
        purged(admin.purge_failed_webhooks(purge("other", Some(now))).await),
        0
    );
    let earlier = now - Duration::from_secs(86_400);
    assert_eq!(
        purged(
            admin
                .purge_failed_webhooks(purge("demo", Some(earlier)))
                .await
        ),
        0
    );
    let later = now + Duration::from_secs(1);
    assert_eq!(
        purged(
            admin
                .purge_failed_webhooks(purge("demo", Some(later)))
                .await
        ),
        1
    );
    assert!(failed_ids(&server).await.is_empty());
    // Merchants cannot purge.
    let denied = server
        .admin_as(DEMO_KEY)
        .purge_failed_webhooks(purge("", Some(now)))
        .await
        .refusal();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    // Kept for 30 days, then deleted by the worker.
    given_up_delivery(&server, &receiver, "tok-2").await;
    let report = server.resolve_after(Duration::from_secs(29 * 86_400)).await;
    assert_eq!((report.purged, failed_ids(&server).await.len()), (0, 1));
    let report = server.resolve_after(Duration::from_secs(2 * 86_400)).await;
    assert_eq!((report.purged, failed_ids(&server).await.len()), (1, 0));
}

/// One merchant keeps at most its cap of given-up deliveries: the newest.
#[tokio::test]
async fn a_merchant_keeps_at_most_its_cap_of_given_up_deliveries() {
    let receiver = answering(500).await;
    let server = TestServer::start_with(&["--max-failed-webhooks-per-merchant", "1"]).await;
    given_up_delivery(&server, &receiver, "tok-1").await;
    let first = failed_ids(&server).await;
    given_up_delivery(&server, &receiver, "tok-2").await;
    // The sweep after the second was given up keeps the newest only.
    server.resolve_after(Duration::from_secs(3600)).await;
    let kept = failed_ids(&server).await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_ne!(kept, first);
}
