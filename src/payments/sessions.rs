//! Checkout sessions: CreateSession, GetSession, UpdateSession,
//! CancelSession and SubmitSession.
//!
//! - CreateSession is one store step: the session and the request's answer,
//!   written together; the session's id is derived from the key.
//! - SubmitSession authorizes the split. *Open* is one step: the key
//!   claimed, the session PROCESSING, the payment inserted with its
//!   authorization reserving every leg, the authorization on the due-queue.
//!   The legs are authorized in split order; a declined leg stops the walk.
//!   *Conclude* is one step: the outcome, the session SUBMITTED (or OPEN
//!   again after a decline), and the follow-up opened in the same step — the
//!   automatic capture (AUTOMATIC mode) or the compensation void of the legs
//!   that were authorized — which runs at once and answers the request. A
//!   submit cut off anywhere is finished by the resolver: no session stays
//!   PROCESSING, no follow-up is lost or run twice.

use std::time::SystemTime;

use uuid::Uuid;

use super::{
    CancelSession, CreateSession, Found, Held, Idempotent, Keying, MAX_WRITE_ATTEMPTS, Payer,
    PaymentError, PaymentView, Payments, Precondition, Scope, SubmitSession, UpdateSession, Work,
    derived_id, fingerprint, found_record, operation_item, payment_view, system_id,
};
use crate::{
    domain::{
        items,
        money::Amount,
        operation::Origin,
        payment::{NewPayment, Payment},
        session::{Session, SessionError, SessionStatus, SessionView},
        status::OperationStatus,
    },
    store::{
        Committed, DueChange, DueItem, KeyChange, KeyState, OperationWrite, Outcome, PaymentWrite,
        Shard, Step, StoreError, Versioned, Write,
    },
};

impl Payments {
    pub async fn create_session(
        &self,
        merchant: &str,
        request: Idempotent<CreateSession>,
    ) -> Result<SessionView, PaymentError> {
        if request.command.webhook.is_some() && !self.webhooks.signs_for(merchant) {
            return Err(PaymentError::WebhookSecretMissing);
        }
        let fingerprint = fingerprint("CreateSession", &request.command);
        let id = derived_id(merchant, Scope::CreateSession, &request.key);
        let now = self.clock.now();
        let command = request.command;
        let session = Session {
            id,
            merchant: merchant.to_owned(),
            order_reference: command.order_reference,
            amount: command.amount,
            currency: command.currency,
            capture_mode: command.capture_mode,
            items: command.items,
            webhook: command.webhook,
            metadata: command.metadata,
            status: SessionStatus::Open,
            cancellation_reason: String::new(),
            created_at: now,
            updated_at: now,
            expires_at: now + command.expires_in.unwrap_or(self.settings.session_expiry),
            payment_id: None,
            fingerprint,
            created: None,
        };
        let view = session.clone().view_at(now);
        let mut step = Step::new(Shard::of(id), now);
        step.key = Some(KeyChange::Answer {
            record: id,
            fingerprint,
            outcome: Outcome::Session(view.clone()),
            ttl: self.settings.idempotency_ttl,
        });
        step.session = Some(Write::Insert(session.clone()));
        // The listing is derived data in other shards: written beside the
        // step, on the same round trip.
        let (committed, indexed) =
            tokio::join!(self.store.commit(step), self.store.index_session(&session));
        if let Err(error) = indexed {
            tracing::warn!(%error, session_id = %id, "session not added to the listing");
        }
        match committed? {
            Committed::Applied { .. } => Ok(view),
            Committed::Claimed(state) => match found_record(state)? {
                Found::Answer(outcome) => match *outcome {
                    Outcome::Session(view) => Ok(view),
                    _ => Err(PaymentError::IdempotencyKeyReused),
                },
                Found::Abandoned => Err(PaymentError::RequestInProgress),
            },
            // The session exists but its record is gone: it is the answer.
            Committed::Exists | Committed::Conflict | Committed::Busy => {
                let existing = self.owned_session(merchant, id).await?;
                if existing.value.fingerprint != fingerprint {
                    return Err(PaymentError::IdempotencyKeyReused);
                }
                Ok(existing.value.view_at(self.clock.now()))
            }
        }
    }

    pub async fn session(&self, merchant: &str, id: Uuid) -> Result<SessionView, PaymentError> {
        let session = self.owned_session(merchant, id).await?;
        Ok(session.value.view_at(self.clock.now()))
    }

    pub async fn cancel_session(
        &self,
        merchant: &str,
        request: Idempotent<CancelSession>,
    ) -> Result<SessionView, PaymentError> {
        let session_id = request.command.session_id;
        let answer = Origin {
            record: derived_id(merchant, Scope::Session(session_id), &request.key),
            fingerprint: fingerprint("CancelSession", &request.command),
        };
        let reason = &request.command.reason;
        self.change_session(
            merchant,
            session_id,
            answer,
            |session, now| session.cancel(reason.clone(), now),
            |_| Ok(()),
        )
        .await
    }

    /// Changes an OPEN session. Its lines must add up to the amount it has
    /// afterwards; a webhook needs the merchant's signing secret.
    pub async fn update_session(
        &self,
        merchant: &str,
        request: Idempotent<UpdateSession>,
    ) -> Result<SessionView, PaymentError> {
        let change = &request.command.change;
        let session_id = request.command.session_id;
        let answer = Origin {
            record: derived_id(merchant, Scope::Session(session_id), &request.key),
            fingerprint: fingerprint("UpdateSession", &request.command),
        };
        let unsigned =
            matches!(change.webhook, Some(Some(_))) && !self.webhooks.signs_for(merchant);
        let admissible = |session: &Session| {
            if unsigned {
                return Err(PaymentError::WebhookSecretMissing);
            }
            let total = items::total(&session.items);
            if session.items.is_empty() || total == Ok(session.amount) {
                return Ok(());
            }
            let (field, fix) = if change.items.is_some() {
                ("items", "")
            } else {
                ("amount", "; change the items with it")
            };
            Err(PaymentError::InvalidArgument {
                field: field.into(),
                description: format!(
                    "the session's lines add up to {}, its amount would be {}{fix}",
                    total.map_or_else(|_| "more than an amount holds".into(), |t| t.to_string()),
                    session.amount
                ),
            })
        };
        // A hosted checkout the shopper completed holds the amount and the
        // lines (a retry of an answered request gets its answer all the
        // same).
        let reprices = (change.amount.is_some() || change.items.is_some())
            && self.session_key_state(session_id, answer).await?.is_none();
        if reprices {
            self.check_checkouts_open(session_id).await?;
        }
        let updated = self
            .change_session(
                merchant,
                session_id,
                answer,
                |session, now| session.update(change.clone(), now),
                admissible,
            )
            .await?;
        if reprices {
            self.reopen_checkouts(session_id).await;
        }
        Ok(updated)
    }

    /// One idempotent change of a session: `change` applied to the session
    /// as read and the answer (or the refusal) kept under the key, in one
    /// step; again on a concurrent write. A change `admit` refuses is
    /// answered as bad input and changes nothing.
    async fn change_session(
        &self,
        merchant: &str,
        session_id: Uuid,
        answer: Origin,
        change: impl Fn(&mut Session, SystemTime) -> Result<(), SessionError>,
        admit: impl Fn(&Session) -> Result<(), PaymentError>,
    ) -> Result<SessionView, PaymentError> {
        for _ in 0..MAX_WRITE_ATTEMPTS {
            let current = self.owned_session(merchant, session_id).await?;
            let now = self.clock.now();
            let mut session = current.value.clone();
            let mut step = Step::new(Shard::of(session_id), now);
            let answered = match change(&mut session, now) {
                Ok(()) => {
                    if let Err(refused) = admit(&session) {
                        // Bad as things stand now, but a retry of a request
                        // already answered gets its answer.
                        return match self.session_key_state(session_id, answer).await? {
                            Some(state) => replayed_session(state),
                            None => Err(refused),
                        };
                    }
                    let view = session.clone().view_at(now);
                    step.session = Some(Write::Update {
                        expected: current.version,
                        value: session,
                    });
                    Ok(view)
                }
                Err(refusal) => {
                    step.session = Some(Write::Check {
                        expected: current.version,
                        id: session_id,
                    });
                    Err(Precondition::from(refusal))
                }
            };
            step.key = Some(KeyChange::Answer {
                record: answer.record,
                fingerprint: answer.fingerprint,
                outcome: match &answered {
                    Ok(view) => Outcome::Session(view.clone()),
                    Err(refusal) => Outcome::Refused(refusal.clone()),
                },
                ttl: self.settings.idempotency_ttl,
            });
            match self.store.commit(step).await? {
                Committed::Applied { .. } => return answered.map_err(PaymentError::from),
                Committed::Conflict => continue,
                Committed::Claimed(state) => return replayed_session(state),
                Committed::Exists | Committed::Busy => break,
            }
        }
        Err(PaymentError::Internal(
            "too many concurrent writes to one session".into(),
        ))
    }

    /// Authorizes every leg in split order. A declined leg stops the walk,
    /// voids the legs already authorized (compensation) and reopens the
    /// session; success captures at once in AUTOMATIC mode.
    pub async fn submit_session(
        &self,
        merchant: &str,
        request: Idempotent<SubmitSession>,
    ) -> Result<PaymentView, PaymentError> {
        let session_id = request.command.session_id;
        let fingerprint = fingerprint("SubmitSession", &request.command);
        let payment_id = derived_id(merchant, Scope::Session(session_id), &request.key);
        let origin = Origin {
            record: payment_id,
            fingerprint,
        };
        let mut current = self.owned_session(merchant, session_id).await?;
        if let Err(mismatch) = legs_add_up(&current.value, &request.command) {
            return self.refused_or_replayed(session_id, origin, mismatch).await;
        }
        self.check_split(&current.value, &request.command).await?;
        if let Err(refused) = self.check_hosted(&current.value, &request.command).await {
            // The checkout may have been reopened since: a retry gets its answer.
            return self.refused_or_replayed(session_id, origin, refused).await;
        }
        let legs = &self.with_parents(merchant, &request.command).await?;
        // Claimed before the open step (each claim is a key of its own); a
        // claim held past half the idempotency lease without the payment
        // opened could be taken over, so the submit stops then.
        let claimed_at = tokio::time::Instant::now();
        self.claim_instruments(
            Payer {
                merchant,
                session: session_id,
                payment: payment_id,
            },
            legs,
        )
        .await?;
        for attempt in 0..MAX_WRITE_ATTEMPTS {
            if attempt > 0 {
                // The session may have changed (an UpdateSession): the legs
                // must still add up to its amount.
                current = self.owned_session(merchant, session_id).await?;
                if let Err(mismatch) = legs_add_up(&current.value, &request.command) {
                    return self.refused_or_replayed(session_id, origin, mismatch).await;
                }
                if let Err(stale) = self.check_hosted(&current.value, &request.command).await {
                    return self.refused_or_replayed(session_id, origin, stale).await;
                }
            }
            let now = self.clock.now();
            let mut session = current.value.clone();
            let mut step = Step::new(Shard::of(session_id), now);
            if let Err(refusal) = session.begin_payment(payment_id, now) {
                let refusal = Precondition::from(refusal);
                step.key = Some(KeyChange::Answer {
                    record: payment_id,
                    fingerprint,
                    outcome: Outcome::Refused(refusal.clone()),
                    ttl: self.settings.idempotency_ttl,
                });
                step.session = Some(Write::Check {
                    expected: current.version,
                    id: session_id,
                });
                match self.store.commit(step).await? {
                    Committed::Applied { .. } => return Err(refusal.into()),
                    Committed::Conflict => continue,
                    Committed::Claimed(state) => {
                        return self.replay_submit(payment_id, origin, state).await;
                    }
                    Committed::Exists | Committed::Busy => {
                        return self.answer_from_payment(payment_id, origin).await;
                    }
                }
            }
            let (header, mut authorization) = Payment::new(
                NewPayment {
                    id: payment_id,
                    merchant: merchant.to_owned(),
                    session_id,
                    order_reference: session.order_reference.clone(),
                    amount: session.amount,
                    currency: session.currency,
                    capture_mode: session.capture_mode,
                    legs: legs.clone(),
                    webhook: session.webhook.clone(),
                    authorization_id: system_id(payment_id, "authorization"),
                    origin: Some(origin),
                    items: session.items.clone(),
                },
                now,
            );
            // The first leg's attempt is counted, and its claim taken, in the
            // step that opens the authorization.
            let held = self
                .claim_first(&mut authorization, tokio::time::Instant::now())
                .map(|(held, claim)| {
                    step.claims.push(claim);
                    held
                });
            step.key = Some(KeyChange::Claim {
                record: payment_id,
                fingerprint,
                lease: self.settings.idempotency_lease,
                ttl: self.settings.idempotency_ttl,
            });
            step.session = Some(Write::Update {
                expected: current.version,
                value: session.clone(),
            });
            step.payment = Some(PaymentWrite {
                header: Write::Insert(header.clone()),
                operations: vec![OperationWrite::Insert(authorization.clone())],
            });
            step.due.push(DueChange::Schedule(
                operation_item(&authorization),
                now + self.settings.operation_lease,
            ));
            if let Some(retention) = self.settings.payment_retention {
                // Looked at once the retention could have ended; it puts
                // itself back while the payment is open or changes.
                let item = DueItem::Retention {
                    payment: payment_id,
                };
                step.due.push(DueChange::Schedule(item, now + retention));
            }
            if claimed_at.elapsed() >= self.settings.idempotency_lease / 2 {
                return Err(PaymentError::RequestInProgress);
            }
            // The listing is derived data in other shards: written beside the
            // step, on the same round trip.
            let (committed, indexed) =
                tokio::join!(self.store.commit(step), self.store.index_payment(&header));
            if let Err(error) = indexed {
                tracing::warn!(%error, payment_id = %payment_id, "payment not added to the listing");
            }
            let (committed, replicated) = match committed {
                Err(StoreError::NotReplicated(committed)) => (*committed, false),
                other => (other?, true),
            };
            match committed {
                Committed::Applied {
                    payment,
                    session: version,
                    ..
                } => {
                    metrics::counter!(crate::telemetry::series::OPERATIONS_OPENED).increment(1);
                    let work = Work {
                        header: Versioned {
                            value: header,
                            version: payment.ok_or_else(super::steps::unversioned)?,
                        },
                        operation: authorization,
                        session: Some(Versioned {
                            value: session,
                            version: version.ok_or_else(super::steps::unversioned)?,
                        }),
                    };
                    if !replicated {
                        // Nothing is sent on a step a failover could lose:
                        // handed to a retry with the key, or the resolver.
                        if let Some(held) = held {
                            self.release_unsent(work, held, Some(payment_id)).await?;
                        }
                        return Err(PaymentError::RequestInProgress);
                    }
                    return self.authorize(work, held).await;
                }
                Committed::Conflict => continue,
                Committed::Claimed(state) => {
                    return self.replay_submit(payment_id, origin, state).await;
                }
                Committed::Exists | Committed::Busy => {
                    return self.answer_from_payment(payment_id, origin).await;
                }
            }
        }
        Err(PaymentError::Internal(
            "too many concurrent writes to one session".into(),
        ))
    }

    /// Every leg's partner must serve the merchant in the session's
    /// currency, and every token must be
    /// one its partner accepts (checked before anything is claimed: a
    /// corrected retry with the same key works).
    async fn check_split(
        &self,
        session: &Session,
        command: &SubmitSession,
    ) -> Result<(), PaymentError> {
        for (index, leg) in command.legs.iter().enumerate() {
            let Some(partner) = self.partners.get(&leg.partner) else {
                continue;
            };
            if let Some(description) = partner.refuses(&session.merchant, session.currency) {
                return Err(PaymentError::InvalidArgument {
                    field: format!("split[{index}].partner"),
                    description,
                });
            }
        }
        // A reused instrument is the parent's, and a hosted checkout's the
        // partner's, not the shopper's: not checked.
        let submitted = (0..command.legs.len()).filter(|&index| {
            command.parent(index).is_none() && command.legs[index].token.checkout().is_none()
        });
        self.check_tokens(submitted.map(|index| (index, &command.legs[index])))
    }

    /// A leg paid through a hosted checkout names the one opened for this
    /// session at its partner for the session's amount as it is (the
    /// checkout holds the whole cart), and the leg is for that amount: one
    /// leg per checkout.
    async fn check_hosted(
        &self,
        session: &Session,
        command: &SubmitSession,
    ) -> Result<(), PaymentError> {
        for (index, leg) in command.legs.iter().enumerate() {
            let Some(id) = leg.token.checkout() else {
                continue;
            };
            let kept = self.checkout_of(session.id, &leg.partner).await?;
            let description = match kept {
                Some(kept)
                    if kept.id == id
                        && kept.amount == leg.amount
                        && kept.holds(session.amount, &session.items) =>
                {
                    continue;
                }
                Some(kept) if kept.id == id && !kept.holds(session.amount, &session.items) => {
                    "the checkout was opened before the session's amount or lines changed \
                     (start the partner checkout again)"
                        .to_owned()
                }
                Some(kept) if kept.id == id => format!(
                    "the checkout holds the session's whole amount, {}; the leg asks {}",
                    kept.amount, leg.amount
                ),
                _ => format!(
                    "no {} checkout with this id is open for this session",
                    leg.partner
                ),
            };
            return Err(PaymentError::InvalidArgument {
                field: format!("split[{index}].partner_checkout_id"),
                description,
            });
        }
        Ok(())
    }

    /// A submit whose legs do not add up to the session's amount (it may
    /// have changed since: UpdateSession) is refused as bad input — unless
    /// its key already has an answer, which a retry gets.
    async fn refused_or_replayed(
        &self,
        session_id: Uuid,
        origin: Origin,
        mismatch: PaymentError,
    ) -> Result<PaymentView, PaymentError> {
        let payment_id = origin.record;
        match self.session_key_state(session_id, origin).await? {
            Some(state) => self.replay_submit(payment_id, origin, state).await,
            None => Err(mismatch),
        }
    }

    /// Runs an opened authorization, and what follows it, to the request's
    /// answer.
    async fn authorize(&self, work: Work, held: Option<Held>) -> Result<PaymentView, PaymentError> {
        let record = work.header.value.id;
        let keying = Keying::Request {
            record,
            before: Vec::new(),
        };
        let concluded = self.run(work, held, &keying).await?;
        self.headers.remember(&concluded.work.header);
        if concluded.work.operation.status == OperationStatus::Failure {
            self.release_unauthorized(&concluded.work.header.value)
                .await;
        }
        let mut answer = concluded.answer;
        let mut header = concluded.work.header.clone();
        for follow_up in concluded.opened {
            let keying = Keying::Request {
                record,
                before: vec![concluded.work.operation.clone()],
            };
            let work = Work {
                header,
                operation: follow_up,
                session: None,
            };
            let done = self.run(work, None, &keying).await?;
            answer = done.answer;
            header = done.work.header;
            // What a follow-up wrote is the header to open on next.
            self.headers.remember(&header);
        }
        let outcome = answer
            .ok_or_else(|| PaymentError::Internal("a submit concluded without answer".into()))?;
        payment_view(header.value, outcome)
    }

    async fn replay_submit(
        &self,
        payment_id: Uuid,
        origin: Origin,
        state: crate::store::KeyState,
    ) -> Result<PaymentView, PaymentError> {
        match found_record(state)? {
            Found::Answer(outcome) => {
                let outcome = *outcome;
                // Gone: its retention ended it (the answer outlived it).
                let header = self.store.header(payment_id).await?;
                let header = header.ok_or(PaymentError::NotFound)?;
                payment_view(header.value, outcome)
            }
            Found::Abandoned => self.answer_from_payment(payment_id, origin).await,
        }
    }

    /// A submit whose payment exists but whose own attempt is gone: once the
    /// authorization is final, the payment as it is (the authorization and
    /// what followed it) is the answer, stored for every later replay.
    async fn answer_from_payment(
        &self,
        payment_id: Uuid,
        origin: Origin,
    ) -> Result<PaymentView, PaymentError> {
        let stored = self
            .store
            .payment(payment_id)
            .await?
            .ok_or(PaymentError::RequestInProgress)?;
        let Some(authorization) = stored.operations.first() else {
            return Err(PaymentError::RequestInProgress);
        };
        if authorization.origin.map(|o| o.fingerprint) != Some(origin.fingerprint) {
            return Err(PaymentError::IdempotencyKeyReused);
        }
        if !authorization.status.is_final() {
            if authorization.next_unsent().is_some() {
                // Handed over before a leg was sent: this retry runs what
                // is left to send (and what follows).
                let session = self.store.session(stored.header.value.session_id).await?;
                let work = Work {
                    header: stored.header,
                    operation: authorization.clone(),
                    session,
                };
                return self.authorize(work, None).await;
            }
            return Err(PaymentError::RequestInProgress);
        }
        let header = stored.header.value;
        let outcome = Outcome::Payment {
            snapshot: header.snapshot(),
            operations: stored.operations,
        };
        let answer = self
            .store_answer(payment_id, payment_id, origin, outcome)
            .await?;
        payment_view(header, answer)
    }
}

/// The legs must sum to the session's amount.
fn legs_add_up(session: &Session, command: &SubmitSession) -> Result<(), PaymentError> {
    let total = Amount::sum(command.legs.iter().map(|leg| leg.amount));
    if total == Ok(session.amount) {
        return Ok(());
    }
    Err(PaymentError::InvalidArgument {
        field: "split".into(),
        description: format!(
            "leg amounts must sum to the session amount {}",
            session.amount
        ),
    })
}

/// A session request's stored answer, for its retry.
fn replayed_session(state: KeyState) -> Result<SessionView, PaymentError> {
    match found_record(state)? {
        Found::Answer(outcome) => match *outcome {
            Outcome::Session(view) => Ok(view),
            _ => Err(PaymentError::IdempotencyKeyReused),
        },
        Found::Abandoned => Err(PaymentError::RequestInProgress),
    }
}
