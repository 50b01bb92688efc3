//! An instrument belongs to one payer. Before a submit opens its
//! authorization, each leg's `(partner, payment_token)` is claimed for the
//! payer: a single-use instrument (a Walley order) for the session — it
//! backs one payment, and the same session may retry with it after a
//! declined leg — and a reusable one (a tokenized card) for the merchant
//! that first used it, which may use it again. Another payer's instrument
//! is refused with `PAYMENT_TOKEN_IN_USE` before anything is written or
//! sent.
//!
//! A claim is named by a keyed hash (HMAC-SHA256 with a server secret) of
//! the partner and the token, never the token: a WePay card id is a small
//! number that a plain hash would give away. Each claim is a key of its own
//! (its own slot), so it is taken before the open step, not inside it.
//!
//! A claim is *confirmed* once one of the payer's payments authorized the
//! instrument; until then it lists the payer's payments that claimed it.
//! An unconfirmed claim whose payments all let go — each declined the leg,
//! or was never opened within the idempotency lease — does not hold: a
//! declined authorization withdraws its payment, and another payer may take
//! over a claim nobody backs. A submit refused after some of its claims
//! leaves them to lapse (a concurrent request with its key may open on
//! them).
//!
//! A leg may reuse an earlier payment's instrument instead of a token (a
//! merchant-initiated payment): the submit reads it from that payment of
//! the same merchant, and claims it like any other.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use super::{Parent, PaymentError, Payments, Precondition, SubmitSession, system_id};
use crate::{
    domain::{
        operation::{Operation, PartnerTransaction},
        payment::{Leg, Payment, PaymentToken},
        status::TransactionStatus,
    },
    partners::InstrumentUse,
    store::{HeldInstrument, InstrumentAttempt, InstrumentClaim},
};

/// How many times a claim is tried against concurrent claimants (a
/// merchant's many payments on one card at once), with a short jittered
/// pause between tries.
const CLAIM_ATTEMPTS: usize = 64;

/// The payer a submit claims for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Payer<'a> {
    pub merchant: &'a str,
    pub session: Uuid,
    pub payment: Uuid,
}

/// What one of a claim's payments does with the instrument now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// It authorized the leg: the instrument is the payer's for good.
    Authorized,
    /// It may still authorize it (authorizing, or not opened yet).
    Pending,
    /// It let go (declined the leg, or was never opened).
    None,
}

impl Payments {
    /// The submitted legs, each leg that names a parent payment with the
    /// instrument it reuses: what the parent's leg stored — the reusable
    /// reference its partner answered the authorization with, else the
    /// token it was authorized with (a card id). A parent of another
    /// merchant is not found; a parent leg at another partner or method, or
    /// one that was not authorized, is bad input.
    pub(super) async fn with_parents(
        &self,
        merchant: &str,
        command: &SubmitSession,
    ) -> Result<Vec<Leg>, PaymentError> {
        let mut legs = command.legs.clone();
        for (index, leg) in legs.iter_mut().enumerate() {
            let Some(parent) = command.parent(index) else {
                continue;
            };
            // The header and the authorization only: not the parent's history.
            let authorization = system_id(parent.payment, "authorization");
            let (header, authorization) = self
                .store
                .operation(parent.payment, authorization)
                .await?
                .filter(|(header, _)| header.value.merchant == merchant)
                .ok_or(PaymentError::NotFound)?;
            leg.token = stored_instrument(&header.value, &authorization, leg, parent, index)?;
        }
        Ok(legs)
    }

    /// The name of a leg's instrument in the store.
    fn instrument(&self, leg: &Leg) -> String {
        self.instrument_named(&leg.partner, leg.token.expose())
    }

    /// The name in the store of a partner's token, spelt as the partner
    /// reads it (see [`Partner::instrument_of`](crate::partners::Partner)).
    pub(super) fn instrument_named(&self, partner: &str, token: &str) -> String {
        let token = self.spelt(partner, token);
        let key = self.settings.instrument_key.expose().as_bytes();
        // HMAC takes a key of any length: this cannot fail.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
            unreachable!("HMAC accepts any key length")
        };
        mac.update(partner.as_bytes());
        mac.update(&[0]);
        mac.update(token.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// `token` as its partner spells the instrument it names.
    pub(super) fn spelt<'t>(&self, partner: &str, token: &'t str) -> Cow<'t, str> {
        match self.partners.get(partner) {
            Some(known) => known.adapter.instrument_of(token),
            None => Cow::Borrowed(token),
        }
    }

    /// Whether two legs use one instrument, however each spelt its token.
    fn same_instrument(&self, one: &Leg, other: &Leg) -> bool {
        one.partner == other.partner
            && self.spelt(&one.partner, one.token.expose())
                == self.spelt(&other.partner, other.token.expose())
    }

    fn single_use(&self, leg: &Leg) -> bool {
        self.partners
            .get(&leg.partner)
            .is_some_and(|p| p.adapter.instrument_use() == InstrumentUse::SingleUse)
    }

    /// Claims every leg's instrument for the payer, or refuses with
    /// `PAYMENT_TOKEN_IN_USE` (withdrawing what this payment claimed).
    pub(super) async fn claim_instruments(
        &self,
        payer: Payer<'_>,
        legs: &[Leg],
    ) -> Result<(), PaymentError> {
        for (index, leg) in legs.iter().enumerate() {
            if !self.claim_instrument(payer, leg).await? {
                // A replay of a submit that was opened gets its stored answer
                // (its legs were claimed before it opened). Otherwise what
                // this payment claimed lapses with the idempotency lease: it
                // is never withdrawn here, since a concurrent request with
                // the same key may be about to open on it.
                if self.store.header(payer.payment).await?.is_some() {
                    return Ok(());
                }
                return Err(Precondition::PaymentTokenInUse { leg: index }.into());
            }
        }
        Ok(())
    }

    /// Before `payment` is forgotten: the claim on each instrument one of
    /// its legs authorized is confirmed for its payer. A claim that names
    /// payments counts one that is gone as never opened, so a claim left
    /// unconfirmed would free the instrument for another payer once the
    /// payment is forgotten. `false` if a claim kept changing under us.
    pub(super) async fn confirm_claims(&self, payment: &Payment) -> Result<bool, PaymentError> {
        let authorized = payment.legs.iter().zip(&payment.ledger);
        for (leg, _) in authorized.filter(|(_, held)| !held.authorized.is_zero()) {
            if !self
                .confirm_claim(&self.instrument(leg), payment.id)
                .await?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Confirms the claim on `instrument` if it lists `payment`; `true` once
    /// nothing is left to do.
    async fn confirm_claim(&self, instrument: &str, payment: Uuid) -> Result<bool, PaymentError> {
        for _ in 0..CLAIM_ATTEMPTS {
            let Some(held) = self.store.instrument(instrument).await? else {
                return Ok(true);
            };
            let claim = &held.claim;
            if claim.confirmed || !claim.attempts.iter().any(|a| a.payment == payment) {
                return Ok(true);
            }
            let confirmed = InstrumentClaim {
                confirmed: true,
                attempts: Vec::new(),
                ..claim.clone()
            };
            if (self.store)
                .replace_instrument(instrument, &held, Some(&confirmed))
                .await?
            {
                return Ok(true);
            }
            self.pause_before_another_try().await;
        }
        Ok(false)
    }

    /// A claim changed under us: a pause of 1 to 5 ms, so that racing
    /// writers do not meet again at once.
    async fn pause_before_another_try(&self) {
        let pause = 1.0 + 4.0 * self.chance.fraction();
        tokio::time::sleep(std::time::Duration::from_secs_f64(pause / 1000.0)).await;
    }

    /// Whether an authorization leg's instrument is still its payment's,
    /// asked before the leg is sent: a submit whose open step reached the
    /// store only after its claim lapsed may find the instrument taken by
    /// another payer in between. Once the payment exists its claim cannot
    /// lapse, so this one look is enough (a claim that lapsed and was not
    /// taken is claimed again).
    pub(super) async fn instrument_held(
        &self,
        payment: &Payment,
        leg: usize,
    ) -> Result<bool, PaymentError> {
        let Some(leg) = payment.legs.get(leg) else {
            return Ok(false);
        };
        let payer = Payer {
            merchant: &payment.merchant,
            session: payment.session_id,
            payment: payment.id,
        };
        self.claim_instrument(payer, leg).await
    }

    /// Whether the leg's instrument is (now) this payer's.
    async fn claim_instrument(&self, payer: Payer<'_>, leg: &Leg) -> Result<bool, PaymentError> {
        let instrument = self.instrument(leg);
        let ours = InstrumentAttempt {
            payment: payer.payment,
            at: None,
        };
        let fresh = InstrumentClaim {
            merchant: payer.merchant.to_owned(),
            session: payer.session,
            confirmed: false,
            attempts: vec![ours.clone()],
        };
        let refresh_after =
            u64::try_from((self.settings.idempotency_lease / 4).as_millis()).unwrap_or(u64::MAX);
        for _ in 0..CLAIM_ATTEMPTS {
            let held = self.store.claim_instrument(&instrument, &fresh).await?;
            let claim = &held.claim;
            if let Some(listed) = claim.attempts.iter().find(|a| a.payment == payer.payment) {
                // Listed already (a retry): its time is renewed when it ages,
                // so that the lapse of an attempt never opened is counted
                // from this request.
                let age = held.now.saturating_sub(listed.at.unwrap_or(held.now));
                if age < refresh_after || claim.confirmed {
                    return Ok(true);
                }
                let renewed = InstrumentClaim {
                    attempts: claim
                        .attempts
                        .iter()
                        .map(|a| match a.payment == payer.payment {
                            true => ours.clone(),
                            false => a.clone(),
                        })
                        .collect(),
                    ..claim.clone()
                };
                if self
                    .store
                    .replace_instrument(&instrument, &held, Some(&renewed))
                    .await?
                {
                    return Ok(true);
                }
                continue;
            }
            let same_payer = if self.single_use(leg) {
                claim.session == payer.session
            } else {
                claim.merchant == payer.merchant
            };
            if claim.confirmed && same_payer {
                return Ok(true);
            }
            if claim.confirmed {
                return Ok(false);
            }
            let (confirmed, kept) = self.still_backing(&held, leg).await?;
            let replacement = if same_payer {
                // The payer's own attempt joins the others.
                InstrumentClaim {
                    confirmed,
                    attempts: if confirmed {
                        Vec::new()
                    } else {
                        kept.into_iter().chain([ours.clone()]).collect()
                    },
                    ..claim.clone()
                }
            } else if confirmed || !kept.is_empty() {
                return Ok(false);
            } else {
                // Nobody backs it: another payer may take it.
                fresh.clone()
            };
            if self
                .store
                .replace_instrument(&instrument, &held, Some(&replacement))
                .await?
            {
                return Ok(true);
            }
            self.pause_before_another_try().await;
        }
        Ok(false)
    }

    /// Whether any of a claim's payments authorized the instrument, and the
    /// ones that may still.
    async fn still_backing(
        &self,
        held: &HeldInstrument,
        leg: &Leg,
    ) -> Result<(bool, Vec<InstrumentAttempt>), PaymentError> {
        let mut kept = Vec::new();
        for attempt in &held.claim.attempts {
            match self.use_of(attempt, held.now, leg).await? {
                Use::Authorized => return Ok((true, Vec::new())),
                Use::Pending => kept.push(attempt.clone()),
                Use::None => {}
            }
        }
        Ok((false, kept))
    }

    /// What a claim's payment does with the leg's instrument.
    async fn use_of(
        &self,
        attempt: &InstrumentAttempt,
        now: u64,
        leg: &Leg,
    ) -> Result<Use, PaymentError> {
        let Some(header) = self.store.header(attempt.payment).await? else {
            // A submit between its claim and its open step, within the lease.
            let age = now.saturating_sub(attempt.at.unwrap_or(now));
            let lease =
                u64::try_from(self.settings.idempotency_lease.as_millis()).unwrap_or(u64::MAX);
            return Ok(if age < lease { Use::Pending } else { Use::None });
        };
        let payment = &header.value;
        // Every leg on this instrument (a split may use one twice).
        let mut on_it = payment
            .legs
            .iter()
            .zip(&payment.ledger)
            .filter(|(l, _)| self.same_instrument(l, leg))
            .peekable();
        if on_it.peek().is_none() {
            return Ok(Use::None);
        }
        let authorized = on_it.any(|(_, held)| !held.authorized.is_zero());
        Ok(if authorized {
            Use::Authorized
        } else if !payment.authorization_status.is_final() {
            Use::Pending
        } else {
            Use::None
        })
    }

    /// After a declined authorization: its attempt leaves the claims of the
    /// legs it never authorized (best effort: an attempt left behind does
    /// not hold anyway).
    pub(super) async fn release_unauthorized(&self, payment: &Payment) {
        if !payment.authorization_status.is_final() {
            return;
        }
        for leg in &payment.legs {
            let authorized = payment
                .legs
                .iter()
                .zip(&payment.ledger)
                .any(|(l, held)| self.same_instrument(l, leg) && !held.authorized.is_zero());
            if authorized {
                continue;
            }
            if let Err(error) = self.withdraw(leg, payment.id).await {
                tracing::warn!(%error, payment_id = %payment.id, "instrument claim not released");
            }
        }
    }

    /// Takes `payment`'s attempt off the leg's claim; a claim left with no
    /// attempt and not confirmed is removed.
    async fn withdraw(&self, leg: &Leg, payment: Uuid) -> Result<(), PaymentError> {
        let instrument = self.instrument(leg);
        for _ in 0..CLAIM_ATTEMPTS {
            let Some(held) = self.store.instrument(&instrument).await? else {
                return Ok(());
            };
            let claim = &held.claim;
            if claim.confirmed || !claim.attempts.iter().any(|a| a.payment == payment) {
                return Ok(());
            }
            let attempts: Vec<InstrumentAttempt> = claim
                .attempts
                .iter()
                .filter(|a| a.payment != payment)
                .cloned()
                .collect();
            let replacement = (!attempts.is_empty()).then(|| InstrumentClaim {
                attempts,
                ..claim.clone()
            });
            if self
                .store
                .replace_instrument(&instrument, &held, replacement.as_ref())
                .await?
            {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// The instrument `leg` reuses from its parent payment: the parent's one
/// authorized leg at the same partner with the same method (or the one
/// `parent.transaction` names).
fn stored_instrument(
    header: &Payment,
    authorization: &Operation,
    leg: &Leg,
    parent: Parent,
    index: usize,
) -> Result<PaymentToken, PaymentError> {
    let invalid = |field: &str, description: String| PaymentError::InvalidArgument {
        field: format!("split[{index}].{field}"),
        description,
    };
    let transactions = &authorization.transactions[..];
    let same = |tx: &&PartnerTransaction| {
        header
            .legs
            .get(tx.leg)
            .is_some_and(|l| l.partner == leg.partner && l.method == leg.method)
    };
    let chosen = match parent.transaction {
        Some(id) => {
            let tx = transactions.iter().find(|tx| tx.id == id).ok_or_else(|| {
                invalid(
                    "parent_partner_transaction_id",
                    "not a partner transaction of the parent's authorization".into(),
                )
            })?;
            if !same(&tx) {
                return Err(invalid(
                    "parent_partner_transaction_id",
                    format!("that leg is not at {} with {}", leg.partner, leg.method),
                ));
            }
            tx
        }
        None => {
            let mut matching = transactions.iter().filter(same);
            match (matching.next(), matching.next()) {
                (Some(tx), None) => tx,
                (None, _) => {
                    return Err(invalid(
                        "parent_payment_id",
                        format!(
                            "the parent payment has no leg at {} with {}",
                            leg.partner, leg.method
                        ),
                    ));
                }
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "parent_partner_transaction_id",
                        "the parent has several such legs: name one".into(),
                    ));
                }
            }
        }
    };
    if chosen.status != TransactionStatus::Success {
        return Err(invalid(
            "parent_payment_id",
            "the parent's leg was not authorized: it stored no instrument".into(),
        ));
    }
    let paid_with = &header.legs[chosen.leg].token;
    // A hosted checkout backs its own payment: it is no stored card, even
    // where the partner answered one (the sandbox does).
    if paid_with.checkout().is_some() {
        return Err(invalid(
            "parent_payment_id",
            "the parent's leg was paid through a hosted checkout, which stored no reusable \
             instrument"
                .into(),
        ));
    }
    Ok(match &chosen.partner_token {
        Some(reference) => PaymentToken::new(reference.clone()),
        None => paid_with.clone(),
    })
}
