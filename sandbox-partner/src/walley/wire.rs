//! The Walley simulation's own view of the wire: request and response bodies
//! written from Walley's public documentation (dev.walleypay.com, formerly
//! payments.collectorbank.se: "Authentication", "Manage orders" — capture,
//! refund, cancel, get order — and "Settlements API" — search,
//! transactions), never imported from the connector, so that a field the
//! connector misspells is refused instead of agreeing with itself.
//!
//! Request bodies the documentation defines whole deny unknown fields: a
//! misspelt field is a `400`. Amounts are decimal major units, JSON numbers
//! read and written exactly (never through a float).
//!
//! Where the connector relies on something the documentation does not show
//! (the order's `captures`, `refunds` and `cancellation`), the field is
//! served explicitly and marked as such.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// `POST /oauth2/v2.0/token` (form, OAuth2 client credentials). The
/// documentation's request properties are exactly these four.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub client_id: String,
    pub client_secret: String,
    /// `client_credentials`.
    pub grant_type: String,
    /// A constant per environment, e.g. `<guid>/.default`.
    pub scope: String,
}

/// The token endpoint's answer (Azure AD B2C, standard OAuth2).
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    /// `Bearer`.
    pub token_type: &'static str,
    /// Seconds.
    pub expires_in: u64,
}

/// The body of `POST /manage/orders/{id}/capture` and `/refund`: `amount`
/// (required), `actionReference`, `description` and `items` (a part
/// capture or refund by articles).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActionRequest {
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount: Decimal,
    /// "A reference to this specific capture/refund": visible in the order's
    /// events and the settlement report.
    #[serde(default)]
    pub action_reference: Option<String>,
    /// A default is used when omitted, blank or null.
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub items: Vec<Item>,
}

/// An article of a part capture or refund: a best-match effort on the
/// order's articles; `unitPrice` and `quantity` are required.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Item {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// Including VAT.
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub unit_price: Decimal,
    pub quantity: i64,
    /// Percent; fees added to a refund must set it (zero otherwise).
    #[serde(default, with = "rust_decimal::serde::arbitrary_precision")]
    pub vat: Decimal,
    /// `purchase` or `fee` (refunds).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// The optional body of `POST /manage/orders/{id}/cancel`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CancelRequest {
    #[serde(default)]
    pub action_reference: Option<String>,
}

/// `GET /manage/orders/{id}`: `{"data", "links", "metaData"}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderEnvelope {
    pub data: Order,
    pub links: Empty,
    pub meta_data: Empty,
}

/// `{}`: the order envelope's `links` and `metaData` as documented.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Empty {}

/// An order as `data` of the get-order answer: the documented properties
/// the simulation keeps (customer, addresses, items and invoices it does
/// not model), then the actions the connector reads.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: String,
    /// The merchant's order number set at purchase.
    pub reference: String,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub total_amount: Decimal,
    pub currency: String,
    /// `NotActivated`, `PartActivated`, `Activated`, `Cancelled`,
    /// `Expired`, `PartReturned`, `Returned`.
    pub status: String,
    /// NOT in the documentation reached (its example lists `items` and
    /// `invoices`, no actions): the connector finds a capture by its
    /// `actionReference` here, so the simulation serves it.
    pub captures: Vec<Action>,
    /// NOT in the documentation reached; see `captures`.
    pub refunds: Vec<Action>,
    /// NOT in the documentation reached; see `captures`.
    pub cancellation: Option<Action>,
}

/// A capture, refund or cancellation as the simulation lists it on an order
/// (undocumented: see [`Order::captures`]).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    pub action_reference: Option<String>,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount: Decimal,
    /// `Pending` (accepted, not processed yet) or `Completed`.
    pub status: &'static str,
}

/// An error body. The documentation lists the statuses, not their body;
/// this is the shape the simulation has always answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub code: String,
    pub title: String,
}

impl Problem {
    pub fn new(code: &str, title: &str) -> Problem {
        Problem {
            code: code.to_owned(),
            title: title.to_owned(),
        }
    }
}

/// The query string of the settlement search and transactions: `page`,
/// `perPage`, `query` (search) and `includeProductCode` (transactions).
/// Anything else is a malformed query (`422`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Paging {
    pub page: Option<String>,
    pub per_page: Option<String>,
    pub query: Option<String>,
    pub include_product_code: Option<String>,
}

/// A page of the report API: `data`, `links`, `metaData`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportPage<T> {
    pub data: Vec<T>,
    pub links: Links,
    pub meta_data: MetaData,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Links {
    #[serde(rename = "self", skip_serializing_if = "Option::is_none")]
    pub this: Option<Link>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<Link>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Link {
    pub method: &'static str,
    pub href: String,
    pub query: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaData {
    pub total_number_of_records: u64,
    pub number_of_pages: u32,
    pub current_page: u32,
    pub range: Range,
}

#[derive(Debug, Clone, Serialize)]
pub struct Range {
    pub from: u64,
    pub to: u64,
}

/// `GET /reports/settlements`: one settlement of a store.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlementSummary {
    pub id: String,
    /// `2022-12-30T00:00:00`: the period settled.
    pub start_date: String,
    pub end_date: String,
    pub store_id: i64,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub ingoing_balance: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub total_amount: Decimal,
    pub currency: String,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub net_sales: Decimal,
    pub paid_out_at: Option<String>,
    pub generated_at: Option<String>,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub captured: Decimal,
    /// Negative.
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub refunded: Decimal,
    /// The payout's reference.
    pub reference: String,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub compensations: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub adjustments: Decimal,
    pub links: SettlementLinks,
}

/// A settlement's `links`: its PDF and its transactions.
#[derive(Debug, Clone, Serialize)]
pub struct SettlementLinks {
    pub pdf: Link,
    pub transactions: Link,
}

impl SettlementLinks {
    pub fn of(id: &str) -> SettlementLinks {
        let link = |href: String| Link {
            method: "GET",
            href,
            query: String::new(),
        };
        SettlementLinks {
            pdf: link(format!("/reports/settlements/{id}/file/pdf")),
            transactions: link(format!("/reports/settlements/{id}/transactions")),
        }
    }
}

/// `GET /reports/settlements/{id}/transactions`: one line.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlementLine {
    pub customer_number: String,
    pub first_name: String,
    pub last_name: String,
    /// Negative for returns.
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount: Decimal,
    pub purchase_date: Option<String>,
    pub transaction_date: Option<String>,
    pub invoice_number: String,
    pub order_number: String,
    /// `Purchase` or `Return`.
    #[serde(rename = "type")]
    pub kind: String,
    pub total_vat_amount_per_rate: Vec<VatPerRate>,
    pub currency: String,
    pub settlement_date: Option<String>,
    pub payout_reference: Option<String>,
    pub action_reference: Option<String>,
    pub order_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VatPerRate {
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub vat_rate: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount: Decimal,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_capture_bodies_parse() {
        let full: ActionRequest = serde_json::from_str(
            r#"{"amount": 285.0, "description": "Capture description",
                "actionReference": "test-captureref-123"}"#,
        )
        .unwrap();
        assert_eq!(full.amount, Decimal::new(2850, 1));
        assert_eq!(
            full.action_reference.as_deref(),
            Some("test-captureref-123")
        );
        let part: ActionRequest = serde_json::from_str(
            r#"{"amount": 285.0, "actionReference": "r", "items": [
                {"id": "fee", "description": "Return fee", "unitPrice": -15,
                 "quantity": 1, "vat": 25, "type": "fee"}]}"#,
        )
        .unwrap();
        assert_eq!(part.items[0].vat, Decimal::from(25));
    }

    #[test]
    fn a_misspelt_field_is_refused() {
        for body in [
            r#"{"amount": 1.00, "actionRef": "r"}"#,
            r#"{"amount": 1.00, "items": [{"unitprice": 1, "quantity": 1}]}"#,
        ] {
            assert!(
                serde_json::from_str::<ActionRequest>(body).is_err(),
                "{body}"
            );
        }
        assert!(serde_json::from_str::<CancelRequest>(r#"{"reference": "r"}"#).is_err());
    }
}

/// `POST /checkouts` (Initialize Checkout), as the simulation reads it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitCheckout {
    #[serde(default)]
    pub store_id: Option<i64>,
    pub country_code: String,
    #[serde(default)]
    pub reference: Option<String>,
    /// Called (`GET`) when the checkout changes; `{checkout.id}` stands for
    /// the private id.
    #[serde(default)]
    pub notification_uri: Option<String>,
    #[serde(default)]
    pub redirect_page_uri: Option<String>,
    #[serde(default)]
    pub merchant_terms_uri: Option<String>,
    pub cart: InitCart,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitCart {
    pub items: Vec<Item>,
}
