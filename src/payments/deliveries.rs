//! Webhook deliveries: the delivery worker's side of the store. A delivery
//! waits in its own lane ([`Lane::Delivery`]), so the resolver never waits on
//! a merchant's endpoint; one that was given up moves to [`Lane::Failed`],
//! where it is kept, listed and re-sent by an operator.

use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::{PaymentError, Payments};
use crate::{
    store::{DueChange, DueItem, DueSummary, Lane, OutboxChange, Shard, Step, WebhookDelivery},
    webhooks::RETRY_SCHEDULE,
};

/// Failed deliveries read per page when they are purged.
const PURGE_PAGE: usize = 500;

/// The most failed deliveries one sweep reads to count them per merchant.
const MAX_SWEEP_READS: usize = 100_000;

/// What one delivery attempt came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivered {
    Accepted,
    /// Failed; another attempt is scheduled.
    Retrying,
    /// Failed for the last time: kept among the failed deliveries.
    GivenUp,
    /// Its delivery is gone (delivered by another replica in the meantime).
    Nothing,
}

/// A delivery that was given up, as an operator sees it.
#[derive(Debug, Clone)]
pub struct FailedDelivery {
    pub given_up_at: SystemTime,
    pub delivery: WebhookDelivery,
}

/// A page of failed deliveries, oldest given up first.
#[derive(Debug, Clone)]
pub struct FailedPage {
    pub deliveries: Vec<FailedDelivery>,
    /// Where the next page starts, if there may be one.
    pub next: Option<(SystemTime, Uuid)>,
}

impl Payments {
    /// Takes the deliveries due at `now` (leased to this replica).
    pub async fn claim_deliveries(
        &self,
        now: SystemTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<WebhookDelivery>, PaymentError> {
        let items = self
            .store
            .claim_due(Lane::Delivery, now, lease, limit)
            .await?;
        let mut deliveries = Vec::with_capacity(items.len());
        for item in items {
            let DueItem::Webhook { delivery: id } = item else {
                continue;
            };
            match self.store.delivery(id).await? {
                Some(delivery) => deliveries.push(delivery),
                None => {
                    let mut step = Step::new(Shard::of(id), now);
                    step.due.push(DueChange::Unschedule(item));
                    self.store.commit(step).await?;
                }
            }
        }
        Ok(deliveries)
    }

    /// How many deliveries wait and how far past due the earliest is.
    pub async fn delivery_summary(
        &self,
        now: SystemTime,
    ) -> Result<(usize, Duration), PaymentError> {
        let DueSummary { depth, earliest } = self.store.due_summary(Lane::Delivery).await?;
        let overdue = earliest
            .and_then(|at| now.duration_since(at).ok())
            .unwrap_or_default();
        Ok((depth, overdue))
    }

    /// Sends one delivery and records what came of it: deleted when
    /// accepted, rescheduled by [`RETRY_SCHEDULE`] when not, kept among the
    /// failed deliveries (with its last error) after the last attempt.
    pub async fn deliver_webhook(
        &self,
        mut delivery: WebhookDelivery,
    ) -> Result<Delivered, PaymentError> {
        let id = delivery.id;
        let item = DueItem::Webhook { delivery: id };
        let result = self.webhooks.deliver(&delivery, self.clock.now()).await;
        let now = self.clock.now();
        let mut step = Step::new(Shard::of(id), now);
        let delivered = match result {
            Ok(()) => {
                metrics::counter!(crate::telemetry::series::WEBHOOKS_DELIVERED).increment(1);
                step.outbox.push(OutboxChange::Delete(id));
                step.due.push(DueChange::Unschedule(item));
                Delivered::Accepted
            }
            Err(error) => {
                delivery.attempts += 1;
                delivery.last_error = Some(error.to_string());
                metrics::counter!(crate::telemetry::series::WEBHOOKS_FAILED_ATTEMPTS).increment(1);
                step.due.push(DueChange::Unschedule(item));
                match RETRY_SCHEDULE.get(delivery.attempts as usize - 1) {
                    Some(pause) => {
                        tracing::warn!(event_id = %id, %error, attempts = delivery.attempts, "webhook delivery failed");
                        step.due.push(DueChange::Schedule(
                            DueItem::Webhook { delivery: id },
                            now + *pause,
                        ));
                        step.outbox.push(OutboxChange::Update(delivery));
                        Delivered::Retrying
                    }
                    None => {
                        metrics::counter!(crate::telemetry::series::WEBHOOKS_GIVEN_UP).increment(1);
                        tracing::error!(event_id = %id, %error, attempts = delivery.attempts, "webhook given up; kept among the failed deliveries");
                        step.due.push(DueChange::Schedule(
                            DueItem::FailedWebhook { delivery: id },
                            now,
                        ));
                        step.outbox.push(OutboxChange::Update(delivery));
                        Delivered::GivenUp
                    }
                }
            }
        };
        self.store.commit(step).await?;
        Ok(delivered)
    }

    /// Puts a claimed delivery back to be due at `at` (its endpoint was
    /// busy).
    pub async fn defer_delivery(&self, id: Uuid, at: SystemTime) -> Result<(), PaymentError> {
        let mut step = Step::new(Shard::of(id), self.clock.now());
        step.due
            .push(DueChange::Schedule(DueItem::Webhook { delivery: id }, at));
        self.store.commit(step).await?;
        Ok(())
    }

    /// Failed deliveries after `after`, oldest given up first, optionally of
    /// one merchant only.
    pub async fn failed_deliveries(
        &self,
        merchant: Option<&str>,
        mut after: Option<(SystemTime, Uuid)>,
        limit: usize,
    ) -> Result<FailedPage, PaymentError> {
        let mut deliveries = Vec::new();
        // A merchant filter reads on past other merchants' deliveries, a
        // bounded number of pages per call.
        for _ in 0..16 {
            let cursor = after.map(|(at, id)| (at, DueItem::FailedWebhook { delivery: id }));
            let listed = self.store.list_lane(Lane::Failed, cursor, limit).await?;
            let exhausted = listed.len() < limit;
            for (at, item) in listed {
                let DueItem::FailedWebhook { delivery: id } = item else {
                    continue;
                };
                after = Some((at, id));
                let Some(delivery) = self.store.delivery(id).await? else {
                    continue;
                };
                if merchant.is_none_or(|m| m == delivery.merchant) {
                    deliveries.push(FailedDelivery {
                        given_up_at: at,
                        delivery,
                    });
                    if deliveries.len() == limit {
                        return Ok(FailedPage {
                            deliveries,
                            next: after,
                        });
                    }
                }
            }
            if exhausted {
                return Ok(FailedPage {
                    deliveries,
                    next: None,
                });
            }
        }
        Ok(FailedPage {
            deliveries,
            next: after,
        })
    }

    /// Deletes the failed deliveries given up before `before` (only
    /// `merchant`'s, if given): how many.
    pub async fn purge_failed_deliveries(
        &self,
        merchant: Option<&str>,
        before: SystemTime,
    ) -> Result<u64, PaymentError> {
        let mut purged = 0;
        let mut after = None;
        loop {
            let (page, last) = self.failed_lane_page(after).await?;
            for (at, id) in page {
                // Oldest first: the rest were given up later.
                if at >= before {
                    return Ok(purged);
                }
                after = Some((at, id));
                if let Some(merchant) = merchant {
                    let owner = self.store.delivery(id).await?.map(|d| d.merchant);
                    if owner.is_some_and(|owner| owner != merchant) {
                        continue;
                    }
                }
                self.forget_failed(id).await?;
                purged += 1;
            }
            if last {
                return Ok(purged);
            }
        }
    }

    /// Keeps the failed deliveries bounded: none given up before `before`,
    /// and at most `per_merchant` of one merchant (its newest). Reads the
    /// ones kept, one by one, up to 100 000 per sweep, to count them per
    /// merchant (a sweep that stops early counts fewer, so deletes fewer;
    /// the next one starts from the oldest again). How many were deleted.
    pub async fn sweep_failed_deliveries(
        &self,
        before: SystemTime,
        per_merchant: usize,
    ) -> Result<u64, PaymentError> {
        let mut purged = self.purge_failed_deliveries(None, before).await?;
        let mut by_merchant: std::collections::HashMap<String, Vec<Uuid>> =
            std::collections::HashMap::new();
        let (mut after, mut read) = (None, 0);
        while read < MAX_SWEEP_READS {
            let (page, last) = self.failed_lane_page(after).await?;
            for (at, id) in page {
                after = Some((at, id));
                read += 1;
                if let Some(delivery) = self.store.delivery(id).await? {
                    by_merchant.entry(delivery.merchant).or_default().push(id);
                }
            }
            if last {
                break;
            }
        }
        for (merchant, oldest_first) in by_merchant {
            let over = oldest_first.len().saturating_sub(per_merchant);
            for &id in &oldest_first[..over] {
                self.forget_failed(id).await?;
                purged += 1;
            }
            if over > 0 {
                tracing::warn!(
                    merchant,
                    deleted = over,
                    "failed webhook deliveries over the per-merchant cap deleted"
                );
            }
        }
        Ok(purged)
    }

    /// One page of the failed lane after `after`, oldest given up first, as
    /// `(given up at, delivery)`; and whether it is the last.
    async fn failed_lane_page(
        &self,
        after: Option<(SystemTime, Uuid)>,
    ) -> Result<(Vec<(SystemTime, Uuid)>, bool), PaymentError> {
        let cursor = after.map(|(at, id)| (at, DueItem::FailedWebhook { delivery: id }));
        let listed = self
            .store
            .list_lane(Lane::Failed, cursor, PURGE_PAGE)
            .await?;
        let last = listed.len() < PURGE_PAGE;
        let page = listed
            .into_iter()
            .filter_map(|(at, item)| match item {
                DueItem::FailedWebhook { delivery } => Some((at, delivery)),
                _ => None,
            })
            .collect();
        Ok((page, last))
    }

    /// Deletes one failed delivery and its place on the failed lane, if it
    /// is still failed (an operator may have just re-sent it: then it is
    /// left alone). The check and the write are two round trips: a re-send
    /// in between loses that delivery — a window of one round trip, left
    /// because only an operator's re-send during a purge can meet it.
    async fn forget_failed(&self, id: Uuid) -> Result<(), PaymentError> {
        let failed = DueItem::FailedWebhook { delivery: id };
        if self.store.scheduled(&failed).await?.is_none() {
            return Ok(());
        }
        let mut step = Step::new(Shard::of(id), self.clock.now());
        step.due.push(DueChange::Unschedule(DueItem::FailedWebhook {
            delivery: id,
        }));
        step.outbox.push(OutboxChange::Delete(id));
        self.store.commit(step).await?;
        Ok(())
    }

    /// Sends a failed delivery again: its attempts start over, the first
    /// one now. `None`: no failed delivery has that id.
    pub async fn redeliver_webhook(
        &self,
        id: Uuid,
    ) -> Result<Option<WebhookDelivery>, PaymentError> {
        let failed = DueItem::FailedWebhook { delivery: id };
        if self.store.scheduled(&failed).await?.is_none() {
            return Ok(None);
        }
        let Some(mut delivery) = self.store.delivery(id).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        delivery.attempts = 0;
        let mut step = Step::new(Shard::of(id), now);
        step.due.push(DueChange::Unschedule(failed));
        step.due
            .push(DueChange::Schedule(DueItem::Webhook { delivery: id }, now));
        step.outbox.push(OutboxChange::Update(delivery.clone()));
        self.store.commit(step).await?;
        Ok(Some(delivery))
    }
}
