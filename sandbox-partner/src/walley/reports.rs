//! Settlements: `POST /_sim/settlements` closes what was captured and
//! refunded into settlements, and the report API (`GET /reports/settlements`
//! and `/reports/settlements/{id}/transactions`) serves them.

use std::{collections::BTreeMap, time::Instant};

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;

use super::{
    orders::{ClosedSettlement, Walley},
    routes::{admit, problem},
    wire::{
        Link, Links, MetaData, Paging, Range, ReportPage, SettlementLine, SettlementLinks,
        SettlementSummary, VatPerRate,
    },
};
use crate::simulation::{Received, Shared, answer};
use payment_orchestrator::domain::{money::Currency, settlement::Day};

/// `POST /_sim/settlements`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CloseSettlements {
    /// `YYYY-MM-DD`; today by default.
    pub date: Option<String>,
    pub drop: Vec<String>,
    pub alter: BTreeMap<String, Decimal>,
    pub unknown: Vec<UnknownLine>,
    pub synthetic: u32,
    /// Action references whose line is reported twice.
    pub duplicate: Vec<String>,
    /// Action references whose line comes without it (extended reporting
    /// off): only its order id names it.
    pub without_reference: Vec<String>,
    /// Lines of any kind and sign, added as given (`type`, `amount`,
    /// `orderId`?, `actionReference`?, `currency`?).
    pub lines: Vec<ExtraLine>,
    /// Lines served exactly as given (they need not read).
    pub raw: Vec<serde_json::Value>,
    /// Header figures that replace what the lines add up to.
    pub header: HeaderOverride,
    /// The first reads of the new settlements' lines that are refused with
    /// `422`.
    pub refuse_lines: u32,
    /// A page of the new settlements' lines whose first read is refused
    /// with `422` (the pages before it read).
    pub refuse_page: Option<u64>,
    /// The new settlements' headers name a currency nobody knows (`XXX`).
    pub broken_header: bool,
    /// The new settlements' lines are served as a partner that ignores
    /// `page` would: the first page for every page, more always to follow.
    pub endless: bool,
}

/// A line a test adds to a settlement.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtraLine {
    #[serde(rename = "type")]
    pub kind: String,
    /// Major units, a decimal string.
    pub amount: Decimal,
    #[serde(default)]
    pub order_id: Option<String>,
    #[serde(default)]
    pub action_reference: Option<String>,
    #[serde(default)]
    pub currency: Option<String>,
}

/// Header totals a test sets (major units, as Walley reports them).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HeaderOverride {
    pub captured: Option<Decimal>,
    pub refunded: Option<Decimal>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UnknownLine {
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub amount: Decimal,
    pub action_reference: String,
    #[serde(default = "purchase")]
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub currency: Option<String>,
}

fn purchase() -> String {
    "Purchase".into()
}

fn line(
    kind: &str,
    amount: Decimal,
    currency: Currency,
    order: &str,
    reference: &str,
    day: Day,
    vat: &[(Decimal, Decimal)],
) -> SettlementLine {
    let sign = if kind == "Return" {
        -Decimal::ONE
    } else {
        Decimal::ONE
    };
    SettlementLine {
        customer_number: String::new(),
        first_name: String::new(),
        last_name: String::new(),
        amount: amount * sign,
        purchase_date: Some(day.to_string()),
        transaction_date: Some(day.to_string()),
        invoice_number: format!("inv-{order}"),
        order_number: order.to_owned(),
        kind: kind.to_owned(),
        total_vat_amount_per_rate: vat
            .iter()
            .map(|(rate, amount)| VatPerRate {
                vat_rate: *rate,
                amount: *amount * sign,
            })
            .collect(),
        currency: currency.code().to_owned(),
        settlement_date: Some(day.to_string()),
        payout_reference: None,
        action_reference: Some(reference.to_owned()),
        order_id: Some(order.to_owned()),
    }
}

/// The currency a test names for an added line, else the settlement's
/// first line's, else SEK.
fn currency_or(named: Option<&str>, lines: &[SettlementLine]) -> Currency {
    named
        .and_then(|c| Currency::parse(c).ok())
        .or_else(|| {
            lines
                .first()
                .and_then(|l| Currency::parse(&l.currency).ok())
        })
        .unwrap_or_else(|| Currency::parse("SEK").unwrap_or_else(|_| unreachable!()))
}

pub(super) async fn close_settlements(
    State(state): State<Shared<Walley>>,
    Json(close): Json<CloseSettlements>,
) -> Response {
    let mut sim = state.lock();
    let sim_now = sim.common.now();
    let day = match close.date.as_deref() {
        Some(text) => match text.parse::<Day>() {
            Ok(day) => day,
            Err(_) => return problem(400, "INVALID_DATE", "date must be YYYY-MM-DD"),
        },
        None => Day::of(sim_now),
    };
    let now = Instant::now();
    let mut lines: Vec<SettlementLine> = Vec::new();
    let mut newly_settled = Vec::new();
    for order in sim.orders.values() {
        for (kind, actions) in [("Purchase", &order.captures), ("Return", &order.refunds)] {
            for action in actions.iter().filter(|a| a.completed(now)) {
                let key = format!("{kind}:{}", action.reference);
                if sim.settled.contains(&key) {
                    continue;
                }
                newly_settled.push(key);
                if close.drop.contains(&action.reference) {
                    continue;
                }
                let amount = close
                    .alter
                    .get(&action.reference)
                    .copied()
                    .unwrap_or_else(|| action.amount.to_major(order.currency));
                let mut settled = line(
                    kind,
                    amount,
                    order.currency,
                    &order.id,
                    &action.reference,
                    day,
                    &action.vat,
                );
                if close.without_reference.contains(&action.reference) {
                    settled.action_reference = None;
                }
                if close.duplicate.contains(&action.reference) {
                    lines.push(settled.clone());
                }
                lines.push(settled);
            }
        }
    }
    sim.settled.extend(newly_settled);
    for unknown in &close.unknown {
        let currency = currency_or(unknown.currency.as_deref(), &lines);
        lines.push(line(
            &unknown.kind,
            unknown.amount,
            currency,
            "unknown-order",
            &unknown.action_reference,
            day,
            &[],
        ));
    }
    for extra in &close.lines {
        let currency = currency_or(extra.currency.as_deref(), &lines);
        let order = extra.order_id.as_deref().unwrap_or("unknown-order");
        let mut added = line(&extra.kind, Decimal::ONE, currency, order, "", day, &[]);
        // Signed as given: the test says what the partner reports.
        added.amount = extra.amount;
        added.action_reference.clone_from(&extra.action_reference);
        lines.push(added);
    }
    let synthetic_currency = lines
        .first()
        .and_then(|l| Currency::parse(&l.currency).ok())
        .or_else(|| Currency::parse("SEK").ok());
    if let Some(currency) = synthetic_currency {
        for n in 0..close.synthetic {
            lines.push(line(
                "Purchase",
                Decimal::ONE,
                currency,
                &format!("synthetic-order-{n}"),
                &format!("synthetic-{}-{n}", sim.settlements.len()),
                day,
                &[(Decimal::from(25), Decimal::new(20, 2))],
            ));
        }
    }
    let mut by_currency: BTreeMap<String, Vec<SettlementLine>> = BTreeMap::new();
    for line in lines {
        by_currency
            .entry(line.currency.clone())
            .or_default()
            .push(line);
    }
    if by_currency.is_empty() && !close.raw.is_empty() {
        by_currency.insert("SEK".into(), Vec::new());
    }
    let mut ids = Vec::new();
    let mut raw = Some(close.raw);
    for (currency, lines) in by_currency {
        let id = (sim.settlements.len() + 1).to_string();
        let captured: Decimal = close.header.captured.unwrap_or_else(|| {
            lines
                .iter()
                .filter(|l| l.kind == "Purchase")
                .map(|l| l.amount)
                .sum()
        });
        let refunded: Decimal = close.header.refunded.unwrap_or_else(|| {
            lines
                .iter()
                .filter(|l| l.kind == "Return")
                .map(|l| l.amount)
                .sum()
        });
        let mut served: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::to_value(l).unwrap_or_default())
            .collect();
        // Raw lines go into the first settlement.
        served.extend(raw.take().unwrap_or_default());
        let date = format!("{day}T00:00:00");
        sim.settlements.push(ClosedSettlement {
            summary: SettlementSummary {
                id: id.clone(),
                start_date: date.clone(),
                end_date: date,
                store_id: 1,
                ingoing_balance: Decimal::ZERO,
                total_amount: captured + refunded,
                currency: if close.broken_header {
                    "XXX".to_owned()
                } else {
                    currency
                },
                net_sales: captured + refunded,
                paid_out_at: None,
                generated_at: None,
                captured,
                refunded,
                reference: format!("PAYOUT-{id}"),
                compensations: Decimal::ZERO,
                adjustments: Decimal::ZERO,
                links: SettlementLinks::of(&id),
            },
            lines: served,
            refusals_left: close.refuse_lines,
            refused_page: close.refuse_page,
            endless: close.endless,
        });
        ids.push(id);
    }
    answer(201, &json!({ "settlements": ids }))
}

impl Paging {
    /// `(page, perPage)`, or `None` for a malformed query.
    fn numbers(&self, max_per_page: u64) -> Option<(u64, u64)> {
        let page = self.page.as_deref().map_or(Some(1), |p| p.parse().ok())?;
        let per_page = self
            .per_page
            .as_deref()
            .map_or(Some(10), |p| p.parse().ok())?;
        (page >= 1 && (1..=max_per_page).contains(&per_page)).then_some((page, per_page))
    }
}

fn paged<T: Clone + serde::Serialize>(
    all: &[T],
    page: u64,
    per_page: u64,
    path: &str,
) -> ReportPage<T> {
    let total = all.len() as u64;
    let pages = total.div_ceil(per_page).max(1);
    let from = (page - 1).saturating_mul(per_page);
    let data: Vec<T> = all
        .iter()
        .skip(usize::try_from(from).unwrap_or(usize::MAX))
        .take(usize::try_from(per_page).unwrap_or(usize::MAX))
        .cloned()
        .collect();
    let link = |page: u64| {
        let query = format!("page={page}&perPage={per_page}");
        Link {
            method: "GET",
            href: format!("{path}?{query}"),
            query,
        }
    };
    ReportPage {
        links: Links {
            this: Some(link(page)),
            next: (page < pages).then(|| link(page + 1)),
        },
        meta_data: MetaData {
            total_number_of_records: total,
            number_of_pages: u32::try_from(pages).unwrap_or(u32::MAX),
            current_page: u32::try_from(page).unwrap_or(u32::MAX),
            range: Range {
                from: (from + 1).min(total),
                to: from + data.len() as u64,
            },
        },
        data,
    }
}

/// The day of a report date (`2022-12-30T00:00:00`).
fn report_day(text: &str) -> Option<Day> {
    text.get(..10)?.parse().ok()
}

fn malformed_query() -> Response {
    problem(422, "INVALID_QUERY", "Query with incorrect format")
}

pub(super) async fn list_settlements(
    State(state): State<Shared<Walley>>,
    paging: Result<Query<Paging>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let received = Received {
        method: "GET".into(),
        path: "/reports/settlements".into(),
        idempotency: None,
        body: String::new(),
    };
    let mut sim = state.lock();
    if let Some(refused) = admit(&mut sim, received, &headers) {
        return refused;
    }
    let Ok(Query(paging)) = paging else {
        return malformed_query();
    };
    let since = match paging.query.as_deref() {
        None => None,
        Some(query) => match query
            .strip_prefix("startDate:>=")
            .and_then(|day| day.parse::<Day>().ok())
        {
            Some(day) => Some(day),
            None => return malformed_query(),
        },
    };
    let Some((page, per_page)) = paging.numbers(1000) else {
        return malformed_query();
    };
    let listed: Vec<SettlementSummary> = sim
        .settlements
        .iter()
        .map(|s| s.summary.clone())
        .filter(|s| since.is_none_or(|since| report_day(&s.start_date).is_some_and(|d| d >= since)))
        .collect();
    answer(200, &paged(&listed, page, per_page, "/reports/settlements"))
}

pub(super) async fn settlement_lines(
    State(state): State<Shared<Walley>>,
    Path(id): Path<String>,
    paging: Result<Query<Paging>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/reports/settlements/{id}/transactions");
    let received = Received {
        method: "GET".into(),
        path: path.clone(),
        idempotency: None,
        body: String::new(),
    };
    let mut sim = state.lock();
    if let Some(refused) = admit(&mut sim, received, &headers) {
        return refused;
    }
    // The transactions take no free-text `query`.
    let paging = match paging {
        Ok(Query(paging)) if paging.query.is_none() => paging,
        _ => return malformed_query(),
    };
    let Some((page, per_page)) = paging.numbers(25_000) else {
        return malformed_query();
    };
    let Some(settlement) = sim.settlements.iter_mut().find(|s| s.summary.id == id) else {
        return problem(404, "NOT_FOUND", "Transactions not found");
    };
    if settlement.refusals_left > 0 {
        settlement.refusals_left -= 1;
        return malformed_query();
    }
    if settlement.refused_page == Some(page) {
        settlement.refused_page = None;
        return malformed_query();
    }
    let mut listed = paged(&settlement.lines, page, per_page, &path);
    if settlement.endless {
        listed = paged(&settlement.lines, 1, per_page, &path);
        listed.meta_data.number_of_pages = u32::MAX;
    }
    let csv = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/csv"));
    if csv {
        return ([("content-type", "text/csv")], report_csv(&listed.data)).into_response();
    }
    answer(200, &listed)
}

/// Lines as CSV: the JSON fields as columns (empty where a line lacks
/// one), VAT as `rate:amount` pairs joined by `|`.
pub fn report_csv(lines: &[serde_json::Value]) -> String {
    let mut csv = String::from(
        "orderNumber,orderId,type,amount,currency,transactionDate,actionReference,totalVatAmountPerRate\n",
    );
    let text = |line: &serde_json::Value, field: &str| match &line[field] {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    for line in lines {
        let vat: Vec<String> = line["totalVatAmountPerRate"]
            .as_array()
            .map(|rates| {
                rates
                    .iter()
                    .map(|v| format!("{}:{}", v["vatRate"], v["amount"]))
                    .collect()
            })
            .unwrap_or_default();
        let fields: Vec<String> = [
            "orderNumber",
            "orderId",
            "type",
            "amount",
            "currency",
            "transactionDate",
            "actionReference",
        ]
        .iter()
        .map(|field| text(line, field))
        .collect();
        csv.push_str(&format!("{},{}\n", fields.join(","), vat.join("|")));
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_with_every_kind_of_line_reads() {
        let body = serde_json::json!({
            "duplicate": ["a:0"],
            "withoutReference": ["b:0"],
            "lines": [
                { "type": "Purchase", "amount": "-100.00", "orderId": "o", "actionReference": "a:0" },
                { "type": "InvoiceFee", "amount": "-5.00" }
            ],
            "raw": [{ "type": "Purchase", "amount": "a hundred" }],
            "header": { "captured": "999.99" },
            "refuseLines": 1
        });
        let close: CloseSettlements = serde_json::from_value(body).unwrap();
        assert_eq!(close.lines.len(), 2);
        assert_eq!(close.header.captured, Some(Decimal::new(99_999, 2)));
    }
}
