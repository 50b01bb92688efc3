//! One merchant cannot starve another: its WaitOperation calls are capped
//! and hold no in-flight slots, its calls in flight are capped beside the
//! global limit, and a payment takes a bounded number of operations.

use std::time::{Duration, Instant};

use payment_orchestrator::api::proto::{self, payment_service_client::PaymentServiceClient};
use tonic::transport::Channel;

use payment_orchestrator::domain::operation::OperationKind;

use super::{support::harness::*, support::redis_server::RedisServer};

fn wait_for(id: &str, seconds: i64) -> proto::WaitOperationRequest {
    proto::WaitOperationRequest {
        operation_id: id.to_owned(),
        timeout: Some(prost_types::Duration { seconds, nanos: 0 }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchants_1100_waiters_do_not_stop_another_merchants_captures() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "capture=pending", "tok").await;
    let pending = card_capture(&server, &payment, 3000).await.operation;
    assert_eq!(pending.status(), proto::OperationStatus::Pending);

    // 1 100 calls on 11 connections (HTTP/2 caps streams per connection).
    let mut channels = Vec::new();
    for _ in 0..11 {
        channels.push(
            Channel::from_shared(format!("http://{}", server.address))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    let mut waits = Vec::new();
    for i in 0..1100 {
        let mut client = PaymentServiceClient::with_interceptor(
            channels[i % channels.len()].clone(),
            Bearer::new(DEMO_KEY),
        );
        let request = wait_for(&pending.id, 50);
        waits.push(tokio::spawn(
            async move { client.wait_operation(request).await },
        ));
    }
    // They have all arrived once the 100 beyond the cap are refused.
    eventually("the waiters beyond the cap to be refused", async || {
        waits.iter().filter(|wait| wait.is_finished()).count() >= 100
    })
    .await;

    // Meanwhile the other merchant captures, again and again.
    for _ in 0..20 {
        let theirs = authorized_as_other(&server, 1000, "tok").await;
        let captured = server
            .payments_as(Some(OTHER_KEY))
            .captured(capture(&theirs, None))
            .await;
        assert_eq!(captured.operation.status(), proto::OperationStatus::Success);
    }

    // The pending capture settles: its waiters are woken by the notice, not
    // by a timeout.
    let settled = Instant::now();
    server.resolve_after(Duration::from_secs(2)).await;
    let (mut succeeded, mut refused) = (0, 0);
    for wait in waits {
        match wait.await.unwrap() {
            Ok(operation) => {
                assert_eq!(
                    operation.into_inner().status(),
                    proto::OperationStatus::Success
                );
                succeeded += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                assert_eq!(reason(&status).as_deref(), Some("TOO_MANY_WAITERS"));
                refused += 1;
            }
        }
    }
    let took = settled.elapsed();
    assert_eq!((succeeded, refused), (1000, 100));
    assert!(took < Duration::from_secs(4), "woken after {took:?}");
}

#[tokio::test]
async fn the_operation_beyond_the_maximum_on_a_payment_is_refused() {
    let server = TestServer::start_with(&["--max-operations-per-payment", "1000"]).await;
    let payment = authorized(&server, vec![card(100_000, "tok")]).await;
    // The authorization is the first; 999 captures of 1 make 1 000.
    let mut client = server.payments();
    for _ in 0..999 {
        client.capture(capture(&payment, Some(1))).await.unwrap();
    }
    let refused = client.capture(capture(&payment, Some(1))).await.refusal();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason(&refused).as_deref(), Some("TOO_MANY_OPERATIONS"));
    let now = payment_now(&server, &payment.id).await;
    assert_eq!(amounts(&now).total_captured, 999, "nothing more taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_merchant_over_its_in_flight_limit_is_shed_and_another_is_not() {
    let server = TestServer::start_with(&["--max-in-flight-per-merchant", "1"]).await;
    // A call that holds its slot: an authorization whose partner takes 2 s.
    let session = open_session(&server, 5000, proto::CaptureMode::Manual).await;
    let slow = tokio::spawn({
        let mut sessions = server.sessions();
        async move {
            sessions
                .submit_session(proto::SubmitSessionRequest {
                    session_id: session.id,
                    idempotency_key: new_key(),
                    split: vec![card(5000, "latency=2s")],
                })
                .await
        }
    });
    eventually("the slow authorization to reach its partner", async || {
        let ingenico = server.sandbox("ingenico");
        ingenico.arrivals(OperationKind::Authorization) == 1
    })
    .await;
    let request = create_request(100, proto::CaptureMode::Manual);
    let shed = server.sessions().create_session(request).await.refusal();
    assert_eq!(shed.code(), tonic::Code::ResourceExhausted);
    assert_eq!(reason(&shed).as_deref(), Some("MERCHANT_IN_FLIGHT_LIMIT"));
    server
        .sessions_as(Some(OTHER_KEY))
        .create_session(create_request(100, proto::CaptureMode::Manual))
        .await
        .expect("another merchant is not shed");
    slow.await.unwrap().expect("the slow call finishes");
}

/// On Redis, a waiter on one replica is woken by the notice of a capture
/// settled by another replica's resolver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_is_woken_by_a_final_status_written_on_another_replica() {
    let redis = RedisServer::start();
    let url = redis.url();
    let a = TestServer::start_with(&["--redis-url", &url]).await;
    let b = TestServer::start_on(&["--redis-url", &url], a.clock.clone(), None).await;
    let payment = card_and_gift(&a, "capture=pending", "tok").await;
    let pending = card_capture(&a, &payment, 3000).await.operation;
    let mut waiter = a.payments();
    let id = pending.id.clone();
    let wait = tokio::spawn(async move { waiter.wait_operation(wait_for(&id, 30)).await });
    // Nothing outside the server shows the waiter registered: half a second
    // for the call to arrive before the capture is settled.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let settled = Instant::now();
    a.clock.advance(Duration::from_secs(2));
    let report = b.resolver.resolve_due(b.clock.now_time()).await;
    assert_eq!(report.finalized, 1, "{report:?}");
    let operation = wait.await.unwrap().unwrap().into_inner();
    // Final, whichever way: each in-process replica has its own sandbox
    // ledger, so b's lookup does not find a's capture (what is shown here
    // is the wake-up, not the outcome).
    assert_ne!(operation.status(), proto::OperationStatus::Pending);
    let took = settled.elapsed();
    // The waiters' safety re-read is 5 s away: this was the notice.
    assert!(took < Duration::from_secs(2), "woken after {took:?}");
}

/// Two replicas on one Redis, the second's clock 90 s ahead. While the
/// first works a capture (its partner takes 2 s) and while its resolver
/// works a pending one, the second may find them due by its clock — but it
/// sends nothing the first holds: send claims live by Redis's clock, not by
/// either replica's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_clock_is_90s_ahead_executes_nothing_twice() {
    let redis = RedisServer::start();
    let url = redis.url();
    let a = TestServer::start_with(&["--redis-url", &url]).await;
    let b = TestServer::start_on(
        &["--redis-url", &url],
        payment_orchestrator::clock::ManualClock::new(a.clock.now_time() + Duration::from_secs(90)),
        None,
    )
    .await;
    let ahead = || b.clock.now_time();

    // A request in flight on A.
    let payment = card_and_gift(&a, "latency=2s", "tok").await;
    let mut client = a.payments();
    let request = proto::CaptureRequest {
        priority: vec![rule("*", "creditcard")],
        ..capture(&payment, Some(3000))
    };
    let in_flight = tokio::spawn(async move { client.captured(request).await });
    eventually("A's capture to reach its partner", async || {
        a.sandbox("ingenico").arrivals(OperationKind::Capture) == 1
    })
    .await;
    let report = b.resolver.resolve_due(ahead()).await;
    assert_eq!(
        report.finalized, 0,
        "B settled A's running capture: {report:?}"
    );
    let captured = in_flight.await.unwrap();
    assert_eq!(captured.operation.status(), proto::OperationStatus::Success);
    // B found A's capture due by its clock, and could only look it up.
    assert_eq!(b.sent("ingenico", OperationKind::Capture), 0);

    // A's resolver at work on a pending capture (its lookup takes 2 s):
    // B, 90 s ahead, finds it due but A holds its work lease.
    let pending_payment = card_and_gift(&a, "capture=pending,lookup_latency=2s", "tok").await;
    let pending = card_capture(&a, &pending_payment, 3000).await.operation;
    assert_eq!(pending.status(), proto::OperationStatus::Pending);
    a.clock.advance(Duration::from_secs(5));
    let resolver = a.resolver.clone();
    let now = a.clock.now_time();
    let resolving = tokio::spawn(async move { resolver.resolve_due(now).await });
    // Nothing outside A shows its resolver at work on the item: half a
    // second for it to claim the item and start its 2 s lookup.
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.clock.advance(Duration::from_secs(5));
    b.resolver.resolve_due(ahead()).await;
    let report = resolving.await.unwrap();
    assert_eq!(report.finalized, 1, "{report:?}");

    assert_eq!(a.sent("ingenico", OperationKind::Capture), 2);
    let settled = operation_now(&a, &pending.id).await;
    assert_eq!(settled.status(), proto::OperationStatus::Success);
    // B sent nothing at all: what it found due, someone else held.
    assert!(b.sandbox("ingenico").received().is_empty());
    assert!(b.sandbox("illicado").received().is_empty());
}
