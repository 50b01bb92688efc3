//! The WePay simulation's own view of the wire (API v2, `/checkout` calls):
//! request and response bodies written from WePay's v2 reference ("The
//! /checkout API calls": `/checkout`, `/checkout/find`, `/checkout/create`,
//! `/checkout/cancel`, `/checkout/refund`, `/checkout/capture`), never
//! imported from the connector. The reference pages reachable here give the
//! call list and the checkout states; the argument lists come from WePay's
//! own Java SDK (`com.wepay.model.Checkout`, API 2015-08-15 and later) and
//! the python-wepay binding's allowed parameters for the same version.
//!
//! Every request body denies unknown fields: the reference defines each
//! call's arguments whole, so a misspelt argument is a `400`. Amounts are
//! decimal major units, JSON numbers read and written exactly.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// `POST /checkout`: look a checkout up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutLookup {
    pub checkout_id: i64,
}

/// `POST /checkout/find`: the checkouts of an account, by its arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindCheckouts {
    pub account_id: i64,
    #[serde(default)]
    pub start: Option<u64>,
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub reference_id: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub preapproval_id: Option<i64>,
    #[serde(default)]
    pub start_time: Option<i64>,
    #[serde(default)]
    pub end_time: Option<i64>,
    /// `DESC` (default) or `ASC`.
    #[serde(default)]
    pub sort_order: Option<String>,
    #[serde(default, with = "optional_amount")]
    pub shipping_fee: Option<Decimal>,
}

/// `POST /checkout/create`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCheckout {
    pub account_id: i64,
    pub short_description: String,
    /// `goods`, `service`, `donation`, `event`, `personal`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount: Decimal,
    /// `USD`, `CAD`, `GBP`.
    pub currency: String,
    #[serde(default)]
    pub long_description: Option<String>,
    /// `{"to_payer", "to_payee"}`: not modelled.
    #[serde(default)]
    pub email_message: Option<serde_json::Value>,
    /// `{"app_fee", "fee_payer"}`: not modelled.
    #[serde(default)]
    pub fee: Option<serde_json::Value>,
    #[serde(default)]
    pub callback_uri: Option<String>,
    /// `false`: only reserved until `/checkout/capture` (default `true`).
    #[serde(default)]
    pub auto_capture: Option<bool>,
    /// The application's reference, searchable with `/checkout/find`.
    #[serde(default)]
    pub reference_id: Option<String>,
    /// The application's idempotency key: a second create with it answers
    /// the first checkout.
    #[serde(default)]
    pub unique_id: Option<String>,
    /// The hosted checkout flow (`{"mode"?, "redirect_uri"?}`): the shopper
    /// pays on the answer's `hosted_checkout.checkout_uri` (here: `POST
    /// /_sim/checkouts/{id}/complete`) instead of with a `payment_method`.
    #[serde(default)]
    pub hosted_checkout: Option<serde_json::Value>,
    #[serde(default)]
    pub payment_method: Option<PaymentMethod>,
    #[serde(default)]
    pub delivery_type: Option<String>,
    #[serde(default)]
    pub payer_rbits: Option<serde_json::Value>,
    #[serde(default)]
    pub transaction_rbits: Option<serde_json::Value>,
}

/// `payment_method`: a tokenized card (`credit_card`), a `preapproval` or a
/// `payment_bank`; the simulation serves cards.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentMethod {
    /// `credit_card`, `preapproval`, `payment_bank`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub credit_card: Option<CreditCard>,
    #[serde(default)]
    pub preapproval: Option<serde_json::Value>,
    #[serde(default)]
    pub payment_bank: Option<serde_json::Value>,
}

/// A card tokenized earlier (`credit_card_id`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditCard {
    pub id: i64,
    /// Additional card data (emv receipt, …): not modelled.
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    /// Where later versions of the reference put `auto_capture`.
    #[serde(default)]
    pub auto_capture: Option<bool>,
}

/// `POST /checkout/capture`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureCheckout {
    pub checkout_id: i64,
}

/// `POST /checkout/cancel`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelCheckout {
    pub checkout_id: i64,
    pub cancel_reason: String,
}

/// `POST /checkout/refund`: the whole checkout, or `amount` of it. WePay
/// has no idempotency key for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundCheckout {
    pub checkout_id: i64,
    pub refund_reason: String,
    #[serde(default, with = "optional_amount")]
    pub amount: Option<Decimal>,
    #[serde(default, with = "optional_amount")]
    pub app_fee: Option<Decimal>,
    #[serde(default)]
    pub payer_email_message: Option<String>,
    #[serde(default)]
    pub payee_email_message: Option<String>,
}

/// A checkout: the answer of `/checkout` and `/checkout/create`, and in a
/// list of `/checkout/find`.
#[derive(Debug, Clone, Serialize)]
pub struct Checkout {
    pub checkout_id: i64,
    pub account_id: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub short_description: String,
    pub currency: String,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount: Decimal,
    /// `new`, `authorized`, `captured`, `released`, `cancelled`,
    /// `refunded`, `charged back`, `failed`, `expired`.
    pub state: String,
    pub reference_id: String,
    /// Unix seconds.
    pub create_time: u64,
    /// `{"amount_refunded", "refund_reason"}`: where the reference (2015-08-15
    /// and later) keeps what was refunded.
    pub refund: Refund,
    /// What was refunded, at the top level as the 2014-01-08 reference had
    /// it. The current reference nests it in `refund`; the connector reads
    /// it here, so the simulation writes both (reported).
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount_refunded: Decimal,
    /// What the card holder's bank took back.
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount_charged_back: Decimal,
    /// A hosted checkout's `{"checkout_uri"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosted_checkout: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Refund {
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount_refunded: Decimal,
    pub refund_reason: Option<String>,
}

/// The answer of capture, refund and cancel.
#[derive(Debug, Clone, Serialize)]
pub struct StateAnswer {
    pub checkout_id: i64,
    pub state: String,
}

/// An error body: `error`, `error_description`, `error_code`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    pub error: &'static str,
    pub error_description: String,
    pub error_code: i64,
}

/// An optional decimal read exactly from a JSON number.
mod optional_amount {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer};

    #[derive(Deserialize)]
    struct Exact(#[serde(with = "rust_decimal::serde::arbitrary_precision")] Decimal);

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Decimal>, D::Error> {
        Ok(Option::<Exact>::deserialize(deserializer)?.map(|Exact(amount)| amount))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_bodies_parse_and_misspelt_ones_do_not() {
        let create: CreateCheckout = serde_json::from_str(
            r#"{"account_id": 1, "amount": 25.50, "currency": "USD",
                "short_description": "A brand new soccer ball", "type": "goods",
                "unique_id": "u", "payment_method": {"type": "credit_card",
                "credit_card": {"id": 123, "auto_capture": false}}}"#,
        )
        .unwrap();
        assert_eq!(create.amount, Decimal::new(2550, 2));
        let refund: RefundCheckout =
            serde_json::from_str(r#"{"checkout_id": 7, "refund_reason": "r", "amount": 12.345}"#)
                .unwrap();
        assert_eq!(refund.amount, Some(Decimal::new(12345, 3)));
        assert!(
            serde_json::from_str::<RefundCheckout>(r#"{"checkout_id": 7, "reason": "r"}"#).is_err()
        );
        assert!(
            serde_json::from_str::<CancelCheckout>(
                r#"{"checkout_id": 7, "cancel_reason": "r", "refund_reason": "r"}"#
            )
            .is_err()
        );
    }
}
