//! The partner's token for a shopper's instrument: kept, compared and sent,
//! never printed.

use std::fmt;

use serde::{Deserialize, Serialize};

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

    /// The token of a leg the shopper pays through a partner-hosted
    /// checkout: the checkout's id, in a form no submitted token may take.
    pub fn hosted_checkout(id: &str) -> Self {
        PaymentToken(format!("{HOSTED_CHECKOUT}{id}"))
    }

    /// The partner-hosted checkout this token stands for, if it is one.
    pub fn checkout(&self) -> Option<&str> {
        self.0.strip_prefix(HOSTED_CHECKOUT)
    }

    /// Whether a token a merchant submits takes the hosted-checkout form
    /// (refused: a leg names its checkout by `partner_checkout_id`).
    pub fn looks_hosted(token: &str) -> bool {
        token.starts_with(HOSTED_CHECKOUT)
    }
}

/// What a hosted checkout's token starts with.
const HOSTED_CHECKOUT: &str = "hosted-checkout:";

impl fmt::Debug for PaymentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PaymentToken(<redacted>)")
    }
}
