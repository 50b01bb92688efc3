//! Partner-hosted checkouts: a page at the partner (Walley's checkout, a
//! WePay hosted checkout) where the shopper chooses and confirms how to pay.
//! The orchestrator opens one per session and partner; a split leg then names
//! it instead of a payment token, and authorizes once the partner says the
//! shopper completed it.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{items::ItemLine, money::Amount};

/// What the reference a checkout is held under at its partner starts
/// with: ours, never a merchant's.
pub const REFERENCE_PREFIX: &str = "po-hosted-";

/// A partner-hosted checkout opened for a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedCheckout {
    pub session: Uuid,
    /// The configured partner's name.
    pub partner: String,
    /// The partner's id of the checkout (Walley's `privateId`, WePay's
    /// `checkout_id`): what a split leg names and a callback carries.
    pub id: String,
    /// What the shopper's page loads the checkout with (Walley's
    /// `publicToken`); empty where the partner redirects instead.
    pub public_token: String,
    /// Where the shopper is sent to complete it; empty where the page
    /// embeds it instead.
    pub redirect_url: String,
    pub expires_at: SystemTime,
    /// What the partner holds the checkout for: the session's amount and
    /// lines when it was opened.
    pub amount: Amount,
    pub items: Vec<ItemLine>,
    pub opened_at: SystemTime,
}

impl HostedCheckout {
    /// Whether it holds what the session holds now (its amount and lines):
    /// otherwise it is stale, and reopened.
    pub fn holds(&self, amount: Amount, items: &[ItemLine]) -> bool {
        self.amount == amount && self.items == items
    }
}

/// Where a hosted checkout stands, by the partner's own state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckoutState {
    /// The shopper has not completed it (yet).
    Open,
    /// The shopper completed it: the instrument it yielded (a Walley order
    /// id; a WePay checkout that holds the authorization).
    Completed { instrument: String },
    /// It ended without a purchase (expired, aborted, failed).
    Closed { reason: String },
}
