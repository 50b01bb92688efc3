//! A client for payment-orchestrator's gRPC API.
//!
//! ```no_run
//! use payment_orchestrator_client::{Client, idempotency_key, proto};
//!
//! # async fn run() -> Result<(), payment_orchestrator_client::Error> {
//! let client = Client::connect("http://127.0.0.1:50051", "sk_test_demo").await?;
//! let session = client
//!     .call(|| async {
//!         client
//!             .sessions()
//!             .create_session(proto::CreateSessionRequest {
//!                 idempotency_key: idempotency_key(),
//!                 order_reference: "order-1001".into(),
//!                 amount: 12_000,
//!                 currency: "EUR".into(),
//!                 ..Default::default()
//!             })
//!             .await
//!     })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! - [`Client`] holds one HTTP/2 connection and adds `authorization: Bearer
//!   <key>` to every call.
//! - [`idempotency_key`] makes a key for a mutating call; reuse it for every
//!   retry of that call.
//! - [`Client::call`] retries `UNAVAILABLE` and `ABORTED` (a request still in
//!   progress), waiting what the server's RetryInfo says (or a backoff),
//!   and gives up after [`RetryPolicy::attempts`]. A closure that reuses its
//!   request's idempotency key makes every retry safe.
//! - [`Error`] carries the status with its typed [`ErrorReason`], RetryInfo
//!   and field violations.
//!
//! It depends on tonic's client side only: no server, store or telemetry
//! crates.

use std::{future::Future, time::Duration};

use tonic::{
    Code, Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint},
};
use tonic_types::StatusExt;

/// The generated messages and clients of `payment_orchestrator.v1`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("payment_orchestrator.v1");
}

pub use proto::ErrorReason;

/// Adds the bearer API key to every call.
#[derive(Clone)]
pub struct ApiKey(MetadataValue<Ascii>);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl ApiKey {
    pub fn new(key: &str) -> Result<ApiKey, Error> {
        format!("Bearer {key}")
            .parse()
            .map(ApiKey)
            .map_err(|_| Error::Setup("an API key is printable ASCII".into()))
    }
}

impl Interceptor for ApiKey {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A service client over the shared connection, with the API key.
pub type Authorized = InterceptedService<Channel, ApiKey>;

/// How [`Client::call`] retries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The wait before the first retry when the server sent no RetryInfo;
    /// doubled for each further one.
    pub backoff: Duration,
    /// No wait is longer than this, whatever RetryInfo says.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            backoff: Duration::from_millis(100),
            max_wait: Duration::from_secs(10),
        }
    }
}

/// A connection to the service.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    key: ApiKey,
    retry: RetryPolicy,
}

/// A new idempotency key (a random UUID): make one per logical operation
/// and send the same one with each retry of it.
pub fn idempotency_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Client {
    /// Connects to `url` (e.g. `http://127.0.0.1:50051`) with an API key.
    pub async fn connect(url: &str, api_key: &str) -> Result<Client, Error> {
        let channel = Endpoint::from_shared(url.to_owned())
            .map_err(|e| Error::Setup(format!("bad URL {url:?}: {e}")))?
            .connect()
            .await
            .map_err(|e| Error::Setup(format!("cannot connect to {url}: {e}")))?;
        Client::with_channel(channel, api_key)
    }

    /// Over a channel built by the caller (TLS, timeouts…).
    pub fn with_channel(channel: Channel, api_key: &str) -> Result<Client, Error> {
        Ok(Client {
            channel,
            key: ApiKey::new(api_key)?,
            retry: RetryPolicy::default(),
        })
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Client {
        self.retry = retry;
        self
    }

    /// The connection with the API key, for any generated client.
    pub fn channel(&self) -> Authorized {
        InterceptedService::new(self.channel.clone(), self.key.clone())
    }

    fn authorized(&self) -> Authorized {
        self.channel()
    }

    pub fn sessions(&self) -> proto::session_service_client::SessionServiceClient<Authorized> {
        proto::session_service_client::SessionServiceClient::new(self.authorized())
    }

    pub fn payments(&self) -> proto::payment_service_client::PaymentServiceClient<Authorized> {
        proto::payment_service_client::PaymentServiceClient::new(self.authorized())
    }

    pub fn settlements(
        &self,
    ) -> proto::settlement_service_client::SettlementServiceClient<Authorized> {
        proto::settlement_service_client::SettlementServiceClient::new(self.authorized())
    }

    pub fn admin(&self) -> proto::admin_service_client::AdminServiceClient<Authorized> {
        proto::admin_service_client::AdminServiceClient::new(self.authorized())
    }

    /// Runs `call`, again after `UNAVAILABLE` or `ABORTED` as the policy and
    /// the server's RetryInfo say; the response's message, or the last error.
    pub async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut backoff = self.retry.backoff;
        let mut attempt = 1;
        loop {
            let error = match call().await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) => Error::Status(Box::new(status)),
            };
            if attempt >= self.retry.attempts || !error.is_retryable() {
                return Err(error);
            }
            let wait = error
                .retry_delay()
                .unwrap_or(backoff)
                .min(self.retry.max_wait);
            tokio::time::sleep(wait).await;
            backoff = backoff.saturating_mul(2);
            attempt += 1;
        }
    }
}

/// What went wrong: the connection could not be set up, or the service
/// answered an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Setup(String),
    #[error("{}: {}", .0.code(), .0.message())]
    Status(Box<Status>),
}

impl Error {
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Status(status) => Some(status),
            Error::Setup(_) => None,
        }
    }

    pub fn code(&self) -> Option<Code> {
        self.status().map(Status::code)
    }

    /// The ErrorInfo's reason, typed; `None` for an error without one or a
    /// reason newer than this client.
    pub fn reason(&self) -> Option<ErrorReason> {
        let details = self.status()?.get_error_details();
        ErrorReason::from_str_name(&details.error_info()?.reason)
    }

    /// The ErrorInfo's metadata entry `key` (e.g. `available`).
    pub fn metadata(&self, key: &str) -> Option<String> {
        let details = self.status()?.get_error_details();
        details.error_info()?.metadata.get(key).cloned()
    }

    /// How long the server asks to wait before retrying.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.status()?.get_error_details().retry_info()?.retry_delay
    }

    /// The server's request id for this call (from RequestInfo).
    pub fn request_id(&self) -> Option<String> {
        let details = self.status()?.get_error_details();
        Some(details.request_info()?.request_id.clone())
    }

    /// Every field violation of an `INVALID_ARGUMENT`, as (field,
    /// description).
    pub fn field_violations(&self) -> Vec<(String, String)> {
        self.status()
            .and_then(|status| {
                status.get_error_details().bad_request().map(|bad| {
                    bad.field_violations
                        .iter()
                        .map(|v| (v.field.clone(), v.description.clone()))
                        .collect()
                })
            })
            .unwrap_or_default()
    }

    /// Worth another attempt with the same idempotency key: the service
    /// changed nothing (`UNAVAILABLE`), or the request is still running
    /// (`ABORTED`, `REQUEST_IN_PROGRESS`).
    pub fn is_retryable(&self) -> bool {
        matches!(self.code(), Some(Code::Unavailable | Code::Aborted))
    }
}
