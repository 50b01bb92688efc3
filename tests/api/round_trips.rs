//! What a request costs in Redis round trips, watched with `MONITOR` on a
//! private Redis: a single-leg capture is 2 commands on its latency path —
//! open (one `EVALSHA`, on the header this replica last wrote) and conclude
//! (one `EVALSHA`); a header that moved elsewhere costs a conflict and a
//! read (`HMGET`) first.
//!
//! Off the latency path, and not in this count: the resolver's polling of
//! the due-queue shards (`ZCOUNT`, every `--resolver-interval`; off here),
//! readiness `PING`s (every 2 s), and at SubmitSession the listing index
//! (a `ZADD` to the merchant's bucket and one to the order's listing), sent
//! on the same round trip as the open step.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
};

use payment_orchestrator::api::proto;

use super::{support::harness::*, support::redis_server::RedisServer};

/// The commands Redis received from clients (not from inside scripts)
/// between two markers, while `during` ran.
pub(super) async fn commands_during(port: u16, during: impl AsyncFnOnce()) -> Vec<String> {
    let mut monitor = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "monitor"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli is installed");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let stdout = monitor.stdout.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let echo = |marker: &str| {
        Command::new("redis-cli")
            .args(["-p", &port.to_string(), "ECHO", marker])
            .output()
            .unwrap();
    };
    // MONITOR is running once it reports anything.
    eventually("MONITOR to start", async || {
        echo("po-ready");
        !lines.lock().unwrap().is_empty()
    })
    .await;
    echo("po-start");
    during().await;
    echo("po-end");
    eventually("MONITOR to report the end marker", async || {
        lines.lock().unwrap().iter().any(|l| l.contains("po-end"))
    })
    .await;
    let _ = monitor.kill();
    let _ = monitor.wait();
    let lines = lines.lock().unwrap().clone();
    lines
        .iter()
        .skip_while(|l| !l.contains("po-start"))
        .skip(1)
        .take_while(|l| !l.contains("po-end"))
        // Commands run by a script show as `[0 lua]`; readiness pings are
        // on their own schedule.
        .filter(|l| !l.contains(" lua]") && !l.contains("\"PING\""))
        .map(|l| {
            l.split("] ")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_default()
                .trim_matches('"')
                .to_owned()
        })
        .collect()
}

/// A service on a private Redis, its scripts loaded (a server loads each
/// once: `EVAL` the first time, `EVALSHA` after) by a capture and a refund.
async fn on_warm_redis() -> (RedisServer, TestServer) {
    let redis = RedisServer::start();
    let server = TestServer::start_with(&["--redis-url", &redis.url()]).await;
    let warm = authorized(&server, vec![card(1000, "tok")]).await;
    captured(&server, capture(&warm, Some(500))).await;
    refunded(&server, refund(&warm, Some(100))).await;
    (redis, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_leg_capture_is_two_round_trips_on_redis() {
    let (redis, server) = on_warm_redis().await;
    let url = redis.url();
    let payment = authorized(&server, vec![card(12000, "tok")]).await;

    let commands = commands_during(redis.port, async || {
        let request = capture(&payment, Some(100));
        let result = server.payments().capture(request).await.answer();
        assert_eq!(
            result.operation.unwrap().status(),
            proto::OperationStatus::Success
        );
    })
    .await;
    assert_eq!(commands, ["EVALSHA", "EVALSHA"], "{commands:?}");

    // A replay is the open step that finds the answer, and a read.
    let request = capture(&payment, Some(100));
    server.payments().capture(request.clone()).await.unwrap();
    let replay = commands_during(redis.port, async || {
        server.payments().capture(request.clone()).await.unwrap();
    })
    .await;
    assert!(replay.len() <= 2, "{replay:?}");

    // Another replica captures: this one's header is stale. Its open step
    // conflicts and writes nothing, the header is read, and the capture
    // opens on it.
    let other = TestServer::start_with(&["--redis-url", &url]).await;
    let request = capture(&payment, Some(200));
    let moved = other.payments().capture(request).await.answer();
    let available_after_other = moved.payment.unwrap().amounts.unwrap().available_to_capture;
    let mut after = None;
    let commands = commands_during(redis.port, async || {
        after = Some(
            server
                .payments()
                .capture(capture(&payment, Some(300)))
                .await
                .answer(),
        );
    })
    .await;
    assert_eq!(
        commands,
        ["EVALSHA", "HMGET", "EVALSHA", "EVALSHA"],
        "{commands:?}"
    );
    let after = after.unwrap();
    assert_eq!(
        after.operation.unwrap().status(),
        proto::OperationStatus::Success
    );
    assert_eq!(
        after.payment.unwrap().amounts.unwrap().available_to_capture,
        available_after_other - 300,
        "opened on the header as the other replica left it"
    );
}

/// A payment in AUTOMATIC mode is captured by its submit: the refund after
/// it opens on the header the capture wrote, not a stale one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refund_after_an_automatic_capture_opens_on_the_header_held() {
    let (redis, server) = on_warm_redis().await;
    let (_, payment) = submitted(
        &server,
        proto::CaptureMode::Automatic,
        vec![card(5000, "tok")],
    )
    .await;
    assert_eq!(payment.state(), proto::PaymentState::Captured);

    let commands = commands_during(redis.port, async || {
        refunded(&server, refund(&payment, Some(100))).await;
    })
    .await;
    assert_eq!(commands, ["EVALSHA", "EVALSHA"], "{commands:?}");
}
