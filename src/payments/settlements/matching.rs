//! Which transaction of ours a settlement line settles.
//!
//! A line names it by its action reference, our partner idempotency key
//! `<operation>:<leg>`. Walley includes that reference only with extended
//! reporting; without it the line is matched on the partner's order id (the
//! leg's token), its kind and its amount. Several transactions of ours that
//! fit are never guessed between: the line is an issue.

use uuid::Uuid;

use crate::{
    domain::{
        money::Amount,
        operation::{Operation, PartnerKey},
        payment::Payment,
        settlement::{Ours, SettledBy, SettlementEntry},
        status::TransactionStatus,
    },
    payments::{PaymentError, Payments},
    store::Versioned,
};

/// Our transaction a line names.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub header: Versioned<Payment>,
    pub operation: Operation,
    pub transaction: Uuid,
}

impl Found {
    /// Whether the transaction may have reached the partner: sent at least
    /// once, or answered.
    pub fn was_sent(&self) -> bool {
        self.operation
            .transactions
            .iter()
            .any(|tx| tx.id == self.transaction && !tx.never_sent())
    }

    /// Our side, as the line is compared with it.
    pub fn ours(&self) -> Ours {
        let tx = self
            .operation
            .transactions
            .iter()
            .find(|tx| tx.id == self.transaction);
        Ours {
            kind: self.operation.kind,
            amount: tx.map_or(Amount::ZERO, |tx| tx.amount),
            currency: self.header.value.currency,
            status: tx.map_or(TransactionStatus::Failure, |tx| tx.status),
        }
    }
}

/// What looking for a line's transaction came to.
#[derive(Debug, Clone)]
pub(super) enum Named {
    Found(Box<Found>),
    /// Nothing of ours; with the payment the line's order belongs to, when
    /// one does (an adjustment or a chargeback names no operation).
    Nothing(Option<Box<Payment>>),
    /// Several transactions of ours fit a line without a reference.
    Ambiguous(usize),
}

impl Payments {
    /// The transaction of ours a line settles (see the module doc).
    pub(super) async fn transaction_named(
        &self,
        partner: &str,
        entry: &SettlementEntry,
        claim: SettledBy,
    ) -> Result<Named, PaymentError> {
        if !entry.action_reference.is_empty() {
            return Ok(
                match self.by_reference(partner, &entry.action_reference).await? {
                    Some(found) => Named::Found(Box::new(found)),
                    None => Named::Nothing(None),
                },
            );
        }
        self.by_order(partner, entry, claim).await
    }

    async fn by_reference(
        &self,
        partner: &str,
        reference: &str,
    ) -> Result<Option<Found>, PaymentError> {
        let Some(PartnerKey { operation, leg }) = PartnerKey::parse(reference) else {
            return Ok(None);
        };
        let Some((header, operation)) = self.store.find_operation(operation).await? else {
            return Ok(None);
        };
        let at_partner = header
            .value
            .legs
            .get(leg)
            .is_some_and(|l| l.partner == partner);
        let transaction = operation
            .transactions
            .iter()
            .find(|tx| tx.leg == leg)
            .map(|tx| tx.id);
        Ok(match transaction {
            Some(transaction) if at_partner => Some(Found {
                header,
                operation,
                transaction,
            }),
            _ => None,
        })
    }

    /// A line without a reference: the payment whose leg at `partner` has
    /// the line's order id as its token, and there the one transaction of
    /// the line's kind and amount that no other line settled.
    async fn by_order(
        &self,
        partner: &str,
        entry: &SettlementEntry,
        claim: SettledBy,
    ) -> Result<Named, PaymentError> {
        let order = entry.partner_reference.as_str();
        if order.is_empty() {
            return Ok(Named::Nothing(None));
        }
        let instrument = self.instrument_named(partner, order);
        let order = self.spelt(partner, order);
        let Some(held) = self.store.instrument(&instrument).await? else {
            return Ok(Named::Nothing(None));
        };
        let mut payment_of_order = None;
        let mut fits = Vec::new();
        for attempt in &held.claim.attempts {
            let Some(stored) = self.store.payment(attempt.payment).await? else {
                continue;
            };
            let header = &stored.header.value;
            let Some(leg) = header.legs.iter().position(|l| {
                l.partner == partner && self.spelt(partner, l.token.expose()) == order
            }) else {
                continue;
            };
            payment_of_order = Some(Box::new(header.clone()));
            for operation in &stored.operations {
                if entry.kind.operation_kind() != Some(operation.kind) {
                    continue;
                }
                // Never sent (no attempt, no answer): not what the partner
                // settled.
                let fitting = operation.transactions.iter().find(|tx| {
                    tx.leg == leg
                        && tx.amount == entry.magnitude()
                        && tx.status != TransactionStatus::Failure
                        && !tx.never_sent()
                });
                if let Some(tx) = fitting {
                    fits.push(Found {
                        header: stored.header.clone(),
                        operation: operation.clone(),
                        transaction: tx.id,
                    });
                }
            }
        }
        // A transaction another line settled is not this line's, unless
        // every one that fits is: then the line repeats one of them.
        let mut open = Vec::new();
        for found in &fits {
            let settled = self.store.settled_in(found.transaction).await?;
            if settled.is_none_or(|held| held.is(claim)) {
                open.push(found.clone());
            }
        }
        Ok(match (open.len(), fits.len()) {
            (1, _) => Named::Found(Box::new(open.swap_remove(0))),
            (0, 0) => Named::Nothing(payment_of_order),
            (0, _) => Named::Found(Box::new(fits.swap_remove(0))),
            (many, _) => Named::Ambiguous(many),
        })
    }
}
