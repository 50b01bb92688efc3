//! The tower layer in front of every gRPC service: a global limit on calls
//! in flight and one per merchant beside it (beyond either:
//! RESOURCE_EXHAUSTED with RetryInfo, at once — never a queue that hangs),
//! and the RPC series dashboards are written for (go-grpc-prometheus's:
//! `grpc_server_started_total`, `grpc_server_handled_total`,
//! `grpc_server_handling_seconds`, labelled `grpc_type`, `grpc_service`,
//! `grpc_method` and `grpc_code` spelled as Go spells codes). Health and reflection
//! are never shed: probes must get through. `WaitOperation` holds no work
//! while it waits; it is bounded by the waiters cap per merchant instead.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{
    Code, Status,
    body::Body,
    codegen::http::{Request, Response},
};
use tonic_types::{ErrorDetails, StatusExt};
use tower::{Layer, Service};

use super::ApiKeys;

/// The limits, shared by every connection.
#[derive(Debug)]
struct Limits {
    global: Arc<Semaphore>,
    /// One per merchant that has a key (the set is fixed at startup).
    per_merchant: HashMap<String, Arc<Semaphore>>,
    keys: Arc<ApiKeys>,
}

#[derive(Debug, Clone)]
pub struct EdgeLayer {
    limits: Arc<Limits>,
}

impl EdgeLayer {
    /// At most `max_in_flight` calls at once (health, reflection and waits
    /// aside), and at most `per_merchant` of one merchant's.
    pub fn new(max_in_flight: usize, per_merchant: usize, keys: Arc<ApiKeys>) -> Self {
        let per_merchant = keys
            .merchants()
            .map(|merchant| (merchant.to_owned(), Arc::new(Semaphore::new(per_merchant))))
            .collect();
        EdgeLayer {
            limits: Arc::new(Limits {
                global: Arc::new(Semaphore::new(max_in_flight)),
                per_merchant,
                keys,
            }),
        }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            limits: self.limits.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    limits: Arc<Limits>,
}

fn exempt(path: &str) -> bool {
    path.starts_with("/grpc.health.")
        || path.starts_with("/grpc.reflection.")
        || path == "/payment_orchestrator.v1.PaymentService/WaitOperation"
}

/// The permits a call holds while it runs.
#[derive(Debug)]
struct Permits {
    _global: OwnedSemaphorePermit,
    _merchant: Option<OwnedSemaphorePermit>,
}

impl Limits {
    /// Takes a global permit and, for a merchant's key, one of the
    /// merchant's; the refusal's reason otherwise.
    fn admit(&self, headers: &tonic::codegen::http::HeaderMap) -> Result<Permits, &'static str> {
        let global = self
            .global
            .clone()
            .try_acquire_owned()
            .map_err(|_| "too many calls in flight")?;
        let merchant = headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| self.keys.merchant_of(value))
            .and_then(|merchant| self.per_merchant.get(merchant));
        let merchant = match merchant {
            Some(permits) => Some(
                permits
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| "too many calls in flight for this merchant")?,
            ),
            None => None,
        };
        Ok(Permits {
            _global: global,
            _merchant: merchant,
        })
    }
}

/// The gRPC code of a unary response: errors come trailers-only (in the
/// headers); a response without `grpc-status` there is OK.
fn code_of(response: &Response<Body>) -> Code {
    response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32)
}

impl<S> Service<Request<Body>> for Edge<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let method = interned(request.uri().path());
        let rpc = Rpc::of(method);
        rpc.started();
        // One span per call; the request id is the caller's `x-request-id`
        // or a new one, and is sent back.
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .filter(|id| !id.is_empty() && id.len() <= 128)
            .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_owned);
        if let Ok(value) = request_id.parse() {
            request.headers_mut().insert("x-request-id", value);
        }
        let span = tracing::info_span!(
            "rpc",
            method = %method,
            request_id = %request_id,
            merchant = tracing::field::Empty,
            payment_id = tracing::field::Empty,
            operation_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        // The caller's W3C trace context (a no-op without OTLP configured).
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, parent);
        // The call's trace and span ids on every log line of it (JSON logs
        // carry the current span's fields).
        {
            use opentelemetry::trace::TraceContextExt as _;
            let context = tracing_opentelemetry::OpenTelemetrySpanExt::context(&span);
            let ids = context.span().span_context().clone();
            if ids.is_valid() {
                span.record("trace_id", tracing::field::display(ids.trace_id()));
                span.record("span_id", tracing::field::display(ids.span_id()));
            }
        }
        // The clone is the one that is ready; keep it for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let permit = if exempt(method) {
            None
        } else {
            match self.limits.admit(request.headers()) {
                Ok(permits) => Some(permits),
                Err(why) => {
                    metrics::counter!(
                        crate::telemetry::series::REQUESTS_SHED,
                        "grpc_service" => rpc.service,
                        "grpc_method" => rpc.method,
                    )
                    .increment(1);
                    let mut details =
                        ErrorDetails::with_retry_info(Some(Duration::from_millis(200)));
                    details.set_error_info(
                        if why.ends_with("merchant") {
                            "MERCHANT_IN_FLIGHT_LIMIT"
                        } else {
                            "IN_FLIGHT_LIMIT"
                        },
                        super::error::ERROR_DOMAIN,
                        HashMap::new(),
                    );
                    details.set_request_info(request_id.clone(), "");
                    let status = Status::with_error_details(
                        Code::ResourceExhausted,
                        format!("overloaded: {why}; retry"),
                        details,
                    );
                    rpc.handled(Code::ResourceExhausted, Duration::ZERO);
                    return Box::pin(async move { Ok(status.into_http()) });
                }
            }
        };
        let call = async move {
            let started = Instant::now();
            let mut response = inner.call(request).await;
            drop(permit);
            if let Ok(response) = &mut response {
                let (code, took) = (code_of(response), started.elapsed());
                rpc.handled(code, took);
                if code != Code::Ok {
                    with_error_details(response.headers_mut(), &request_id);
                }
                tracing::info!(code = ?code, took_ms = took.as_millis() as u64, "rpc");
                if let Ok(value) = request_id.parse() {
                    response.headers_mut().insert("x-request-id", value);
                }
            }
            response
        };
        Box::pin(tracing::Instrument::instrument(call, span))
    }
}

/// Every error carries an ErrorInfo (the reason its code implies when the
/// service set none: see `ErrorReason` in the proto) and a RequestInfo with
/// the call's request id.
fn with_error_details(headers: &mut tonic::codegen::http::HeaderMap, request_id: &str) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    let mut details = status.get_error_details();
    if details.error_info().is_none() {
        details.set_error_info(
            default_reason(status.code()).as_str_name(),
            super::error::ERROR_DOMAIN,
            HashMap::new(),
        );
    }
    details.set_request_info(request_id, "");
    let enriched = Status::with_error_details(status.code(), status.message(), details);
    if enriched.add_header(headers).is_err() {
        tracing::warn!("could not add the error details to a response");
    }
}

/// The reason of an error whose code says it all.
fn default_reason(code: Code) -> super::proto::ErrorReason {
    use super::proto::ErrorReason as Reason;
    match code {
        Code::Unauthenticated => Reason::ApiKeyInvalid,
        Code::PermissionDenied => Reason::PermissionDenied,
        Code::NotFound => Reason::NotFound,
        Code::ResourceExhausted => Reason::InFlightLimit,
        Code::Aborted => Reason::RequestInProgress,
        Code::Unavailable => Reason::StoreUnavailable,
        Code::DeadlineExceeded | Code::Cancelled => Reason::DeadlineExceeded,
        Code::Unimplemented => Reason::MethodUnimplemented,
        Code::Internal | Code::Unknown | Code::DataLoss => Reason::Internal,
        Code::Ok
        | Code::InvalidArgument
        | Code::AlreadyExists
        | Code::OutOfRange
        | Code::FailedPrecondition => Reason::RequestInvalid,
    }
}

/// Reads W3C trace context from HTTP/2 headers.
struct HeaderExtractor<'a>(&'a tonic::codegen::http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

/// One call as go-grpc-prometheus labels it.
#[derive(Debug, Clone, Copy)]
struct Rpc {
    kind: &'static str,
    service: &'static str,
    method: &'static str,
}

impl Rpc {
    /// From the request path `/package.Service/Method`.
    fn of(path: &'static str) -> Rpc {
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("unknown", "unknown"));
        let kind = match method {
            "ExportSettlementTransactions" | "Watch" => "server_stream",
            "ServerReflectionInfo" => "bidi_stream",
            _ => "unary",
        };
        Rpc {
            kind,
            service,
            method,
        }
    }

    fn started(self) {
        metrics::counter!(
            "grpc_server_started_total",
            "grpc_type" => self.kind,
            "grpc_service" => self.service,
            "grpc_method" => self.method,
        )
        .increment(1);
    }

    fn handled(self, code: Code, took: Duration) {
        metrics::counter!(
            "grpc_server_handled_total",
            "grpc_type" => self.kind,
            "grpc_service" => self.service,
            "grpc_method" => self.method,
            "grpc_code" => code_name(code),
        )
        .increment(1);
        metrics::histogram!(
            "grpc_server_handling_seconds",
            "grpc_type" => self.kind,
            "grpc_service" => self.service,
            "grpc_method" => self.method,
        )
        .record(took.as_secs_f64());
    }
}

/// A method path as a `'static` label: the set of paths a server sees is
/// small (its RPCs), so each is allocated once, not per call.
fn interned(method: &str) -> &'static str {
    use std::{collections::HashSet, sync::RwLock};
    static SEEN: RwLock<Option<HashSet<&'static str>>> = RwLock::new(None);
    let read = SEEN.read().unwrap_or_else(|p| p.into_inner());
    if let Some(found) = read.as_ref().and_then(|seen| seen.get(method)) {
        return found;
    }
    drop(read);
    let mut write = SEEN.write().unwrap_or_else(|p| p.into_inner());
    let seen = write.get_or_insert_with(HashSet::new);
    if let Some(found) = seen.get(method) {
        return found;
    }
    // Unknown paths (typos, probes) are answered UNIMPLEMENTED and labelled
    // as one bucket, so no caller can grow this set without bound.
    if seen.len() >= 256 {
        return "unknown";
    }
    let leaked: &'static str = Box::leak(method.to_owned().into_boxed_str());
    seen.insert(leaked);
    leaked
}

/// The label of a gRPC code, as Go spells it (what go-grpc-prometheus
/// dashboards and alerts match).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}
