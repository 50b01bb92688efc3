//! What an SRE relies on: metrics, load shedding, graceful shutdown.

use std::time::{Duration, Instant};

use payment_orchestrator::api::proto;
use tonic::Code;
use tonic_types::StatusExt;

use super::{
    support::deployment::{Deployment, Redis},
    support::harness::*,
    support::redis_server::{RedisServer, due_members},
};

/// The value of the first sample of `series` whose labels contain all of `labels`.
fn sample(metrics: &str, series: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| line.starts_with(series) && labels.iter().all(|l| line.contains(l)))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_rpcs_partners_operations_resolver_and_webhooks() {
    let deployment = Deployment::start(Redis::Single(RedisServer::start()), 1).await;
    let split = vec![card(10000, "tok"), gift(2000, "tok")];
    let payment = deployment.authorized(0, split).await;
    deployment
        .payments(0)
        .captured(capture(&payment, Some(5000)))
        .await;
    let _ = deployment
        .payments(0)
        .capture(capture(&payment, Some(999_999)))
        .await;
    let url = format!(
        "http://127.0.0.1:{}/metrics",
        deployment.replicas[0].metrics_port
    );
    let scrape = async || reqwest::get(&url).await.unwrap().text().await.unwrap();
    // Until a resolver step has measured the queue: the authorization's
    // lifetime and the capture's settlement check.
    eventually("a resolver step", async || {
        let metrics = scrape().await;
        sample(&metrics, "payment_orchestrator_resolver_queue_depth", &[]) == Some(2.0)
    })
    .await;
    let metrics = scrape().await;

    let count = |series: &str, labels: &[&str]| sample(&metrics, series, labels);
    // go-grpc-prometheus's series and labels.
    let capture = [
        "grpc_type=\"unary\"",
        "grpc_service=\"payment_orchestrator.v1.PaymentService\"",
        "grpc_method=\"Capture\"",
    ];
    assert_eq!(
        count("grpc_server_started_total", &capture),
        Some(2.0),
        "{metrics}"
    );
    let with_code = |code: &'static str| {
        let mut labels = capture.to_vec();
        labels.push(code);
        labels
    };
    assert_eq!(
        count("grpc_server_handled_total", &with_code("grpc_code=\"OK\"")),
        Some(1.0)
    );
    assert_eq!(
        count(
            "grpc_server_handled_total",
            &with_code("grpc_code=\"FailedPrecondition\"")
        ),
        Some(1.0)
    );
    assert_eq!(
        count("grpc_server_handling_seconds_count", &capture),
        Some(2.0)
    );
    assert!(metrics.contains("# HELP grpc_server_handled_total "));
    // Application series: prefixed, described; the build and the process.
    assert_eq!(
        count("payment_orchestrator_build_info", &["version=\""]),
        Some(1.0)
    );
    assert!(
        count("process_resident_memory_bytes", &[]).is_some_and(|bytes| bytes > 0.0),
        "process metrics: {metrics}"
    );
    assert!(count("process_cpu_seconds_total", &[]).is_some());
    assert_eq!(count("payment_orchestrator_store_ready", &[]), Some(1.0));
    assert!(metrics.contains("# HELP payment_orchestrator_operations_final_total "));
    for line in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(
            ["payment_orchestrator_", "grpc_server_", "process_"]
                .iter()
                .any(|prefix| line.starts_with(prefix)),
            "a series without the prefix: {line}"
        );
    }
    assert_eq!(
        count(
            "payment_orchestrator_partner_request_seconds_count",
            &[
                "partner=\"illicado\"",
                "kind=\"capture\"",
                "outcome=\"succeeded\""
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        count(
            "payment_orchestrator_partner_request_seconds_count",
            &["partner=\"ingenico\"", "kind=\"authorization\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        count(
            "payment_orchestrator_operations_final_total",
            &["kind=\"capture\"", "status=\"success\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        count(
            "payment_orchestrator_operations_final_total",
            &["kind=\"authorization\"", "status=\"success\""]
        ),
        Some(1.0)
    );
    // The authorization's lifetime and the capture's settlement check are
    // queued; nothing is overdue.
    assert_eq!(
        count("payment_orchestrator_resolver_queue_depth", &[]),
        Some(2.0)
    );
    assert_eq!(
        count(
            "payment_orchestrator_resolver_queue_oldest_overdue_seconds",
            &[]
        ),
        Some(0.0)
    );
    assert_eq!(
        count("payment_orchestrator_operations_requires_review_total", &[]),
        Some(0.0)
    );
    assert_eq!(
        count("payment_orchestrator_webhooks_enqueued_total", &[]),
        Some(0.0)
    );
    assert!(
        !metrics.contains("sk_test"),
        "a key leaked into the metrics"
    );
    // What the chart's alerts and dashboard query is what this live
    // process exports.
    let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/helm/payment-orchestrator");
    for file in [
        "templates/prometheusrule.yaml",
        "dashboards/payment-orchestrator.json",
    ] {
        let text = std::fs::read_to_string(format!("{chart}/{file}")).unwrap();
        let mut names: Vec<&str> = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| {
                ["payment_orchestrator_", "grpc_server_", "process_"]
                    .iter()
                    .any(|prefix| word.starts_with(prefix))
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        assert!(names.len() > 5, "{file}: {names:?}");
        for name in names {
            assert!(
                metrics.lines().any(|line| line.starts_with(name)),
                "{file} queries {name}, which /metrics does not export"
            );
        }
    }
}

#[tokio::test]
async fn beyond_the_in_flight_limit_calls_are_shed_with_retry_info_never_hung() {
    let server = TestServer::start_with(&["--max-in-flight", "4"]).await;
    // Set up within the limit: four at a time.
    let mut payments = Vec::new();
    for _ in 0..5 {
        let batch = (0..4).map(|_| authorized(&server, vec![card(1000, "latency=300ms")]));
        payments.extend(futures_util::future::join_all(batch).await);
    }
    let started = Instant::now();
    let calls: Vec<_> = payments
        .iter()
        .map(|payment| {
            let mut client = server.payments();
            let request = capture(payment, Some(100));
            tokio::spawn(async move { client.capture(request).await })
        })
        .collect();
    let (mut ok, mut shed) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(status.get_error_details().retry_info().is_some());
                shed += 1;
            }
        }
    }
    assert!(ok >= 4 && shed > 0, "ok {ok}, shed {shed}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // Health is never shed.
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut health = HealthClient::new(server.channel());
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_calls_refuses_new_ones_and_exits_cleanly() {
    let mut deployment = Deployment::start(Redis::Single(RedisServer::start()), 1).await;
    let payments: Vec<proto::Payment> = futures_util::future::join_all(
        (0..10).map(|i| deployment.authorized(i, vec![card(10000, "latency=500ms")])),
    )
    .await;
    let calls: Vec<_> = payments
        .iter()
        .map(|payment| {
            let mut client = deployment.payments(0);
            let request = capture(payment, Some(100));
            tokio::spawn(async move { client.capture(request).await })
        })
        .collect();
    // Nothing outside the replica shows a call in flight (the partner books
    // a call after its latency): 200 ms for the calls to arrive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    deployment.replicas[0].process().terminate();
    // Nor when the signal has been handled: 100 ms for it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let late = deployment
        .payments(0)
        .capture(capture(&payments[0], Some(100)))
        .await;
    assert!(late.is_err(), "a call after SIGTERM was accepted");
    for call in calls {
        let result = call.await.unwrap();
        let done = Done::from(answered(result, "an in-flight capture"));
        assert_eq!(done.operation.status(), proto::OperationStatus::Success);
    }
    let status = deployment.replicas[0].process().wait().expect("exited");
    assert!(status.success(), "exit status {status:?}");

    // Nothing is left behind without a due-queue entry: every operation is
    // final (so off the queue), and each authorization's lifetime is queued.
    let members = due_members(deployment.redis.server().port);
    assert_eq!(
        members.iter().filter(|m| m.starts_with("x:")).count(),
        payments.len(),
        "{members:?}"
    );
    assert_eq!(
        members.iter().filter(|m| m.starts_with("o:")).count(),
        0,
        "{members:?}"
    );
}
