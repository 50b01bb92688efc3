//! Process-wide telemetry: structured logs, OpenTelemetry traces over OTLP
//! and the Prometheus endpoint. Set up once from `main` (the recorder and the
//! subscriber are global, so tests that build several apps in one process
//! do not call it).
//!
//! Traces: W3C `traceparent` from incoming metadata becomes the parent of the
//! call's span (see `api::edge`) and is passed on to remote partners.

use std::net::SocketAddr;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusBuilder;
use opentelemetry::{global, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    runtime,
    trace::{SdkTracerProvider, span_processor_with_async_runtime::BatchSpanProcessor},
};
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

use crate::config::Config;

/// The application's series: every one prefixed `payment_orchestrator_`
/// and described (HELP) at startup. The RPC series keep go-grpc-prometheus's
/// names (see `api::edge`).
pub mod series {
    pub const BUILD_INFO: &str = "payment_orchestrator_build_info";
    pub const STORE_READY: &str = "payment_orchestrator_store_ready";
    pub const OPERATIONS_OPENED: &str = "payment_orchestrator_operations_opened_total";
    pub const OPERATIONS_FINAL: &str = "payment_orchestrator_operations_final_total";
    pub const OPERATIONS_REQUIRES_REVIEW: &str =
        "payment_orchestrator_operations_requires_review_total";
    pub const RESOLVER_QUEUE_DEPTH: &str = "payment_orchestrator_resolver_queue_depth";
    pub const RESOLVER_QUEUE_OVERDUE: &str =
        "payment_orchestrator_resolver_queue_oldest_overdue_seconds";
    pub const WEBHOOKS_ENQUEUED: &str = "payment_orchestrator_webhooks_enqueued_total";
    pub const WEBHOOKS_DELIVERED: &str = "payment_orchestrator_webhooks_delivered_total";
    pub const WEBHOOKS_FAILED_ATTEMPTS: &str =
        "payment_orchestrator_webhooks_failed_attempts_total";
    pub const WEBHOOKS_GIVEN_UP: &str = "payment_orchestrator_webhooks_given_up_total";
    pub const WEBHOOKS_QUEUE_DEPTH: &str = "payment_orchestrator_webhooks_queue_depth";
    pub const WEBHOOKS_QUEUE_OVERDUE: &str =
        "payment_orchestrator_webhooks_queue_oldest_overdue_seconds";
    pub const WAITERS: &str = "payment_orchestrator_wait_operation_waiters";
    pub const REQUESTS_SHED: &str = "payment_orchestrator_requests_shed_total";
    pub const PARTNER_REQUEST_SECONDS: &str = "payment_orchestrator_partner_request_seconds";
    pub const RECONCILIATION_ISSUES: &str = "payment_orchestrator_reconciliation_issues_total";

    /// Describes every series (the HELP lines of `/metrics`).
    pub fn describe() {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_gauge!(BUILD_INFO, "Always 1; the labels say which build runs.");
        describe_gauge!(
            STORE_READY,
            "1 while the store (Redis) answers, else 0: readiness."
        );
        describe_counter!(OPERATIONS_OPENED, "Operations opened, by kind.");
        describe_counter!(
            OPERATIONS_FINAL,
            "Operations that reached a final status, by kind and status."
        );
        describe_counter!(
            OPERATIONS_REQUIRES_REVIEW,
            "Operations flagged requires_review (an operator must act)."
        );
        describe_gauge!(
            RESOLVER_QUEUE_DEPTH,
            "Items on the resolver's due-queue (open operations, expiries, settlement checks)."
        );
        describe_gauge!(
            RESOLVER_QUEUE_OVERDUE,
            Unit::Seconds,
            "How late the earliest due item is."
        );
        describe_counter!(WEBHOOKS_ENQUEUED, "Webhook deliveries queued.");
        describe_counter!(WEBHOOKS_DELIVERED, "Webhook deliveries answered 2xx.");
        describe_counter!(
            WEBHOOKS_FAILED_ATTEMPTS,
            "Webhook attempts that failed (retried or given up)."
        );
        describe_counter!(
            WEBHOOKS_GIVEN_UP,
            "Webhook deliveries given up after their last attempt (kept for an operator)."
        );
        describe_gauge!(WEBHOOKS_QUEUE_DEPTH, "Webhook deliveries waiting.");
        describe_gauge!(
            WEBHOOKS_QUEUE_OVERDUE,
            Unit::Seconds,
            "How late the earliest waiting delivery is."
        );
        describe_gauge!(WAITERS, "WaitOperation calls open on this replica.");
        describe_counter!(
            REQUESTS_SHED,
            "Calls refused RESOURCE_EXHAUSTED by the in-flight limits."
        );
        describe_histogram!(
            PARTNER_REQUEST_SECONDS,
            Unit::Seconds,
            "Partner calls by partner, kind and outcome."
        );
        describe_counter!(
            RECONCILIATION_ISSUES,
            "Reconciliation issues found, by partner and kind."
        );
        describe_counter!("grpc_server_started_total", "RPCs started on the server.");
        describe_counter!(
            "grpc_server_handled_total",
            "RPCs completed on the server, by code."
        );
        describe_histogram!(
            "grpc_server_handling_seconds",
            Unit::Seconds,
            "Response latency of RPCs handled by the server."
        );
    }
}

/// Seconds buckets of the latency histograms (1 ms … 30 s).
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

/// Keeps the tracer alive; [`Telemetry::shutdown`] flushes pending spans.
#[derive(Debug)]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(provider) = self.tracer_provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "flushing traces failed");
        }
    }
}

pub fn init(config: &Config) -> anyhow::Result<Telemetry> {
    // The flag (or its PAYMENT_ORCHESTRATOR_ variable) first, then the
    // standard OpenTelemetry variables the OpenTelemetry Operator injects.
    let endpoint = config.otlp_endpoint.clone().or_else(|| {
        [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    });
    let tracer_provider = match &endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .context("setting `otlp_endpoint`")?;
            // The async-runtime processor exports on tokio; the default one
            // runs on a thread without a reactor, where tonic cannot work.
            let processor = BatchSpanProcessor::builder(exporter, runtime::Tokio).build();
            // The default detectors read OTEL_SERVICE_NAME and
            // OTEL_RESOURCE_ATTRIBUTES; our name applies when neither names
            // the service.
            let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
                || std::env::var("OTEL_RESOURCE_ATTRIBUTES")
                    .is_ok_and(|attributes| attributes.contains("service.name="));
            let mut resource = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ));
            if !named {
                resource = resource.with_service_name("payment-orchestrator");
            }
            let resource = resource.build();
            global::set_text_map_propagator(TraceContextPropagator::new());
            Some(
                SdkTracerProvider::builder()
                    .with_span_processor(processor)
                    .with_resource(resource)
                    .build(),
            )
        }
        None => None,
    };
    let traces = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer().with_tracer(provider.tracer("payment-orchestrator"))
    });
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = config.log_format == "json";
    // One JSON object per line, with the fields of the current span (method,
    // request_id, merchant, payment_id, operation_id).
    let json_logs = json.then(|| {
        fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
    });
    let text_logs = (!json).then(fmt::layer);
    tracing_subscriber::registry()
        .with(filter)
        .with(traces)
        .with(json_logs)
        .with(text_logs)
        .init();

    if config.metrics_listen != "off" {
        let address: SocketAddr = config
            .metrics_listen
            .parse()
            .context("setting `metrics_listen`: expected host:port or off")?;
        PrometheusBuilder::new()
            .with_http_listener(address)
            .set_buckets(&LATENCY_BUCKETS)
            .context("latency buckets")?
            .install()
            .with_context(|| {
                format!("cannot serve metrics on {address} (setting `metrics_listen`)")
            })?;
        tracing::info!(%address, "metrics on /metrics");
        series::describe();
        metrics::gauge!(
            series::BUILD_INFO,
            "version" => env!("CARGO_PKG_VERSION"),
            "rustc" => option_env!("RUSTC_VERSION").unwrap_or("unknown"),
        )
        .set(1.0);
        // Counters exist (at zero) before anything happens, so that alerts
        // and dashboards see them from the start.
        for name in [
            series::OPERATIONS_OPENED,
            series::OPERATIONS_REQUIRES_REVIEW,
            series::WEBHOOKS_ENQUEUED,
            series::WEBHOOKS_DELIVERED,
            series::WEBHOOKS_FAILED_ATTEMPTS,
            series::WEBHOOKS_GIVEN_UP,
            series::REQUESTS_SHED,
            series::RECONCILIATION_ISSUES,
        ] {
            metrics::counter!(name).absolute(0);
        }
        metrics::gauge!(series::WAITERS).set(0.0);
        metrics::gauge!(series::RESOLVER_QUEUE_DEPTH).set(0.0);
        metrics::gauge!(series::WEBHOOKS_QUEUE_DEPTH).set(0.0);
        // Process metrics (CPU, memory, file descriptors, threads), read
        // every few seconds.
        let process = metrics_process::Collector::default();
        process.describe();
        tokio::spawn(async move {
            loop {
                process.collect();
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        });
    }
    Ok(Telemetry { tracer_provider })
}
