//! The only code that calls partners, and so the only code that moves money.
//!
//! - [`Payments::execute`] sends an opened operation's legs one by one in
//!   route order (a request, or the resolver running a follow-up). Answers
//!   are kept in memory and written by the conclusion; the one exception is a
//!   declined leg whose amount is re-offered to a later leg: that is written
//!   first, so a leg is never sent an amount the store does not hold.
//! - [`Payments::resolve_legs`] asks the partners what became of an
//!   operation's open legs (the resolver), and sends again — with the same
//!   partner idempotency key — what a partner never received.

use uuid::Uuid;

use super::{Advanced, Keying, PaymentError, Payments, Phase, Work};
use crate::{
    domain::{
        operation::Operation,
        operation::{OperationKind, TransactionOutcome},
        payment::{Answer, Leg, Payment},
        status::TransactionStatus,
    },
    partners::{Lookup, PartnerAnswer, PartnerError, PartnerRequest},
};

impl Payments {
    /// Asks each leg's partner whether the leg's token has a form it takes
    /// (locally, before anything is claimed: a corrected retry with the same
    /// key works). The message names the leg, never the token.
    pub(super) fn check_tokens(&self, legs: &[Leg]) -> Result<(), PaymentError> {
        for (index, leg) in legs.iter().enumerate() {
            let Some(partner) = self.partners.get(&leg.partner) else {
                continue;
            };
            if let Err(problem) = partner.adapter.check_token(leg.token.expose()) {
                return Err(PaymentError::InvalidArgument {
                    field: format!("split[{index}].payment_token"),
                    description: problem,
                });
            }
        }
        Ok(())
    }

    /// Runs an opened operation: executes its legs, then concludes it as one
    /// step, answering under `keying`.
    pub(super) async fn run(&self, work: Work, keying: &Keying) -> Result<Advanced, PaymentError> {
        let (work, answers) = self.execute(work).await?;
        self.advance(work, Phase::Conclude, keying, |header, op, now| {
            for answer in &answers {
                header.take_answer(op, answer, true, now);
            }
        })
        .await
        .map_err(PaymentError::after_partner_call)
    }

    /// Sends the operation's unsent legs in route order. Returns the work as
    /// last written and the answers not written yet (for the conclusion).
    pub(super) async fn execute(
        &self,
        mut work: Work,
    ) -> Result<(Work, Vec<Answer>), PaymentError> {
        let mut answers: Vec<Answer> = Vec::new();
        // The operation as it is with the answers so far.
        let (mut header, mut operation) = (work.header.value.clone(), work.operation.clone());
        loop {
            let Some(transaction) = operation.next_unsent() else {
                return Ok((work, answers));
            };
            let Some((request, partner)) = request_for(&header, &operation, transaction.id) else {
                return Err(PaymentError::Internal("a transaction names no leg".into()));
            };
            let result = self.partners.send(&partner, &request).await;
            let answer = Answer {
                transaction: transaction.id,
                sent: true,
                outcome: transaction_outcome(&result),
            };
            let re_offered = header.take_answer(&mut operation, &answer, true, self.clock.now());
            answers.push(answer);
            if re_offered {
                // A later leg now carries an amount the store does not hold.
                let written = std::mem::take(&mut answers);
                work = self
                    .advance(work, Phase::Progress, &Keying::None, |header, op, now| {
                        for answer in &written {
                            header.take_answer(op, answer, true, now);
                        }
                    })
                    .await
                    .map_err(PaymentError::after_partner_call)?
                    .work;
                (header, operation) = (work.header.value.clone(), work.operation.clone());
            }
        }
    }

    /// What the partners say of the operation's open legs, as answers: found
    /// outcomes, and re-sends (same partner idempotency key, at most
    /// `max_sends` in all) of what a partner never received. A leg still
    /// unknown gives no answer.
    pub(super) async fn resolve_legs(
        &self,
        header: &Payment,
        operation: &Operation,
    ) -> Vec<Answer> {
        let mut answers = Vec::new();
        let open: Vec<(Uuid, u32)> = operation
            .transactions
            .iter()
            .filter(|tx| !tx.status.is_final())
            .map(|tx| (tx.id, tx.attempts))
            .collect();
        for (transaction, attempts) in open {
            let Some((request, partner)) = request_for(header, operation, transaction) else {
                continue;
            };
            // An authorization already declined does not place more holds.
            let declined_before = operation.kind == OperationKind::Authorization
                && (operation
                    .transactions
                    .iter()
                    .any(|tx| tx.status == TransactionStatus::Failure)
                    || answers
                        .iter()
                        .any(|a: &Answer| a.outcome.status == TransactionStatus::Failure));
            let reference = operation
                .transaction(transaction)
                .and_then(|tx| tx.partner_reference.as_deref());
            let lookup = self.partners.lookup(&partner, &request, reference).await;
            let (outcome, sent) = match lookup {
                Ok(Lookup::Found(result)) => (known_outcome(&result), false),
                Ok(Lookup::NotFound) if declined_before => {
                    (Some(TransactionOutcome::not_attempted()), false)
                }
                Ok(Lookup::NotFound) if attempts < self.settings.max_sends => {
                    tracing::info!(
                        operation_id = %operation.id,
                        partner,
                        "the partner never received it: sending again with the same key"
                    );
                    // Every send counts, whatever its answer (an unanswered
                    // one too): after `max_sends` the leg is only looked up.
                    let result = self.partners.send(&partner, &request).await;
                    (Some(transaction_outcome(&result)), true)
                }
                Ok(Lookup::NotFound) | Err(_) => (None, false),
            };
            if let Some(outcome) = outcome {
                answers.push(Answer {
                    transaction,
                    sent,
                    outcome,
                });
            }
        }
        answers
    }
}

/// One transaction as a partner request, with the partner to send it to.
fn request_for(
    header: &Payment,
    operation: &Operation,
    transaction: Uuid,
) -> Option<(PartnerRequest, String)> {
    let tx = operation.transaction(transaction)?;
    let leg = header.legs.get(tx.leg)?;
    let request = PartnerRequest {
        kind: operation.kind,
        // Deterministic per operation and leg, so a re-send is deduplicated.
        idempotency_key: format!("{}:{}", operation.id, tx.leg),
        amount: tx.amount,
        currency: header.currency,
        method: leg.method.clone(),
        token: leg.token.clone(),
        authorization_reference: header.authorization_reference(tx.leg).map(str::to_owned),
        order_reference: header.order_reference.clone(),
        merchant_reference: operation.merchant_reference.clone(),
        reason: operation.reason.clone(),
        // Lines describe the whole operation: only a leg carrying all of it
        // can pass them on truthfully.
        items: if tx.amount == operation.amount {
            operation.items.clone()
        } else {
            Vec::new()
        },
        refunded_before: header.ledger.get(tx.leg)?.refunded,
    };
    Some((request, leg.partner.clone()))
}

fn transaction_outcome(result: &Result<PartnerAnswer, PartnerError>) -> TransactionOutcome {
    match result {
        Ok(answer) => TransactionOutcome {
            status: if answer.settled {
                TransactionStatus::Success
            } else {
                TransactionStatus::Pending
            },
            partner_reference: Some(answer.reference.clone()),
            partner_status: answer.partner_status.clone(),
            partner_status_description: answer.description.clone(),
        },
        Err(PartnerError::Declined { code, description }) => TransactionOutcome {
            status: TransactionStatus::Failure,
            partner_reference: None,
            partner_status: code.clone(),
            partner_status_description: description.clone(),
        },
        // Nothing happened at the partner: the leg fails and fallback applies.
        Err(PartnerError::Unavailable { description }) => TransactionOutcome {
            status: TransactionStatus::Failure,
            partner_reference: None,
            partner_status: "UNAVAILABLE".into(),
            partner_status_description: description.clone(),
        },
        Err(PartnerError::Unknown { description }) => TransactionOutcome {
            status: TransactionStatus::Uncertain,
            partner_reference: None,
            partner_status: "UNKNOWN".into(),
            partner_status_description: description.clone(),
        },
    }
}

/// A found answer as an outcome; `None` while it is still unknown.
fn known_outcome(result: &Result<PartnerAnswer, PartnerError>) -> Option<TransactionOutcome> {
    let outcome = transaction_outcome(result);
    (outcome.status != TransactionStatus::Uncertain).then_some(outcome)
}
