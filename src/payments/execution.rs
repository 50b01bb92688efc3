//! The only code that calls partners, and so the only code that moves money.
//!
//! **One sender per (operation, leg).** A partner call is sent only under the
//! leg's send claim, taken in the store step that counts the attempt (the
//! attempt is counted *before* the send, so a crash after it leaves "maybe
//! sent", never "never sent"). The attempt number is the claim's fence: an
//! answer is written only while the count has not moved. A claim lives for
//! the operation lease by the store's own clock, so no replica's clock can
//! make two live claims; a sender checks with its own monotonic clock that
//! the claim will outlive its call before it sends.
//!
//! - [`Payments::execute`] sends an opened operation's legs one by one in
//!   route order (a request, or the resolver running a follow-up). Before
//!   each leg after the first, one step writes the answers so far and claims
//!   the next leg; the conclusion writes the rest.
//! - [`Payments::resolve_legs`] asks the partners what became of an
//!   operation's open legs (the resolver, Sync), and sends again — under a
//!   new claim, with the same partner idempotency key — what a partner that
//!   deduplicates never received. A partner that does not deduplicate an
//!   operation is never sent it twice: its legs are only looked up.
//!
//! **Unknown stays unknown.** Only a first send may fail on an
//! `Unavailable` answer (nothing can have happened before it). After an
//! attempt without an answer, a re-send answered `Unavailable` (a 429, a "not
//! visible yet") leaves the leg UNCERTAIN with its reservation; a found
//! answer or a definite decline ends it.

use tokio::time::Instant;
use uuid::Uuid;

use super::{Advanced, Edit, Keying, PaymentError, Payments, Phase, Work, WorkLease};
use crate::{
    domain::{
        operation::{Operation, OperationKind, PartnerKey, TransactionOutcome},
        payment::{Answer, Leg, Payment},
        status::TransactionStatus,
    },
    partners::{Lookup, PartnerAnswer, PartnerError, PartnerRequest},
    store::ClaimChange,
};

/// A send claim this executor holds: the transaction it may send, the
/// attempt it counted (the claim's fence), and when the claim was asked for
/// (the claim lives at least the operation lease from then).
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    pub transaction: Uuid,
    pub leg: usize,
    pub fence: u32,
    pub since: Instant,
}

impl Payments {
    /// Asks each leg's partner whether the leg's token has a form it takes
    /// (locally, before anything is claimed: a corrected retry with the same
    /// key works). The message names the leg, never the token.
    pub(super) fn check_tokens<'a>(
        &self,
        legs: impl Iterator<Item = (usize, &'a Leg)>,
    ) -> Result<(), PaymentError> {
        for (index, leg) in legs {
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

    /// Counts the first attempt of a new operation's first leg and gives the
    /// claim to take with the step that opens it.
    pub(super) fn claim_first(
        &self,
        operation: &mut Operation,
        since: Instant,
    ) -> Option<(Held, ClaimChange)> {
        let transaction = operation.next_unsent()?.id;
        let (now, ttl) = (operation.created_at, self.settings.operation_lease);
        let mut edit = Edit::default();
        let held = take_claim(operation, transaction, now, since, ttl, &mut edit)?;
        Some((held, edit.claims.pop()?))
    }

    /// Runs an opened operation: executes its legs, then concludes it as one
    /// step, answering under `keying`. `held`: the claim its opening step took.
    pub(super) async fn run(
        &self,
        work: Work,
        held: Option<Held>,
        keying: &Keying,
    ) -> Result<Advanced, PaymentError> {
        let record = match keying {
            Keying::Request { record, .. } => Some(*record),
            Keying::None | Keying::Origin => None,
        };
        let (work, answers) = self.execute(work, held, record).await?;
        let concluded = self
            .advance(work, Phase::Conclude, keying, |header, op, now, edit| {
                for answer in &answers {
                    settle(header, op, answer, true, now, edit);
                }
            })
            .await
            .map_err(PaymentError::after_partner_call)?;
        if !concluded.replicated && record.is_some() {
            // Stored, but a failover could lose it: the retry reads it.
            return Err(PaymentError::RequestInProgress);
        }
        Ok(concluded)
    }

    /// Sends the operation's unsent legs in route order. Returns the work as
    /// last written and the answers not written yet (for the conclusion).
    /// `record`: the request's, which a hand-off gives up.
    pub(super) async fn execute(
        &self,
        mut work: Work,
        mut held: Option<Held>,
        record: Option<Uuid>,
    ) -> Result<(Work, Vec<Answer>), PaymentError> {
        let mut answers: Vec<Answer> = Vec::new();
        // The operation as it is with the answers so far.
        let (mut header, mut operation) = (work.header.value.clone(), work.operation.clone());
        loop {
            let claim = match held.take() {
                Some(claim) => claim,
                None => {
                    let Some(next) = operation.next_unsent().map(|tx| tx.id) else {
                        return Ok((work, answers));
                    };
                    // The answers so far and the next attempt, in one step.
                    let written = std::mem::take(&mut answers);
                    let (claimed, claim) = self.claim_next(work, written, next, record).await?;
                    work = claimed;
                    (header, operation) = (work.header.value.clone(), work.operation.clone());
                    claim
                }
            };
            let Some((request, partner)) = request_for(&header, &operation, claim.transaction)
            else {
                return Err(PaymentError::Internal("a transaction names no leg".into()));
            };
            // Asked first: the instrument's look may take store rounds, and
            // the claim must outlive the call from the moment it is sent.
            let lost = self.instrument_lost(&header, &operation, claim).await?;
            if lost.is_none() && !self.claim_outlives_call(&partner, claim.since) {
                self.release_unsent(work, claim, record).await?;
                return Err(PaymentError::RequestInProgress);
            }
            let answer = match lost {
                Some(refusal) => refusal,
                None => sent_answer(
                    claim,
                    &request,
                    &self.partners.send(&partner, &request).await,
                ),
            };
            let now = self.clock.now();
            header.take_answer(&mut operation, &answer, true, now);
            answers.push(answer);
        }
    }

    /// One step: the answers so far, and the attempt of `next` counted under
    /// a new claim. Superseded (someone sent since), or the leg claimed by
    /// another sender: the request stops and the other one answers.
    async fn claim_next(
        &self,
        work: Work,
        written: Vec<Answer>,
        next: Uuid,
        record: Option<Uuid>,
    ) -> Result<(Work, Held), PaymentError> {
        let since = Instant::now();
        let ttl = self.settings.operation_lease;
        let mut claimed = None;
        let advanced = self
            .advance(
                work,
                Phase::Progress,
                &Keying::None,
                |header, op, now, edit| {
                    claimed = None;
                    for answer in &written {
                        settle(header, op, answer, true, now, edit);
                    }
                    if edit.stale || op.next_unsent().map(|tx| tx.id) != Some(next) {
                        edit.stale = true;
                        return;
                    }
                    claimed = take_claim(op, next, now, since, ttl, edit);
                },
            )
            .await
            .map_err(PaymentError::after_partner_call)?;
        match (advanced.stale, claimed) {
            (false, Some(claim)) if advanced.replicated => Ok((advanced.work, claim)),
            (false, Some(claim)) => {
                // A failover could lose the attempt: it is not sent.
                self.release_unsent(advanced.work, claim, record).await?;
                Err(PaymentError::RequestInProgress)
            }
            _ => Err(PaymentError::RequestInProgress),
        }
    }

    /// The resolver's claim of one leg, whose attempt count it read as
    /// `attempts`: `None` when someone else sent it since, or holds it now.
    async fn claim_leg(
        &self,
        work: Work,
        transaction: Uuid,
        attempts: u32,
    ) -> Result<Option<(Work, Held)>, PaymentError> {
        let since = Instant::now();
        let ttl = self.settings.operation_lease;
        let mut claimed = None;
        let advanced = self
            .advance(work, Phase::Progress, &Keying::None, |_, op, now, edit| {
                claimed = None;
                if op.transaction(transaction).map(|tx| tx.attempts) != Some(attempts) {
                    edit.stale = true;
                    return;
                }
                claimed = take_claim(op, transaction, now, since, ttl, edit);
            })
            .await;
        match (advanced, claimed) {
            (Ok(advanced), Some(claim)) if !advanced.stale && !advanced.replicated => {
                // A failover could lose the attempt: it is not sent.
                self.release_unsent(advanced.work, claim, None).await?;
                Ok(None)
            }
            (Ok(advanced), claimed) if !advanced.stale => {
                Ok(claimed.map(|claim| (advanced.work, claim)))
            }
            (Ok(_) | Err(PaymentError::RequestInProgress), _) => Ok(None),
            (Err(other), _) => Err(other),
        }
    }

    /// An authorization leg whose instrument another payer holds is never
    /// sent: it is declined here (`PAYMENT_TOKEN_IN_USE`), nothing placed.
    async fn instrument_lost(
        &self,
        header: &Payment,
        operation: &Operation,
        claim: Held,
    ) -> Result<Option<Answer>, PaymentError> {
        // Every send, not only the first attempt: an attempt counted by a
        // sender that stopped before its call was never checked. (A leg that
        // was sent passed this check, and keeps its instrument: its payment
        // exists, so no other payer can take it.)
        if operation.kind != OperationKind::Authorization
            || self.instrument_held(header, claim.leg).await?
        {
            return Ok(None);
        }
        Ok(Some(Answer {
            transaction: claim.transaction,
            sent: Some(claim.fence),
            outcome: TransactionOutcome {
                status: TransactionStatus::Failure,
                partner_reference: None,
                partner_status: "PAYMENT_TOKEN_IN_USE".into(),
                partner_status_description: "the payment token is used by another payer".into(),
                partner_token: None,
            },
            review: None,
        }))
    }

    /// Whether a claim asked for at `since` still has time for one whole
    /// partner call (every attempt within the retry window): measured on
    /// this process's monotonic clock, so a stalled store step or a paused
    /// process never sends on a claim that may have run out.
    fn claim_outlives_call(&self, partner: &str, since: Instant) -> bool {
        let Some(configured) = self.partners.get(partner) else {
            return false;
        };
        let call = configured.timeout + configured.retry.window;
        since.elapsed() + call < self.settings.operation_lease
    }

    /// Takes back an attempt that was counted but certainly never sent, and
    /// gives its claim up, so that the next sender's call is a first send.
    /// With the request's `record`, the request hands its work over: the
    /// record's lease ends and the operation is due now, so a retry with the
    /// key (or the resolver) takes it over at once.
    pub(super) async fn release_unsent(
        &self,
        work: Work,
        claim: Held,
        record: Option<Uuid>,
    ) -> Result<(), PaymentError> {
        self.advance(work, Phase::Progress, &Keying::None, |_, op, now, edit| {
            edit.abandon = record;
            if op.unclaim_send(claim.transaction, claim.fence, now) {
                edit.claims.push(ClaimChange::Release {
                    operation: op.id,
                    leg: claim.leg,
                    fence: claim.fence,
                });
            }
        })
        .await
        .map(drop)
    }

    /// What the partners say of the operation's open legs, written as one
    /// step: found outcomes, first sends of legs never sent, and re-sends
    /// (same partner idempotency key, at most `max_sends` in all, each under
    /// a claim of its own) of what a deduplicating partner never received.
    /// Stops at a leg another sender holds. Returns the work as last written
    /// and the answers to conclude with.
    pub(super) async fn resolve_legs(
        &self,
        mut work: Work,
        lease: &WorkLease,
    ) -> Result<(Work, Vec<Answer>), PaymentError> {
        let mut answers = Vec::new();
        let open: Vec<Uuid> = work
            .operation
            .transactions
            .iter()
            .filter(|tx| !tx.status.is_final())
            .map(|tx| tx.id)
            .collect();
        for (index, transaction) in open.into_iter().enumerate() {
            // Renewed before each leg after the first (taken just before
            // it); lost (it ran out and someone took it): stop, and write
            // only what was found so far.
            if index > 0 && !lease.renew(self).await? {
                break;
            }
            let (header, operation) = (&work.header.value, &work.operation);
            let Some(tx) = operation.transaction(transaction) else {
                continue;
            };
            if tx.status.is_final() {
                continue;
            }
            let attempts = tx.attempts;
            let Some((request, partner)) = request_for(header, operation, transaction) else {
                continue;
            };
            // An authorization already declined places no more holds.
            let declined_before = operation.kind == OperationKind::Authorization
                && (operation
                    .transactions
                    .iter()
                    .any(|tx| tx.status == TransactionStatus::Failure)
                    || answers
                        .iter()
                        .any(|a: &Answer| a.outcome.status == TransactionStatus::Failure));
            if attempts == 0 && declined_before {
                // Only while it is still unsent: a sender may claim it yet.
                answers.push(Answer {
                    transaction,
                    sent: Some(0),
                    outcome: TransactionOutcome::not_attempted(),
                    review: None,
                });
                continue;
            }
            if attempts > 0 {
                let reference = tx.partner_reference.as_deref();
                match self.partners.lookup(&partner, &request, reference).await {
                    Ok(Lookup::Found(result)) => {
                        if let Some(answer) = looked_up(transaction, &result) {
                            answers.push(answer);
                        }
                        continue;
                    }
                    Ok(Lookup::NotFound) => {}
                    // Not known now: asked again later.
                    Err(_) => continue,
                }
                if !self.partners.resends_safely(&partner, request.kind) {
                    // Sent once and never again: only an operator can tell
                    // a call that is still on its way from one that was lost.
                    if let Some(answer) = self.ambiguous(operation, transaction) {
                        answers.push(answer);
                    }
                    continue;
                }
                if attempts >= self.settings.max_sends {
                    continue;
                }
                tracing::info!(
                    operation_id = %operation.id,
                    partner,
                    "the partner has no trace of it: sending again with the same key"
                );
            }
            let Some((claimed, claim)) =
                self.claim_leg(work.clone(), transaction, attempts).await?
            else {
                // Someone else sent it since, or is sending it now.
                break;
            };
            work = claimed;
            let Some((request, partner)) =
                request_for(&work.header.value, &work.operation, transaction)
            else {
                continue;
            };
            let (header, operation) = (&work.header.value, &work.operation);
            let lost = self.instrument_lost(header, operation, claim).await?;
            if lost.is_none() && !self.claim_outlives_call(&partner, claim.since) {
                self.release_unsent(work.clone(), claim, None).await?;
                break;
            }
            let answer = match lost {
                Some(refusal) => refusal,
                None => sent_answer(
                    claim,
                    &request,
                    &self.partners.send(&partner, &request).await,
                ),
            };
            answers.push(answer);
        }
        Ok((work, answers))
    }

    /// A leg sent once to a partner that does not deduplicate it, which the
    /// partner shows no trace of: once its claim has run out (the sender is
    /// done or gone), it goes to review; it stays UNCERTAIN with its
    /// reservation.
    fn ambiguous(&self, operation: &Operation, transaction: Uuid) -> Option<Answer> {
        let tx = operation.transaction(transaction)?;
        let since = self
            .clock
            .now()
            .duration_since(tx.updated_at)
            .unwrap_or_default();
        if since < self.settings.operation_lease {
            return None;
        }
        let note = format!(
            "leg {} was sent to a partner that cannot deduplicate it and the partner shows no \
             trace of it: it is not sent again; an operator must check the partner",
            tx.leg
        );
        Some(Answer {
            transaction,
            sent: None,
            outcome: TransactionOutcome {
                status: TransactionStatus::Uncertain,
                partner_reference: None,
                partner_status: "NOT_FOUND".into(),
                partner_status_description: "the partner shows no trace of it".into(),
                partner_token: None,
            },
            review: Some(note),
        })
    }
}

/// Counts one more attempt of `transaction` and takes its send claim in the
/// same step: the claim the sender then holds.
fn take_claim(
    operation: &mut Operation,
    transaction: Uuid,
    now: std::time::SystemTime,
    since: Instant,
    ttl: std::time::Duration,
    edit: &mut Edit,
) -> Option<Held> {
    let leg = operation.transaction(transaction)?.leg;
    let fence = operation.claim_send(transaction, now)?;
    edit.claims.push(ClaimChange::Take {
        operation: operation.id,
        leg,
        fence,
        ttl,
    });
    Some(Held {
        transaction,
        leg,
        fence,
        since,
    })
}

/// Takes an answer into the operation, and gives up the claim it was sent
/// under. A superseded answer changes nothing and marks the change stale.
pub(super) fn settle(
    header: &mut Payment,
    operation: &mut Operation,
    answer: &Answer,
    walking: bool,
    now: std::time::SystemTime,
    edit: &mut Edit,
) {
    if !answer.is_current(operation) {
        edit.stale = true;
        return;
    }
    if let (Some(fence @ 1..), Some(leg)) = (
        answer.sent,
        operation.transaction(answer.transaction).map(|tx| tx.leg),
    ) {
        edit.claims.push(ClaimChange::Release {
            operation: operation.id,
            leg,
            fence,
        });
    }
    header.take_answer(operation, answer, walking, now);
}

/// One transaction as a partner request, with the partner to send it to.
pub(super) fn request_for(
    header: &Payment,
    operation: &Operation,
    transaction: Uuid,
) -> Option<(PartnerRequest, String)> {
    let tx = operation.transaction(transaction)?;
    let leg = header.legs.get(tx.leg)?;
    let request = PartnerRequest {
        kind: operation.kind,
        // Deterministic per operation and leg, so a re-send is deduplicated.
        idempotency_key: PartnerKey::new(operation.id, tx.leg).to_string(),
        amount: tx.amount,
        currency: header.currency,
        method: leg.method.clone(),
        token: leg.token.clone(),
        authorization_reference: header.authorization_reference(tx.leg).map(str::to_owned),
        order_reference: header.order_reference.clone(),
        merchant_reference: operation.merchant_reference.clone(),
        reason: operation.reason.clone(),
        // The leg's share of the lines, adding up to its amount.
        items: operation.lines_for(transaction),
        refunded_before: header.ledger.get(tx.leg)?.refunded,
    };
    Some((request, leg.partner.clone()))
}

/// The answer to a send of `request` made under `claim`. Only a first send
/// may fail on `Unavailable`; after an unanswered attempt it leaves the leg
/// UNCERTAIN. So does a hosted checkout's authorization, whose "send" is a
/// read: the shopper's order or reservation may be there already.
fn sent_answer(
    claim: Held,
    request: &PartnerRequest,
    result: &Result<PartnerAnswer, PartnerError>,
) -> Answer {
    let first_send = claim.fence == 1 && request.token.checkout().is_none();
    let (outcome, review) = outcome_of(result, first_send);
    Answer {
        transaction: claim.transaction,
        sent: Some(claim.fence),
        outcome,
        review,
    }
}

/// What a lookup found, as an answer; `None` while it says nothing final
/// or certain (a lookup that failed is asked again later).
fn looked_up(transaction: Uuid, result: &Result<PartnerAnswer, PartnerError>) -> Option<Answer> {
    if matches!(
        result,
        Err(PartnerError::Unavailable { .. } | PartnerError::Unknown { .. })
    ) {
        return None;
    }
    let (outcome, review) = outcome_of(result, false);
    Some(Answer {
        transaction,
        sent: None,
        outcome,
        review,
    })
}

fn outcome_of(
    result: &Result<PartnerAnswer, PartnerError>,
    first_send: bool,
) -> (TransactionOutcome, Option<String>) {
    let outcome =
        |status, reference: Option<&str>, code: &str, description: &str| TransactionOutcome {
            status,
            partner_reference: reference.map(str::to_owned),
            partner_status: code.to_owned(),
            partner_status_description: description.to_owned(),
            partner_token: None,
        };
    match result {
        Ok(answer) => (
            TransactionOutcome {
                partner_token: answer.instrument.clone(),
                ..outcome(
                    if answer.settled {
                        TransactionStatus::Success
                    } else {
                        TransactionStatus::Pending
                    },
                    Some(&answer.reference),
                    &answer.partner_status,
                    &answer.description,
                )
            },
            None,
        ),
        Err(PartnerError::Declined { code, description }) => (
            outcome(TransactionStatus::Failure, None, code, description),
            None,
        ),
        // Nothing happened at the partner: the leg fails and fallback
        // applies — but only if nothing can have happened before either.
        Err(PartnerError::Unavailable { description }) => (
            outcome(
                if first_send {
                    TransactionStatus::Failure
                } else {
                    TransactionStatus::Uncertain
                },
                None,
                "UNAVAILABLE",
                description,
            ),
            None,
        ),
        Err(PartnerError::Unknown { description }) => (
            outcome(TransactionStatus::Uncertain, None, "UNKNOWN", description),
            None,
        ),
        Err(PartnerError::Contradiction { description }) => (
            outcome(
                TransactionStatus::Uncertain,
                None,
                "CONTRADICTION",
                description,
            ),
            Some(format!(
                "the partner's answer contradicts the request: {description}"
            )),
        ),
    }
}
