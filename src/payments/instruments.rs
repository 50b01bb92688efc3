//! An instrument belongs to one payer. Before a submit opens its
//! authorization, each leg's `(partner, payment_token)` is claimed for the
//! payment: a single-use instrument (a Walley order) backs one payment — the
//! same session may retry with it after a declined leg — and a reusable one
//! (a tokenized card) belongs to the first merchant that used it, which may
//! use it again. Another payer's instrument is refused with
//! `PAYMENT_TOKEN_IN_USE` before anything is written or sent.
//!
//! A claim is named by a keyed hash (HMAC-SHA256 with a server secret) of
//! the partner and the token, never the token: a WePay card id is a small
//! number that a plain hash would give away. Each claim is a key of its own
//! (its own slot), so it is taken before the open step, not inside it.
//!
//! A claim whose payment never authorized its leg does not hold: a declined
//! authorization releases it, and a claim found naming a payment that
//! declined the leg — or a payment that was never opened, once the
//! idempotency lease has passed — is taken over.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use super::{PaymentError, Payments, Precondition};
use crate::{
    domain::payment::{Leg, Payment},
    partners::InstrumentUse,
    store::{HeldInstrument, InstrumentClaim},
};

/// How many times a claim is tried against concurrent claimants.
const CLAIM_ATTEMPTS: usize = 8;

impl Payments {
    /// The name of a leg's instrument in the store.
    fn instrument(&self, leg: &Leg) -> String {
        // HMAC takes a key of any length.
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.settings.instrument_key.expose().as_bytes())
                .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(leg.partner.as_bytes());
        mac.update(&[0]);
        mac.update(leg.token.expose().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Claims every leg's instrument for the payment, or refuses with
    /// `PAYMENT_TOKEN_IN_USE` (giving back what this payment claimed).
    pub(super) async fn claim_instruments(
        &self,
        claim: &InstrumentClaim,
        legs: &[Leg],
    ) -> Result<(), PaymentError> {
        for (index, leg) in legs.iter().enumerate() {
            if !self.claim_instrument(claim, leg).await? {
                self.release_unopened(claim.payment, legs).await?;
                return Err(Precondition::PaymentTokenInUse { leg: index }.into());
            }
        }
        Ok(())
    }

    /// Gives back the instruments a payment claimed if it was never opened
    /// (a submit refused after its claims); a retry of a submit that was
    /// opened keeps them.
    pub(super) async fn release_unopened(
        &self,
        payment: Uuid,
        legs: &[Leg],
    ) -> Result<(), PaymentError> {
        if self.store.header(payment).await?.is_some() {
            return Ok(());
        }
        for leg in legs {
            self.store
                .release_instrument(&self.instrument(leg), payment)
                .await?;
        }
        Ok(())
    }

    /// Whether the leg's instrument is (now) this payer's.
    async fn claim_instrument(
        &self,
        ours: &InstrumentClaim,
        leg: &Leg,
    ) -> Result<bool, PaymentError> {
        let instrument = self.instrument(leg);
        let single_use = self
            .partners
            .get(&leg.partner)
            .is_some_and(|p| p.adapter.instrument_use() == InstrumentUse::SingleUse);
        for _ in 0..CLAIM_ATTEMPTS {
            let held = self.store.claim_instrument(&instrument, ours).await?;
            if held.claim.payment == ours.payment {
                return Ok(true);
            }
            let same_payer = if single_use {
                held.claim.session == ours.session
            } else {
                held.claim.merchant == ours.merchant
            };
            let backs = self.backs(&held, leg).await?;
            if same_payer && backs {
                // The payer's earlier payment still uses it: so may this one.
                return Ok(true);
            }
            if backs {
                return Ok(false);
            }
            // The claim's payment never authorized the leg: it does not hold.
            if self
                .store
                .replace_instrument(&instrument, held.claim.payment, ours)
                .await?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether a claim's payment uses the instrument: it authorized (or is
    /// authorizing) the leg, or it may still be opened (a submit between its
    /// claim and its open step, within the idempotency lease).
    async fn backs(&self, held: &HeldInstrument, leg: &Leg) -> Result<bool, PaymentError> {
        let Some(header) = self.store.header(held.claim.payment).await? else {
            return Ok(held.age < self.settings.idempotency_lease);
        };
        let payment = &header.value;
        let Some(index) = payment
            .legs
            .iter()
            .position(|l| l.partner == leg.partner && l.token == leg.token)
        else {
            return Ok(false);
        };
        let authorized = payment
            .ledger
            .get(index)
            .is_some_and(|held| !held.authorized.is_zero());
        Ok(!payment.authorization_status.is_final() || authorized)
    }

    /// After a declined authorization: the instruments of the legs it never
    /// authorized are free again (best effort: a claim left behind does not
    /// hold anyway).
    pub(super) async fn release_unauthorized(&self, payment: &Payment) {
        if !payment.authorization_status.is_final() {
            return;
        }
        for (leg, held) in payment.legs.iter().zip(&payment.ledger) {
            if !held.authorized.is_zero() {
                continue;
            }
            if let Err(error) = self
                .store
                .release_instrument(&self.instrument(leg), payment.id)
                .await
            {
                tracing::warn!(%error, payment_id = %payment.id, "instrument claim not released");
            }
        }
    }

    /// The claim a submit makes for its payment.
    pub(super) fn instrument_claim(
        merchant: &str,
        session: Uuid,
        payment: Uuid,
    ) -> InstrumentClaim {
        InstrumentClaim {
            payment,
            session,
            merchant: merchant.to_owned(),
        }
    }
}
