//! Capture, Refund and Void; GetPayment, GetOperation and WaitOperation.
//!
//! An operation request takes three store round trips on its latency path:
//! the payment header is read, the operation is opened (one step: claim the
//! key, reserve on the header with compare-and-set, write the operation, put
//! it on the due-queue at the end of its lease), the partners are called, and
//! the operation is concluded (one step). Guarantees:
//!
//! - the amount is routed across the legs in priority order and reserved
//!   before any partner is called; nothing can capture more than was
//!   authorized or refund more than was captured, whatever the outcomes;
//! - one idempotency key is one operation, forever: its id is derived from
//!   the key, so a retry, a takeover or a lost key record finds the first
//!   one; a replay is the stored answer, byte for byte;
//! - a store answer lost on the way (timeout) is not "nothing happened": the
//!   caller gets `REQUEST_IN_PROGRESS` and the resolver finishes the work.

use std::time::{Duration, Instant};

use uuid::Uuid;

use super::{
    Found, Held, Idempotent, Keying, MAX_WRITE_ATTEMPTS, OperationCommand, OperationResult,
    PaymentError, PaymentView, Payments, Precondition, Scope, Work, derived_id, fingerprint,
    found_record, operation_item, operation_result, outcome_of,
};
use crate::{
    domain::{
        operation::{Operation, Origin, TriggeredBy},
        payment::{OperationRequest, Payment},
        priority::OrderSource,
    },
    store::{
        Committed, DueChange, KeyChange, Outcome, PaymentWrite, Shard, Step, StoreError, Versioned,
        Write,
    },
};

/// The longest a `WaitOperation` waits.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// A waiter re-reads its operation this often even without a notice (one
/// may be lost with a Redis connection).
const SAFETY_REREAD: Duration = Duration::from_secs(5);

impl Payments {
    /// Capture, refund or void.
    pub async fn operate(
        &self,
        merchant: &str,
        request: Idempotent<OperationCommand>,
    ) -> Result<OperationResult, PaymentError> {
        let payment_id = request.command.payment_id;
        let (mut operation_request, origin) = self.operation_request(merchant, request);
        let id = origin.record;
        for attempt in 0..MAX_WRITE_ATTEMPTS {
            // The first attempt opens on the header this replica last wrote,
            // if it holds it: the open step's compare-and-set checks it.
            let known = (attempt == 0)
                .then(|| self.headers.get(payment_id))
                .flatten()
                .filter(|h| h.value.merchant == merchant);
            let header = match known {
                Some(header) => header,
                None => self.owned_header(merchant, payment_id).await?,
            };
            let partners = header.value.legs.iter().map(|leg| leg.partner.as_str());
            operation_request.avoid = self.partners.avoided(partners);
            let now = self.clock.now();
            let mut reserved = header.value.clone();
            let mut step = Step::new(Shard::of(payment_id), now);
            let since = tokio::time::Instant::now();
            let mut opened = reserved.open_operation(id, &operation_request, now);
            let mut held = None;
            match &mut opened {
                Ok(operation) => {
                    // The first leg's attempt is counted, and its claim taken,
                    // in the step that opens the operation.
                    if let Some((first, claim)) = self.claim_first(operation, since) {
                        step.claims.push(claim);
                        held = Some(first);
                    }
                    step.key = Some(KeyChange::Claim {
                        record: id,
                        fingerprint: origin.fingerprint,
                        lease: self.settings.idempotency_lease,
                        ttl: self.settings.idempotency_ttl,
                    });
                    step.payment = Some(PaymentWrite::opening(
                        header.version,
                        reserved.clone(),
                        operation.clone(),
                    ));
                    let lease_end = now + self.settings.operation_lease;
                    step.due
                        .push(DueChange::Schedule(operation_item(operation), lease_end));
                }
                Err(refusal) => {
                    // A refusal computed from what was read holds only if the
                    // header did not move since.
                    step.key = Some(KeyChange::Answer {
                        record: id,
                        fingerprint: origin.fingerprint,
                        outcome: Outcome::Refused(Precondition::from(refusal.clone())),
                        ttl: self.settings.idempotency_ttl,
                    });
                    step.payment = Some(PaymentWrite {
                        header: Write::Check {
                            expected: header.version,
                            id: payment_id,
                        },
                        operations: Vec::new(),
                    });
                }
            }
            let (committed, replicated) = match self.store.commit(step).await {
                Err(StoreError::NotReplicated(committed)) => (*committed, false),
                other => (other?, true),
            };
            match committed {
                Committed::Applied { payment, .. } => match opened {
                    Err(refusal) if replicated => return Err(Precondition::from(refusal).into()),
                    Err(_) => return Err(PaymentError::RequestInProgress),
                    Ok(operation) => {
                        metrics::counter!(crate::telemetry::series::OPERATIONS_OPENED).increment(1);
                        // A partner due for a trial that this operation will
                        // call (routed as healthy, on a step that is kept):
                        // it is the trial.
                        for tx in operation.transactions.iter().filter(|_| replicated) {
                            if let Some(leg) = reserved.legs.get(tx.leg)
                                && !operation_request.avoid.contains(&leg.partner)
                            {
                                self.partners.health().trial_taken(&leg.partner);
                            }
                        }
                        let work = Work {
                            header: Versioned {
                                value: reserved,
                                version: payment.ok_or_else(super::steps::unversioned)?,
                            },
                            operation,
                            session: None,
                        };
                        if !replicated {
                            // Nothing is sent on a step a failover could
                            // lose: the operation is handed to a retry with
                            // the key, or to the resolver.
                            if let Some(held) = held {
                                self.release_unsent(work, held, Some(id)).await?;
                            }
                            return Err(PaymentError::RequestInProgress);
                        }
                        return self.run_operation(work, held).await;
                    }
                },
                Committed::Conflict => {
                    self.headers.forget(payment_id);
                    continue;
                }
                Committed::Claimed(state) => {
                    return match found_record(state)? {
                        Found::Answer(outcome) => operation_result(header.value, *outcome),
                        Found::Abandoned => {
                            self.answer_from_operation(payment_id, id, origin).await
                        }
                    };
                }
                // Its record is gone but the operation is there (ids are
                // derived from the key): answer from it.
                Committed::Exists | Committed::Busy => {
                    return self.answer_from_operation(payment_id, id, origin).await;
                }
            }
        }
        Err(PaymentError::Internal(
            "too many concurrent writes to one payment".into(),
        ))
    }

    /// A merchant's capture, refund or void as the domain takes it: the
    /// operation's id (derived from the key) and the request's fingerprint
    /// are its origin; without rules of its own, the merchant's order.
    pub(super) fn operation_request(
        &self,
        merchant: &str,
        request: Idempotent<OperationCommand>,
    ) -> (OperationRequest, Origin) {
        let command = request.command;
        let id = derived_id(merchant, Scope::Payment(command.payment_id), &request.key);
        let origin = Origin {
            record: id,
            fingerprint: fingerprint("Operation", &command),
        };
        let (priority, order_source) = if command.priority.is_empty() {
            self.priority(merchant, command.kind)
        } else {
            (command.priority, OrderSource::Request)
        };
        let request = OperationRequest {
            kind: command.kind,
            amount: command.amount,
            priority,
            order_source,
            avoid: Vec::new(),
            fallback: !command.disable_fallback,
            merchant_reference: command.merchant_reference,
            reason: command.reason,
            triggered_by: TriggeredBy::Merchant,
            origin: Some(origin),
            items: command.items,
            max_operations: Some(self.settings.max_operations_per_payment),
        };
        (request, origin)
    }

    /// Executes an opened operation and concludes it: the request's answer.
    async fn run_operation(
        &self,
        work: Work,
        held: Option<Held>,
    ) -> Result<OperationResult, PaymentError> {
        let keying = Keying::Request {
            record: work.operation.id,
            before: Vec::new(),
        };
        let concluded = self.run(work, held, &keying).await?;
        self.headers.remember(&concluded.work.header);
        // Superseded: whoever sent since answers under the record.
        let outcome = concluded.answer.ok_or(PaymentError::RequestInProgress)?;
        operation_result(concluded.work.header.value, outcome)
    }

    /// A request whose operation exists but whose own attempt is gone (it
    /// died, or its record was lost): the operation's final state is the
    /// answer, stored for every later replay; a non-final one belongs to
    /// the resolver.
    async fn answer_from_operation(
        &self,
        payment_id: Uuid,
        id: Uuid,
        origin: Origin,
    ) -> Result<OperationResult, PaymentError> {
        let (header, operation) = self
            .store
            .operation(payment_id, id)
            .await?
            .ok_or(PaymentError::RequestInProgress)?;
        if operation.origin.map(|o| o.fingerprint) != Some(origin.fingerprint) {
            return Err(PaymentError::IdempotencyKeyReused);
        }
        if !operation.status.is_final() {
            if operation.next_unsent().is_some() {
                // Handed over before a leg was sent (a step the replicas
                // did not acknowledge, a request that stopped): this retry
                // runs what is left to send.
                let work = Work {
                    header,
                    operation,
                    session: None,
                };
                return self.run_operation(work, None).await;
            }
            return Err(PaymentError::RequestInProgress);
        }
        let outcome = outcome_of(&header.value, &[], &operation, &[]);
        let answer = self.store_answer(payment_id, id, origin, outcome).await?;
        operation_result(header.value, answer)
    }

    /// Stores `outcome` under a record that is in flight or missing; the
    /// answer stored first wins.
    pub(super) async fn store_answer(
        &self,
        resource: Uuid,
        record: Uuid,
        origin: Origin,
        outcome: Outcome,
    ) -> Result<Outcome, PaymentError> {
        let mut step = Step::new(Shard::of(resource), self.clock.now());
        step.key = Some(KeyChange::Complete {
            record,
            outcome: outcome.clone(),
        });
        // A record that is gone is written again (done) by an `Answer`.
        if let Committed::Applied {
            answered: Some(first),
            ..
        } = self.store.commit(step).await?
        {
            return Ok(*first);
        }
        let mut step = Step::new(Shard::of(resource), self.clock.now());
        step.key = Some(KeyChange::Answer {
            record,
            fingerprint: origin.fingerprint,
            outcome: outcome.clone(),
            ttl: self.settings.idempotency_ttl,
        });
        match self.store.commit(step).await? {
            Committed::Claimed(state) => match found_record(state)? {
                Found::Answer(first) => Ok(*first),
                Found::Abandoned => Ok(outcome),
            },
            _ => Ok(outcome),
        }
    }

    // ---- reads ----

    pub async fn payment(&self, merchant: &str, id: Uuid) -> Result<PaymentView, PaymentError> {
        let stored = self
            .store
            .payment(id)
            .await?
            .filter(|p| p.header.value.merchant == merchant)
            .ok_or(PaymentError::NotFound)?;
        Ok(PaymentView::now(stored.header.value, stored.operations))
    }

    pub async fn operation(
        &self,
        merchant: &str,
        id: Uuid,
    ) -> Result<(Payment, Operation), PaymentError> {
        self.store
            .find_operation(id)
            .await?
            .filter(|(header, _)| header.value.merchant == merchant)
            .map(|(header, op)| (header.value, op))
            .ok_or(PaymentError::NotFound)
    }

    /// Returns the operation once it is final, or as it is when `timeout`
    /// (at most a minute) runs out. Any replica may be the one settling it:
    /// the store is re-read when that replica's notice arrives, and at least
    /// every `SAFETY_REREAD` should a notice be lost.
    pub async fn wait_operation(
        &self,
        merchant: &str,
        id: Uuid,
        timeout: Duration,
    ) -> Result<(Payment, Operation), PaymentError> {
        // Within the server's own deadline for every call, less a margin
        // to answer in.
        let longest = MAX_WAIT.min(
            self.settings
                .request_timeout
                .saturating_sub(Duration::from_secs(1)),
        );
        let deadline = Instant::now() + timeout.min(longest);
        let waiting = self.waiters.wait(merchant, id)?;
        loop {
            // Registered before the read: a notice that comes between the
            // read and the sleep still wakes it.
            let notified = waiting.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (header, operation) = self.operation(merchant, id).await?;
            let left = deadline.saturating_duration_since(Instant::now());
            if operation.status.is_final() || left.is_zero() {
                return Ok((header, operation));
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(left.min(SAFETY_REREAD)) => {}
            }
        }
    }
}
