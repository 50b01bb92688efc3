//! Driving operations to their true final state after the request that
//! started them: the due-queue's work (operations, authorization expiry,
//! webhook deliveries), partner notifications and the operator's actions
//! ("sync" resolves one operation now; "settle" sets an outcome by hand).
//!
//! Every write is a step (see `steps`): what an operation's new state
//! implies — its due entry, webhooks, the answer of a request that died, the
//! follow-ups of an authorization — is written with it, never after it.

use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::{
    Advanced, Keying, MAX_WRITE_ATTEMPTS, PaymentError, Payments, Phase, Precondition, Work,
    operation_item, settle, system_id,
};
use crate::{
    domain::{
        operation::{
            Operation, OperationKind, PartnerKey, SettleError, TransactionOutcome, TriggeredBy,
        },
        payment::{Answer, OperationRequest, Payment},
        status::{OperationStatus, TransactionStatus},
    },
    store::{
        Committed, DueChange, DueItem, DueSummary, Lane, PaymentWrite, Shard, Step, StoreError,
        Versioned, Write,
    },
};

/// The lease of one resolver on one operation: whoever holds it looks the
/// operation's legs up and sends again what needs it; anyone else leaves it.
#[derive(Debug, Clone)]
pub(super) struct WorkLease {
    name: String,
    owner: Uuid,
}

impl WorkLease {
    fn of(operation: Uuid, owner: Uuid) -> WorkLease {
        WorkLease {
            name: format!("resolve:{operation}"),
            owner,
        }
    }

    /// Takes or renews it for one more leg; `false` once someone else holds
    /// it (ours ran out).
    pub(super) async fn renew(&self, payments: &Payments) -> Result<bool, PaymentError> {
        Ok(payments
            .store
            .take_lease(
                &self.name,
                self.owner,
                payments.clock.now(),
                payments.settings.operation_lease,
            )
            .await?)
    }
}

/// How long partner event ids are remembered for deduplication.
const EVENT_MEMORY: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a settlement check waits when a settlement that is not stored
/// yet (being imported, or kept after it failed) holds the transaction.
const SETTLEMENT_RECHECK: Duration = Duration::from_secs(3_600);

/// A partner's push notification about one of its transactions.
#[derive(Debug, Clone)]
pub struct PartnerEvent {
    pub partner: String,
    pub event_id: String,
    /// The partner idempotency key the transaction was sent with.
    pub idempotency_key: String,
    pub succeeded: bool,
    /// The (successful) transaction is disputed: the partner is asked.
    pub disputed: bool,
    pub reference: String,
    pub partner_status: String,
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventResult {
    Applied,
    /// The event id was seen before; it changed nothing.
    Duplicate,
    /// It contradicts a final status, which never changes.
    IgnoredFinal,
    UnknownTransaction,
}

/// What one due item came to (for the resolver's report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Finalized,
    StillOpen,
    Flagged,
    Nothing,
    /// Someone else works it now (holds its lease).
    Busy,
}

impl Payments {
    /// How many items are queued and how far past due the earliest is.
    pub async fn queue_summary(&self, now: SystemTime) -> Result<(usize, Duration), PaymentError> {
        let DueSummary { depth, earliest } = self.store.due_summary(Lane::Resolution).await?;
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
        now: SystemTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<DueItem>, PaymentError> {
        Ok(self
            .store
            .claim_due(Lane::Resolution, now, lease, limit)
            .await?)
    }

    pub async fn handle_due(&self, item: &DueItem) -> Result<Handled, PaymentError> {
        match *item {
            DueItem::Operation { payment, operation } => {
                self.resolve_operation(payment, operation).await
            }
            DueItem::AuthorizationExpiry { payment } => self.expire_authorization(payment).await,
            // Not in this lane: the delivery worker's, or never claimed.
            DueItem::Webhook { .. } | DueItem::FailedWebhook { .. } => Ok(Handled::Nothing),
            DueItem::SettlementCheck { payment, operation } => {
                match self.check_settled(payment, operation).await? {
                    Some(_) => self.drop_item(item.clone()).await,
                    // A settlement being imported (or kept after it failed)
                    // holds it: looked at again once it is stored.
                    None => {
                        let again = self.clock.now() + SETTLEMENT_RECHECK;
                        self.reschedule(item.clone(), Some(again)).await
                    }
                }
            }
            DueItem::DisputeWatch { payment, operation } => {
                match self.watch_disputes(payment, operation).await? {
                    Some(next) => {
                        let mut step = Step::new(item.shard(), self.clock.now());
                        step.due.push(DueChange::Schedule(item.clone(), next));
                        self.store.commit(step).await?;
                        Ok(Handled::Nothing)
                    }
                    None => self.drop_item(item.clone()).await,
                }
            }
            DueItem::Retention { payment } => self.end_retention(payment).await,
        }
    }

    /// Forgets a payment whose retention ended with nothing of it open
    /// (with its session, operations and index entries); a payment still
    /// open, or changed since, is looked at again when its retention could
    /// end. If it changes while being forgotten, it is kept.
    async fn end_retention(&self, payment: Uuid) -> Result<Handled, PaymentError> {
        let item = DueItem::Retention { payment };
        let (Some(retention), Some(stored)) = (
            self.settings.payment_retention,
            self.store.payment(payment).await?,
        ) else {
            return self.drop_item(item).await;
        };
        let now = self.clock.now();
        let header = &stored.header.value;
        let open =
            !header.is_finished() || stored.operations.iter().any(|op| !op.status.is_final());
        // An operation flagged for review (a partner contradicted it) keeps
        // its evidence for the retention after its last change (the flag is
        // one), whatever else the payment did since.
        let flagged = stored.operations.iter().filter(|op| op.requires_review);
        let flagged_until = flagged.map(|op| op.updated_at + retention).max();
        let until = match open {
            true => now + retention,
            false => header.kept_until(retention, |partner| self.partners.dispute_window(partner)),
        };
        let until = until.max(flagged_until.unwrap_or(until));
        if until > now {
            return self.reschedule(item, Some(until)).await;
        }
        // The session goes with the payment it ended with; one still open
        // (a declined attempt lets the shopper try again), or that went on
        // with another payment, is left to its own retention.
        let session = self
            .store
            .session(header.session_id)
            .await?
            .filter(|session| session.value.ended_with(payment));
        // Not forgotten now (a claim kept changing, the payment changed since
        // it was read, or this replica's clock runs ahead of the store's):
        // looked at again shortly, when what it reads then decides.
        let again = Some(now + crate::store::CLOCK_AHEAD);
        if !self.confirm_claims(header).await? {
            return self.reschedule(item, again).await;
        }
        if self
            .store
            .forget_payment(&stored, session.as_ref(), now)
            .await?
        {
            metrics::counter!(crate::telemetry::series::PAYMENTS_FORGOTTEN).increment(1);
            return Ok(Handled::Nothing);
        }
        self.reschedule(item, again).await
    }

    /// Takes an item off the due-queue (its work is gone or done).
    async fn drop_item(&self, item: DueItem) -> Result<Handled, PaymentError> {
        let mut step = Step::new(item.shard(), self.clock.now());
        step.due.push(DueChange::Unschedule(item));
        self.store.commit(step).await?;
        Ok(Handled::Nothing)
    }

    /// The header, operation and (for an authorization) session.
    async fn work(&self, payment: Uuid, operation: Uuid) -> Result<Option<Work>, PaymentError> {
        let Some((header, operation)) = self.store.operation(payment, operation).await? else {
            return Ok(None);
        };
        let session = if operation.kind == OperationKind::Authorization {
            self.store.session(header.value.session_id).await?
        } else {
            None
        };
        Ok(Some(Work {
            header,
            operation,
            session,
        }))
    }

    /// Asks the partners about every open leg of the operation and records
    /// what they say; a request a partner that deduplicates never received
    /// is sent again with the same partner idempotency key. Past the maximum
    /// age the operation is flagged for review — it is never failed by
    /// guessing. One resolver works an operation at a time: it holds the
    /// operation's work lease (by the store's clock), renewed before each
    /// leg; an operation someone else works is left to them.
    pub(super) async fn resolve_operation(
        &self,
        payment: Uuid,
        operation: Uuid,
    ) -> Result<Handled, PaymentError> {
        let lease = WorkLease::of(operation, Uuid::from_u128(self.chance.bits()));
        if !lease.renew(self).await? {
            return Ok(Handled::Busy);
        }
        let handled = self.resolve_held(payment, operation, &lease).await;
        if let Err(error) = self.store.release_lease(&lease.name, lease.owner).await {
            tracing::warn!(%error, %operation, "resolver lease not released: it runs out");
        }
        handled
    }

    async fn resolve_held(
        &self,
        payment: Uuid,
        operation: Uuid,
        lease: &WorkLease,
    ) -> Result<Handled, PaymentError> {
        let item = DueItem::Operation { payment, operation };
        let Some(work) = self.work(payment, operation).await? else {
            return self.drop_item(item).await;
        };
        if work.operation.status.is_final() {
            self.repair_session(&work).await?;
            return self.drop_item(item).await;
        }
        let (work, answers) = self.resolve_legs(work, lease).await?;
        let age = self
            .clock
            .now()
            .duration_since(work.operation.created_at)
            .unwrap_or_default();
        let overdue = age >= self.settings.max_resolution_age;
        let note = format!(
            "not resolved after {}h: needs an operator",
            self.settings.max_resolution_age.as_secs() / 3600
        );
        let flagged_before = work.operation.requires_review;
        let advanced = self
            .conclude(work, |header, op, now, edit| {
                for answer in &answers {
                    settle(header, op, answer, false, now, edit);
                }
                if overdue && !op.status.is_final() {
                    op.flag_for_review(note.clone(), now);
                }
            })
            .await?;
        let operation = &advanced.work.operation;
        let handled = match (
            operation.status.is_final(),
            operation.requires_review && !flagged_before,
        ) {
            (true, _) => Handled::Finalized,
            (false, true) => Handled::Flagged,
            (false, false) => Handled::StillOpen,
        };
        self.run_follow_ups(advanced).await?;
        Ok(handled)
    }

    /// A final authorization whose session still says PROCESSING (a state no
    /// step leaves behind, since the session moves in the step that makes the
    /// authorization final; kept as a safety net for data written otherwise):
    /// the session is moved on.
    async fn repair_session(&self, work: &Work) -> Result<(), PaymentError> {
        let (Some(session), true) = (
            &work.session,
            work.operation.kind == OperationKind::Authorization,
        ) else {
            return Ok(());
        };
        let now = self.clock.now();
        let mut repaired = session.value.clone();
        let authorized = work.operation.status == OperationStatus::Success;
        repaired.finish_payment(work.header.value.id, authorized, now);
        if repaired == session.value {
            return Ok(());
        }
        tracing::warn!(session_id = %repaired.id, "a session left PROCESSING is moved on");
        let mut step = Step::new(Shard::of(repaired.id), now);
        step.session = Some(Write::Update {
            expected: session.version,
            value: repaired,
        });
        self.store.commit(step).await?;
        Ok(())
    }

    /// Runs what a concluded authorization opened (its automatic capture or
    /// compensation void) to its conclusion.
    async fn run_follow_ups(&self, advanced: Advanced) -> Result<(), PaymentError> {
        let header = advanced.work.header;
        for follow_up in advanced.opened {
            let work = Work {
                header: header.clone(),
                operation: follow_up,
                session: None,
            };
            self.run(work, None, &Keying::Origin).await?;
        }
        Ok(())
    }

    /// A leg's authorization lifetime ended: void what the legs whose time
    /// is up still hold (one step opens the void and sets the item to come
    /// back, for what the void leaves and for legs that run out later).
    async fn expire_authorization(&self, payment: Uuid) -> Result<Handled, PaymentError> {
        let item = DueItem::AuthorizationExpiry { payment };
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let Some(header) = self.store.header(payment).await? else {
                return self.drop_item(item).await;
            };
            let now = self.clock.now();
            let expired = header.value.expired_legs(now);
            let void = header.value.expiry_void(&expired);
            let (amount, priority) = (void.amount, void.priority);
            let later = header.value.next_expiry(now);
            // Expired legs left out (a capture in flight on them), or whose
            // remainder is in flight (a capture or void pending), are looked
            // at again after it had its time.
            let in_flight =
                void.legs.len() < expired.len() || (amount.is_zero() && !expired.is_empty());
            let again = match in_flight {
                true => Some(now + self.settings.operation_lease),
                false => later,
            };
            if amount.is_zero() {
                return self.reschedule(item, again).await;
            }
            // Named by the legs it voids: a leg left out now gets a void of
            // its own when it comes back.
            let legs: Vec<String> = void.legs.iter().map(usize::to_string).collect();
            let id = system_id(payment, &format!("authorization-expiry:{}", legs.join(",")));
            let mut reserved = header.value.clone();
            let request = OperationRequest {
                kind: OperationKind::Void,
                amount: Some(amount),
                priority,
                // Only the legs whose time is up: a decline is not re-offered.
                fallback: false,
                merchant_reference: String::new(),
                reason: "authorization lifetime ended".into(),
                triggered_by: TriggeredBy::System,
                origin: None,
                items: Vec::new(),
                order_source: crate::domain::priority::OrderSource::System,
                avoid: Vec::new(),
                max_operations: None,
            };
            let Ok(mut void) = reserved.open_operation(id, &request, now) else {
                return self.reschedule(item, again).await;
            };
            let first = self.claim_first(&mut void, tokio::time::Instant::now());
            let mut step = Step::new(Shard::of(payment), now);
            step.payment = Some(PaymentWrite::opening(
                header.version,
                reserved.clone(),
                void.clone(),
            ));
            let lease_end = now + self.settings.operation_lease;
            step.due.push(DueChange::Schedule(item.clone(), lease_end));
            step.due
                .push(DueChange::Schedule(operation_item(&void), lease_end));
            let held = first.map(|(held, claim)| {
                step.claims.push(claim);
                held
            });
            let (committed, replicated) = match self.store.commit(step).await {
                Err(StoreError::NotReplicated(committed)) => (*committed, false),
                other => (other?, true),
            };
            match committed {
                Committed::Applied {
                    payment: version, ..
                } => {
                    metrics::counter!(crate::telemetry::series::OPERATIONS_OPENED).increment(1);
                    let work = Work {
                        header: Versioned {
                            value: reserved,
                            version: version.ok_or_else(super::steps::unversioned)?,
                        },
                        operation: void,
                        session: None,
                    };
                    if !replicated {
                        // Sent later, by the resolver, once replicated.
                        if let Some(held) = held {
                            self.release_unsent(work, held, None).await?;
                        }
                        return Ok(Handled::StillOpen);
                    }
                    self.run(work, held, &Keying::Origin).await?;
                    return Ok(Handled::Finalized);
                }
                Committed::Conflict => continue,
                // Opened already (its id is derived): what is left is for
                // the legs left out and the legs that run out later.
                Committed::Exists | Committed::Claimed(_) | Committed::Busy => {
                    return self.reschedule(item, again).await;
                }
            }
        }
        Ok(Handled::Nothing)
    }

    /// Sets a due item to come back at `at`, or takes it off the queue.
    async fn reschedule(
        &self,
        item: DueItem,
        at: Option<SystemTime>,
    ) -> Result<Handled, PaymentError> {
        let Some(at) = at else {
            return self.drop_item(item).await;
        };
        let mut step = Step::new(item.shard(), self.clock.now());
        step.due.push(DueChange::Schedule(item, at));
        self.store.commit(step).await?;
        Ok(Handled::Nothing)
    }

    /// Applies a partner's notification to the open transaction it names.
    /// Applying is idempotent (a final status never changes); the event id
    /// only tells duplicates apart for the caller and the metrics.
    pub async fn apply_partner_event(
        &self,
        event: PartnerEvent,
    ) -> Result<EventResult, PaymentError> {
        let Some(PartnerKey {
            operation: operation_id,
            leg,
        }) = PartnerKey::parse(&event.idempotency_key)
        else {
            return Ok(EventResult::UnknownTransaction);
        };
        let Some((header, operation)) = self.store.find_operation(operation_id).await? else {
            return Ok(EventResult::UnknownTransaction);
        };
        let found = operation
            .transactions
            .iter()
            .find(|tx| tx.leg == leg)
            .and_then(|tx| {
                let partner = &header.value.legs.get(leg)?.partner;
                // Never sent to the partner: nothing it can speak of.
                (partner == &event.partner && tx.attempts > 0).then_some((tx.id, tx.status))
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
        if event.disputed {
            // Only a capture that succeeded can be disputed; the partner is
            // asked what it holds, never taken at the notification's word.
            if operation.kind != OperationKind::Capture || status != TransactionStatus::Success {
                return Ok(EventResult::UnknownTransaction);
            }
            // Each event asks the partner once: a repeat is a duplicate.
            if !first {
                return Ok(EventResult::Duplicate);
            }
            let changed = self
                .ask_about_dispute(&header.value, &operation, transaction)
                .await?;
            return Ok(if changed {
                EventResult::Applied
            } else {
                EventResult::Duplicate
            });
        }
        let reported = if event.succeeded {
            TransactionStatus::Success
        } else {
            TransactionStatus::Failure
        };
        if status.is_final() {
            if status != reported {
                tracing::warn!(%operation_id, leg, "partner event contradicts a final status: flagged for review");
                let note = format!(
                    "partner {} reported {} for leg {leg} (event {}), which our books hold {}",
                    event.partner,
                    reported.as_str(),
                    event.event_id,
                    status.as_str()
                );
                let work = Work {
                    header,
                    operation,
                    session: None,
                };
                self.advance(work, Phase::Conclude, &Keying::None, |_, op, now, _| {
                    // Once per event: a repeat finds the note already there.
                    if !op.history.iter().any(|h| h.note == note) {
                        op.flag_contradiction(note.clone(), now);
                    }
                })
                .await?;
                return Ok(EventResult::IgnoredFinal);
            }
            return Ok(EventResult::Duplicate);
        }
        // A hosted checkout's authorization is read from the partner, never
        // taken at an event's word: its reference is where captures go.
        let hosted = operation.kind == OperationKind::Authorization
            && header
                .value
                .legs
                .get(leg)
                .is_some_and(|l| l.token.checkout().is_some());
        if hosted {
            // Another replica looking now may have asked before the shopper
            // paid: the partner calls again.
            let handled = self
                .resolve_operation(header.value.id, operation_id)
                .await?;
            if handled == Handled::Busy {
                return Err(PaymentError::RequestInProgress);
            }
            return Ok(if first {
                EventResult::Applied
            } else {
                EventResult::Duplicate
            });
        }
        let answer = Answer {
            transaction,
            sent: None,
            review: None,
            outcome: TransactionOutcome {
                status: reported,
                partner_reference: Some(event.reference).filter(|r| !r.is_empty()),
                partner_status: event.partner_status,
                partner_status_description: event.description,
                partner_token: None,
            },
        };
        let session = if operation.kind == OperationKind::Authorization {
            self.store.session(header.value.session_id).await?
        } else {
            None
        };
        let work = Work {
            header,
            operation,
            session,
        };
        let advanced = self
            .conclude(work, |header, op, now, _| {
                header.take_answer(op, &answer, false, now);
            })
            .await?;
        self.run_follow_ups(advanced).await?;
        Ok(if first {
            EventResult::Applied
        } else {
            EventResult::Duplicate
        })
    }

    /// Operator: resolves one operation now (any merchant's).
    pub async fn sync_operation(&self, id: Uuid) -> Result<(Payment, Operation), PaymentError> {
        let (header, _) = self
            .store
            .find_operation(id)
            .await?
            .ok_or(PaymentError::NotFound)?;
        self.resolve_operation(header.value.id, id).await?;
        self.store
            .operation(header.value.id, id)
            .await?
            .map(|(header, op)| (header.value, op))
            .ok_or(PaymentError::NotFound)
    }

    /// Operator: sets the final outcome of an operation flagged for review,
    /// with the reason kept in its history.
    pub async fn settle_operation(
        &self,
        id: Uuid,
        outcomes: Vec<(Uuid, TransactionStatus)>,
        reason: String,
    ) -> Result<(Payment, Operation), PaymentError> {
        let (header, _) = self
            .store
            .find_operation(id)
            .await?
            .ok_or(PaymentError::NotFound)?;
        let work = self
            .work(header.value.id, id)
            .await?
            .ok_or(PaymentError::NotFound)?;
        // Checked on what was read, so that a refusal changes nothing.
        work.operation
            .clone()
            .settle_by_hand(&outcomes, &reason, self.clock.now())
            .map_err(|error| match error {
                SettleError::NotUnderReview => {
                    PaymentError::from(Precondition::OperationNotUnderReview)
                }
                SettleError::IncompleteOutcomes | SettleError::NeverSent => {
                    PaymentError::InvalidArgument {
                        field: "outcomes".into(),
                        description: error.to_string(),
                    }
                }
            })?;
        // A fresher read may be settled already (then nothing changes), or
        // refuse: then the refusal is the answer.
        let mut refused = None;
        let advanced = self
            .conclude(work, |header, op, now, _| {
                let settled =
                    header.apply(op, now, |op| op.settle_by_hand(&outcomes, &reason, now));
                refused = settled.err().filter(|e| *e != SettleError::NotUnderReview);
            })
            .await?;
        if let Some(error) = refused {
            return Err(PaymentError::InvalidArgument {
                field: "outcomes".into(),
                description: error.to_string(),
            });
        }
        let result = (
            advanced.work.header.value.clone(),
            advanced.work.operation.clone(),
        );
        self.run_follow_ups(advanced).await?;
        Ok(result)
    }

    /// A settlement shows an open transaction paid: it succeeded (and its
    /// operation follows). `note` names the settlement in the history.
    pub(super) async fn settle_from_report(
        &self,
        header: Versioned<Payment>,
        operation: Operation,
        transaction: Uuid,
        note: &str,
    ) -> Result<(), PaymentError> {
        let work = Work {
            header,
            operation,
            session: None,
        };
        let advanced = self
            .conclude(work, |header, op, now, _| {
                header.apply(op, now, |op| op.settle_from_report(transaction, note, now));
            })
            .await?;
        self.run_follow_ups(advanced).await
    }
}
