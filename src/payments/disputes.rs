//! Disputes on payments: what the partners report of chargebacks, kept on
//! the payment's header (so a refund reads them with everything else it
//! reads) and announced to the merchant's webhook (`dispute.opened`,
//! `dispute.closed`).
//!
//! They come from a chargeback line in a settlement, and — for partners
//! whose chargebacks only a lookup shows (WePay) — from reading each
//! captured leg again, every [`DISPUTE_WATCH_INTERVAL`], for the partner's
//! dispute window after the capture.

use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::{MAX_WRITE_ATTEMPTS, PaymentError, Payments, execution::request_for};
use crate::{
    domain::{
        dispute::{self, DisputeChange, DisputeSeen},
        operation::{Operation, OperationKind},
        payment::Payment,
        status::TransactionStatus,
    },
    store::{Committed, DueChange, DueItem, OutboxChange, PaymentWrite, Shard, Step, Write},
};

/// How often a watched capture's legs are read again.
pub const DISPUTE_WATCH_INTERVAL: Duration = Duration::from_secs(86_400);

impl Payments {
    /// Whether a capture that just succeeded is watched for disputes: one
    /// of its successful legs is at a partner with a dispute window.
    pub(super) fn disputes_watched(&self, header: &Payment, operation: &Operation) -> bool {
        operation.kind == OperationKind::Capture
            && operation.transactions.iter().any(|tx| {
                tx.status == TransactionStatus::Success
                    && header
                        .legs
                        .get(tx.leg)
                        .is_some_and(|leg| self.partners.dispute_window(&leg.partner).is_some())
            })
    }

    /// Reads a watched capture's legs again and applies what their partners
    /// say. When to look next; `None` once every window has ended (or the
    /// capture is gone).
    pub(super) async fn watch_disputes(
        &self,
        payment: Uuid,
        operation: Uuid,
    ) -> Result<Option<SystemTime>, PaymentError> {
        let Some((header, operation)) = self.store.operation(payment, operation).await? else {
            return Ok(None);
        };
        let now = self.clock.now();
        let mut watching = false;
        for tx in &operation.transactions {
            let Some(leg) = header.value.legs.get(tx.leg) else {
                continue;
            };
            let Some(window) = self.partners.dispute_window(&leg.partner) else {
                continue;
            };
            if tx.status != TransactionStatus::Success || tx.updated_at + window <= now {
                continue;
            }
            watching = true;
            let Some((request, partner)) = request_for(&header.value, &operation, tx.id) else {
                continue;
            };
            match self.partners.dispute(&partner, &request).await {
                Ok(Some(seen)) => {
                    self.see_dispute(payment, tx.leg, seen).await?;
                }
                Ok(None) => {}
                // Read again at the next look.
                Err(error) => tracing::warn!(
                    %error, payment_id = %payment, partner,
                    "a leg could not be read for disputes; read again later"
                ),
            }
        }
        Ok(watching.then_some(now + DISPUTE_WATCH_INTERVAL))
    }

    /// Asks a transaction's partner whether its leg is disputed (a partner
    /// notified us) and applies the answer; `true` if a dispute opened or
    /// closed. A partner that cannot say (no dispute lookup) changes
    /// nothing.
    pub(super) async fn ask_about_dispute(
        &self,
        header: &Payment,
        operation: &Operation,
        transaction: Uuid,
    ) -> Result<bool, PaymentError> {
        let Some((request, partner)) = request_for(header, operation, transaction) else {
            return Ok(false);
        };
        let Some(leg) = operation.transaction(transaction).map(|tx| tx.leg) else {
            return Ok(false);
        };
        match self.partners.dispute(&partner, &request).await {
            Ok(Some(seen)) => Ok(self.see_dispute(header.id, leg, seen).await?.is_some()),
            Ok(None) => Ok(false),
            Err(error) => Err(PaymentError::Internal(
                format!("the partner could not be asked about the dispute: {error}").into(),
            )),
        }
    }

    /// Applies what a partner says of a leg's dispute to the payment: opens
    /// or closes one, with its webhook, in one step (read again on a
    /// conflict). What changed, if anything.
    pub(in crate::payments) async fn see_dispute(
        &self,
        payment: Uuid,
        leg: usize,
        seen: DisputeSeen,
    ) -> Result<Option<DisputeChange>, PaymentError> {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let Some(header) = self.store.header(payment).await? else {
                return Ok(None);
            };
            let mut updated = header.value.clone();
            let Some(partner) = updated.legs.get(leg).map(|l| l.partner.clone()) else {
                return Ok(None);
            };
            let now = self.clock.now();
            let Some((change, dispute)) = dispute::see(
                &mut updated.disputes,
                payment,
                &partner,
                leg,
                seen.clone(),
                now,
            ) else {
                return Ok(None);
            };
            updated.updated_at = now;
            let kind = match change {
                DisputeChange::Opened => "dispute.opened",
                DisputeChange::Closed => "dispute.closed",
            };
            let mut step = Step::new(Shard::of(payment), now);
            if let Some(delivery) = self.webhooks.dispute_event(&updated, &dispute, kind, now) {
                step.due.push(DueChange::Schedule(
                    DueItem::Webhook {
                        delivery: delivery.id,
                    },
                    now,
                ));
                step.outbox.push(OutboxChange::Put(delivery));
            }
            step.payment = Some(PaymentWrite {
                header: Write::Update {
                    expected: header.version,
                    value: updated,
                },
                operations: Vec::new(),
            });
            match self.store.commit(step).await? {
                Committed::Applied { .. } => {
                    tracing::warn!(
                        payment_id = %payment, dispute_id = %dispute.id, partner,
                        amount = %dispute.amount, kind, "dispute"
                    );
                    return Ok(Some(change));
                }
                Committed::Conflict => continue,
                other => {
                    return Err(PaymentError::Internal(
                        format!("a dispute's step was refused: {other:?}").into(),
                    ));
                }
            }
        }
        Err(PaymentError::Internal(
            "the payment kept changing while a dispute was recorded".into(),
        ))
    }
}
