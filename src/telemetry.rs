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
    let tracer_provider = match &config.otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .context("setting `otlp_endpoint`")?;
            // The async-runtime processor exports on tokio; the default one
            // runs on a thread without a reactor, where tonic cannot work.
            let processor = BatchSpanProcessor::builder(exporter, runtime::Tokio).build();
            let resource = Resource::builder()
                .with_service_name("payment-orchestrator")
                .build();
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
        // Counters exist (at zero) before anything happens, so that alerts
        // and dashboards see them from the start.
        for name in [
            "operations_opened_total",
            "operations_requires_review_total",
            "webhooks_enqueued_total",
            "webhooks_delivered_total",
            "webhooks_failed_attempts_total",
            "webhooks_given_up_total",
        ] {
            metrics::counter!(name).absolute(0);
        }
        metrics::gauge!("resolver_queue_depth").set(0.0);
    }
    Ok(Telemetry { tracer_provider })
}
