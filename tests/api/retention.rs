//! `--payment-retention`: a payment with nothing open is forgotten, with
//! everything it wrote, once its retention has passed after its last change;
//! one that still holds money is kept until it is finished and its retention
//! has passed again.

use std::{collections::BTreeSet, time::Duration};

use payment_orchestrator::api::proto;

use super::support::{
    harness::*,
    redis_server::{RedisServer, redis_cli},
};

/// Every key of the private Redis, but the instrument bindings (a payer's,
/// not a payment's: kept, see `docs/decisions.md`).
fn keys(port: u16) -> BTreeSet<String> {
    redis_cli(port, &["--scan"])
        .unwrap_or_default()
        .lines()
        .filter(|key| !key.starts_with("po:{tok:"))
        .map(str::to_owned)
        .collect()
}

/// Every member or field of every sorted set and hash, as text (binary
/// fields in their hex form too).
fn contents(port: u16) -> String {
    let mut all = String::new();
    for key in keys(port) {
        let kind = redis_cli(port, &["TYPE", &key]).unwrap_or_default();
        let read = match kind.trim() {
            "zset" => redis_cli(port, &["ZRANGE", &key, "0", "-1"]),
            "hash" => redis_cli(port, &["--no-raw", "HKEYS", &key]),
            _ => None,
        };
        all.push_str(&read.unwrap_or_default());
    }
    all
}

/// An operation id as Redis shows a 16-byte field (`--no-raw` escapes).
fn escaped_bytes(id: &str) -> String {
    let id = uuid::Uuid::parse_str(id).unwrap();
    id.as_bytes()
        .iter()
        .map(|byte| match byte {
            b' '..=b'~' if *byte != b'"' && *byte != b'\\' => (*byte as char).to_string(),
            _ => format!("\\x{byte:02x}"),
        })
        .collect()
}

async fn payment_found(server: &TestServer, id: &str) -> Result<proto::Payment, tonic::Code> {
    server
        .payments()
        .get_payment(proto::GetPaymentRequest {
            payment_id: id.into(),
        })
        .await
        .map(|answer| answer.into_inner())
        .map_err(|status| status.code())
}

async fn listed(server: &TestServer) -> Vec<String> {
    listed_payments(server, proto::ListPaymentsRequest::default()).await
}

/// Waits until Redis's clock has run out every idempotency record.
async fn records_expired(port: u16) {
    eventually("the idempotency records to expire", async || {
        !keys(port).iter().any(|key| key.contains(":k:"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_a_finished_payment_and_every_key_it_wrote_go_after_its_retention_and_an_open_one_stays()
 {
    let redis = RedisServer::start();
    let port = redis.port;
    let server = TestServer::start_with(&[
        "--redis-url",
        &redis.url(),
        "--payment-retention",
        "2s",
        "--idempotency-ttl",
        "1s",
    ])
    .await;
    let before = keys(port);
    // Open: its authorization still holds money.
    let open = authorized(&server, vec![card(12000, "tok-open")]).await;
    let with_open = keys(port);
    // Finished: captured whole.
    let done = authorized(&server, vec![card(5000, "tok-done")]).await;
    let capture = captured(&server, capture(&done, None)).await;
    assert_eq!(capture.payment.state(), proto::PaymentState::Captured);
    let done = payment_now(&server, &done.id).await;
    let with_both = keys(port);
    assert!(with_both.len() > with_open.len(), "{with_both:?}");
    // The idempotency records run out by Redis's clock (1 s).
    records_expired(port).await;

    // Both retentions have passed by the service's clock.
    server.resolve_after(Duration::from_secs(3)).await;

    assert_eq!(
        payment_found(&server, &done.id).await,
        Err(tonic::Code::NotFound)
    );
    assert!(payment_found(&server, &open.id).await.is_ok());
    assert_eq!(listed(&server).await, vec![open.id.clone()]);
    // Every key left is the open payment's (its idempotency records ran out).
    let left = keys(port);
    let open_keys: BTreeSet<String> = with_open
        .iter()
        .filter(|key| !key.contains(":k:"))
        .cloned()
        .collect();
    eprintln!(
        "keys: {} before, {} with the open payment, {} with both, {} after retention",
        before.len(),
        with_open.len(),
        with_both.len(),
        left.len()
    );
    assert_eq!(left, open_keys);
    // And no shared key (operation index, due-queue, listings) names it.
    let contents = contents(port);
    let mut names = vec![done.id.clone(), done.session_id.clone()];
    let payment = &done;
    let operations = payment.authorization.iter().chain(&payment.captures);
    names.extend(operations.map(|op| op.id.clone()));
    assert_eq!(names.len(), 4);
    for name in &names {
        assert!(
            !contents.contains(name.as_str()),
            "{name} left in {contents}"
        );
        assert!(!contents.contains(&escaped_bytes(name)), "{name} left");
    }

    // Once the open one is finished, its retention ends it too.
    voided(&server, void(&open, None)).await;
    server.resolve_after(Duration::from_secs(1)).await;
    assert!(
        payment_found(&server, &open.id).await.is_ok(),
        "kept 2 s after its void"
    );
    records_expired(port).await;
    server.resolve_after(Duration::from_secs(2)).await;
    assert_eq!(
        payment_found(&server, &open.id).await,
        Err(tonic::Code::NotFound)
    );
    assert_eq!(keys(port), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_forgets_a_finished_payment_after_its_retention() {
    let server =
        TestServer::start_with(&["--payment-retention", "1h", "--idempotency-ttl", "1h"]).await;
    let open = authorized(&server, vec![card(12000, "tok-open")]).await;
    let done = authorized(&server, vec![card(5000, "tok-done")]).await;
    captured(&server, capture(&done, None)).await;
    server.resolve_after(Duration::from_secs(1800)).await;
    assert!(
        payment_found(&server, &done.id).await.is_ok(),
        "half its retention"
    );
    server.resolve_after(Duration::from_secs(1801)).await;
    assert_eq!(
        payment_found(&server, &done.id).await,
        Err(tonic::Code::NotFound)
    );
    assert!(payment_found(&server, &open.id).await.is_ok());
    assert_eq!(listed(&server).await, vec![open.id.clone()]);
    let session = server
        .sessions()
        .get_session(proto::GetSessionRequest {
            session_id: done.session_id.clone(),
        })
        .await
        .refusal();
    assert_eq!(session.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn a_retention_of_zero_shorter_than_the_idempotency_ttl_or_beyond_a_century_is_refused() {
    let load = |args: &[&str]| {
        let all = ["payment-orchestrator"].iter().chain(args);
        payment_orchestrator::config::Config::load_from(all.map(Into::into).collect())
    };
    let refused = load(&["--payment-retention", "1h"]).unwrap_err();
    assert!(
        refused.to_string().contains("payment_retention"),
        "{refused}"
    );
    // Zero is no retention (and would keep the sandbox's sweep going).
    let zero = load(&["--payment-retention", "0s", "--idempotency-ttl", "0s"]).unwrap_err();
    assert!(zero.to_string().contains("payment_retention"), "{zero}");
    // Times beyond it would not add up.
    let endless = load(&["--payment-retention", "1000000d"]).unwrap_err();
    assert!(endless.to_string().contains("100 years"), "{endless}");
    assert!(load(&["--payment-retention", "3650d"]).is_ok());
}

/// A declined attempt is finished, but its session goes on (the shopper
/// tries again): retention forgets the declined payment and keeps the
/// session and the payment that followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_attempt_is_forgotten_but_its_session_stays_with_the_next_payment() {
    let server =
        TestServer::start_with(&["--payment-retention", "1h", "--idempotency-ttl", "1h"]).await;
    let session = open_session(&server, 12000, proto::CaptureMode::Manual).await;
    let declined = submit(&server, &session.id, vec![card(12000, "authorize=decline")])
        .await
        .expect("submitted");
    assert_eq!(declined.state(), proto::PaymentState::Failed);
    let next = submit(&server, &session.id, vec![card(12000, "tok")])
        .await
        .expect("submitted again");
    assert_eq!(next.state(), proto::PaymentState::Authorized);
    server.resolve_after(Duration::from_secs(3601)).await;
    assert_eq!(
        payment_found(&server, &declined.id).await,
        Err(tonic::Code::NotFound)
    );
    assert!(payment_found(&server, &next.id).await.is_ok());
    let kept = server
        .sessions()
        .get_session(proto::GetSessionRequest {
            session_id: session.id.clone(),
        })
        .await
        .answer();
    assert_eq!(kept.payment_id, next.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_stays_its_merchants_after_the_payment_that_authorized_it_is_forgotten() {
    let server =
        TestServer::start_with(&["--payment-retention", "1h", "--idempotency-ttl", "1h"]).await;
    // Used once, the claim names the payment; it is confirmed only when the
    // payment is forgotten.
    let done = authorized(&server, vec![card(5000, "tok-once")]).await;
    captured(&server, capture(&done, None)).await;
    server.resolve_after(Duration::from_secs(3601)).await;
    assert_eq!(
        payment_found(&server, &done.id).await,
        Err(tonic::Code::NotFound)
    );

    let mut theirs = server.sessions_as(Some(OTHER_KEY));
    let session = theirs
        .opened(create_request(5000, proto::CaptureMode::Manual))
        .await;
    let refused = theirs
        .try_submit(&session.id, vec![card(5000, "tok-once")])
        .await;
    let status = refused.expect_err("another merchant's card is refused");
    assert_eq!(
        reason(&status).as_deref(),
        Some("PAYMENT_TOKEN_IN_USE"),
        "{status:?}"
    );
    // Its own merchant still pays with it.
    authorized(&server, vec![card(5000, "tok-once")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_whose_partner_contradicted_it_is_kept_for_the_retention_after_the_flag() {
    let server =
        TestServer::start_with(&["--payment-retention", "1h", "--idempotency-ttl", "1h"]).await;
    let payment = authorized(
        &server,
        vec![card(3000, "capture=pending,pending_lookups=1000000")],
    )
    .await;
    let operation = captured(&server, capture(&payment, None)).await.operation;
    let mut partner =
        proto::partner_event_service_client::PartnerEventServiceClient::with_interceptor(
            server.channel(),
            Bearer::new("sk_test_partner"),
        );
    let event = |event_id: &str, outcome| ingenico_capture_event(&operation, event_id, outcome);
    let succeeded = event("evt-1", proto::PartnerEventOutcome::Succeeded);
    partner.notify_partner_event(succeeded).await.answer();
    // Half the retention later, the partner says the capture failed.
    server.resolve_after(Duration::from_secs(1800)).await;
    let declined = event("evt-2", proto::PartnerEventOutcome::Declined);
    partner.notify_partner_event(declined).await.answer();
    assert!(operation_now(&server, &operation.id).await.requires_review);

    server.resolve_after(Duration::from_secs(1801)).await;
    assert!(
        payment_found(&server, &payment.id).await.is_ok(),
        "the flag is half an hour old"
    );
    server.resolve_after(Duration::from_secs(1800)).await;
    assert_eq!(
        payment_found(&server, &payment.id).await,
        Err(tonic::Code::NotFound)
    );
}
