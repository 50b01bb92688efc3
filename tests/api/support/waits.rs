//! Waiting on a condition rather than for a while: every wait here polls
//! something the test can see, and gives up loudly after a deadline.

use std::time::{Duration, Instant};

use tonic::{Code, Status, transport::Channel};

/// How often a condition is looked at again.
const POLL: Duration = Duration::from_millis(20);

/// Until `ready` holds; panics naming `what` after 10 s.
pub async fn eventually(what: &str, mut ready: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// A channel to `url`, once something listens there (10 s at most).
pub async fn connected(url: &str) -> Channel {
    let endpoint = Channel::from_shared(url.to_owned()).expect("uri");
    let mut channel = None;
    eventually(&format!("something to listen on {url}"), async || {
        channel = endpoint.connect().await.ok();
        channel.is_some()
    })
    .await;
    channel.expect("connected")
}

/// Retries a request with its key until it answers, as long as it is
/// refused as in progress or unavailable (60 s at most); the answer and how
/// long it took.
pub async fn retried<T>(call: impl AsyncFnMut() -> Result<T, Status>) -> (T, Duration) {
    retried_on(
        &[Code::Aborted, Code::Unavailable],
        Duration::from_secs(60),
        call,
    )
    .await
}

/// Retries `call` while it is refused with one of `codes`, for `within` at
/// most; the answer and how long it took.
pub async fn retried_on<T>(
    codes: &[Code],
    within: Duration,
    mut call: impl AsyncFnMut() -> Result<T, Status>,
) -> (T, Duration) {
    let started = Instant::now();
    loop {
        match call().await {
            Ok(answer) => return (answer, started.elapsed()),
            Err(status) => {
                assert!(codes.contains(&status.code()), "{status:?}");
                assert!(started.elapsed() < within, "never answered: {status:?}");
                tokio::time::sleep(POLL * 5).await;
            }
        }
    }
}
