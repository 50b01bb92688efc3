//! WePay's wire format (API v2): JSON bodies of the `/checkout` calls, and
//! conversions. Amounts are decimal major units written as JSON numbers with
//! exactly the currency's decimals (never floats).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

#[cfg(test)]
mod tests;

/// `POST /checkout/create`: on a card tokenized earlier (`payment_method`),
/// or a hosted checkout (`hosted_checkout`): the shopper enters the card on
/// WePay's page (the answer's `hosted_checkout.checkout_uri`), and WePay
/// calls `callback_uri` on every change of the checkout's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateCheckout {
    pub account_id: i64,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount: Decimal,
    pub currency: String,
    pub short_description: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Our partner idempotency key (a card checkout): a second create with
    /// it returns the first checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_id: Option<String>,
    /// Our key (`/checkout/find` finds the checkout by it), or a hosted
    /// checkout's reference.
    pub reference_id: String,
    pub auto_capture: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<PaymentMethod>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosted_checkout: Option<HostedCheckout>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentMethod {
    #[serde(rename = "type")]
    pub kind: String,
    pub credit_card: CreditCard,
}

/// A card tokenized earlier (the leg's token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditCard {
    pub id: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedCheckout {
    /// `regular` (a page of its own) or `iframe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// In an answer: where the shopper goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_uri: Option<String>,
}

/// `POST /checkout/find`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindCheckouts {
    pub account_id: i64,
    pub reference_id: String,
}

/// `POST /checkout` and `POST /checkout/capture`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutId {
    pub checkout_id: i64,
}

/// `POST /checkout/refund`. WePay has no idempotency key for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundCheckout {
    pub checkout_id: i64,
    pub refund_reason: String,
    /// A partial refund; absent: all that is left.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_amount"
    )]
    pub amount: Option<Decimal>,
}

/// An optional decimal written as an exact JSON number (the crate's own
/// `arbitrary_precision_option` does not read back what it writes when
/// serde_json keeps arbitrary precision).
mod optional_amount {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    struct Exact(#[serde(with = "rust_decimal::serde::arbitrary_precision")] Decimal);

    pub fn serialize<S: Serializer>(
        value: &Option<Decimal>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(amount) => rust_decimal::serde::arbitrary_precision::serialize(amount, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Decimal>, D::Error> {
        Ok(Option::<Exact>::deserialize(deserializer)?.map(|Exact(amount)| amount))
    }
}

/// `POST /checkout/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelCheckout {
    pub checkout_id: i64,
    pub cancel_reason: String,
}

/// A checkout (the answer of `/checkout`, `/checkout/create` and, in a
/// list, `/checkout/find`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    pub checkout_id: i64,
    pub account_id: i64,
    /// `new`, `authorized`, `reserved`, `captured`, `released`,
    /// `cancelled`, `refunded`, `charged back`, `failed`, `expired`.
    pub state: String,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount: Decimal,
    pub currency: String,
    /// `null` for a checkout created without one.
    #[serde(default)]
    pub reference_id: Option<String>,
    /// What was refunded, as API versions before 2015-08-15 answer it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_refunded: Option<Figure>,
    /// What was refunded, as 2015-08-15 and later answer it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund: Option<CheckoutRefund>,
    /// What the card holder's bank took back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_charged_back: Option<Figure>,
    /// A hosted checkout's page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosted_checkout: Option<HostedCheckout>,
}

impl Checkout {
    /// What the card holder's bank took back: `amount_charged_back`, or
    /// the whole checkout when its state says `charged back` without a
    /// figure; `None` when nothing was.
    pub fn charged_back(&self) -> Option<Decimal> {
        match self.amount_charged_back.map(|f| f.0) {
            Some(figure) if figure > Decimal::ZERO => Some(figure),
            _ if self.state == "charged back" => Some(self.amount),
            _ => None,
        }
    }

    /// What was refunded of the checkout, in whichever shape the API
    /// version answers it; `None` when the answer says nothing of it, or
    /// gives two figures that differ (a refund must then not be guessed at).
    pub fn refunded(&self) -> Option<Decimal> {
        let nested = self.refund.as_ref().and_then(|r| r.amount_refunded);
        match (nested.map(|f| f.0), self.amount_refunded.map(|f| f.0)) {
            (Some(nested), Some(top)) if nested != top => None,
            (Some(figure), _) | (None, Some(figure)) => Some(figure),
            (None, None) => None,
        }
    }
}

/// An amount that may be absent: `Option<Figure>` (the decimal read from
/// the JSON number exactly, as every amount here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Figure(#[serde(with = "rust_decimal::serde::arbitrary_precision")] pub Decimal);

/// A checkout's `refund` structure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutRefund {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_refunded: Option<Figure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_reason: Option<String>,
}

/// The answer of capture, refund and cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateAnswer {
    pub checkout_id: i64,
    pub state: String,
}

/// An error body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub error_description: String,
    #[serde(default)]
    pub error_code: i64,
}

/// What a checkout's state says of each call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// `new`: the authorization is not decided yet.
    Deciding,
    /// `authorized`, `reserved`: held, not captured.
    Held,
    /// `captured`, `released`, `refunded`, `charged back`: captured (and
    /// maybe given back since).
    Captured,
    /// `cancelled`: released without capture.
    Cancelled,
    /// `failed`, `expired`: never held.
    Failed,
}

impl Stage {
    pub fn of(state: &str) -> Option<Stage> {
        Some(match state {
            "new" => Stage::Deciding,
            "authorized" | "reserved" => Stage::Held,
            "captured" | "released" | "refunded" | "charged back" => Stage::Captured,
            "cancelled" => Stage::Cancelled,
            "failed" | "expired" => Stage::Failed,
            _ => return None,
        })
    }
}
