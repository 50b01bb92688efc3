//! Background resolution: every replica runs a loop that takes the items due
//! on the shared due-queue — non-final operations, authorizations whose
//! lifetime ended, settlement checks — under a lease, and works them.
//! Webhook deliveries wait in a lane of their own, worked by the delivery
//! worker (`webhooks::worker`).
//!
//! [`Resolver::resolve_due`] is one step (tests call it directly with the
//! time they choose); [`Resolver::run`] calls it on an interval until
//! shutdown. A replica that dies mid-step leaves its items leased; they are
//! due again when the lease runs out and another replica takes them.

use std::{
    future::Future,
    time::{Duration, SystemTime},
};

use futures_util::StreamExt;

use super::Steps;
use crate::{
    clock::Clock,
    payments::{Handled, PaymentError, Payments},
    store::DueItem,
};

/// What one step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    pub claimed: usize,
    pub finalized: usize,
    pub still_open: usize,
    pub flagged: usize,
    /// Claimed but not started before the lease ended.
    pub deferred: usize,
    pub errors: usize,
}

#[derive(Debug, Clone)]
pub struct Resolver {
    payments: Payments,
    clock: std::sync::Arc<dyn Clock>,
    /// How long a step may start items: the lease.
    lease: Duration,
    /// How many items a step works at once.
    concurrency: usize,
    batch: usize,
}

impl Resolver {
    pub fn new(
        payments: Payments,
        clock: std::sync::Arc<dyn Clock>,
        lease: Duration,
        batch: usize,
        concurrency: usize,
    ) -> Self {
        Resolver {
            payments,
            clock,
            lease,
            batch,
            concurrency: concurrency.max(1),
        }
    }

    /// Works every item due at `now` (up to one batch).
    pub async fn resolve_due(&self, now: SystemTime) -> Report {
        let mut report = Report::default();
        // The runtime's clock: a simulation's paused time moves it too.
        let started = tokio::time::Instant::now();
        let claimed = self.payments.claim_due(now, self.lease, self.batch).await;
        let items = match claimed {
            Ok(items) => items,
            Err(error) => {
                tracing::warn!(%error, "resolver: cannot read the due-queue");
                report.errors += 1;
                return report;
            }
        };
        report.claimed = items.len();
        if let Ok((depth, overdue)) = self.payments.queue_summary(now).await {
            metrics::gauge!(crate::telemetry::series::RESOLVER_QUEUE_DEPTH).set(depth as f64);
            metrics::gauge!(crate::telemetry::series::RESOLVER_QUEUE_OVERDUE)
                .set(overdue.as_secs_f64());
        }
        // Items are worked `concurrency` at a time: a replica taking over a
        // dead one's operations is not held up by their partners' latency.
        let lease = self.lease;
        let handled: Vec<Option<(DueItem, Result<Handled, PaymentError>)>> =
            futures_util::stream::iter(items)
                .map(|item| async move {
                    // Never outlive the lease: what is not started by its end
                    // is left leased and comes back after it, to whichever
                    // replica.
                    if started.elapsed() >= lease {
                        return None;
                    }
                    let result = self.payments.handle_due(&item).await;
                    Some((item, result))
                })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
        for outcome in handled {
            match outcome {
                None => report.deferred += 1,
                Some((_, Ok(Handled::Finalized))) => report.finalized += 1,
                Some((_, Ok(Handled::StillOpen | Handled::Busy))) => report.still_open += 1,
                Some((_, Ok(Handled::Flagged))) => report.flagged += 1,
                Some((_, Ok(Handled::Nothing))) => {}
                Some((item, Err(error))) => {
                    // The item stays leased: it is due again after the lease.
                    tracing::warn!(%error, item = item.encode(), "resolver: item failed");
                    report.errors += 1;
                }
            }
        }
        report
    }

    /// Steps every `interval` until `shutdown` completes. A full batch is
    /// followed at once by the next step.
    pub async fn run(self, interval: Duration, shutdown: impl Future<Output = ()>) {
        let mut steps = Steps::new(interval, shutdown);
        while steps.next().await {
            let report = self.resolve_due(self.clock.now()).await;
            if report.claimed > 0 {
                tracing::debug!(?report, "resolver step");
            }
            if report.claimed == self.batch {
                steps.more();
            }
        }
    }
}
