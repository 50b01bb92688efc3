//! The payment aggregate: the split's legs and every operation on them.
//!
//! All state changes of a payment go through this type, and every one is a
//! pure function of its inputs (ids and time are passed in). Amounts are never
//! moved without a reservation: an operation's partner transactions are
//! created (reserving their amounts) before any partner is called.

use std::{fmt, time::SystemTime};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    amounts::{Amounts, Overview},
    money::{Amount, Currency},
    priority::{self, PriorityRule},
    routing::{self, Allocation, AllocationError},
    session::Webhook,
    status::{self, OperationStatus, TransactionStatus},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CaptureMode {
    /// The full amount is captured as soon as the authorization succeeds.
    Automatic,
    /// The merchant captures later.
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OperationKind {
    Authorization,
    Capture,
    Refund,
    Void,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TriggeredBy {
    Merchant,
    System,
}

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

/// The partner's token for the shopper's instrument. Never printed.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PaymentToken(String);

impl PaymentToken {
    pub fn new(token: String) -> Self {
        PaymentToken(token)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PaymentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PaymentToken(<redacted>)")
    }
}

/// One part of the split.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leg {
    pub partner: String,
    pub method: String,
    pub amount: Amount,
    pub token: PaymentToken,
}

/// One leg's part of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerTransaction {
    pub id: Uuid,
    /// Index into [`Payment::legs`].
    pub leg: usize,
    pub amount: Amount,
    pub status: TransactionStatus,
    /// How many times the request was sent to the partner.
    pub attempts: u32,
    pub partner_reference: Option<String>,
    pub partner_status: String,
    pub partner_status_description: String,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

/// An authorization, capture, refund or void.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub id: Uuid,
    pub kind: OperationKind,
    pub amount: Amount,
    pub status: OperationStatus,
    pub merchant_reference: String,
    pub reason: String,
    pub triggered_by: TriggeredBy,
    /// The legs in the order this operation walks them.
    pub route: Vec<usize>,
    pub fallback: bool,
    pub transactions: Vec<PartnerTransaction>,
    pub requires_review: bool,
    /// The merchant's idempotency key of the request that opened it (none for
    /// SYSTEM operations): when a request died, whoever finalizes the
    /// operation stores the final response under that key.
    pub idempotency_key: Option<String>,
    /// What happened to the operation beyond partner answers (review flags,
    /// outcomes set by an operator with their reason).
    pub history: Vec<HistoryEntry>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: SystemTime,
    pub note: String,
}

impl Operation {
    pub fn transaction(&self, id: Uuid) -> Option<&PartnerTransaction> {
        self.transactions.iter().find(|tx| tx.id == id)
    }

    fn recompute_status(&mut self) {
        let statuses = self.transactions.iter().map(|tx| (tx.status, tx.amount));
        self.status = match self.kind {
            OperationKind::Authorization => {
                status::aggregate_authorization(statuses.map(|(status, _)| status))
            }
            _ => status::aggregate(self.amount, statuses),
        };
    }
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
    pub idempotency_key: Option<String>,
}

/// A partner's answer for one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionOutcome {
    pub status: TransactionStatus,
    pub partner_reference: Option<String>,
    pub partner_status: String,
    pub partner_status_description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    #[error("no such operation")]
    UnknownOperation,
    #[error("the operation is not waiting for review")]
    NotUnderReview,
    #[error("every open partner transaction needs exactly one final outcome")]
    IncompleteOutcomes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OperationError {
    #[error(transparent)]
    Allocation(#[from] AllocationError),
    #[error("the authorization is not successful")]
    NotAuthorized,
}

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
    /// The authorization first, then every other operation in creation order.
    pub operations: Vec<Operation>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
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
    /// The SubmitSession request's idempotency key.
    pub idempotency_key: Option<String>,
}

impl Payment {
    /// A payment whose authorization reserves every leg's amount, before any
    /// partner is called. Legs are authorized in split order.
    pub fn new(new: NewPayment, ids: &mut impl FnMut() -> Uuid, now: SystemTime) -> Payment {
        let transactions = new
            .legs
            .iter()
            .enumerate()
            .map(|(leg, l)| PartnerTransaction::unsent(ids(), leg, l.amount, now))
            .collect();
        let authorization = Operation {
            id: new.authorization_id,
            kind: OperationKind::Authorization,
            amount: new.amount,
            status: OperationStatus::Uncertain,
            merchant_reference: String::new(),
            reason: String::new(),
            triggered_by: TriggeredBy::Merchant,
            route: (0..new.legs.len()).collect(),
            fallback: false,
            transactions,
            requires_review: false,
            history: Vec::new(),
            idempotency_key: new.idempotency_key.clone(),
            created_at: now,
            updated_at: now,
        };
        Payment {
            id: new.id,
            merchant: new.merchant,
            session_id: new.session_id,
            order_reference: new.order_reference,
            amount: new.amount,
            currency: new.currency,
            capture_mode: new.capture_mode,
            legs: new.legs,
            webhook: new.webhook,
            operations: vec![authorization],
            created_at: now,
            updated_at: now,
        }
    }

    pub fn authorization(&self) -> &Operation {
        // `new` always creates the authorization first and nothing removes it.
        &self.operations[0]
    }

    pub fn operation(&self, id: Uuid) -> Option<&Operation> {
        self.operations.iter().find(|op| op.id == id)
    }

    fn operation_mut(&mut self, id: Uuid) -> Option<&mut Operation> {
        self.operations.iter_mut().find(|op| op.id == id)
    }

    pub fn operations_of(&self, kind: OperationKind) -> impl Iterator<Item = &Operation> {
        self.operations.iter().filter(move |op| op.kind == kind)
    }

    /// Per-leg amounts, indexed like `legs`.
    pub fn leg_amounts(&self) -> Vec<Amounts> {
        let mut legs = vec![Amounts::ZERO; self.legs.len()];
        for op in &self.operations {
            for tx in &op.transactions {
                let Some(leg) = legs.get_mut(tx.leg) else {
                    continue;
                };
                let (done, pending) = match op.kind {
                    OperationKind::Authorization => {
                        (&mut leg.authorized, &mut leg.authorize_pending)
                    }
                    OperationKind::Capture => (&mut leg.captured, &mut leg.capture_pending),
                    OperationKind::Refund => (&mut leg.refunded, &mut leg.refund_pending),
                    OperationKind::Void => (&mut leg.voided, &mut leg.void_pending),
                };
                let slot = match tx.status {
                    TransactionStatus::Success => done,
                    TransactionStatus::Pending | TransactionStatus::Uncertain => pending,
                    TransactionStatus::Failure => continue,
                };
                // Bounded by the leg amount (reservations never exceed it).
                *slot = slot.checked_add(tx.amount).unwrap_or(*slot);
            }
        }
        legs
    }

    pub fn amounts(&self) -> Amounts {
        self.leg_amounts()
            .iter()
            .fold(Amounts::ZERO, |total, leg| total.plus(leg))
    }

    pub fn overview(&self) -> Overview {
        self.amounts().overview()
    }

    /// First match wins, as documented on `PaymentState`.
    pub fn state(&self) -> PaymentState {
        let authorization = self.authorization().status;
        if !authorization.is_final() {
            return PaymentState::Authorizing;
        }
        if authorization == OperationStatus::Failure {
            return PaymentState::Failed;
        }
        let amounts = self.amounts();
        if !amounts.refunded.is_zero() {
            return if amounts.refunded == amounts.captured {
                PaymentState::Refunded
            } else {
                PaymentState::PartiallyRefunded
            };
        }
        if !amounts.captured.is_zero() {
            let nothing_pending = self.operations.iter().all(|op| op.status.is_final());
            return if amounts.available_to_capture().is_zero() && nothing_pending {
                PaymentState::Captured
            } else {
                PaymentState::PartiallyCaptured
            };
        }
        if amounts.voided == amounts.authorized {
            return PaymentState::Voided;
        }
        PaymentState::Authorized
    }

    /// Which of capture, void and refund have funds available now.
    pub fn allowed_operations(&self) -> Vec<OperationKind> {
        let amounts = self.amounts();
        [
            (OperationKind::Capture, amounts.available_to_capture()),
            (OperationKind::Void, amounts.available_to_void()),
            (OperationKind::Refund, amounts.available_to_refund()),
        ]
        .into_iter()
        .filter(|(_, available)| !available.is_zero())
        .map(|(kind, _)| kind)
        .collect()
    }

    /// What each leg can take for an operation of `kind` right now.
    pub fn available(&self, kind: OperationKind) -> Vec<Amount> {
        self.leg_amounts()
            .iter()
            .map(|leg| match kind {
                OperationKind::Capture | OperationKind::Void => leg.available_to_capture(),
                OperationKind::Refund => leg.available_to_refund(),
                OperationKind::Authorization => Amount::ZERO,
            })
            .collect()
    }

    /// Routes the request across the legs and adds the operation with its
    /// reservations (transactions not yet sent). Adds nothing on error.
    pub fn open_operation(
        &mut self,
        id: Uuid,
        request: &OperationRequest,
        ids: &mut impl FnMut() -> Uuid,
        now: SystemTime,
    ) -> Result<&Operation, OperationError> {
        if self.authorization().status != OperationStatus::Success {
            return Err(OperationError::NotAuthorized);
        }
        let route = priority::order(
            &request.priority,
            self.legs
                .iter()
                .map(|leg| (leg.partner.as_str(), leg.method.as_str())),
        );
        let allocations = routing::allocate(&route, &self.available(request.kind), request.amount)?;
        let amount = Amount::sum(allocations.iter().map(|a| a.amount))
            .map_err(|_| AllocationError::NothingAvailable)?;
        let transactions = allocations
            .iter()
            .map(|a| PartnerTransaction::unsent(ids(), a.leg, a.amount, now))
            .collect();
        self.operations.push(Operation {
            id,
            kind: request.kind,
            amount,
            status: OperationStatus::Uncertain,
            merchant_reference: request.merchant_reference.clone(),
            reason: request.reason.clone(),
            triggered_by: request.triggered_by,
            route,
            fallback: request.fallback,
            transactions,
            requires_review: false,
            history: Vec::new(),
            idempotency_key: request.idempotency_key.clone(),
            created_at: now,
            updated_at: now,
        });
        self.updated_at = now;
        Ok(self
            .operations
            .last()
            .unwrap_or_else(|| unreachable!("just pushed")))
    }

    /// Marks a transaction as sent once more (before the partner call).
    pub fn mark_sent(&mut self, operation: Uuid, transaction: Uuid, now: SystemTime) {
        if let Some(tx) = self
            .operation_mut(operation)
            .and_then(|op| op.transactions.iter_mut().find(|tx| tx.id == transaction))
        {
            tx.attempts = tx.attempts.saturating_add(1);
            tx.updated_at = now;
        }
    }

    /// Applies a partner's answer to a non-final transaction and recomputes
    /// the operation's status. Final transactions never change; returns
    /// whether anything changed.
    pub fn record(
        &mut self,
        operation: Uuid,
        transaction: Uuid,
        outcome: TransactionOutcome,
        now: SystemTime,
    ) -> bool {
        let Some(op) = self.operation_mut(operation) else {
            return false;
        };
        let Some(tx) = op.transactions.iter_mut().find(|tx| tx.id == transaction) else {
            return false;
        };
        if tx.status.is_final() {
            return false;
        }
        tx.status = outcome.status;
        if outcome.partner_reference.is_some() {
            tx.partner_reference = outcome.partner_reference;
        }
        tx.partner_status = outcome.partner_status;
        tx.partner_status_description = outcome.partner_status_description;
        tx.updated_at = now;
        op.updated_at = now;
        op.recompute_status();
        self.updated_at = now;
        true
    }

    /// Gives up the transactions of an operation that were never sent (an
    /// authorization stops at the first declined leg): they fail with
    /// `NOT_ATTEMPTED` and release their reservation.
    pub fn abandon_unsent(&mut self, operation: Uuid, now: SystemTime) {
        let unsent: Vec<Uuid> = self
            .operation(operation)
            .map(|op| {
                op.transactions
                    .iter()
                    .filter(|tx| tx.attempts == 0 && !tx.status.is_final())
                    .map(|tx| tx.id)
                    .collect()
            })
            .unwrap_or_default();
        for transaction in unsent {
            let outcome = TransactionOutcome {
                status: TransactionStatus::Failure,
                partner_reference: None,
                partner_status: "NOT_ATTEMPTED".into(),
                partner_status_description: "an earlier leg was declined".into(),
            };
            self.record(operation, transaction, outcome, now);
        }
    }

    /// Fallback: re-offers `unfilled` (a declined leg's amount) to the legs
    /// after `after_leg` in the operation's route, taking what each can spare
    /// now. Amounts join the leg's transaction if it has not been sent yet, or
    /// a new one. Returns what could not be placed.
    pub fn reoffer(
        &mut self,
        operation: Uuid,
        after_leg: usize,
        unfilled: Amount,
        ids: &mut impl FnMut() -> Uuid,
        now: SystemTime,
    ) -> Amount {
        let Some(op) = self.operation(operation) else {
            return unfilled;
        };
        let kind = op.kind;
        let later: Vec<usize> = op
            .route
            .iter()
            .skip_while(|&&leg| leg != after_leg)
            .skip(1)
            // A leg already called for this operation is not called twice.
            .filter(|&&leg| {
                op.transactions
                    .iter()
                    .all(|tx| tx.leg != leg || tx.attempts == 0)
            })
            .copied()
            .collect();
        let (allocations, left) = routing::fill(&later, &self.available(kind), unfilled);
        let Some(op) = self.operation_mut(operation) else {
            return unfilled;
        };
        for Allocation { leg, amount } in allocations {
            match op.transactions.iter_mut().find(|tx| tx.leg == leg) {
                Some(tx) => {
                    tx.amount = tx.amount.checked_add(amount).unwrap_or(tx.amount);
                    tx.updated_at = now;
                }
                None => op
                    .transactions
                    .push(PartnerTransaction::unsent(ids(), leg, amount, now)),
            }
        }
        // Keep the transactions in route order, the order they execute in.
        let route = op.route.clone();
        op.transactions
            .sort_by_key(|tx| route.iter().position(|&leg| leg == tx.leg));
        op.updated_at = now;
        left
    }

    /// The SYSTEM capture of AUTOMATIC mode, once the authorization succeeded
    /// and none was opened before (exactly once).
    pub fn needs_automatic_capture(&self) -> bool {
        self.capture_mode == CaptureMode::Automatic
            && self.authorization().status == OperationStatus::Success
            && !self
                .operations_of(OperationKind::Capture)
                .any(|op| op.triggered_by == TriggeredBy::System)
    }

    /// After a failed authorization, the legs that were authorized and are
    /// not yet (being) voided: these are released by a compensation void.
    pub fn compensation_needed(&self) -> Vec<Allocation> {
        if self.authorization().status != OperationStatus::Failure {
            return Vec::new();
        }
        self.leg_amounts()
            .iter()
            .enumerate()
            .map(|(leg, amounts)| Allocation {
                leg,
                amount: amounts.available_to_void(),
            })
            .filter(|a| !a.amount.is_zero())
            .collect()
    }

    /// Opens a SYSTEM void for exactly these allocations (compensation).
    pub fn open_compensation(
        &mut self,
        id: Uuid,
        allocations: &[Allocation],
        ids: &mut impl FnMut() -> Uuid,
        now: SystemTime,
    ) -> &Operation {
        let amount = Amount::sum(allocations.iter().map(|a| a.amount)).unwrap_or(Amount::ZERO);
        self.operations.push(Operation {
            id,
            kind: OperationKind::Void,
            amount,
            status: OperationStatus::Uncertain,
            merchant_reference: String::new(),
            reason: "authorization failed: releasing the legs that were authorized".into(),
            triggered_by: TriggeredBy::System,
            route: allocations.iter().map(|a| a.leg).collect(),
            fallback: false,
            transactions: allocations
                .iter()
                .map(|a| PartnerTransaction::unsent(ids(), a.leg, a.amount, now))
                .collect(),
            requires_review: false,
            history: Vec::new(),
            idempotency_key: None,
            created_at: now,
            updated_at: now,
        });
        self.updated_at = now;
        self.operations
            .last()
            .unwrap_or_else(|| unreachable!("just pushed"))
    }

    /// Flags a non-final operation for an operator (once); returns whether it
    /// was newly flagged.
    pub fn flag_for_review(&mut self, operation: Uuid, note: String, now: SystemTime) -> bool {
        let Some(op) = self.operation_mut(operation) else {
            return false;
        };
        if op.requires_review || op.status.is_final() {
            return false;
        }
        op.requires_review = true;
        op.history.push(HistoryEntry { at: now, note });
        op.updated_at = now;
        self.updated_at = now;
        true
    }

    /// An operator settles a flagged operation: each still non-final
    /// transaction gets the given final status; the reason is kept in the
    /// history. Refused unless the operation requires review and every open
    /// transaction gets exactly one final status.
    pub fn settle_by_hand(
        &mut self,
        operation: Uuid,
        outcomes: &[(Uuid, TransactionStatus)],
        reason: &str,
        now: SystemTime,
    ) -> Result<(), SettleError> {
        let op = self
            .operation(operation)
            .ok_or(SettleError::UnknownOperation)?;
        if !op.requires_review || op.status.is_final() {
            return Err(SettleError::NotUnderReview);
        }
        let open: Vec<Uuid> = op
            .transactions
            .iter()
            .filter(|tx| !tx.status.is_final())
            .map(|tx| tx.id)
            .collect();
        let complete = outcomes.len() == open.len()
            && open
                .iter()
                .all(|id| outcomes.iter().any(|(tx, _)| tx == id))
            && outcomes.iter().all(|(_, status)| status.is_final());
        if !complete {
            return Err(SettleError::IncompleteOutcomes);
        }
        for (transaction, status) in outcomes {
            let outcome = TransactionOutcome {
                status: *status,
                partner_reference: None,
                partner_status: "SETTLED_BY_OPERATOR".into(),
                partner_status_description: reason.to_owned(),
            };
            self.record(operation, *transaction, outcome, now);
        }
        if let Some(op) = self.operation_mut(operation) {
            op.history.push(HistoryEntry {
                at: now,
                note: format!("settled by an operator: {reason}"),
            });
        }
        Ok(())
    }

    /// The reference the partner gave the authorization of `leg`, which
    /// captures, refunds and voids on that leg refer to.
    pub fn authorization_reference(&self, leg: usize) -> Option<&str> {
        self.authorization()
            .transactions
            .iter()
            .find(|tx| tx.leg == leg)
            .and_then(|tx| tx.partner_reference.as_deref())
    }
}

impl PartnerTransaction {
    fn unsent(id: Uuid, leg: usize, amount: Amount, now: SystemTime) -> Self {
        PartnerTransaction {
            id,
            leg,
            amount,
            // Until the partner answers, the outcome is unknown: if the
            // process died now, the resolver would have to ask the partner.
            status: TransactionStatus::Uncertain,
            attempts: 0,
            partner_reference: None,
            partner_status: String::new(),
            partner_status_description: String::new(),
            created_at: now,
            updated_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::priority::DefaultPriorities;
    use proptest::prelude::*;

    fn amount(minor: i64) -> Amount {
        Amount::from_minor(minor).unwrap()
    }

    fn id_source() -> impl FnMut() -> Uuid {
        let mut next = 0u128;
        move || {
            next += 1;
            Uuid::from_u128(next)
        }
    }

    /// 100.00 on a card at ingenico + 20.00 on a gift card at illicado,
    /// authorized.
    fn authorized_payment(ids: &mut impl FnMut() -> Uuid) -> Payment {
        let leg = |partner: &str, method: &str, minor: i64| Leg {
            partner: partner.into(),
            method: method.into(),
            amount: amount(minor),
            token: PaymentToken::new("tok".into()),
        };
        let mut payment = Payment::new(
            NewPayment {
                id: ids(),
                merchant: "demo".into(),
                session_id: ids(),
                order_reference: "order-1".into(),
                amount: amount(12000),
                currency: Currency::parse("EUR").unwrap(),
                capture_mode: CaptureMode::Manual,
                legs: vec![
                    leg("ingenico", "creditcard", 10000),
                    leg("illicado", "giftcard", 2000),
                ],
                webhook: None,
                authorization_id: ids(),
                idempotency_key: None,
            },
            ids,
            SystemTime::UNIX_EPOCH,
        );
        let auth = payment.authorization().clone();
        for tx in &auth.transactions {
            payment.record(auth.id, tx.id, success(), SystemTime::UNIX_EPOCH);
        }
        payment
    }

    fn success() -> TransactionOutcome {
        outcome(TransactionStatus::Success)
    }

    fn outcome(status: TransactionStatus) -> TransactionOutcome {
        TransactionOutcome {
            status,
            partner_reference: Some("ref".into()),
            partner_status: String::new(),
            partner_status_description: String::new(),
        }
    }

    fn request(kind: OperationKind, minor: Option<i64>) -> OperationRequest {
        OperationRequest {
            kind,
            amount: minor.map(amount),
            priority: DefaultPriorities::standard().for_kind(kind).to_vec(),
            fallback: true,
            merchant_reference: String::new(),
            reason: String::new(),
            triggered_by: TriggeredBy::Merchant,
            idempotency_key: None,
        }
    }

    #[test]
    fn capture_takes_the_gift_card_first_and_reserves_before_any_answer() {
        let mut ids = id_source();
        let mut payment = authorized_payment(&mut ids);
        let op_id = ids();
        let op = payment
            .open_operation(
                op_id,
                &request(OperationKind::Capture, Some(5000)),
                &mut ids,
                SystemTime::UNIX_EPOCH,
            )
            .unwrap()
            .clone();
        let legs: Vec<(usize, i64)> = op
            .transactions
            .iter()
            .map(|t| (t.leg, t.amount.minor()))
            .collect();
        assert_eq!(legs, vec![(1, 2000), (0, 3000)]);
        let amounts = payment.amounts();
        assert_eq!(amounts.capture_pending, amount(5000));
        assert_eq!(amounts.available_to_capture(), amount(7000));
        assert_eq!(payment.state(), PaymentState::Authorized);
    }

    #[test]
    fn declined_leg_is_reoffered_to_later_legs() {
        let mut ids = id_source();
        let mut payment = authorized_payment(&mut ids);
        let op_id = ids();
        let op = payment
            .open_operation(
                op_id,
                &request(OperationKind::Capture, Some(2000)),
                &mut ids,
                SystemTime::UNIX_EPOCH,
            )
            .unwrap()
            .clone();
        let gift = op.transactions[0].id;
        payment.mark_sent(op_id, gift, SystemTime::UNIX_EPOCH);
        payment.record(
            op_id,
            gift,
            outcome(TransactionStatus::Failure),
            SystemTime::UNIX_EPOCH,
        );
        let left = payment.reoffer(op_id, 1, amount(2000), &mut ids, SystemTime::UNIX_EPOCH);
        assert_eq!(left, Amount::ZERO);
        let op = payment.operation(op_id).unwrap().clone();
        let card = op.transactions.iter().find(|t| t.leg == 0).unwrap();
        assert_eq!(card.amount, amount(2000));
        payment.record(op_id, card.id, success(), SystemTime::UNIX_EPOCH);
        assert_eq!(
            payment.operation(op_id).unwrap().status,
            OperationStatus::Success
        );
    }

    #[test]
    fn failed_authorization_asks_to_void_the_authorized_legs() {
        let mut ids = id_source();
        let mut payment = authorized_payment(&mut ids);
        // Re-run the authorization with a declined gift card.
        let auth = payment.authorization().clone();
        payment.operations[0].transactions[1].status = TransactionStatus::Uncertain;
        payment.record(
            auth.id,
            auth.transactions[1].id,
            outcome(TransactionStatus::Failure),
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(payment.authorization().status, OperationStatus::Failure);
        assert_eq!(payment.state(), PaymentState::Failed);
        assert_eq!(
            payment.compensation_needed(),
            vec![Allocation {
                leg: 0,
                amount: amount(10000)
            }]
        );
    }

    #[derive(Debug, Clone)]
    enum Step {
        Open(OperationKind, Option<i64>),
        Answer(usize, TransactionStatus),
    }

    fn step() -> impl Strategy<Value = Step> {
        let kind = prop_oneof![
            Just(OperationKind::Capture),
            Just(OperationKind::Refund),
            Just(OperationKind::Void)
        ];
        let status = prop_oneof![
            Just(TransactionStatus::Success),
            Just(TransactionStatus::Failure),
            Just(TransactionStatus::Pending),
            Just(TransactionStatus::Uncertain),
        ];
        prop_oneof![
            (kind, prop::option::of(1i64..9000)).prop_map(|(k, a)| Step::Open(k, a)),
            (0usize..64, status).prop_map(|(i, s)| Step::Answer(i, s)),
        ]
    }

    proptest! {
        /// No sequence of operations and outcomes (success, decline, pending,
        /// uncertain, later resolutions) breaks the amount invariants.
        #[test]
        fn no_sequence_of_outcomes_breaks_the_amount_invariants(
            steps in prop::collection::vec(step(), 1..40)
        ) {
            let mut ids = id_source();
            let mut payment = authorized_payment(&mut ids);
            let now = SystemTime::UNIX_EPOCH;
            for step in steps {
                match step {
                    Step::Open(kind, amount) => {
                        let id = ids();
                        let _ = payment.open_operation(id, &request(kind, amount), &mut ids, now);
                    }
                    Step::Answer(index, status) => {
                        let pending: Vec<(Uuid, Uuid, usize)> = payment.operations.iter()
                            .flat_map(|op| op.transactions.iter()
                                .filter(|tx| !tx.status.is_final())
                                .map(move |tx| (op.id, tx.id, tx.leg)))
                            .collect();
                        if let Some(&(op, tx, leg)) = pending.get(index % pending.len().max(1)) {
                            payment.record(op, tx, outcome(status), now);
                            if status == TransactionStatus::Failure {
                                let amount = payment.operation(op).unwrap()
                                    .transaction(tx).unwrap().amount;
                                payment.reoffer(op, leg, amount, &mut ids, now);
                            }
                        }
                    }
                }
                for leg in payment.leg_amounts() {
                    let captured_or_voided = leg.captured.minor() + leg.capture_pending.minor()
                        + leg.voided.minor() + leg.void_pending.minor();
                    prop_assert!(captured_or_voided <= leg.authorized.minor());
                    prop_assert!(leg.refunded.minor() + leg.refund_pending.minor() <= leg.captured.minor());
                }
                for op in &payment.operations {
                    let reserved: i64 = op.transactions.iter()
                        .filter(|tx| tx.status != TransactionStatus::Failure)
                        .map(|tx| tx.amount.minor()).sum();
                    if op.kind != OperationKind::Authorization {
                        prop_assert!(reserved <= op.amount.minor());
                    }
                }
            }
        }
    }
}
