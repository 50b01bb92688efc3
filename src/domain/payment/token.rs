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
}

impl fmt::Debug for PaymentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PaymentToken(<redacted>)")
    }
}
