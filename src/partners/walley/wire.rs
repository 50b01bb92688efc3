//! Walley's wire format: the JSON bodies of the order management API, and
//! conversions from our types. Amounts are decimal major units written as
//! JSON numbers with exactly the currency's decimals (never floats).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{
    domain::{items::ItemLine, money::Currency},
    partners::http,
};

#[cfg(test)]
mod tests;

/// `POST /manage/orders/{id}/captures` and `/refunds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionRequest {
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount: Decimal,
    /// Our partner idempotency key: the action is found by it later.
    pub action_reference: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<Item>,
}

/// An order line: a unit price including VAT, and the VAT rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub id: String,
    pub description: String,
    pub quantity: i64,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub unit_price: Decimal,
    /// Percent.
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub vat: Decimal,
}

impl Item {
    /// Our line (net and tax computed per line) as Walley's (a unit price
    /// with VAT). When the line's total does not divide by its quantity in
    /// minor units, it travels as one unit of the whole line, so that the
    /// lines still add up to the amount exactly.
    pub fn from_line(line: &ItemLine, currency: Currency) -> Item {
        let total = line
            .net_amount
            .minor()
            .saturating_add(line.tax_amount.minor());
        let (quantity, unit, description) = if line.quantity > 0 && total % line.quantity == 0 {
            (line.quantity, total / line.quantity, line.name.clone())
        } else {
            (1, total, format!("{} × {}", line.quantity, line.name))
        };
        Item {
            id: line.sku_reference.clone(),
            description,
            quantity,
            unit_price: Decimal::new(unit, currency.exponent()),
            vat: line.tax_rate,
        }
    }
}

/// `POST /checkouts`: a checkout the shopper completes in Walley's iframe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InitCheckout {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_id: Option<i64>,
    pub country_code: String,
    pub reference: String,
    /// Walley calls it (`GET`) when the checkout changes; `{checkout.id}`
    /// stands for the private id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification_uri: Option<String>,
    pub cart: Cart,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cart {
    pub items: Vec<Item>,
}

/// The answer to `POST /checkouts`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckoutEnvelope<T> {
    pub data: T,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutCreated {
    pub private_id: String,
    pub public_token: String,
    /// RFC 3339.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// `GET /checkouts/{privateId}`: where the checkout stands.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutInformation {
    /// `Initialized`, `CustomerIdentified`, `CommittedToPurchase`,
    /// `PurchaseCompleted`, `Aborted`, `Expired`.
    pub status: String,
    #[serde(default)]
    pub reference: Option<String>,
    /// Once the purchase is completed.
    #[serde(default)]
    pub order: Option<CheckoutOrder>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckoutOrder {
    pub order_id: String,
}

/// `GET /manage/orders/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEnvelope {
    pub data: Order,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: String,
    #[serde(default)]
    pub reference: String,
    /// `NotActivated`, `PartActivated`, `Activated`, `Cancelled`,
    /// `Expired`, `Returned`, `PartReturned`.
    pub status: String,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub total_amount: Decimal,
    pub currency: String,
    #[serde(default)]
    pub captures: Vec<Action>,
    #[serde(default)]
    pub refunds: Vec<Action>,
    #[serde(default)]
    pub cancellation: Option<Action>,
}

impl Order {
    /// The capture or refund sent with `reference`.
    pub fn action(&self, kind: ActionKind, reference: &str) -> Option<&Action> {
        let actions = match kind {
            ActionKind::Capture => &self.captures,
            ActionKind::Refund => &self.refunds,
        };
        actions
            .iter()
            .find(|a| a.action_reference.as_deref() == Some(reference))
    }

    pub fn amount(
        &self,
        currency: Currency,
    ) -> Result<crate::domain::money::Amount, crate::partners::PartnerError> {
        http::minor(self.total_amount, currency)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Capture,
    Refund,
}

/// A capture, refund or cancel as the order lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    #[serde(default)]
    pub action_reference: Option<String>,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount: Decimal,
    /// `Pending` (accepted, not processed yet), `Completed`, `Failed`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

/// `POST /oauth2/v2.0/token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRequest {
    pub grant_type: String,
    pub client_id: String,
    pub client_secret: String,
    pub scope: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub expires_in: u64,
}

/// An error body: what the API says went wrong.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Problem {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub title: String,
}

/// A page of Walley's report API: `data`, and `links` and `metaData` when
/// it gives them (a documented example carries `data` alone: then pages are
/// read until one comes back short).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportPage<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub links: Links,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta_data: Option<MetaData>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Links {
    #[serde(rename = "self", default, skip_serializing_if = "Option::is_none")]
    pub this: Option<Link>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<Link>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub method: String,
    pub href: String,
    pub query: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetaData {
    pub total_number_of_records: u64,
    pub number_of_pages: u32,
    pub current_page: u32,
    pub range: Range,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub from: u64,
    pub to: u64,
}

/// `GET /reports/settlements`: one settlement of a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlementSummary {
    pub id: String,
    /// `2022-12-30T00:00:00`: the period settled.
    pub start_date: String,
    pub end_date: String,
    #[serde(default)]
    pub store_id: i64,
    pub currency: String,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub total_amount: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub captured: Decimal,
    /// Negative.
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub refunded: Decimal,
    /// The payout's reference.
    #[serde(default)]
    pub reference: String,
    #[serde(default)]
    pub paid_out_at: Option<String>,
}

/// `GET /reports/settlements/{id}/transactions`: one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettlementLine {
    #[serde(default)]
    pub customer_number: String,
    /// Negative for returns.
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount: Decimal,
    #[serde(default)]
    pub purchase_date: Option<String>,
    #[serde(default)]
    pub transaction_date: Option<String>,
    #[serde(default)]
    pub invoice_number: String,
    #[serde(default)]
    pub order_number: String,
    /// `Purchase` or `Return`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub total_vat_amount_per_rate: Vec<VatPerRate>,
    pub currency: String,
    #[serde(default)]
    pub settlement_date: Option<String>,
    #[serde(default)]
    pub payout_reference: Option<String>,
    #[serde(default)]
    pub action_reference: Option<String>,
    #[serde(default)]
    pub order_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VatPerRate {
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub vat_rate: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount: Decimal,
}

/// The day of a report date (`2022-12-30` or `2022-12-30T00:00:00…`).
pub fn report_day(text: &str) -> Option<crate::domain::settlement::Day> {
    text.get(..10)?.parse().ok()
}

impl SettlementLine {
    /// Our settlement entry: the kind from `type`, the amount in minor units
    /// with the report's sign (deductions are negative, as the header's
    /// `refunded` is), dated by `purchaseDate` ("the date when the purchase
    /// was captured"), else by the settlement's day. `transactionDate` is a
    /// custom date the merchant gave and is not used.
    pub fn entry(
        &self,
        settlement_day: crate::domain::settlement::Day,
    ) -> Result<crate::domain::settlement::SettlementEntry, String> {
        use crate::domain::settlement::{SettlementEntry, VatAmount};
        let currency = Currency::parse(&self.currency)
            .map_err(|_| format!("its currency {:?} is not one we know", self.currency))?;
        let kind = entry_kind(&self.kind)
            .ok_or_else(|| format!("its type {:?} is not one we know", self.kind))?;
        let minor = |amount: Decimal| {
            http::minor_signed(amount, currency)
                .ok_or_else(|| format!("its amount {amount} does not fit {currency}"))
        };
        let vat = self
            .total_vat_amount_per_rate
            .iter()
            .map(|vat| {
                let amount = minor(vat.amount)?;
                Ok(VatAmount {
                    rate: vat.vat_rate.normalize(),
                    amount: crate::domain::money::Amount::from_minor(
                        i64::try_from(amount.unsigned_abs()).unwrap_or(i64::MAX),
                    )
                    .map_err(|_| "its VAT does not fit".to_owned())?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(SettlementEntry {
            kind,
            amount: minor(self.amount)?,
            currency,
            order_reference: self.order_number.clone(),
            partner_reference: self
                .order_id
                .clone()
                .unwrap_or_else(|| self.invoice_number.clone()),
            action_reference: self.action_reference.clone().unwrap_or_default(),
            transaction_date: self
                .purchase_date
                .as_deref()
                .and_then(report_day)
                .unwrap_or(settlement_day),
            vat,
        })
    }
}

/// The kind of a line's `type`. Walley documents `Purchase`, `Return` and
/// `PurchaseAmountAdjustment`; fees and chargebacks are read by name.
pub fn entry_kind(kind: &str) -> Option<crate::domain::settlement::EntryKind> {
    use crate::domain::settlement::EntryKind;
    Some(match kind {
        "Purchase" => EntryKind::Capture,
        "Return" => EntryKind::Refund,
        "PurchaseAmountAdjustment" => EntryKind::Adjustment,
        "Chargeback" => EntryKind::Chargeback,
        fee if fee.ends_with("Fee") => EntryKind::Fee,
        _ => return None,
    })
}

/// A line of the report as read: an entry, or the line as it came.
pub fn read_line(
    raw: &serde_json::Value,
    settlement_day: crate::domain::settlement::Day,
) -> crate::domain::settlement::Line {
    use crate::domain::settlement::{Line, UnreadableLine};
    let read = serde_json::from_value::<SettlementLine>(raw.clone())
        .map_err(|error| format!("it does not read: {error}"))
        .and_then(|line| line.entry(settlement_day));
    match read {
        Ok(entry) => Line::Entry(entry),
        Err(why) => Line::Unreadable(UnreadableLine {
            raw: raw.to_string(),
            why,
        }),
    }
}
