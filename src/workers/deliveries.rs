//! The delivery worker: every replica runs one beside the resolver. It takes
//! the due deliveries from their own lane of the shared queue under a lease
//! and sends them concurrently, at most `per_endpoint` at a time to one
//! endpoint (the others are put back a second later), each bounded by the webhook timeout. A slow or
//! dead endpoint costs its own deliveries time, never the resolution of
//! anyone's money.

use std::{
    collections::HashMap,
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures_util::future::join_all;

use super::Steps;
use crate::{
    clock::Clock,
    payments::{Delivered, Payments},
    store::WebhookDelivery,
};

/// What one step of the worker did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryReport {
    pub claimed: usize,
    pub delivered: usize,
    pub retrying: usize,
    pub given_up: usize,
    /// Over their endpoint's limit in this step: due again a second later.
    pub deferred: usize,
    pub errors: usize,
    /// Given-up deliveries deleted (past their retention or the cap).
    pub purged: u64,
}

/// How long given-up deliveries are kept, and how many per merchant.
#[derive(Debug, Clone, Copy)]
pub struct FailedKept {
    pub retention: Duration,
    pub per_merchant: usize,
}

/// How often the failed deliveries are swept (on each replica).
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct DeliveryWorker {
    payments: Payments,
    clock: Arc<dyn Clock>,
    /// A delivery attempt's bound (the HTTP client's timeout).
    timeout: Duration,
    per_endpoint: usize,
    batch: usize,
    kept: FailedKept,
    /// When this replica last swept the failed deliveries.
    swept: Arc<std::sync::Mutex<Option<SystemTime>>>,
}

impl DeliveryWorker {
    pub fn new(
        payments: Payments,
        clock: Arc<dyn Clock>,
        timeout: Duration,
        per_endpoint: usize,
        batch: usize,
        kept: FailedKept,
    ) -> Self {
        DeliveryWorker {
            payments,
            clock,
            timeout,
            per_endpoint: per_endpoint.max(1),
            batch,
            kept,
            swept: Arc::default(),
        }
    }

    /// Deletes what is kept of given-up deliveries beyond their retention
    /// and the per-merchant cap, at most once an hour (the first step
    /// sweeps). How many were deleted.
    pub async fn sweep_failed(&self, now: SystemTime) -> u64 {
        {
            let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
            if swept.is_some_and(|at| now.duration_since(at).unwrap_or_default() < SWEEP_EVERY) {
                return 0;
            }
            *swept = Some(now);
        }
        let before = now
            .checked_sub(self.kept.retention)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        match self
            .payments
            .sweep_failed_deliveries(before, self.kept.per_merchant)
            .await
        {
            Ok(deleted) => deleted,
            Err(error) => {
                tracing::warn!(%error, "delivery worker: cannot sweep the failed deliveries");
                0
            }
        }
    }

    /// Sends every delivery due at `now` (up to one batch), concurrently.
    pub async fn deliver_due(&self, now: SystemTime) -> DeliveryReport {
        let mut report = DeliveryReport::default();
        // Long enough for an attempt and its write; a replica that dies
        // leaves its deliveries to be taken again after it.
        let lease = self.timeout + Duration::from_secs(5);
        let deliveries = match self.payments.claim_deliveries(now, lease, self.batch).await {
            Ok(deliveries) => deliveries,
            Err(error) => {
                tracing::warn!(%error, "delivery worker: cannot read the delivery queue");
                report.errors += 1;
                return report;
            }
        };
        report.claimed = deliveries.len();
        if let Ok((depth, overdue)) = self.payments.delivery_summary(now).await {
            metrics::gauge!(crate::telemetry::series::WEBHOOKS_QUEUE_DEPTH).set(depth as f64);
            metrics::gauge!(crate::telemetry::series::WEBHOOKS_QUEUE_OVERDUE)
                .set(overdue.as_secs_f64());
        }
        let mut per_endpoint: HashMap<String, usize> = HashMap::new();
        let mut sending = Vec::new();
        for delivery in deliveries {
            let taken = per_endpoint.entry(endpoint(&delivery)).or_default();
            if *taken == self.per_endpoint {
                // Its endpoint is busy: again in a second, on any replica.
                match self
                    .payments
                    .defer_delivery(delivery.id, now + Duration::from_secs(1))
                    .await
                {
                    Ok(()) => report.deferred += 1,
                    Err(_) => report.errors += 1,
                }
                continue;
            }
            *taken += 1;
            sending.push(self.payments.deliver_webhook(delivery));
        }
        for result in join_all(sending).await {
            match result {
                Ok(Delivered::Accepted) => report.delivered += 1,
                Ok(Delivered::Retrying) => report.retrying += 1,
                Ok(Delivered::GivenUp) => report.given_up += 1,
                Ok(Delivered::Nothing) => {}
                Err(error) => {
                    // The delivery stays leased: due again after the lease.
                    tracing::warn!(%error, "delivery worker: a delivery could not be recorded");
                    report.errors += 1;
                }
            }
        }
        // After the sends, so that a long sweep never eats their leases.
        report.purged = self.sweep_failed(now).await;
        report
    }

    /// Steps every `interval` until `shutdown` completes; a full batch is
    /// followed at once by the next step.
    pub async fn run(self, interval: Duration, shutdown: impl Future<Output = ()>) {
        let mut steps = Steps::new(interval, shutdown);
        while steps.next().await {
            let report = self.deliver_due(self.clock.now()).await;
            if report.claimed > 0 {
                tracing::debug!(?report, "delivery step");
            }
            if report.claimed == self.batch && report.deferred < report.claimed {
                steps.more();
            }
        }
    }
}

/// Where a delivery goes, as the per-endpoint limit counts it: scheme, host
/// and port.
fn endpoint(delivery: &WebhookDelivery) -> String {
    match reqwest::Url::parse(&delivery.url) {
        Ok(url) => format!(
            "{}://{}:{}",
            url.scheme(),
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or_default()
        ),
        Err(_) => delivery.url.clone(),
    }
}
