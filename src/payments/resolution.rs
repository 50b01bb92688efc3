//! Driving operations to their true final state after the request that
//! started them: the due-queue work (operations, authorization expiry,
//! webhook deliveries), partner notifications, `WaitOperation` and the
//! operator's actions.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{PaymentError, Payments, Precondition, operation_item, outcome_of, request_for};
use crate::{
    domain::{
        payment::{
            OperationKind, OperationRequest, Payment, SettleError, TransactionOutcome, TriggeredBy,
        },
        status::TransactionStatus,
    },
    partners::{Lookup, PartnerAnswer, PartnerError},
    store::DueItem,
    webhooks::{EventType, RETRY_SCHEDULE},
};

/// The longest a `WaitOperation` waits.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// How often a waiting call re-reads the operation (any replica may settle it).
const WAIT_POLL: Duration = Duration::from_millis(100);
/// How long partner event ids are remembered for deduplication.
const EVENT_MEMORY: Duration = Duration::from_secs(7 * 24 * 3600);

/// A partner's push notification about one of its transactions.
#[derive(Debug, Clone)]
pub struct PartnerEvent {
    pub partner: String,
    pub event_id: String,
    /// The partner idempotency key the transaction was sent with.
    pub idempotency_key: String,
    pub succeeded: bool,
    pub reference: String,
    pub partner_status: String,
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventResult {
    Applied,
    /// The event id was seen before; it changed nothing.
    Duplicate,
    /// It contradicts a final status, which never changes (counted).
    IgnoredFinal,
    UnknownTransaction,
}

/// What one due item came to (for the resolver's report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Finalized,
    StillOpen,
    Flagged,
    Delivered,
    Retrying,
    Nothing,
}

impl Payments {
    /// How many items are queued and how far past due the earliest is.
    pub async fn queue_summary(
        &self,
        now: std::time::SystemTime,
    ) -> Result<(usize, Duration), PaymentError> {
        let (depth, earliest) = self.store.due_summary().await?;
        let overdue = earliest
            .and_then(|at| now.duration_since(at).ok())
            .unwrap_or_default();
        Ok((depth, overdue))
    }

    /// Whether the store answers (readiness).
    pub async fn store_ready(&self) -> bool {
        self.store.ping().await.is_ok()
    }

    /// Takes the items due at `now` (leased to this replica).
    pub async fn claim_due(
        &self,
        now: std::time::SystemTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<DueItem>, PaymentError> {
        Ok(self.store.claim_due(now, lease, limit).await?)
    }

    pub async fn handle_due(&self, item: &DueItem) -> Result<Handled, PaymentError> {
        match *item {
            DueItem::Operation { payment, operation } => {
                self.resolve_operation(payment, operation).await
            }
            DueItem::AuthorizationExpiry { payment } => self.expire_authorization(payment).await,
            DueItem::Webhook { delivery } => self.deliver_webhook(delivery).await,
        }
    }

    /// Asks the partners about every open leg of the operation: a found
    /// answer is recorded; a request the partner never received is sent
    /// again with the same partner idempotency key (at most `max_sends` in
    /// all). Past the maximum age the operation is flagged for review — it
    /// is never failed by guessing.
    async fn resolve_operation(
        &self,
        payment_id: Uuid,
        operation_id: Uuid,
    ) -> Result<Handled, PaymentError> {
        let item = operation_item(payment_id, operation_id);
        let Some(mut payment) = self.store.payment(payment_id).await? else {
            self.store.unschedule(&item).await?;
            return Ok(Handled::Nothing);
        };
        let Some(op) = payment.value.operation(operation_id) else {
            self.store.unschedule(&item).await?;
            return Ok(Handled::Nothing);
        };
        let open: Vec<(Uuid, usize, u32)> = op
            .transactions
            .iter()
            .filter(|tx| !tx.status.is_final())
            .map(|tx| (tx.id, tx.leg, tx.attempts))
            .collect();
        let is_authorization = op.kind == OperationKind::Authorization;
        for (transaction, leg, attempts) in open {
            let Some((request, partner)) = request_for(&payment.value, operation_id, transaction)
            else {
                continue;
            };
            let lookup = self
                .partners
                .lookup(&partner, &request.idempotency_key)
                .await;
            let declined_before = is_authorization
                && payment.value.operation(operation_id).is_some_and(|op| {
                    op.transactions
                        .iter()
                        .any(|tx| tx.status == TransactionStatus::Failure)
                });
            let (outcome, sent) = match lookup {
                Ok(Lookup::Found(result)) => (answer(&result), false),
                // An authorization already declined does not place more holds.
                Ok(Lookup::NotFound) if declined_before => (Some(not_attempted()), false),
                Ok(Lookup::NotFound) if attempts < self.settings.max_sends => {
                    tracing::info!(%operation_id, leg, "partner never received it: sending again, same key");
                    (answer(&self.partners.send(&partner, &request).await), true)
                }
                Ok(Lookup::NotFound) | Err(_) => (None, false),
            };
            let Some(outcome) = outcome else {
                continue;
            };
            (payment, ()) = self
                .mutate(payment, |payment, now| {
                    if sent {
                        payment.mark_sent(operation_id, transaction, now);
                    }
                    payment.record(operation_id, transaction, outcome.clone(), now);
                    Ok(())
                })
                .await?;
        }
        let now = self.clock.now();
        let op = payment.value.operation(operation_id);
        let overdue = op.is_some_and(|op| {
            !op.status.is_final()
                && now.duration_since(op.created_at).unwrap_or_default()
                    >= self.settings.max_resolution_age
        });
        let mut flagged = false;
        if overdue {
            let note = format!(
                "not resolved after {}h: needs an operator",
                self.settings.max_resolution_age.as_secs() / 3600
            );
            (payment, flagged) = self
                .mutate(payment, |payment, now| {
                    Ok(payment.flag_for_review(operation_id, note.clone(), now))
                })
                .await?;
            if flagged {
                metrics::counter!("operations_requires_review_total").increment(1);
                tracing::warn!(%operation_id, "operation flagged for review");
                if let Some(op) = payment.value.operation(operation_id)
                    && let Some(delivery) =
                        self.webhooks
                            .event(&payment.value, op, EventType::RequiresReview, now)
                {
                    self.enqueue_webhook(&delivery).await?;
                }
            }
        }
        let payment = self.conclude(payment, operation_id).await?;
        let final_now = payment
            .value
            .operation(operation_id)
            .is_some_and(|op| op.status.is_final());
        Ok(match (final_now, flagged) {
            (true, _) => Handled::Finalized,
            (false, true) => Handled::Flagged,
            (false, false) => Handled::StillOpen,
        })
    }

    /// The authorization lifetime ended: void whatever it still holds.
    async fn expire_authorization(&self, payment_id: Uuid) -> Result<Handled, PaymentError> {
        let item = DueItem::AuthorizationExpiry {
            payment: payment_id,
        };
        let Some(payment) = self.store.payment(payment_id).await? else {
            self.store.unschedule(&item).await?;
            return Ok(Handled::Nothing);
        };
        if payment.value.amounts().available_to_void().is_zero() {
            self.store.unschedule(&item).await?;
            return Ok(Handled::Nothing);
        }
        let id = self.new_id();
        self.prepare_operation(payment_id, id).await?;
        let request = OperationRequest {
            kind: OperationKind::Void,
            amount: None,
            priority: self.priorities(&payment.value.merchant).void.clone(),
            fallback: true,
            merchant_reference: String::new(),
            reason: "authorization lifetime ended".into(),
            triggered_by: TriggeredBy::System,
            idempotency_key: None,
        };
        let (payment, opened) = self
            .mutate(payment, |payment, now| {
                Ok(payment
                    .open_operation(id, &request, &mut || self.new_id(), now)
                    .is_ok())
            })
            .await?;
        self.store.unschedule(&item).await?;
        if !opened {
            self.store
                .unschedule(&operation_item(payment_id, id))
                .await?;
            return Ok(Handled::Nothing);
        }
        self.run_operation(payment, id).await?;
        Ok(Handled::Finalized)
    }

    async fn deliver_webhook(&self, id: Uuid) -> Result<Handled, PaymentError> {
        let item = DueItem::Webhook { delivery: id };
        let Some(mut delivery) = self.store.webhook(id).await? else {
            self.store.unschedule(&item).await?;
            return Ok(Handled::Nothing);
        };
        let now = self.clock.now();
        match self.webhooks.deliver(&delivery, now).await {
            Ok(()) => {
                metrics::counter!("webhooks_delivered_total").increment(1);
                self.store.delete_webhook(id).await?;
                self.store.unschedule(&item).await?;
                Ok(Handled::Delivered)
            }
            Err(error) => {
                delivery.attempts += 1;
                metrics::counter!("webhooks_failed_attempts_total").increment(1);
                let Some(pause) = RETRY_SCHEDULE.get(delivery.attempts as usize - 1) else {
                    metrics::counter!("webhooks_given_up_total").increment(1);
                    tracing::error!(event_id = %id, %error, attempts = delivery.attempts, "webhook given up");
                    self.store.delete_webhook(id).await?;
                    self.store.unschedule(&item).await?;
                    return Ok(Handled::Nothing);
                };
                tracing::warn!(event_id = %id, %error, attempts = delivery.attempts, "webhook delivery failed");
                self.store.update_webhook(&delivery).await?;
                self.store.schedule(&item, now + *pause).await?;
                Ok(Handled::Retrying)
            }
        }
    }

    /// Returns the operation once it is final, or as it is when `timeout`
    /// (at most a minute) runs out. Any replica may be the one settling it:
    /// the store is re-read every 100 ms.
    pub async fn wait_operation(
        &self,
        merchant: &str,
        operation: Uuid,
        timeout: Duration,
    ) -> Result<(Uuid, Payment), PaymentError> {
        let deadline = Instant::now() + timeout.min(MAX_WAIT);
        loop {
            let (id, payment) = self.operation(merchant, operation).await?;
            let final_now = payment.operation(id).is_some_and(|op| op.status.is_final());
            let left = deadline.saturating_duration_since(Instant::now());
            if final_now || left.is_zero() {
                return Ok((id, payment));
            }
            tokio::time::sleep(left.min(WAIT_POLL)).await;
        }
    }

    /// Applies a partner's notification to the open transaction it names.
    /// Applying is idempotent (a final status never changes); the event id
    /// only tells duplicates apart for the caller and the metrics.
    pub async fn apply_partner_event(
        &self,
        event: PartnerEvent,
    ) -> Result<EventResult, PaymentError> {
        let Some((operation_id, leg)) = event
            .idempotency_key
            .split_once(':')
            .and_then(|(op, leg)| Some((Uuid::try_parse(op).ok()?, leg.parse::<usize>().ok()?)))
        else {
            return Ok(EventResult::UnknownTransaction);
        };
        let Some(payment_id) = self.store.payment_of_operation(operation_id).await? else {
            return Ok(EventResult::UnknownTransaction);
        };
        let Some(payment) = self.store.payment(payment_id).await? else {
            return Ok(EventResult::UnknownTransaction);
        };
        let found = payment.value.operation(operation_id).and_then(|op| {
            let tx = op.transactions.iter().find(|tx| tx.leg == leg)?;
            let partner = &payment.value.legs.get(leg)?.partner;
            (partner == &event.partner).then_some((tx.id, tx.status))
        });
        let Some((transaction, status)) = found else {
            return Ok(EventResult::UnknownTransaction);
        };
        let first = self
            .store
            .first_sighting(
                &event.partner,
                &event.event_id,
                EVENT_MEMORY,
                self.clock.now(),
            )
            .await?;
        let reported = if event.succeeded {
            TransactionStatus::Success
        } else {
            TransactionStatus::Failure
        };
        if status.is_final() {
            if status != reported {
                tracing::warn!(%operation_id, leg, "partner event contradicts a final status: ignored");
                return Ok(EventResult::IgnoredFinal);
            }
            return Ok(EventResult::Duplicate);
        }
        let outcome = TransactionOutcome {
            status: reported,
            partner_reference: Some(event.reference).filter(|r| !r.is_empty()),
            partner_status: event.partner_status,
            partner_status_description: event.description,
        };
        let (payment, ()) = self
            .mutate(payment, |payment, now| {
                payment.record(operation_id, transaction, outcome.clone(), now);
                Ok(())
            })
            .await?;
        self.conclude(payment, operation_id).await?;
        Ok(if first {
            EventResult::Applied
        } else {
            EventResult::Duplicate
        })
    }

    /// Operator: resolve one operation now (any merchant's).
    pub async fn sync_operation(&self, operation: Uuid) -> Result<(Uuid, Payment), PaymentError> {
        let payment_id = self.payment_id_of(operation).await?;
        self.resolve_operation(payment_id, operation).await?;
        let payment = self.load(payment_id).await?.value;
        payment.operation(operation).ok_or(PaymentError::NotFound)?;
        Ok((operation, payment))
    }

    /// Operator: sets the final outcome of an operation flagged for review,
    /// with the reason kept in its history.
    pub async fn settle_operation(
        &self,
        operation: Uuid,
        outcomes: Vec<(Uuid, TransactionStatus)>,
        reason: String,
    ) -> Result<(Uuid, Payment), PaymentError> {
        let payment_id = self.payment_id_of(operation).await?;
        let current = self.load(payment_id).await?;
        let (payment, ()) = self
            .mutate(current, |payment, now| {
                payment
                    .settle_by_hand(operation, &outcomes, &reason, now)
                    .map_err(|error| match error {
                        SettleError::UnknownOperation => PaymentError::NotFound,
                        SettleError::NotUnderReview => Precondition::OperationNotUnderReview.into(),
                        SettleError::IncompleteOutcomes => PaymentError::InvalidArgument {
                            field: "outcomes".into(),
                            description: error.to_string(),
                        },
                    })
            })
            .await?;
        let payment = self.conclude(payment, operation).await?;
        Ok((operation, payment.value))
    }
}

/// A found answer as a transaction outcome; `None` while it is still unknown.
fn answer(result: &Result<PartnerAnswer, PartnerError>) -> Option<TransactionOutcome> {
    let outcome = outcome_of(result);
    (outcome.status != TransactionStatus::Uncertain).then_some(outcome)
}

fn not_attempted() -> TransactionOutcome {
    TransactionOutcome {
        status: TransactionStatus::Failure,
        partner_reference: None,
        partner_status: "NOT_ATTEMPTED".into(),
        partner_status_description: "an earlier leg was declined".into(),
    }
}
