//! Writing what happened to an operation as one atomic store step, with
//! everything its new state implies:
//!
//! - still open after the partner calls: back on the due-queue with backoff;
//! - newly final: off the due-queue, a webhook queued, the request's answer
//!   stored under its idempotency record, and for an authorization its
//!   follow-ups opened in the same step — the session's status, the
//!   automatic capture or the compensation void (both reserved and queued),
//!   the authorization's expiry;
//! - newly flagged for review: a webhook queued.
//!
//! A step that lost the race for the header (another operation wrote it
//! first) is retried on a fresh read with the same change applied again.

use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::{
    MAX_WRITE_ATTEMPTS, PaymentError, Payments, Work, disputes::DISPUTE_WATCH_INTERVAL, outcome_of,
    system_id,
};
use crate::{
    domain::{
        operation::{Operation, OperationKind, TriggeredBy},
        payment::{OperationRequest, Payment},
        session::CaptureMode,
        status::OperationStatus,
    },
    store::{
        ClaimChange, Committed, DueChange, DueItem, KeyChange, OperationWrite, OutboxChange,
        Outcome, PaymentWrite, Shard, Step, StoreError, Versioned, Write,
    },
    webhooks::EventType,
};

/// Where an operation is in its life when a step is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Mid-execution (a re-offered amount before it is sent): the request
    /// keeps the operation's lease and answers later.
    Progress,
    /// After the partner calls, by the request or by the resolver.
    Conclude,
}

/// Who answers under an idempotency record when the step concludes.
#[derive(Debug, Clone)]
pub(super) enum Keying {
    /// Nobody (system operations that belong to no request).
    None,
    /// The resolver or an operator: an operation that becomes final
    /// completes its request's record if that is still in flight (the
    /// request died), so replays get the final answer.
    Origin,
    /// The request itself answers under `record`, with the operations it ran
    /// before this one (an authorization before its automatic capture). An
    /// authorization that opens a follow-up leaves the answer to it.
    Request {
        record: Uuid,
        before: Vec<Operation>,
    },
}

/// A step written.
#[derive(Debug)]
pub(super) struct Advanced {
    pub work: Work,
    /// The answer under the record: the one this step stored, or the one
    /// stored first if someone else answered before.
    pub answer: Option<Outcome>,
    /// Operations this step opened (follow-ups of an authorization).
    pub opened: Vec<Operation>,
    /// The change found itself superseded (a send it answers was sent
    /// again since): it answers nobody.
    pub stale: bool,
    /// Enough replicas acknowledged the step (always, unless the store is
    /// asked to wait for replicas): nothing is sent to a partner on a step
    /// a failover could lose.
    pub replicated: bool,
}

/// What a change adds to its step beyond the operation: send claims taken
/// or given up, whether it found itself superseded, and whether its
/// request gives the work up (the record's lease ends, the operation is due
/// now: a retry or the resolver takes it over at once).
#[derive(Debug, Default)]
pub(super) struct Edit {
    pub claims: Vec<ClaimChange>,
    pub stale: bool,
    pub abandon: Option<Uuid>,
}

/// When to look at a non-final operation again: about a quarter of its age,
/// between 1 s and 1 h, ±20 % jitter. Fast at first (seconds), slow later
/// (minutes, then hourly), with no per-operation state to keep.
/// `fraction` is a random draw in `[0, 1)`.
fn resolution_backoff(age: Duration, fraction: f64) -> Duration {
    let base = (age / 4).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    base.mul_f64(0.8 + 0.4 * fraction)
}

pub(super) fn operation_item(operation: &Operation) -> DueItem {
    DueItem::Operation {
        payment: operation.payment_id,
        operation: operation.id,
    }
}

/// A step's parts beyond the operation itself.
struct Plan {
    step: Step,
    opened: Vec<Operation>,
    outcome: Option<Outcome>,
    session: Option<Versioned<crate::domain::session::Session>>,
}

impl Payments {
    /// Whether a settlement should show what the operation moved: a capture
    /// or refund with a successful transaction at a partner that reports
    /// settlements.
    fn settlement_expected(&self, header: &Payment, operation: &Operation) -> bool {
        matches!(
            operation.kind,
            OperationKind::Capture | OperationKind::Refund
        ) && operation.transactions.iter().any(|tx| {
            tx.status == crate::domain::status::TransactionStatus::Success
                && header.legs.get(tx.leg).is_some_and(|leg| {
                    self.partners
                        .get(&leg.partner)
                        .is_some_and(|p| p.settlement_reports)
                })
        })
    }

    /// Applies `change` to the operation and writes it, with what its new
    /// state implies, as one step. On a conflict the header and operation
    /// are read again and `change` applied to them (it must be safe to apply
    /// to any fresher state: recording an answer twice changes nothing).
    pub(super) async fn advance(
        &self,
        mut work: Work,
        phase: Phase,
        keying: &Keying,
        mut change: impl FnMut(&mut Payment, &mut Operation, SystemTime, &mut Edit),
    ) -> Result<Advanced, PaymentError> {
        for attempt in 0..MAX_WRITE_ATTEMPTS {
            if attempt > 0 {
                work = self.reread(&work).await?;
            }
            let now = self.clock.now();
            let mut header = work.header.value.clone();
            let mut operation = work.operation.clone();
            let mut edit = Edit::default();
            change(&mut header, &mut operation, now, &mut edit);
            let changed = operation != work.operation;
            if !changed {
                header = work.header.value.clone();
            }
            // A superseded change answers nobody: whoever sent since will.
            let keying = if edit.stale { &Keying::None } else { keying };
            let plan = self.plan(&work, &mut header, &operation, phase, keying, now);
            let writes_payment = changed || !plan.opened.is_empty();
            let mut step = plan.step;
            step.claims = edit.claims;
            if let Some(record) = edit.abandon {
                step.key = Some(KeyChange::Abandon { record });
                step.due
                    .push(DueChange::Schedule(operation_item(&operation), now));
            }
            if writes_payment {
                let mut operations = vec![OperationWrite::Update(operation.clone())];
                operations.extend(plan.opened.iter().cloned().map(OperationWrite::Insert));
                step.payment = Some(PaymentWrite {
                    header: Write::Update {
                        expected: work.header.version,
                        value: header.clone(),
                    },
                    operations,
                });
            }
            let queued = step
                .outbox
                .iter()
                .filter(|change| matches!(change, OutboxChange::Put(_)))
                .count();
            let (committed, replicated) = match self.store.commit(step).await {
                Err(StoreError::NotReplicated(committed)) => (*committed, false),
                other => (other?, true),
            };
            match committed {
                Committed::Applied {
                    payment,
                    session,
                    answered,
                } => {
                    self.count(&work.operation, &operation, &plan.opened);
                    metrics::counter!(crate::telemetry::series::WEBHOOKS_ENQUEUED)
                        .increment(queued as u64);
                    let session = match (plan.session, session) {
                        (Some(written), Some(version)) => Some(Versioned {
                            value: written.value,
                            version,
                        }),
                        _ => work.session,
                    };
                    return Ok(Advanced {
                        work: Work {
                            header: Versioned {
                                value: header,
                                version: payment.unwrap_or(work.header.version),
                            },
                            operation,
                            session,
                        },
                        answer: answered.map(|first| *first).or(plan.outcome),
                        opened: plan.opened,
                        stale: edit.stale,
                        replicated,
                    });
                }
                Committed::Conflict => continue,
                // Another sender holds a claim this step would take.
                Committed::Busy => return Err(PaymentError::RequestInProgress),
                Committed::Exists | Committed::Claimed(_) => {
                    return Err(PaymentError::Internal(
                        "a conclusion step found a record it does not create".into(),
                    ));
                }
            }
        }
        Err(PaymentError::Internal(
            "too many concurrent writes to one payment".into(),
        ))
    }

    /// [`advance`](Self::advance)s the operation to its conclusion, the
    /// answer stored under the key of the request that opened it.
    pub(super) async fn conclude(
        &self,
        work: Work,
        change: impl FnMut(&mut Payment, &mut Operation, SystemTime, &mut Edit),
    ) -> Result<Advanced, PaymentError> {
        self.advance(work, Phase::Conclude, &Keying::Origin, change)
            .await
    }

    /// The header and operation (and an authorization's session) as stored.
    async fn reread(&self, work: &Work) -> Result<Work, PaymentError> {
        let (header, operation) = self
            .store
            .operation(work.header.value.id, work.operation.id)
            .await?
            .ok_or_else(|| PaymentError::Internal("an operation being worked on is gone".into()))?;
        let session = match work.session {
            Some(_) => self.store.session(header.value.session_id).await?,
            None => None,
        };
        Ok(Work {
            header,
            operation,
            session,
        })
    }

    /// Everything the operation's new state implies, as the parts of a step
    /// (the header is changed in place by the follow-ups it opens).
    fn plan(
        &self,
        work: &Work,
        header: &mut Payment,
        operation: &Operation,
        phase: Phase,
        keying: &Keying,
        now: SystemTime,
    ) -> Plan {
        let before = &work.operation;
        let newly_final = !before.status.is_final() && operation.status.is_final();
        let mut step = Step::new(Shard::of(header.id), now);
        let mut opened = Vec::new();
        let mut session = None;
        if newly_final && operation.kind == OperationKind::Authorization {
            let authorized = operation.status == OperationStatus::Success;
            if let Some(current) = &work.session {
                let mut updated = current.value.clone();
                updated.finish_payment(header.id, authorized, now);
                if updated != current.value {
                    step.session = Some(Write::Update {
                        expected: current.version,
                        value: updated.clone(),
                    });
                    session = Some(Versioned {
                        value: updated,
                        version: current.version,
                    });
                }
            }
            opened.extend(self.follow_up(header, authorized, now));
            if authorized {
                // Each leg's lifetime counts from here; the earliest to run
                // out is due first.
                header.authorized_at = Some(operation.updated_at);
                if let Some(at) = header.next_expiry(operation.updated_at) {
                    let expiry = DueItem::AuthorizationExpiry { payment: header.id };
                    step.due.push(DueChange::Schedule(expiry, at));
                }
            }
        }
        if newly_final && self.disputes_watched(header, operation) {
            let watch = DueItem::DisputeWatch {
                payment: header.id,
                operation: operation.id,
            };
            step.due
                .push(DueChange::Schedule(watch, now + DISPUTE_WATCH_INTERVAL));
        }
        if newly_final && self.settlement_expected(header, operation) {
            let check = DueItem::SettlementCheck {
                payment: header.id,
                operation: operation.id,
            };
            let at = now + self.settings.settlements.missing_after;
            step.due.push(DueChange::Schedule(check, at));
        }
        for follow_up in &opened {
            let lease_end = now + self.settings.operation_lease;
            step.due
                .push(DueChange::Schedule(operation_item(follow_up), lease_end));
        }
        if phase == Phase::Conclude {
            let item = operation_item(operation);
            if operation.status.is_final() {
                step.due.push(DueChange::Unschedule(item));
            } else {
                let age = now.duration_since(operation.created_at).unwrap_or_default();
                step.due.push(DueChange::Schedule(
                    item,
                    now + resolution_backoff(age, self.chance.fraction()),
                ));
            }
        }
        let mut events = Vec::new();
        if newly_final {
            // Wakes its WaitOperation calls, on every replica.
            step.announce = Some(operation.id);
            events.push(EventType::OperationFinal);
        }
        if !before.requires_review && operation.requires_review {
            events.push(EventType::RequiresReview);
        }
        for event in events {
            if let Some(delivery) = self.webhooks.event(header, operation, event, now) {
                step.due.push(DueChange::Schedule(
                    DueItem::Webhook {
                        delivery: delivery.id,
                    },
                    now,
                ));
                step.outbox.push(OutboxChange::Put(delivery));
            }
        }
        let answering = match (phase, keying) {
            (Phase::Progress, _) | (_, Keying::None) => None,
            (Phase::Conclude, Keying::Origin) => operation
                .origin
                .filter(|_| newly_final)
                .map(|origin| (origin.record, Vec::new())),
            (Phase::Conclude, Keying::Request { record, before }) => {
                opened.is_empty().then(|| (*record, before.clone()))
            }
        };
        let outcome = answering.map(|(record, before)| {
            let outcome = outcome_of(header, &before, operation, &opened);
            step.key = Some(KeyChange::Complete {
                record,
                outcome: outcome.clone(),
            });
            outcome
        });
        Plan {
            step,
            opened,
            outcome,
            session,
        }
    }

    /// What follows an authorization that just became final: the automatic
    /// capture after a success in AUTOMATIC mode, the compensation void of
    /// the legs that were authorized after a failure. Their ids are derived
    /// from the payment, so each is opened at most once.
    fn follow_up(
        &self,
        header: &mut Payment,
        authorized: bool,
        now: SystemTime,
    ) -> Option<Operation> {
        if !authorized {
            return header.open_compensation(system_id(header.id, "compensation"), now);
        }
        if header.capture_mode != CaptureMode::Automatic {
            return None;
        }
        let (priority, order_source) = self.priority(&header.merchant, OperationKind::Capture);
        let request = OperationRequest {
            kind: OperationKind::Capture,
            amount: None,
            priority,
            fallback: true,
            merchant_reference: String::new(),
            reason: "automatic capture".into(),
            triggered_by: TriggeredBy::System,
            origin: None,
            items: Vec::new(),
            order_source,
            avoid: self
                .partners
                .avoided(header.legs.iter().map(|leg| leg.partner.as_str())),
            max_operations: None,
        };
        header
            .open_operation(system_id(header.id, "automatic-capture"), &request, now)
            .ok()
    }

    /// Metrics of what a step changed (after it was written).
    fn count(&self, before: &Operation, after: &Operation, opened: &[Operation]) {
        if !before.status.is_final() && after.status.is_final() {
            metrics::counter!(
                crate::telemetry::series::OPERATIONS_FINAL,
                "kind" => after.kind.as_str(),
                "status" => after.status.as_str(),
            )
            .increment(1);
        }
        if !before.requires_review && after.requires_review {
            metrics::counter!(crate::telemetry::series::OPERATIONS_REQUIRES_REVIEW).increment(1);
            tracing::warn!(operation_id = %after.id, "operation flagged for review");
        }
        metrics::counter!(crate::telemetry::series::OPERATIONS_OPENED)
            .increment(opened.len() as u64);
    }
}

/// A write the store applied without answering the version it wrote: the
/// store's scripts always answer it, so this is a store that misbehaves.
pub(super) fn unversioned() -> PaymentError {
    PaymentError::Internal("the store applied a write without its version".into())
}
