//! Operations (authorization, capture, refund, void) and their partner
//! transactions: one record per operation, stored apart from the payment.
//!
//! An operation is a pure state machine over its transactions: answers are
//! recorded, a final transaction never changes, and the operation's status is
//! aggregated by amounts after every change. What an operation holds of each
//! leg ([`Operation::contribution`]) is what the payment's ledger books for it.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    amounts::Amounts,
    items::ItemLine,
    money::Amount,
    status::{self, OperationStatus, TransactionStatus},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OperationKind {
    Authorization,
    Capture,
    Refund,
    Void,
}

impl OperationKind {
    /// The one spelling of the kind (metrics, logs, webhooks).
    pub fn as_str(self) -> &'static str {
        match self {
            OperationKind::Authorization => "authorization",
            OperationKind::Capture => "capture",
            OperationKind::Refund => "refund",
            OperationKind::Void => "void",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TriggeredBy {
    Merchant,
    System,
}

impl TriggeredBy {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggeredBy::Merchant => "merchant",
            TriggeredBy::System => "system",
        }
    }
}

/// A hash of what a request asked (its RPC and validated fields): the same
/// idempotency key with a different fingerprint is a different request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 16]);

/// The merchant request that opened an operation: where its idempotency
/// record is, and what it asked. Whoever finalizes the operation completes
/// that record; a retry that finds the operation without its record (lost,
/// expired) still tells a different request apart by the fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub record: Uuid,
    pub fingerprint: Fingerprint,
}

/// One leg's part of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerTransaction {
    pub id: Uuid,
    /// Index into the payment's legs.
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
    /// The reusable instrument the partner answered an authorization with,
    /// where it answers one (never the token the merchant submitted).
    pub partner_token: Option<String>,
}

impl PartnerTransaction {
    /// Never sent to its partner and not ended otherwise: nothing the
    /// partner could have applied, settled or spoken of.
    pub fn never_sent(&self) -> bool {
        self.attempts == 0 && !self.status.is_final()
    }

    /// The id of an operation's transaction on a leg: derived, so that every
    /// replica and every retry names it the same (one transaction per leg).
    pub fn id_for(operation: Uuid, leg: usize) -> Uuid {
        Uuid::new_v5(&operation, format!("leg:{leg}").as_bytes())
    }

    /// A reservation not yet sent: until the partner answers, the outcome is
    /// unknown (if the process died now, the resolver would have to ask).
    pub fn unsent(operation: Uuid, leg: usize, amount: Amount, now: SystemTime) -> Self {
        PartnerTransaction {
            id: PartnerTransaction::id_for(operation, leg),
            leg,
            amount,
            status: TransactionStatus::Uncertain,
            attempts: 0,
            partner_reference: None,
            partner_status: String::new(),
            partner_status_description: String::new(),
            created_at: now,
            updated_at: now,
            partner_token: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: SystemTime,
    pub note: String,
}

/// An authorization, capture, refund or void.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub id: Uuid,
    pub payment_id: Uuid,
    /// Its place among the payment's operations (the authorization is 0).
    pub sequence: u32,
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
    /// The merchant request that opened it; none for SYSTEM operations.
    pub origin: Option<Origin>,
    /// The order lines of what it covers (the session's for the
    /// authorization, the request's for a capture, refund or void).
    pub items: Vec<ItemLine>,
    /// What happened beyond partner answers (review flags, outcomes set by an
    /// operator with their reason).
    pub history: Vec<HistoryEntry>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

/// A partner's answer for one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionOutcome {
    pub status: TransactionStatus,
    pub partner_reference: Option<String>,
    pub partner_status: String,
    pub partner_status_description: String,
    /// A reusable instrument the partner answered with.
    pub partner_token: Option<String>,
}

impl TransactionOutcome {
    /// A leg that was never sent because an earlier leg was declined.
    pub fn not_attempted() -> Self {
        TransactionOutcome {
            status: TransactionStatus::Failure,
            partner_reference: None,
            partner_status: "NOT_ATTEMPTED".into(),
            partner_status_description: "an earlier leg was declined".into(),
            partner_token: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SettleError {
    #[error("the operation is not waiting for review")]
    NotUnderReview,
    #[error("every open partner transaction needs exactly one final outcome")]
    IncompleteOutcomes,
    #[error("a partner transaction never sent cannot have succeeded: settle it as FAILURE")]
    NeverSent,
}

impl Operation {
    /// The item lines the partner of `transaction` receives: all of them
    /// when it carries the whole amount; else its share (see
    /// [`items::per_leg`](super::items::per_leg)) among the legs up to it in
    /// route order that were not declined (a declined leg's amount went on
    /// by fallback, its lines go with it) — empty when no share adds up to
    /// its amount. The legs before a leg are answered before it is sent, so
    /// its share is the same at every send; it could change only if an
    /// earlier leg were found declined later, and then this leg is re-sent
    /// only when the partner has no trace of it (a first application).
    pub fn lines_for(&self, transaction: Uuid) -> Vec<ItemLine> {
        let Some(tx) = self.transaction(transaction) else {
            return Vec::new();
        };
        if self.items.is_empty() || tx.amount == self.amount {
            return self.items.clone();
        }
        let Some(index) = self.transactions.iter().position(|tx| tx.id == transaction) else {
            return Vec::new();
        };
        let amounts: Vec<_> = self.transactions[..=index]
            .iter()
            .filter(|earlier| {
                earlier.id == transaction || earlier.status != TransactionStatus::Failure
            })
            .map(|tx| tx.amount)
            .collect();
        super::items::per_leg(&self.items, &amounts)
            .pop()
            .flatten()
            .unwrap_or_default()
    }

    /// How the item lines are shared out between the legs, for the history
    /// (`None` when one leg carries the whole amount, or there are none).
    pub fn lines_note(&self, partner_of: impl Fn(usize) -> String) -> Option<String> {
        /// Longer notes are cut: the shares are computed again at each send.
        const MOST: usize = 1000;
        if self.items.is_empty() || self.transactions.iter().any(|tx| tx.amount == self.amount) {
            return None;
        }
        let amounts: Vec<_> = self.transactions.iter().map(|tx| tx.amount).collect();
        // At open nothing is declined yet: every leg shares.
        let shared = super::items::per_leg(&self.items, &amounts);
        let legs: Vec<String> = self
            .transactions
            .iter()
            .zip(shared)
            .map(|(tx, lines)| {
                let who = format!("leg {} ({})", tx.leg, partner_of(tx.leg));
                match lines {
                    Some(lines) if !lines.is_empty() => {
                        let parts: Vec<String> = lines
                            .iter()
                            .map(|line| format!("{} × {}", line.quantity, line.sku_reference))
                            .collect();
                        format!("{who} {}", parts.join(", "))
                    }
                    _ => format!(
                        "{who} goes without lines: no share of them adding up to {} was found",
                        tx.amount
                    ),
                }
            })
            .collect();
        let mut note = format!("item lines per leg: {}", legs.join("; "));
        if note.len() > MOST {
            let cut = (0..=MOST)
                .rev()
                .find(|&i| note.is_char_boundary(i))
                .unwrap_or(0);
            note.truncate(cut);
            note.push('…');
        }
        Some(note)
    }

    pub fn transaction(&self, id: Uuid) -> Option<&PartnerTransaction> {
        self.transactions.iter().find(|tx| tx.id == id)
    }

    /// The next transaction never sent, in route order. An authorization
    /// with a declined leg has none: it places no more holds.
    pub fn next_unsent(&self) -> Option<&PartnerTransaction> {
        if self.kind == OperationKind::Authorization
            && self
                .transactions
                .iter()
                .any(|tx| tx.status == TransactionStatus::Failure)
        {
            return None;
        }
        self.transactions.iter().find(|tx| tx.never_sent())
    }

    /// What this operation holds of each leg: its successes, and its pending
    /// or uncertain transactions as reservations. Indexed like the legs.
    pub fn contribution(&self, legs: usize) -> Vec<Amounts> {
        let mut held = vec![Amounts::ZERO; legs];
        for tx in &self.transactions {
            let Some(leg) = held.get_mut(tx.leg) else {
                continue;
            };
            let (done, pending) = match self.kind {
                OperationKind::Authorization => (&mut leg.authorized, &mut leg.authorize_pending),
                OperationKind::Capture => (&mut leg.captured, &mut leg.capture_pending),
                OperationKind::Refund => (&mut leg.refunded, &mut leg.refund_pending),
                OperationKind::Void => (&mut leg.voided, &mut leg.void_pending),
            };
            let slot = match tx.status {
                TransactionStatus::Success => done,
                TransactionStatus::Pending | TransactionStatus::Uncertain => pending,
                TransactionStatus::Failure => continue,
            };
            // One transaction per leg: nothing is added to a non-zero slot.
            *slot = slot.checked_add(tx.amount).unwrap_or(*slot);
        }
        held
    }

    /// What is left on a leg, after this operation, for another of its
    /// kind, given the leg's books then: to capture (an authorization's
    /// too), to refund, or to void.
    pub fn remaining(&self, books: &Amounts) -> Amount {
        match self.kind {
            OperationKind::Authorization | OperationKind::Capture => books.available_to_capture(),
            OperationKind::Refund => books.available_to_refund(),
            OperationKind::Void => books.available_to_void(),
        }
    }

    /// Counts one more attempt of a transaction, before its partner call:
    /// from here on it may have been sent. The new count is the send's
    /// fence: an answer to that send is taken only while the count is still
    /// the same (nobody sent it again since). `None` for a final or unknown
    /// transaction.
    pub fn claim_send(&mut self, transaction: Uuid, now: SystemTime) -> Option<u32> {
        let tx = self
            .transactions
            .iter_mut()
            .find(|tx| tx.id == transaction && !tx.status.is_final())?;
        tx.attempts += 1;
        tx.updated_at = now;
        self.updated_at = now;
        Some(tx.attempts)
    }

    /// Takes back an attempt counted under `fence` that was certainly never
    /// sent (the sender gave up before the call). Returns whether it did.
    pub fn unclaim_send(&mut self, transaction: Uuid, fence: u32, now: SystemTime) -> bool {
        let Some(tx) = self
            .transactions
            .iter_mut()
            .find(|tx| tx.id == transaction && tx.attempts == fence && !tx.status.is_final())
        else {
            return false;
        };
        tx.attempts -= 1;
        tx.updated_at = now;
        self.updated_at = now;
        true
    }

    /// Applies a partner's answer to a non-final transaction and recomputes
    /// the status. Final transactions never change; returns whether anything
    /// changed.
    pub fn record(
        &mut self,
        transaction: Uuid,
        outcome: TransactionOutcome,
        now: SystemTime,
    ) -> bool {
        let Some(tx) = self.transactions.iter_mut().find(|tx| tx.id == transaction) else {
            return false;
        };
        if tx.status.is_final() {
            return false;
        }
        tx.status = outcome.status;
        if outcome.partner_reference.is_some() {
            tx.partner_reference = outcome.partner_reference;
        }
        if outcome.partner_token.is_some() {
            tx.partner_token = outcome.partner_token;
        }
        tx.partner_status = outcome.partner_status;
        tx.partner_status_description = outcome.partner_status_description;
        tx.updated_at = now;
        self.updated_at = now;
        self.recompute_status();
        true
    }

    /// Gives up the transactions that were never sent (an authorization
    /// stops at the first declined leg): they fail with `NOT_ATTEMPTED`.
    pub fn abandon_unsent(&mut self, now: SystemTime) {
        let unsent: Vec<Uuid> = self
            .transactions
            .iter()
            .filter(|tx| tx.never_sent())
            .map(|tx| tx.id)
            .collect();
        for transaction in unsent {
            self.record(transaction, TransactionOutcome::not_attempted(), now);
        }
    }

    /// Flags a non-final operation for an operator (once); returns whether it
    /// was newly flagged.
    pub fn flag_for_review(&mut self, note: String, now: SystemTime) -> bool {
        if self.requires_review || self.status.is_final() {
            return false;
        }
        self.requires_review = true;
        self.history.push(HistoryEntry { at: now, note });
        self.updated_at = now;
        true
    }

    /// A partner's settlement shows the transaction paid: it succeeded,
    /// whatever it was waiting for. `note` names the settlement and goes into
    /// the history. Returns whether it changed anything (a final transaction
    /// does not change).
    pub fn settle_from_report(&mut self, transaction: Uuid, note: &str, now: SystemTime) -> bool {
        let outcome = TransactionOutcome {
            status: TransactionStatus::Success,
            partner_reference: None,
            partner_status: "SETTLED".into(),
            partner_status_description: note.to_owned(),
            partner_token: None,
        };
        if !self.record(transaction, outcome, now) {
            return false;
        }
        self.history.push(HistoryEntry {
            at: now,
            note: note.to_owned(),
        });
        true
    }

    /// Adds `note` to the history.
    pub fn note(&mut self, note: String, now: SystemTime) {
        self.history.push(HistoryEntry { at: now, note });
    }

    /// A partner reports an outcome that contradicts a final one: the status
    /// stays (final statuses never change), the operation goes to an
    /// operator with both facts in its history. Returns whether it was newly
    /// flagged.
    pub fn flag_contradiction(&mut self, note: String, now: SystemTime) -> bool {
        let newly = !self.requires_review;
        self.requires_review = true;
        self.history.push(HistoryEntry { at: now, note });
        self.updated_at = now;
        newly
    }

    /// An operator settles a flagged operation: each open transaction gets
    /// the given final status, and the reason is kept in the history.
    /// Refused unless the operation requires review and every open
    /// transaction gets exactly one final status. A final operation flagged
    /// for review takes no outcome: the operator's reason clears the flag.
    pub fn settle_by_hand(
        &mut self,
        outcomes: &[(Uuid, TransactionStatus)],
        reason: &str,
        now: SystemTime,
    ) -> Result<(), SettleError> {
        if !self.requires_review {
            return Err(SettleError::NotUnderReview);
        }
        // Final, and flagged (a partner contradicted it): nothing is open to
        // settle; the operator says it was looked at.
        if self.status.is_final() {
            if !outcomes.is_empty() {
                return Err(SettleError::IncompleteOutcomes);
            }
            self.history.push(HistoryEntry {
                at: now,
                note: format!("reviewed by an operator: {reason}"),
            });
            self.requires_review = false;
            self.updated_at = now;
            return Ok(());
        }
        let open: Vec<Uuid> = self
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
        // A leg never sent moved no money: it cannot have succeeded.
        let never_sent = |id: &Uuid| {
            self.transactions
                .iter()
                .any(|tx| tx.id == *id && tx.never_sent())
        };
        if outcomes
            .iter()
            .any(|(tx, status)| *status == TransactionStatus::Success && never_sent(tx))
        {
            return Err(SettleError::NeverSent);
        }
        for (transaction, status) in outcomes {
            let outcome = TransactionOutcome {
                status: *status,
                partner_reference: None,
                partner_status: "SETTLED_BY_OPERATOR".into(),
                partner_status_description: reason.to_owned(),
                partner_token: None,
            };
            self.record(*transaction, outcome, now);
        }
        self.history.push(HistoryEntry {
            at: now,
            note: format!("settled by an operator: {reason}"),
        });
        // Reviewed: a later contradiction flags it anew.
        self.requires_review = false;
        Ok(())
    }

    /// The status as its transactions say (after any change to them).
    pub(super) fn recompute_status(&mut self) {
        let statuses = self.transactions.iter().map(|tx| (tx.status, tx.amount));
        self.status = match self.kind {
            OperationKind::Authorization => {
                status::aggregate_authorization(statuses.map(|(status, _)| status))
            }
            _ => status::aggregate(self.amount, statuses),
        };
    }
}

/// What one leg of one operation is called at its partner: the idempotency
/// key of every send, Walley's `actionReference`, WePay's `unique_id`, the
/// reference a partner's notification and settlement line carry back.
/// Written `<operation id>:<leg index>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartnerKey {
    pub operation: Uuid,
    pub leg: usize,
}

impl PartnerKey {
    pub fn new(operation: Uuid, leg: usize) -> PartnerKey {
        PartnerKey { operation, leg }
    }

    /// The key a partner echoed back, if it is one of ours.
    pub fn parse(text: &str) -> Option<PartnerKey> {
        let (operation, leg) = text.split_once(':')?;
        Some(PartnerKey {
            operation: Uuid::try_parse(operation).ok()?,
            leg: leg.parse().ok()?,
        })
    }
}

impl std::fmt::Display for PartnerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.operation, self.leg)
    }
}

/// Each leg's books once each of `operations` counted, taken in the order
/// they were opened (by sequence): what every operation left on the legs.
/// Indexed like `operations`; complete only when they are all of the
/// payment's operations.
pub fn books_after(operations: &[Operation], legs: usize) -> Vec<Vec<Amounts>> {
    let mut order: Vec<usize> = (0..operations.len()).collect();
    order.sort_by_key(|&index| operations[index].sequence);
    let mut books = vec![Amounts::ZERO; legs];
    let mut after = vec![Vec::new(); operations.len()];
    for index in order {
        let held = operations[index].contribution(legs);
        for (leg, part) in books.iter_mut().zip(&held) {
            *leg = leg.plus(part);
        }
        after[index] = books.clone();
    }
    after
}

/// A partner's answer with `status` (and reference `ref`), for tests.
#[cfg(test)]
pub(crate) fn answer(status: TransactionStatus) -> TransactionOutcome {
    TransactionOutcome {
        status,
        partner_reference: Some("ref".into()),
        partner_status: String::new(),
        partner_status_description: String::new(),
        partner_token: None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_partner_key_reads_back_what_it_writes_and_nothing_else() {
        let key = super::PartnerKey::new(uuid::Uuid::from_u128(7), 1);
        assert_eq!(super::PartnerKey::parse(&key.to_string()), Some(key));
        for text in [
            "",
            "x:1",
            "00000000-0000-0000-0000-000000000007",
            "00000000-0000-0000-0000-000000000007:-1",
            "00000000-0000-0000-0000-000000000007:1:2",
        ] {
            assert_eq!(super::PartnerKey::parse(text), None, "{text:?}");
        }
    }

    use super::*;
    use crate::domain::money::amount;

    fn capture(legs: &[(usize, i64)]) -> Operation {
        let id = Uuid::from_u128(7);
        let now = SystemTime::UNIX_EPOCH;
        Operation {
            id,
            payment_id: Uuid::from_u128(1),
            sequence: 1,
            kind: OperationKind::Capture,
            amount: amount(legs.iter().map(|l| l.1).sum()),
            status: OperationStatus::Uncertain,
            merchant_reference: String::new(),
            reason: String::new(),
            triggered_by: TriggeredBy::Merchant,
            route: legs.iter().map(|l| l.0).collect(),
            fallback: true,
            transactions: legs
                .iter()
                .map(|&(leg, minor)| PartnerTransaction::unsent(id, leg, amount(minor), now))
                .collect(),
            requires_review: false,
            origin: None,
            items: Vec::new(),
            history: Vec::new(),
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn a_final_transaction_never_changes() {
        let mut op = capture(&[(0, 500)]);
        let tx = op.transactions[0].id;
        assert!(op.record(
            tx,
            answer(TransactionStatus::Success),
            SystemTime::UNIX_EPOCH
        ));
        assert!(!op.record(
            tx,
            answer(TransactionStatus::Failure),
            SystemTime::UNIX_EPOCH
        ));
        assert_eq!(op.status, OperationStatus::Success);
    }

    #[test]
    fn contribution_books_successes_and_reserves_the_rest() {
        let mut op = capture(&[(1, 200), (0, 300)]);
        let gift = op.transactions[0].id;
        op.record(
            gift,
            answer(TransactionStatus::Success),
            SystemTime::UNIX_EPOCH,
        );
        let held = op.contribution(2);
        assert_eq!(
            (held[1].captured, held[1].capture_pending),
            (amount(200), Amount::ZERO)
        );
        assert_eq!(
            (held[0].captured, held[0].capture_pending),
            (Amount::ZERO, amount(300))
        );
        let card = op.transactions[1].id;
        op.record(
            card,
            answer(TransactionStatus::Failure),
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(
            op.contribution(2)[0],
            Amounts::ZERO,
            "a decline holds nothing"
        );
        assert_eq!(op.status, OperationStatus::Conflict);
    }

    #[test]
    fn transaction_ids_are_derived_from_the_operation_and_leg() {
        let op = Uuid::from_u128(9);
        assert_eq!(
            PartnerTransaction::id_for(op, 1),
            PartnerTransaction::id_for(op, 1)
        );
        assert_ne!(
            PartnerTransaction::id_for(op, 1),
            PartnerTransaction::id_for(op, 2)
        );
    }
}
