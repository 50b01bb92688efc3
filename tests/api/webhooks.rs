//! Merchant webhooks: signed, retried until accepted, deduplicated by id.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use hmac::{Hmac, Mac};
use payment_orchestrator::api::proto;
use sha2::Sha256;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

use super::harness::*;

/// What a receiver does: check the signature with the shared secret, then
/// process each event id once.
fn verify(request: &wiremock::Request, secret: &str) -> serde_json::Value {
    let header = request
        .headers
        .get("Payment-Orchestrator-Signature")
        .and_then(|v| v.to_str().ok())
        .expect("signed");
    let parts: BTreeMap<&str, &str> = header
        .split(',')
        .filter_map(|p| p.split_once('='))
        .collect();
    let body = std::str::from_utf8(&request.body).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{}.{body}", parts["t"]).as_bytes());
    assert_eq!(
        hex::encode(mac.finalize().into_bytes()),
        parts["v1"],
        "bad signature"
    );
    serde_json::from_str(body).unwrap()
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
    let session = server
        .sessions()
        .create_session(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        session.webhook.unwrap().headers["X-Merchant-Token"],
        "<redacted>"
    );
    let payment = submit(
        &server,
        &session.id,
        vec![card(10000, "tok"), gift(2000, "tok")],
    )
    .await
    .unwrap();
    let capture = server
        .payments()
        .capture(capture(&payment, Some(5000)))
        .await
        .unwrap()
        .into_inner();
    let capture_id = capture.operation.unwrap().id;

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
        let event = verify(request, "whsec_demo");
        if processed.insert(event["id"].as_str().unwrap().to_owned()) {
            events.push(event);
        }
    }
    assert_eq!(events.len(), 2, "two events, one delivered twice");
    let kinds: BTreeSet<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["operation"]["kind"].as_str().unwrap().into(),
                e["operation"]["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(kinds.contains(&("AUTHORIZATION".into(), "SUCCESS".into())));
    assert!(kinds.contains(&("CAPTURE".into(), "SUCCESS".into())));
    let capture_event = events
        .iter()
        .find(|e| e["operation"]["kind"] == "CAPTURE")
        .unwrap();
    assert_eq!(capture_event["type"], "operation.final");
    assert_eq!(capture_event["operation"]["id"], capture_id.as_str());
    assert_eq!(capture_event["payment_id"], payment.id.as_str());
    // Delivered: nothing left to do.
    assert_eq!(
        server
            .resolve_after(Duration::from_secs(24 * 3600))
            .await
            .claimed,
        0
    );
}
