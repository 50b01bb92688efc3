//! Process-wide telemetry: structured logs and the Prometheus endpoint.
//! Called once from `main` (the recorder is global, so tests that build
//! several apps in one process do not call it).

use std::net::SocketAddr;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusBuilder;
use tracing_subscriber::{EnvFilter, fmt};

use crate::config::Config;

/// Seconds buckets of the latency histograms (1 ms … 30 s).
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

pub fn init(config: &Config) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if config.log_format == "json" {
        // One JSON object per line, with the fields of the current span
        // (method, request_id, merchant, payment_id, operation_id).
        fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .init();
    } else {
        fmt().with_env_filter(filter).init();
    }
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
    Ok(())
}
