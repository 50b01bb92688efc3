//! The client against a real gRPC server (a scripted health service on
//! 127.0.0.1): retries that honour RetryInfo, errors that are not retried,
//! and the typed reasons.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use payment_orchestrator_client::{Client, ErrorReason, RetryPolicy};
use tonic::{Code, Request, Response, Status, transport::Server};
use tonic_health::pb::{
    HealthCheckRequest, HealthCheckResponse,
    health_client::HealthClient,
    health_server::{Health, HealthServer},
};
use tonic_types::{ErrorDetails, StatusExt};

/// Answers each check with the next scripted error, then SERVING; counts
/// the calls and records their authorization header.
#[derive(Clone, Default)]
struct Scripted {
    errors: Arc<Mutex<VecDeque<Status>>>,
    calls: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl Health for Scripted {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let key = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        self.calls.lock().unwrap().push(key);
        match self.errors.lock().unwrap().pop_front() {
            Some(error) => Err(error),
            None => Ok(Response::new(HealthCheckResponse { status: 1 })),
        }
    }

    type WatchStream = tokio_stream::Empty<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch"))
    }
}

async fn serve(script: Scripted) -> Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(HealthServer::new(script))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Client::connect(&format!("http://{address}"), "sk_test_demo")
        .await
        .unwrap()
}

fn with_retry_info(code: Code, reason: &str, wait: Duration) -> Status {
    let mut details = ErrorDetails::with_retry_info(Some(wait));
    details.set_error_info(reason, "payment-orchestrator", HashMap::new());
    Status::with_error_details(code, "try again", details)
}

async fn check(client: &Client) -> Result<HealthCheckResponse, payment_orchestrator_client::Error> {
    let channel = client.clone();
    client
        .call(|| {
            let mut health = HealthClient::new(channel.channel());
            async move { health.check(HealthCheckRequest::default()).await }
        })
        .await
}

#[tokio::test]
async fn unavailable_and_aborted_are_retried_after_the_retry_info_delay() {
    let script = Scripted::default();
    script.errors.lock().unwrap().extend([
        with_retry_info(
            Code::Unavailable,
            "STORE_UNAVAILABLE",
            Duration::from_millis(300),
        ),
        with_retry_info(
            Code::Aborted,
            "REQUEST_IN_PROGRESS",
            Duration::from_millis(200),
        ),
    ]);
    let client = serve(script.clone()).await;
    let started = Instant::now();
    let answer = check(&client).await.unwrap();
    assert_eq!(answer.status, 1);
    assert_eq!(script.calls.lock().unwrap().len(), 3);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "waited what RetryInfo said: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_business_error_is_not_retried_and_its_reason_is_typed() {
    let script = Scripted::default();
    let mut details = ErrorDetails::new();
    details.set_error_info(
        "AMOUNT_EXCEEDS_AVAILABLE",
        "payment-orchestrator",
        HashMap::from([("available".to_owned(), "9000".to_owned())]),
    );
    details.set_request_info("req-1", "");
    script
        .errors
        .lock()
        .unwrap()
        .push_back(Status::with_error_details(
            Code::FailedPrecondition,
            "the requested amount exceeds the available",
            details,
        ));
    let client = serve(script.clone()).await;
    let error = check(&client).await.unwrap_err();
    assert_eq!(script.calls.lock().unwrap().len(), 1, "not retried");
    assert_eq!(error.code(), Some(Code::FailedPrecondition));
    assert_eq!(error.reason(), Some(ErrorReason::AmountExceedsAvailable));
    assert_eq!(error.metadata("available").as_deref(), Some("9000"));
    assert_eq!(error.request_id().as_deref(), Some("req-1"));
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn retries_stop_after_the_policys_attempts_and_the_key_is_sent_every_time() {
    let script = Scripted::default();
    script.errors.lock().unwrap().extend(
        (0..10).map(|_| with_retry_info(Code::Unavailable, "STORE_UNAVAILABLE", Duration::ZERO)),
    );
    let client = serve(script.clone()).await.with_retry(RetryPolicy {
        attempts: 3,
        ..RetryPolicy::default()
    });
    let error = check(&client).await.unwrap_err();
    assert_eq!(error.reason(), Some(ErrorReason::StoreUnavailable));
    let calls = script.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3);
    assert!(
        calls.iter().all(|key| key == "Bearer sk_test_demo"),
        "{calls:?}"
    );
}
