//! `--redis-wait-replicas`: a private master with a real replica. A step
//! its replica does not acknowledge sends nothing to a partner and hands
//! the operation to a retry; a step it acknowledged survives the master's
//! death.

use payment_orchestrator::{
    api::proto::{self, OperationStatus},
    domain::{operation::OperationKind, status::TransactionStatus},
    store::{
        PaymentStore, StoreError,
        redis::{RedisSettings, RedisStore},
    },
};
use tonic::Code;
use tonic_types::StatusExt;

use super::{
    store_contract::redis_settings,
    support::harness::*,
    support::redis_server::{RedisServer, redis_cli},
};

fn waiting_on(master: &RedisServer) -> Vec<String> {
    [
        "--redis-url",
        &master.url(),
        "--redis-wait-replicas",
        "1",
        "--redis-wait-timeout",
        "300ms",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// A master with a real replica, and a service that waits for it.
async fn waiting_on_a_replica() -> (RedisServer, RedisServer, TestServer) {
    let master = RedisServer::start();
    let replica = RedisServer::replica_of(&master);
    let settings = waiting_on(&master);
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let server = TestServer::start_with(&settings).await;
    (master, replica, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_its_replica_does_not_acknowledge_reaches_no_partner_and_its_retry_executes_once()
{
    let (_master, replica, server) = waiting_on_a_replica().await;
    let payment = authorized(&server, vec![card(5000, "tok")]).await;
    let request = capture(&payment, Some(2000));

    replica.pause();
    let refused = server
        .payments()
        .capture(request.clone())
        .await
        .expect_err("not acknowledged: no answer");
    assert_eq!(refused.code(), Code::Aborted, "{refused:?}");
    assert!(
        refused.get_details_retry_info().is_some(),
        "the client is told to retry"
    );
    assert_eq!(
        server.sent("ingenico", OperationKind::Capture),
        0,
        "no partner call on a step a failover could lose"
    );

    replica.resume();
    replica.wait_for_link();
    let captured = server.payments().capture(request.clone()).await.answer();
    assert_eq!(
        captured.operation.as_ref().unwrap().status(),
        OperationStatus::Success
    );
    let again = server.payments().capture(request).await.answer();
    assert_eq!(again.operation, captured.operation, "replayed");
    assert_eq!(
        server.sent("ingenico", OperationKind::Capture),
        1,
        "executed once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_capture_survives_its_master_killed_and_the_replica_promoted() {
    let mut master = RedisServer::start();
    let replica = RedisServer::replica_of(&master);
    let settings = waiting_on(&master);
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let server = TestServer::start_with(&settings).await;
    // The partner takes its time: the capture is opened (acknowledged by
    // the replica), its partner call on its way, when the master dies.
    let payment = authorized(&server, vec![card(5000, "latency=3s")]).await;
    let mut payments = server.payments();
    let request = capture(&payment, Some(2000));
    let capturing = tokio::spawn(async move { payments.capture(request).await });
    eventually("the capture to reach its partner", async || {
        let ingenico = server.sandbox("ingenico");
        ingenico.arrivals(OperationKind::Capture) == 1
    })
    .await;
    master.stop();
    replica.promote();
    let _ = capturing.await;

    // The promoted replica holds the capture with its reservation.
    let store = RedisStore::connect(&redis_settings(vec![replica.url()], false))
        .await
        .expect("connects to the new master");
    let id = payment.id.parse().unwrap();
    let stored = store.payment(id).await.unwrap().expect("the payment");
    let captures: Vec<_> = stored
        .operations
        .iter()
        .filter(|op| op.kind == OperationKind::Capture)
        .collect();
    assert_eq!(captures.len(), 1, "the capture is there");
    let transaction = &captures[0].transactions[0];
    assert_eq!(transaction.attempts, 1, "its send counted before the call");
    assert_eq!(transaction.status, TransactionStatus::Uncertain);
    let totals = stored.header.value.totals();
    assert_eq!(
        (
            totals.capture_pending.minor(),
            totals.available_to_capture().minor()
        ),
        (2000, 3000),
        "its reservation is there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_forgotten_without_its_replica_leaves_no_listing_behind() {
    let (master, replica, server) = waiting_on_a_replica().await;
    let payment = authorized(&server, vec![card(5000, "tok")]).await;
    captured(&server, capture(&payment, None)).await;
    let all = proto::ListPaymentsRequest::default();
    let listed = listed_payments(&server, all.clone()).await;
    assert_eq!(listed, std::slice::from_ref(&payment.id));

    // The forget step applies on the master; its replica does not answer.
    let store = RedisStore::connect(&RedisSettings {
        wait_replicas: 1,
        wait_timeout: std::time::Duration::from_millis(300),
        ..redis_settings(vec![master.url()], false)
    })
    .await
    .expect("connects");
    let stored = store
        .payment(payment.id.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    replica.pause();
    let forgotten = store
        .forget_payment(&stored, None, std::time::SystemTime::now())
        .await;
    assert!(
        matches!(forgotten, Err(StoreError::NotReplicated(_))),
        "{forgotten:?}"
    );
    replica.resume();
    let members = |bucket: u32| {
        let key = format!("po:{{mb:{bucket}:demo}}:payments");
        redis_cli(master.port, &["ZCARD", &key]).unwrap_or_default()
    };
    let left: Vec<String> = (0..16).map(members).filter(|n| n.trim() != "0").collect();
    assert!(left.is_empty(), "listing members left: {left:?}");
    assert!(listed_payments(&server, all).await.is_empty());
}
