//! The payment: a small header — the split's legs, what each leg holds
//! (its ledger, reservations included), the authorization's status — kept
//! apart from its operations, which are records of their own.
//!
//! Every change to an operation goes through [`Payment::apply`], which books
//! the difference of what the operation holds into the ledger. So the header
//! always equals the sum of its operations without reading them, and a step
//! rewrites the header and the one operation it touches: its cost does not
//! grow with the payment's history. Amounts are never moved without a
//! reservation: an operation's transactions reserve their amounts in the
//! ledger before any partner is called.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    amounts::{Amounts, Overview},
    capabilities::{Capabilities, Limit, Unsupported},
    dispute::{self, Dispute},
    items::ItemLine,
    money::{Amount, Currency},
    operation::{
        Operation, OperationKind, Origin, PartnerTransaction, TransactionOutcome, TriggeredBy,
    },
    priority::{self, OrderSource, Pattern, PriorityRule},
    routing::{self, Allocation, AllocationError},
    session::{CaptureMode, Webhook},
    status::{OperationStatus, TransactionStatus},
};

/// The derived state of a payment, for display and filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PaymentState {
    Authorizing,
    Failed,
    PartiallyRefunded,
    Refunded,
    PartiallyCaptured,
    Captured,
    Voided,
    Authorized,
}

/// One part of the split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    pub partner: String,
    pub method: String,
    pub amount: Amount,
    pub token: PaymentToken,
    /// What the partner supports, as it was when the leg was authorized.
    pub capabilities: Capabilities,
    /// How long the partner holds the leg's authorization.
    pub authorization_lifetime: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperationError {
    #[error("{requested} requested, {available} available")]
    ExceedsAvailable {
        requested: Amount,
        available: Amount,
    },
    #[error("nothing is available")]
    NothingAvailable,
    #[error("the authorization is not successful")]
    NotAuthorized,
    /// Enough is available, but a leg that would have to take part cannot.
    #[error("partner {partner} cannot take its part: {because:?}")]
    NotRoutable {
        partner: String,
        because: Unsupported,
    },
    /// The payment has as many operations as one may have.
    #[error("the payment has {max} operations, the most one may have")]
    TooManyOperations { max: u32 },
}

/// The header of a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub id: Uuid,
    pub merchant: String,
    pub session_id: Uuid,
    pub order_reference: String,
    pub amount: Amount,
    pub currency: Currency,
    pub capture_mode: CaptureMode,
    pub legs: Vec<Leg>,
    /// Copied from the session: where notifications about this payment go.
    pub webhook: Option<Webhook>,
    /// What each leg holds, indexed like `legs`: the sum of every
    /// operation's [`Operation::contribution`].
    pub ledger: Vec<Amounts>,
    /// The partner's reference of each leg's authorization, which captures,
    /// refunds and voids on that leg refer to.
    pub references: Vec<Option<String>>,
    pub authorization_id: Uuid,
    pub authorization_status: OperationStatus,
    /// When the authorization succeeded: each leg's lifetime counts from here.
    pub authorized_at: Option<SystemTime>,
    /// How many operations the payment has (the authorization included):
    /// the next one's sequence number.
    pub operations: u32,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    /// Disputes the partners reported, oldest first.
    pub disputes: Vec<Dispute>,
}

/// What a new payment is made of.
#[derive(Debug, Clone)]
pub struct NewPayment {
    pub id: Uuid,
    pub merchant: String,
    pub session_id: Uuid,
    pub order_reference: String,
    pub amount: Amount,
    pub currency: Currency,
    pub capture_mode: CaptureMode,
    pub legs: Vec<Leg>,
    pub webhook: Option<Webhook>,
    pub authorization_id: Uuid,
    /// The SubmitSession request.
    pub origin: Option<Origin>,
    /// The session's order lines (the authorization covers them).
    pub items: Vec<ItemLine>,
}

/// What the merchant (or the system) asks for when opening an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRequest {
    pub kind: OperationKind,
    pub amount: Option<Amount>,
    pub priority: Vec<PriorityRule>,
    pub fallback: bool,
    pub merchant_reference: String,
    pub reason: String,
    pub triggered_by: TriggeredBy,
    pub origin: Option<Origin>,
    /// The order lines of what the operation covers (informational).
    pub items: Vec<ItemLine>,
    /// Where `priority` came from (recorded in the operation's history).
    pub order_source: OrderSource,
    /// Partners whose circuit is open: a capture or a void walks their legs
    /// last; a refund keeps its order (money goes back where it came from).
    pub avoid: Vec<String>,
    /// Refused (`TooManyOperations`) when the payment already has this many
    /// operations; `None` for the service's own operations (expiry voids,
    /// compensations), which are never refused for it.
    pub max_operations: Option<u32>,
}

/// A partner's answer to one transaction, as a request or the resolver got
/// it. Kept until it is written, so that a write that lost a race applies it
/// again to a fresher read (applying it twice changes nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub transaction: Uuid,
    /// The attempt count it holds for: the fence of the send it answers
    /// (the count its claim took), or 0 for a leg given up while never sent;
    /// `None` for what a lookup or a notification found.
    pub sent: Option<u32>,
    pub outcome: TransactionOutcome,
    /// The answer contradicts what was asked (another amount, currency or
    /// account): the operation goes to review with this note, both figures
    /// in it.
    pub review: Option<String>,
}

impl Answer {
    /// Whether it may still be taken: a send's answer only while nobody has
    /// sent the transaction again since (its fence is the attempt count).
    pub fn is_current(&self, operation: &Operation) -> bool {
        self.sent.is_none_or(|fence| {
            operation
                .transaction(self.transaction)
                .is_some_and(|tx| tx.attempts == fence)
        })
    }
}

/// The part of a payment that changes, as it was at one instant: what a
/// response showed. With the header's fixed part (legs, amount, currency…)
/// it gives back the payment as the response saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub totals: Amounts,
    pub authorization: OperationStatus,
    pub updated_at: SystemTime,
    /// What each leg held (the ledger), indexed like the legs; empty in an
    /// answer kept by a release that did not keep it.
    pub legs: Vec<Amounts>,
}

impl Snapshot {
    /// First match wins: authorization not final → AUTHORIZING; failed →
    /// FAILED; refunded → (PARTIALLY_)REFUNDED; captured → CAPTURED when
    /// nothing is left to capture and nothing is pending, else
    /// PARTIALLY_CAPTURED; all voided → VOIDED; else AUTHORIZED.
    pub fn state(&self) -> PaymentState {
        if !self.authorization.is_final() {
            return PaymentState::Authorizing;
        }
        if self.authorization == OperationStatus::Failure {
            return PaymentState::Failed;
        }
        let totals = &self.totals;
        if !totals.refunded.is_zero() {
            return if totals.refunded == totals.captured {
                PaymentState::Refunded
            } else {
                PaymentState::PartiallyRefunded
            };
        }
        if !totals.captured.is_zero() {
            return if totals.available_to_capture().is_zero() && totals.nothing_pending() {
                PaymentState::Captured
            } else {
                PaymentState::PartiallyCaptured
            };
        }
        if totals.voided == totals.authorized {
            return PaymentState::Voided;
        }
        PaymentState::Authorized
    }

    pub fn overview(&self) -> Overview {
        self.totals.overview()
    }

    /// Which of capture, void and refund have funds available.
    pub fn allowed_operations(&self) -> Vec<OperationKind> {
        let totals = &self.totals;
        [
            (OperationKind::Capture, totals.available_to_capture()),
            (OperationKind::Void, totals.available_to_void()),
            (OperationKind::Refund, totals.available_to_refund()),
        ]
        .into_iter()
        .filter(|(_, available)| !available.is_zero())
        .map(|(kind, _)| kind)
        .collect()
    }
}

/// What an authorization expiry voids now (see [`Payment::expiry_void`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryVoid {
    pub amount: Amount,
    /// Routes the void to the legs it voids.
    pub priority: Vec<PriorityRule>,
    /// The legs it voids.
    pub legs: Vec<usize>,
}

impl Payment {
    /// A payment whose authorization reserves every leg's amount, before any
    /// partner is called. Legs are authorized in split order.
    pub fn new(new: NewPayment, now: SystemTime) -> (Payment, Operation) {
        let authorization = Operation {
            id: new.authorization_id,
            payment_id: new.id,
            sequence: 0,
            kind: OperationKind::Authorization,
            amount: new.amount,
            status: OperationStatus::Uncertain,
            merchant_reference: String::new(),
            reason: String::new(),
            triggered_by: TriggeredBy::Merchant,
            route: (0..new.legs.len()).collect(),
            fallback: false,
            transactions: new
                .legs
                .iter()
                .enumerate()
                .map(|(leg, l)| {
                    PartnerTransaction::unsent(new.authorization_id, leg, l.amount, now)
                })
                .collect(),
            requires_review: false,
            origin: new.origin,
            items: new.items,
            history: Vec::new(),
            created_at: now,
            updated_at: now,
        };
        let legs = new.legs.len();
        let payment = Payment {
            id: new.id,
            merchant: new.merchant,
            session_id: new.session_id,
            order_reference: new.order_reference,
            amount: new.amount,
            currency: new.currency,
            capture_mode: new.capture_mode,
            legs: new.legs,
            webhook: new.webhook,
            ledger: authorization.contribution(legs),
            references: vec![None; legs],
            authorization_id: authorization.id,
            authorization_status: authorization.status,
            authorized_at: None,
            operations: 1,
            created_at: now,
            updated_at: now,
            disputes: Vec::new(),
        };
        (payment, authorization)
    }

    /// When the authorization of each leg that still holds something runs
    /// out (nothing before the authorization succeeded).
    fn holding_until(&self) -> impl Iterator<Item = (usize, SystemTime)> + '_ {
        self.legs
            .iter()
            .zip(&self.ledger)
            .enumerate()
            // Held: not captured or voided yet, whatever is in flight.
            .filter(|(_, (_, held))| {
                !held
                    .authorized
                    .saturating_sub(held.captured)
                    .saturating_sub(held.voided)
                    .is_zero()
            })
            .filter_map(|(index, (leg, _))| {
                let at = self
                    .authorized_at?
                    .checked_add(leg.authorization_lifetime)?;
                Some((index, at))
            })
    }

    /// The legs whose authorization ran out by `now` while they still hold
    /// something.
    pub fn expired_legs(&self, now: SystemTime) -> Vec<usize> {
        self.holding_until()
            .filter(|&(_, at)| at <= now)
            .map(|(index, _)| index)
            .collect()
    }

    /// When the next leg that still holds something runs out, after `now`.
    pub fn next_expiry(&self, now: SystemTime) -> Option<SystemTime> {
        self.holding_until()
            .map(|(_, at)| at)
            .filter(|&at| at > now)
            .min()
    }

    /// The void that releases what `legs` still hold, their rules first (it
    /// takes exactly what they hold, so no other leg is touched). A leg whose
    /// void must wait (its capture is in flight) is left out.
    pub fn expiry_void(&self, legs: &[usize]) -> ExpiryVoid {
        let mut void = ExpiryVoid {
            amount: Amount::ZERO,
            priority: Vec::new(),
            legs: Vec::new(),
        };
        for &index in legs {
            let (Some(leg), Some(held)) = (self.legs.get(index), self.ledger.get(index)) else {
                continue;
            };
            if let Limit::Blocked(_) = leg.capabilities.limit(OperationKind::Void, held) {
                continue;
            }
            // Within the payment's amount: cannot overflow.
            void.amount = void
                .amount
                .checked_add(held.available_to_void())
                .unwrap_or(void.amount);
            void.priority.push(PriorityRule::new(
                Pattern::Exactly(leg.partner.clone()),
                Pattern::Exactly(leg.method.clone()),
            ));
            void.legs.push(index);
        }
        void
    }

    /// The ledger summed over the legs.
    pub fn totals(&self) -> Amounts {
        self.ledger
            .iter()
            .fold(Amounts::ZERO, |total, leg| total.plus(leg))
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            legs: self.ledger.clone(),
            ..self.totals_now()
        }
    }

    pub fn state(&self) -> PaymentState {
        self.totals_now().state()
    }

    /// The snapshot without its legs (no copy of the ledger).
    fn totals_now(&self) -> Snapshot {
        Snapshot {
            totals: self.totals(),
            authorization: self.authorization_status,
            updated_at: self.updated_at,
            legs: Vec::new(),
        }
    }

    /// How each leg may take part in an operation of `kind` now, by its
    /// partner's capabilities and what it holds.
    pub fn limits(&self, kind: OperationKind) -> Vec<Limit> {
        self.legs
            .iter()
            .zip(&self.ledger)
            .map(|(leg, held)| leg.capabilities.limit(kind, held))
            .collect()
    }

    /// What each leg can take for an operation of `kind` right now: a
    /// refund never gives back what a dispute holds.
    pub fn available(&self, kind: OperationKind) -> Vec<Amount> {
        self.ledger
            .iter()
            .enumerate()
            .map(|(at, leg)| match kind {
                OperationKind::Capture | OperationKind::Void => leg.available_to_capture(),
                OperationKind::Refund => leg
                    .available_to_refund()
                    .saturating_sub(dispute::held(&self.disputes, Some(at))),
                OperationKind::Authorization => Amount::ZERO,
            })
            .collect()
    }

    /// Nothing of the payment is open: its authorization is final, no
    /// capture, refund or void is pending or uncertain, no leg still holds
    /// an authorization to capture or void, and no dispute is open. Only
    /// then may retention end it.
    pub fn is_finished(&self) -> bool {
        self.authorization_status.is_final()
            && self
                .ledger
                .iter()
                .all(|leg| leg.nothing_pending() && leg.available_to_capture().is_zero())
            && !self.has_open_dispute()
    }

    /// Until when a finished payment is kept with `retention`: that long
    /// after its last change, and no sooner than the end of the dispute
    /// window (`dispute_window(partner)`) of every leg that captured money.
    pub fn kept_until(
        &self,
        retention: Duration,
        dispute_window: impl Fn(&str) -> Option<Duration>,
    ) -> SystemTime {
        let disputable = self
            .legs
            .iter()
            .zip(&self.ledger)
            .filter(|(_, held)| !held.captured.is_zero())
            .filter_map(|(leg, _)| dispute_window(&leg.partner))
            .max()
            .unwrap_or_default();
        self.updated_at + retention.max(disputable)
    }

    /// Whether a dispute is open.
    pub fn has_open_dispute(&self) -> bool {
        self.disputes.iter().any(Dispute::is_open)
    }

    /// Changes one of the payment's operations and books the difference of
    /// what it holds into the ledger (and, for the authorization, its status
    /// and the partners' references). Every change to an operation goes
    /// through here.
    pub fn apply<R>(
        &mut self,
        operation: &mut Operation,
        now: SystemTime,
        change: impl FnOnce(&mut Operation) -> R,
    ) -> R {
        let legs = self.legs.len();
        let before = operation.contribution(legs);
        let result = change(operation);
        let after = operation.contribution(legs);
        for ((leg, old), new) in self.ledger.iter_mut().zip(&before).zip(&after) {
            *leg = leg.plus(new).minus(old);
        }
        if operation.kind == OperationKind::Authorization {
            self.authorization_status = operation.status;
            for tx in &operation.transactions {
                if let (Some(reference), Some(slot)) =
                    (&tx.partner_reference, self.references.get_mut(tx.leg))
                {
                    *slot = Some(reference.clone());
                }
            }
        }
        self.updated_at = now;
        result
    }

    /// Records a partner's answer (see [`Operation::record`]).
    pub fn record(
        &mut self,
        operation: &mut Operation,
        transaction: Uuid,
        outcome: TransactionOutcome,
        now: SystemTime,
    ) -> bool {
        self.apply(operation, now, |op| op.record(transaction, outcome, now))
    }

    /// Fallback: re-offers `unfilled` (a declined leg's amount) to the legs
    /// after `after_leg` in the operation's route that were not called for it
    /// yet, taking what each can spare now. Amounts join the leg's unsent
    /// transaction, or a new one. Returns what could not be placed.
    pub fn reoffer(
        &mut self,
        operation: &mut Operation,
        after_leg: usize,
        unfilled: Amount,
        now: SystemTime,
    ) -> Amount {
        let later: Vec<usize> = operation
            .route
            .iter()
            .skip_while(|&&leg| leg != after_leg)
            .skip(1)
            // A leg already called for this operation is not called twice.
            .filter(|&&leg| {
                operation
                    .transactions
                    .iter()
                    .all(|tx| tx.leg != leg || tx.attempts == 0)
            })
            .copied()
            .collect();
        let filled = routing::fill(
            &later,
            &self.available(operation.kind),
            &self.limits(operation.kind),
            unfilled,
        );
        let left = filled.left;
        self.apply(operation, now, |op| {
            for Allocation { leg, amount } in filled.allocations {
                match op.transactions.iter_mut().find(|tx| tx.leg == leg) {
                    Some(tx) => {
                        tx.amount = tx.amount.checked_add(amount).unwrap_or(tx.amount);
                        tx.updated_at = now;
                    }
                    None => op
                        .transactions
                        .push(PartnerTransaction::unsent(op.id, leg, amount, now)),
                }
            }
            // Keep the transactions in route order, the order they execute in.
            let route = op.route.clone();
            op.transactions
                .sort_by_key(|tx| route.iter().position(|&leg| leg == tx.leg));
            // An amount placed on an unsent leg reopens the operation.
            op.recompute_status();
            op.updated_at = now;
        });
        left
    }

    /// Takes a partner's answer (nothing, if a later send superseded it).
    /// While the operation's legs are being walked
    /// (`walking`: the request executing them, not the resolver looking up
    /// later), a declined leg's amount is re-offered to the later legs
    /// (fallback), and a declined authorization leg stops the walk: the legs
    /// after it are never sent. Pending and uncertain legs keep their
    /// reservation and are never re-routed. Returns whether an amount was
    /// re-offered to a later leg.
    pub fn take_answer(
        &mut self,
        operation: &mut Operation,
        answer: &Answer,
        walking: bool,
        now: SystemTime,
    ) -> bool {
        if !answer.is_current(operation) {
            return false;
        }
        if let Some(note) = &answer.review
            && !operation.history.iter().any(|entry| entry.note == *note)
        {
            operation.flag_contradiction(note.clone(), now);
        }
        // The partner's answer to a send, after the leg was settled another
        // way (by an operator, from a report) with another outcome: the
        // books stay as they are, and a person looks at both.
        if let Some(tx) = operation.transaction(answer.transaction)
            && answer.sent.is_some_and(|fence| fence > 0)
            && tx.status.is_final()
            && answer.outcome.status.is_final()
            && answer.outcome.status != tx.status
        {
            let outcome = &answer.outcome;
            let reference = outcome
                .partner_reference
                .as_deref()
                .filter(|r| !r.is_empty())
                .unwrap_or("none");
            let note = format!(
                "a send of leg {} came back {:?} ({} {}, reference {reference}) after the leg \
                 was settled as {:?}: the books were not changed",
                tx.leg,
                outcome.status,
                outcome.partner_status,
                outcome.partner_status_description,
                tx.status
            );
            if !operation.history.iter().any(|entry| entry.note == note) {
                operation.flag_contradiction(note, now);
            }
            return false;
        }
        let changed = self.record(operation, answer.transaction, answer.outcome.clone(), now);
        if !changed || !walking || answer.outcome.status != TransactionStatus::Failure {
            return false;
        }
        if operation.kind == OperationKind::Authorization {
            self.apply(operation, now, |op| op.abandon_unsent(now));
            return false;
        }
        let Some(tx) = operation.transaction(answer.transaction) else {
            return false;
        };
        if !operation.fallback {
            return false;
        }
        let (leg, amount) = (tx.leg, tx.amount);
        let left = self.reoffer(operation, leg, amount, now);
        if left == amount {
            return false;
        }
        let partner = self.legs.get(leg).map_or("", |l| l.partner.as_str());
        let placed = amount.saturating_sub(left);
        operation.note(
            format!(
                "fallback: leg {leg} ({partner}) declined; {placed} re-offered to the legs after it"
            ),
            now,
        );
        true
    }

    /// The reference the partner gave the authorization of `leg`.
    pub fn authorization_reference(&self, leg: usize) -> Option<&str> {
        self.references.get(leg).and_then(Option::as_deref)
    }
}

mod opening;
#[cfg(test)]
mod tests;
mod token;

pub use token::PaymentToken;
