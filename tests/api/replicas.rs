//! Three orchestrator processes on one Redis (or Redis Cluster) and one
//! sandbox partner server: idempotency and the money invariants hold across
//! replicas, checked in the payments and on the partner's ledger.

use std::time::{Duration, Instant};

use payment_orchestrator::api::proto::{self, OperationStatus};
use prost::Message;
use rand::{Rng, SeedableRng, rngs::StdRng};
use tonic::Code;
use tonic_types::StatusExt;

use super::support::{
    deployment::{Deployment, Redis},
    harness::*,
    redis_server::{RedisCluster, RedisServer, redis_cli},
    waits::{retried, retried_on},
};

async fn single() -> Redis {
    Redis::Single(RedisServer::start())
}

async fn cluster() -> Redis {
    Redis::Cluster(
        tokio::task::spawn_blocking(RedisCluster::start)
            .await
            .expect("cluster"),
    )
}

async fn one_key_is_one_partner_capture(redis: Redis) {
    let deployment = Deployment::start(redis, 3).await;
    // Partner latency keeps the first capture in flight while duplicates arrive.
    let payment = deployment
        .authorized(0, vec![card(12000, "latency=50ms")])
        .await;
    let request = capture(&payment, Some(5000));
    let calls = (0..200).map(|i| {
        let mut payments = deployment.payments(i);
        let request = request.clone();
        async move { payments.capture(request).await }
    });
    let (answers, in_progress) = answered_or_in_progress(concurrently(calls).await);
    let responses: Vec<_> = answers.iter().map(Message::encode_to_vec).collect();
    assert!(!responses.is_empty());
    assert!(
        responses.iter().all(|r| *r == responses[0]),
        "responses differ"
    );
    let ledger = deployment.ledger("ingenico").await;
    let captures: Vec<_> = ledger
        .received
        .iter()
        .filter(|r| r.kind == "capture")
        .collect();
    assert_eq!(captures.len(), 1, "partner captures: {captures:?}");
    assert_eq!(captures[0].amount, 5000);
    eprintln!(
        "200 identical captures: {} answered, {in_progress} REQUEST_IN_PROGRESS",
        responses.len()
    );

    // Later, every replica replays it byte for byte.
    for replica in 0..3 {
        let replay = deployment
            .payments(replica)
            .capture(request.clone())
            .await
            .unwrap();
        assert_eq!(replay.into_inner().encode_to_vec(), responses[0]);
    }
    let ledger = deployment.ledger("ingenico").await;
    assert_eq!(
        ledger
            .received
            .iter()
            .filter(|r| r.kind == "capture")
            .count(),
        1
    );
}

async fn racing_operations_keep_the_invariants(redis: Redis, rounds: u64) {
    let deployment = Deployment::start(redis, 3).await;
    for seed in 0..rounds {
        let mut rng = StdRng::seed_from_u64(seed);
        let split = vec![card(10000, "latency=3ms"), gift(2000, "latency=3ms")];
        let payment = deployment.authorized(seed as usize, split).await;
        // Some money is captured first so that refunds have something to race for.
        deployment
            .payments(0)
            .captured(capture(&payment, Some(4000)))
            .await;
        let calls: Vec<_> = (0..30)
            .map(|i| {
                let amount = Some(rng.random_range(100..3000));
                let kind = rng.random_range(0..3);
                let mut payments = deployment.payments(i);
                let payment = payment.clone();
                async move {
                    match kind {
                        0 => payments.capture(capture(&payment, amount)).await,
                        1 => payments.void(void(&payment, amount)).await,
                        _ => payments.refund(refund(&payment, amount)).await,
                    }
                }
            })
            .collect();
        for result in concurrently(calls).await {
            match result {
                // No leg is ever declined by the partner: the orchestrator
                // never asks a partner for more than the leg has.
                Ok(result) => {
                    let operation = Done::from(result).operation;
                    assert_eq!(
                        operation.status(),
                        OperationStatus::Success,
                        "seed {seed}: {operation:#?}"
                    );
                }
                Err(status) => {
                    let reason = reason(&status);
                    assert!(
                        matches!(
                            reason.as_deref(),
                            Some("AMOUNT_EXCEEDS_AVAILABLE" | "NOTHING_AVAILABLE")
                        ),
                        "seed {seed}: {status:?}"
                    );
                }
            }
        }
        let payment = deployment
            .payments(seed as usize + 2)
            .payment(&payment.id)
            .await;
        let a = amounts(&payment);
        assert_eq!(
            (a.capture_pending, a.refund_pending, a.void_pending),
            (0, 0, 0)
        );
        assert!(
            a.total_captured + a.total_voided <= a.total_authorized,
            "seed {seed}: {a:?}"
        );
        assert!(a.total_refunded <= a.total_captured, "seed {seed}: {a:?}");
        // The partner's books agree with the payment, leg by leg.
        for (partner, leg) in [("ingenico", 0usize), ("illicado", 1)] {
            let reference = payment.authorization.as_ref().unwrap().partner_transactions[leg]
                .partner_reference
                .clone();
            let ledger = deployment.ledger(partner).await;
            let totals = ledger
                .authorizations
                .iter()
                .find(|t| t.reference == reference)
                .unwrap();
            assert!(
                totals.captured + totals.voided <= totals.authorized,
                "seed {seed}: {totals:?}"
            );
            assert!(
                totals.refunded <= totals.captured,
                "seed {seed}: {totals:?}"
            );
            let booked = |ops: &[proto::Operation]| -> i64 {
                ops.iter()
                    .flat_map(|op| &op.partner_transactions)
                    .filter(|tx| tx.partner == partner && tx.status() == OperationStatus::Success)
                    .map(|tx| tx.amount)
                    .sum()
            };
            assert_eq!(
                (
                    booked(&payment.captures),
                    booked(&payment.refunds),
                    booked(&payment.voids)
                ),
                (totals.captured, totals.refunded, totals.voided),
                "seed {seed}: {partner}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_created_on_one_replica_is_operable_on_the_others() {
    let deployment = Deployment::start(single().await, 3).await;
    let split = vec![card(10000, "tok"), gift(2000, "tok")];
    let payment = deployment.authorized(0, split).await;
    let captured = deployment
        .payments(2)
        .captured(capture(&payment, Some(5000)))
        .await;
    let expected = succeeded(&[("illicado", 2000), ("ingenico", 3000)]);
    assert_eq!(legs_of(&captured.operation), expected);
    for replica in 0..3 {
        let read = deployment.payments(replica).payment(&payment.id).await;
        assert_eq!(amounts(&read).total_captured, 5000);
    }
    let listed = deployment
        .payments(1)
        .list_payments(proto::ListPaymentsRequest {
            order_reference: "order-1001".into(),
            ..Default::default()
        })
        .await
        .answer();
    assert_eq!(listed.payments.len(), 1);
    assert_eq!(listed.payments[0].id, payment.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_identical_captures_across_replicas_are_one_partner_capture() {
    one_key_is_one_partner_capture(single().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_captures_voids_and_refunds_across_replicas_never_break_the_invariants() {
    racing_operations_keep_the_invariants(single().await, 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_cluster_one_key_is_one_partner_capture() {
    one_key_is_one_partner_capture(cluster().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_cluster_racing_operations_never_break_the_invariants() {
    racing_operations_keep_the_invariants(cluster().await, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_fast_with_unavailable_and_recovers() {
    let mut deployment = Deployment::start(Redis::Single(RedisServer::start_persistent()), 1).await;
    let split = vec![card(10000, "tok"), gift(2000, "tok")];
    let payment = deployment.authorized(0, split).await;
    deployment
        .payments(0)
        .captured(capture(&payment, Some(100)))
        .await;

    deployment.redis.server().stop();
    for attempt in 0..5 {
        let started = Instant::now();
        let error = deployment
            .payments(0)
            .capture(capture(&payment, Some(100)))
            .await
            .refusal();
        let took = started.elapsed();
        // The first capture opens on the header this replica holds: its
        // write is the first to find the connection gone, and a write whose
        // connection dropped may have run — in progress, retry with the key
        // (it did not run: Redis was down). Then the connection is refused
        // before anything is sent: unavailable.
        let expected = match attempt {
            0 if error.code() == Code::Aborted => Code::Aborted,
            _ => Code::Unavailable,
        };
        assert_eq!(error.code(), expected, "attempt {attempt}: {error:?}");
        assert!(error.get_error_details().retry_info().is_some());
        assert!(
            took < Duration::from_secs(3),
            "attempt {attempt} took {took:?}"
        );
        let error = deployment
            .payments(0)
            .get_payment(proto::GetPaymentRequest {
                payment_id: payment.id.clone(),
            })
            .await
            .refusal();
        assert_eq!(error.code(), Code::Unavailable);
    }

    // Redis comes back (with its data): the same process serves again.
    deployment.redis.server().restart();
    let within = Duration::from_secs(15);
    let (after, _) = retried_on(&[Code::Unavailable], within, async || {
        let request = capture(&payment, Some(100));
        deployment.payments(0).capture(request).await
    })
    .await;
    let after = Done::from(after.into_inner());
    assert_eq!(after.operation.status(), OperationStatus::Success);
    // Nothing half-done: the failed calls left no operation and no reservation.
    let payment = deployment.payments(0).payment(&payment.id).await;
    assert_eq!(payment.captures.len(), 2, "{:#?}", payment.captures);
    assert_eq!(capture_totals(&payment), (200, 0, 11800));
    let ledger_captured: i64 = deployment
        .ledger("illicado")
        .await
        .authorizations
        .iter()
        .map(|t| t.captured)
        .sum();
    assert_eq!(ledger_captured, 200);
}

/// Settings that make crash recovery fast enough for a test.
const FAST_RECOVERY: [(&str, &str); 5] = [
    ("PAYMENT_ORCHESTRATOR_RESOLVER_INTERVAL", "200ms"),
    // A send claim must fit a whole partner call (2 × timeout + window).
    ("PAYMENT_ORCHESTRATOR_PARTNER_TIMEOUT", "800ms"),
    ("PAYMENT_ORCHESTRATOR_OPERATION_LEASE", "2s"),
    ("PAYMENT_ORCHESTRATOR_IDEMPOTENCY_LEASE", "2s"),
    ("PAYMENT_ORCHESTRATOR_RESOLVER_LEASE", "5s"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_of_a_killed_replica_are_finished_by_the_survivors() {
    let mut deployment = Deployment::start_with(single().await, 3, &FAST_RECOVERY).await;
    let payments: Vec<proto::Payment> = futures_util::future::join_all(
        (0..40).map(|i| deployment.authorized(i, vec![card(10000, "latency=300ms")])),
    )
    .await;
    // 120 captures in flight over the three replicas.
    let requests: Vec<(usize, proto::CaptureRequest)> = (0..120)
        .map(|i| (i % 3, capture(&payments[i % payments.len()], Some(1000))))
        .collect();
    let calls: Vec<_> = requests
        .iter()
        .map(|(replica, request)| {
            let mut client = deployment.payments(*replica);
            let request = request.clone();
            tokio::spawn(async move { client.capture(request).await })
        })
        .collect();
    // Nothing outside the replicas shows a call in flight (the partner
    // books a call after its latency): 150 ms for the calls to arrive.
    tokio::time::sleep(Duration::from_millis(150)).await;
    deployment.replicas[0].kill();
    let killed = Instant::now();
    let mut lost = 0;
    for call in calls {
        if call.await.unwrap().is_err() {
            lost += 1;
        }
    }
    eprintln!("captures cut off by the kill: {lost}");
    assert!(lost > 0, "the kill cut nothing off");

    // Every original key, replayed on a survivor, answers the final state.
    for (index, (_, request)) in requests.iter().enumerate() {
        let (result, _) = retried(async || {
            let mut survivor = deployment.payments(1 + index % 2);
            survivor.capture(request.clone()).await
        })
        .await;
        let operation = Done::from(result.into_inner()).operation;
        assert_eq!(
            operation.status(),
            OperationStatus::Success,
            "{operation:#?}"
        );
    }
    // The operation lease (2 s) plus one resolver interval (200 ms), and
    // the time the retries themselves take.
    let recovered = killed.elapsed();
    eprintln!("every capture of the killed replica final {recovered:?} after the kill");
    assert!(recovered < Duration::from_secs(5), "{recovered:?}");

    // Nothing was executed twice: each payment and its partner agree.
    let ledger = deployment.ledger("ingenico").await;
    for payment in &payments {
        let payment = deployment.payments(1).payment(&payment.id).await;
        let a = amounts(&payment);
        assert_eq!(
            (a.total_captured, a.capture_pending),
            (3000, 0),
            "{}",
            payment.id
        );
        let reference =
            &payment.authorization.as_ref().unwrap().partner_transactions[0].partner_reference;
        let totals = ledger
            .authorizations
            .iter()
            .find(|t| &t.reference == reference)
            .unwrap();
        assert_eq!(totals.captured, 3000, "{}", payment.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_operation_on_one_replica_sees_a_resolution_on_another() {
    wait_on_one_replica_for_another(single().await).await;
}

/// On a cluster the finals go over sharded pub/sub: each replica is
/// subscribed to every shard's `po:{S}:finals` on the node that serves it,
/// nobody to the broadcast channel `po:finals`, and a wait on one replica
/// still ends within a second of the resolution on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_cluster_finals_travel_on_the_shards_channels_not_a_broadcast() {
    let deployment = wait_on_one_replica_for_another(cluster().await).await;
    let Redis::Cluster(cluster) = &deployment.redis else {
        unreachable!("a cluster")
    };
    let mut sharded = 0;
    for node in &cluster.nodes {
        let broadcast = redis_cli(node.port, &["PUBSUB", "NUMSUB", "po:finals"]).unwrap();
        assert!(broadcast.trim().ends_with('0'), "{broadcast}");
        let channels = redis_cli(node.port, &["PUBSUB", "SHARDCHANNELS", "po:*:finals"]).unwrap();
        sharded += channels.lines().filter(|l| !l.trim().is_empty()).count();
    }
    assert_eq!(sharded, 128, "every shard's channel, each on its own node");
}

async fn wait_on_one_replica_for_another(redis: Redis) -> Deployment {
    let deployment = Deployment::start_with(redis, 2, &FAST_RECOVERY).await;
    let payment = deployment
        .authorized(0, vec![card(10000, "capture=pending")])
        .await;
    let operation = deployment
        .payments(0)
        .captured(capture(&payment, Some(1000)))
        .await
        .operation;
    assert_eq!(operation.status(), OperationStatus::Pending);
    let waited = deployment
        .payments(1)
        .waited(&operation.id, Duration::from_secs(30))
        .await;
    let returned_at = std::time::SystemTime::now();
    assert_eq!(waited.status(), OperationStatus::Success);
    let resolved_at = std::time::SystemTime::try_from(waited.updated_at.unwrap()).unwrap();
    let lag = returned_at.duration_since(resolved_at).unwrap_or_default();
    assert!(
        lag < Duration::from_secs(1),
        "returned {lag:?} after the resolution"
    );
    deployment
}

/// Three replicas with the default leases (a minute and more): captures and
/// AUTOMATIC submits cut by their clients' deadlines of 10–120 ms still
/// finish on the server, so each retry with its key gets the final answer
/// within the partner's latency — not after a lease — and the partner
/// executed each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cut_by_their_deadline_are_answered_to_their_retries_within_seconds() {
    let deployment = Deployment::start_with(
        single().await,
        3,
        &[("PAYMENT_ORCHESTRATOR_RESOLVER_INTERVAL", "200ms")],
    )
    .await;
    let mut rng = StdRng::seed_from_u64(20);
    let payments: Vec<proto::Payment> = futures_util::future::join_all(
        (0..10).map(|i| deployment.authorized(i, vec![card(10000, "latency=300ms")])),
    )
    .await;
    let mut cut = Vec::new();
    for i in 0..30 {
        let request = capture(&payments[i % payments.len()], Some(1000));
        let mut call = tonic::Request::new(request.clone());
        call.set_timeout(Duration::from_millis(rng.random_range(10..=120)));
        let result = deployment.payments(i).capture(call).await;
        assert!(
            result.is_err(),
            "a deadline shorter than the partner cut it"
        );
        cut.push((i, request));
    }
    let mut submits = Vec::new();
    for i in 0..6 {
        let session = deployment
            .sessions(i)
            .opened(create_request(5000, proto::CaptureMode::Automatic))
            .await;
        let request = proto::SubmitSessionRequest {
            session_id: session.id,
            idempotency_key: new_key(),
            split: vec![card(5000, "latency=300ms")],
        };
        let mut call = tonic::Request::new(request.clone());
        call.set_timeout(Duration::from_millis(rng.random_range(10..=120)));
        assert!(deployment.sessions(i).submit_session(call).await.is_err());
        submits.push((i, request));
    }

    let mut slowest = Duration::ZERO;
    for (i, request) in &cut {
        let (result, took) = retried(async || {
            deployment
                .payments(i + 1)
                .capture(request.clone())
                .await
                .map(tonic::Response::into_inner)
        })
        .await;
        let operation = Done::from(result).operation;
        assert_eq!(operation.status(), OperationStatus::Success);
        slowest = slowest.max(took);
    }
    for (i, request) in &submits {
        let (payment, took) = retried(async || {
            deployment
                .sessions(i + 2)
                .submit_session(request.clone())
                .await
                .map(tonic::Response::into_inner)
        })
        .await;
        assert_eq!(
            payment.state(),
            proto::PaymentState::Captured,
            "{payment:#?}"
        );
        slowest = slowest.max(took);
    }
    eprintln!("cut requests: the slowest retry answered after {slowest:?}");
    assert!(slowest < Duration::from_secs(5), "{slowest:?}");

    // Each executed once: three captures of 10.00 per payment, one capture
    // of 50.00 per automatic submit.
    let ledger = deployment.ledger("ingenico").await;
    let captured: Vec<i64> = ledger.authorizations.iter().map(|t| t.captured).collect();
    assert_eq!(
        captured.iter().filter(|c| **c == 3000).count(),
        10,
        "{captured:?}"
    );
    assert_eq!(
        captured.iter().filter(|c| **c == 5000).count(),
        6,
        "{captured:?}"
    );
    assert_eq!(captured.len(), 16);
}
