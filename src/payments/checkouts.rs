//! Partner-hosted checkouts. StartPartnerCheckout opens one at a partner
//! for an OPEN session — one per session and partner: asking again answers
//! the one kept, unless the session's amount changed since, which reopens
//! it. A split leg then names it (`partner_checkout_id`) instead of a
//! payment token, and authorizes once the partner says the shopper
//! completed it: PENDING until then, resolved by the resolver's lookups.
//!
//! A partner's callback is never taken at its word: it must name a checkout
//! kept for the session in its path, and all it does is have the session's
//! open authorization looked up at the partner now (under the operation's
//! work lease: a repeat, or a callback once the authorization is final,
//! asks the partner nothing).
//!
//! The checkout is held at the partner under a reference of ours (a keyed
//! hash of the session, [`REFERENCE_PREFIX`]), not the merchant's order
//! reference: a merchant cannot make another order look like one of these,
//! and the Walley adapter refuses such an order submitted as a plain token.

use uuid::Uuid;

use super::{Handled, PaymentError, Payments, system_id};
use crate::{
    domain::{
        checkout::{CheckoutState, HostedCheckout, REFERENCE_PREFIX},
        session::{Session, SessionStatus},
    },
    partners::{CheckoutRequest, PartnerError},
};

/// What a partner's callback came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callback {
    /// It names no checkout kept for the session: nothing was done.
    Unknown,
    /// The session's authorization was looked up (or is final already).
    LookedUp,
    /// Nothing is waiting on the checkout yet: the submit reads it.
    Noted,
}

impl Payments {
    /// Answers the partner-hosted checkout kept for the session at
    /// `partner`, or opens one (the session must be OPEN for that).
    pub async fn start_partner_checkout(
        &self,
        merchant: &str,
        session_id: Uuid,
        partner: &str,
    ) -> Result<HostedCheckout, PaymentError> {
        let session = self.owned_session(merchant, session_id).await?.value;
        let kept = self.checkout_of(session_id, partner).await?;
        // Asked again (a page reloaded, a retry): the same checkout, also
        // once the session is submitted.
        if let Some(kept) = kept
            .as_ref()
            .filter(|k| k.holds(session.amount, &session.items))
        {
            return Ok(kept.clone());
        }
        let status = session.status_at(self.clock.now());
        if status != SessionStatus::Open {
            return Err(super::Precondition::SessionNotOpen { status }.into());
        }
        let refusal = match self.partners.get(partner) {
            None => Some("no such partner".to_owned()),
            Some(p) => p.refuses(merchant, session.currency),
        };
        if let Some(description) = refusal {
            return Err(PaymentError::InvalidArgument {
                field: "partner".into(),
                description,
            });
        }
        match kept {
            // Opened before the session changed (and not reopened then).
            Some(stale) => self.replace_checkout(&session, &stale).await,
            None => self.open_checkout(&session, partner, None).await,
        }
    }

    /// Opens a checkout in place of `stale`, unless the shopper completed
    /// that one (then what it holds stays: `CHECKOUT_COMPLETED`).
    async fn replace_checkout(
        &self,
        session: &Session,
        stale: &HostedCheckout,
    ) -> Result<HostedCheckout, PaymentError> {
        self.not_completed(stale).await?;
        self.open_checkout(session, &stale.partner, Some(&stale.id))
            .await
    }

    /// `CHECKOUT_COMPLETED` if the partner says the shopper completed
    /// `checkout`; a partner that cannot say refuses too.
    async fn not_completed(&self, checkout: &HostedCheckout) -> Result<(), PaymentError> {
        match self
            .partners
            .checkout_state(&checkout.partner, &checkout.id)
            .await
        {
            Ok(CheckoutState::Completed { .. }) => Err(super::Precondition::CheckoutCompleted {
                partner: checkout.partner.clone(),
            }
            .into()),
            Ok(CheckoutState::Open | CheckoutState::Closed { .. }) => Ok(()),
            Err(error) => Err(partner_refusal(&checkout.partner, error)),
        }
    }

    /// A merchant's session with the hosted checkouts opened for it.
    pub async fn session_with_checkouts(
        &self,
        merchant: &str,
        id: Uuid,
    ) -> Result<(crate::domain::session::SessionView, Vec<HostedCheckout>), PaymentError> {
        let view = self.session(merchant, id).await?;
        let mut checkouts = self.store.checkouts(id).await?;
        checkouts.sort_by(|a, b| a.partner.cmp(&b.partner));
        Ok((view, checkouts))
    }

    /// The checkout kept for a session at a partner.
    pub(super) async fn checkout_of(
        &self,
        session: Uuid,
        partner: &str,
    ) -> Result<Option<HostedCheckout>, PaymentError> {
        Ok(self
            .store
            .checkouts(session)
            .await?
            .into_iter()
            .find(|c| c.partner == partner))
    }

    /// Opens a checkout at the partner for the session as it is, and keeps
    /// it (in place of `replacing`); a concurrent call's checkout kept first
    /// wins, and ours is never used (it expires at the partner).
    pub(super) async fn open_checkout(
        &self,
        session: &Session,
        partner: &str,
        replacing: Option<&str>,
    ) -> Result<HostedCheckout, PaymentError> {
        let request = CheckoutRequest {
            order_reference: session.order_reference.clone(),
            reference: self.checkout_reference(session.id),
            amount: session.amount,
            currency: session.currency,
            items: session.items.clone(),
            notification_url: self
                .settings
                .callback_url
                .as_ref()
                .map(|base| format!("{base}/callbacks/{partner}/{}", session.id)),
        };
        let opened = self
            .partners
            .open_checkout(partner, &request)
            .await
            .map_err(|error| partner_refusal(partner, error))?;
        let now = self.clock.now();
        let checkout = HostedCheckout {
            session: session.id,
            partner: partner.to_owned(),
            id: opened.id,
            public_token: opened.public_token,
            redirect_url: opened.redirect_url,
            expires_at: opened.expires_at.unwrap_or(session.expires_at),
            amount: session.amount,
            items: session.items.clone(),
            opened_at: now,
        };
        Ok(self.store.keep_checkout(&checkout, replacing).await?)
    }

    /// What the partner holds a session's checkouts under.
    fn checkout_reference(&self, session: Uuid) -> String {
        let hash = self.instrument_named("hosted-checkout", &session.to_string());
        format!("{REFERENCE_PREFIX}{}", &hash[..32])
    }

    /// Before a session's amount or lines change: a checkout the shopper
    /// completed holds them (refused); where the partner cannot say,
    /// nothing changes either.
    pub(super) async fn check_checkouts_open(&self, session: Uuid) -> Result<(), PaymentError> {
        for checkout in self.store.checkouts(session).await? {
            self.not_completed(&checkout).await?;
        }
        Ok(())
    }

    /// After a session's amount or lines changed: each checkout opened for
    /// it that no longer holds them is reopened at the partner, so the
    /// partner never holds a stale amount — from the session as stored now,
    /// only while it is OPEN, and never in place of one the shopper
    /// completed meanwhile. One that cannot be reopened now stays; the next
    /// StartPartnerCheckout reopens it, and a leg on it is refused (it does
    /// not hold the session's amount and lines).
    pub(super) async fn reopen_checkouts(&self, session_id: Uuid) {
        let (Ok(Some(session)), Ok(kept)) = (
            self.store.session(session_id).await,
            self.store.checkouts(session_id).await,
        ) else {
            return;
        };
        let session = session.value;
        if session.status_at(self.clock.now()) != SessionStatus::Open {
            return;
        }
        for stale in kept
            .iter()
            .filter(|c| !c.holds(session.amount, &session.items))
        {
            if let Err(error) = self.replace_checkout(&session, stale).await {
                tracing::warn!(%error, session = %session.id, partner = %stale.partner,
                    "a hosted checkout was not reopened after the session changed");
            }
        }
    }

    /// A partner says a checkout changed. Only a checkout kept for the
    /// session at that partner counts; then the session's open
    /// authorization is looked up at the partner.
    pub async fn checkout_callback(
        &self,
        partner: &str,
        session_id: Uuid,
        checkout_id: &str,
    ) -> Result<Callback, PaymentError> {
        let known = self
            .checkout_of(session_id, partner)
            .await?
            .is_some_and(|c| c.id == checkout_id);
        if !known {
            return Ok(Callback::Unknown);
        }
        let payment = self
            .store
            .session(session_id)
            .await?
            .and_then(|s| s.value.payment_id);
        let Some(payment) = payment else {
            return Ok(Callback::Noted);
        };
        // Only a payment with a leg on this checkout is looked up.
        let waits = self.store.header(payment).await?.is_some_and(|header| {
            header
                .value
                .legs
                .iter()
                .any(|leg| leg.partner == partner && leg.token.checkout() == Some(checkout_id))
        });
        if !waits {
            return Ok(Callback::Noted);
        }
        let authorization = system_id(payment, "authorization");
        // Another replica looking now may have asked before the shopper
        // paid: the partner calls again.
        if self.resolve_operation(payment, authorization).await? == Handled::Busy {
            return Err(PaymentError::RequestInProgress);
        }
        Ok(Callback::LookedUp)
    }
}

/// A partner's refusal to open or read a checkout, as the caller sees it.
fn partner_refusal(partner: &str, error: PartnerError) -> PaymentError {
    PaymentError::Partner {
        partner: partner.to_owned(),
        error,
    }
}
