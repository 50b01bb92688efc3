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

pub mod series;

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

/// What telemetry is set up from (read from the configuration by `main`).
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// The OTLP/gRPC collector for traces, if configured by flag.
    pub otlp_endpoint: Option<String>,
    /// `json` or `text`.
    pub log_format: String,
    /// `host:port` of `/metrics`, or `off`.
    pub metrics_listen: String,
}

pub fn init(config: &TelemetrySettings) -> anyhow::Result<Telemetry> {
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
