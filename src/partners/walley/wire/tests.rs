//! The connector's Walley bodies against bodies as Walley's documentation
//! shows them (dev.walleypay.com: authentication, manage orders — capture,
//! refund, cancel, get order — and the settlements API), kept under
//! `../testdata/`:
//!
//! - `capture_request.json`, `refund_request_with_fee.json`,
//!   `cancel_request.json`: the documented request examples.
//! - `order.json`: the get-order example (its `items` and `invoices`, elided
//!   in the documentation, left empty).
//! - `order_with_actions.json`: NOT documented: the `captures` and
//!   `refunds` the connector reads from an order, as the sandbox
//!   simulation serves them (the documentation shows no actions on an
//!   order).
//! - `token_response.json`: a standard OAuth2 client-credentials answer
//!   (Walley's token endpoint is Azure AD B2C; its page shows the request
//!   only).
//! - `settlements_page.json`, `transactions_page.json`: the settlements
//!   API's examples (the search example lacks a comma after `endDate` in
//!   the documentation; restored here).
//! - `settlements_data_only.json`: the settlement list as the partner
//!   documentation this project follows shows it, `data` alone (no
//!   `links`, no `metaData`).

use rust_decimal::Decimal;
use serde_json::Value;

use super::*;
use crate::domain::{
    money::{Amount, Currency},
    settlement::{Day, EntryKind, Line},
};
use crate::partners::documented::{json, keys};

fn sek() -> Currency {
    Currency::parse("SEK").unwrap()
}

/// Everything `ours` writes is what `documented` says, at the same place:
/// our structs may leave documented fields out, never add or change one.
fn assert_written_back(ours: &Value, documented: &Value, at: &str) {
    match (ours, documented) {
        (Value::Object(ours), Value::Object(documented)) => {
            for (key, value) in ours {
                let Some(theirs) = documented.get(key) else {
                    panic!("{at}.{key} is not in the documented body");
                };
                assert_written_back(value, theirs, &format!("{at}.{key}"));
            }
        }
        (Value::Array(ours), Value::Array(documented)) => {
            assert_eq!(ours.len(), documented.len(), "{at}");
            for (n, (a, b)) in ours.iter().zip(documented).enumerate() {
                assert_written_back(a, b, &format!("{at}[{n}]"));
            }
        }
        (ours, documented) => assert_eq!(ours, documented, "{at}"),
    }
}

/// The capture and refund properties Walley documents.
const ACTION_FIELDS: [&str; 4] = ["amount", "description", "actionReference", "items"];
/// An article's properties in a capture or refund.
const ITEM_FIELDS: [&str; 6] = ["id", "description", "unitPrice", "quantity", "vat", "type"];

#[test]
fn the_documented_capture_round_trips() {
    let text = include_str!("../testdata/capture_request.json");
    let capture: ActionRequest = serde_json::from_str(text).unwrap();
    assert_eq!(capture.amount, Decimal::new(2850, 1));
    assert_eq!(capture.action_reference, "test-captureref-123");
    assert_eq!(capture.description, "Capture description");
    assert!(capture.items.is_empty());
    let written = serde_json::to_value(&capture).unwrap();
    // Exactly the documented body: amount written as the exact number.
    assert_eq!(written, json(text));
    assert!(
        serde_json::to_string(&capture)
            .unwrap()
            .contains(r#""amount":285.0"#)
    );
}

#[test]
fn the_documented_refund_with_a_fee_reads_its_articles() {
    let text = include_str!("../testdata/refund_request_with_fee.json");
    let refund: ActionRequest = serde_json::from_str(text).unwrap();
    assert_eq!(refund.action_reference, "test-refundref-123");
    assert_eq!(refund.items.len(), 2);
    assert_eq!(refund.items[1].id, "fee");
    assert_eq!(refund.items[1].unit_price, Decimal::from(-15));
    assert_eq!(refund.items[1].quantity, 1);
    assert_eq!(refund.items[1].vat, Decimal::from(25));
    // The articles' `type` (purchase, fee) is not modelled: written back
    // without it, everything else as documented.
    assert_written_back(
        &serde_json::to_value(&refund).unwrap(),
        &json(text),
        "refund",
    );
}

#[test]
fn our_actions_use_the_documented_property_names() {
    let line = crate::domain::items::ItemLine {
        sku_reference: "sku-1".into(),
        name: "Shoes".into(),
        quantity: 2,
        unit_price: Amount::from_minor(5000).unwrap(),
        tax_rate: Decimal::from(25),
        discount_amount: Amount::ZERO,
        net_amount: Amount::from_minor(10000).unwrap(),
        tax_amount: Amount::from_minor(2500).unwrap(),
    };
    let request = ActionRequest {
        amount: Decimal::new(12500, 2),
        action_reference: "pay-1:0".into(),
        description: "capture".into(),
        items: vec![Item::from_line(&line, sek())],
    };
    let written = serde_json::to_value(&request).unwrap();
    for key in keys(&written) {
        assert!(ACTION_FIELDS.contains(&key), "{key} is not documented");
    }
    for key in keys(&written["items"][0]) {
        assert!(ITEM_FIELDS.contains(&key), "{key} is not documented");
    }
    // Walley requires unitPrice and quantity on an article, and VAT to
    // match the order's lines.
    let text = serde_json::to_string(&request).unwrap();
    assert!(text.contains(r#""actionReference":"pay-1:0""#), "{text}");
    assert!(text.contains(r#""unitPrice":62.50"#), "{text}");
    assert!(text.contains(r#""quantity":2"#), "{text}");
    assert!(text.contains(r#""vat":25"#), "{text}");
    assert!(text.contains(r#""amount":125.00"#), "{text}");
    // No description: left out, as documented ("a default value will be
    // used").
    let bare = ActionRequest {
        description: String::new(),
        items: Vec::new(),
        ..request
    };
    assert_eq!(
        keys(&serde_json::to_value(&bare).unwrap()),
        ["actionReference", "amount"]
    );
}

#[test]
fn the_documented_cancel_body_names_only_an_action_reference() {
    // The connector sends no body to cancel; the documented optional one
    // has this one property.
    let cancel = json(include_str!("../testdata/cancel_request.json"));
    assert_eq!(keys(&cancel), ["actionReference"]);
}

#[test]
fn the_documented_order_reads() {
    let text = include_str!("../testdata/order.json");
    let envelope: OrderEnvelope = serde_json::from_str(text).unwrap();
    let order = &envelope.data;
    assert_eq!(order.id, "853f3f82-ab12-47c3-9d97-af17009852cd");
    assert_eq!(order.reference, "MX_220921_111434");
    assert_eq!(order.status, "Activated");
    assert_eq!(order.currency, "SEK");
    assert_eq!(
        order.amount(sek()).unwrap(),
        Amount::from_minor(245949).unwrap()
    );
    // It lists no actions (see `order_with_actions.json`).
    assert!(order.captures.is_empty() && order.refunds.is_empty());
    assert!(order.cancellation.is_none());
    assert!(order.action(ActionKind::Capture, "anything").is_none());
    let written = serde_json::to_value(&envelope).unwrap();
    // What the connector writes back beyond the document: the empty action
    // lists it defaults.
    let mut data = written["data"].clone();
    for key in ["captures", "refunds", "cancellation"] {
        data.as_object_mut().unwrap().remove(key);
    }
    assert_written_back(&data, &json(text)["data"], "data");
}

#[test]
fn an_order_finds_its_actions_by_reference() {
    let text = include_str!("../testdata/order_with_actions.json");
    let envelope: OrderEnvelope = serde_json::from_str(text).unwrap();
    let order = &envelope.data;
    let done = order.action(ActionKind::Capture, "pay-1:0").unwrap();
    assert_eq!(done.status, "Completed");
    assert_eq!(done.amount, Decimal::new(2000, 2));
    let pending = order.action(ActionKind::Capture, "pay-2:0").unwrap();
    assert_eq!(pending.status, "Pending");
    assert!(order.action(ActionKind::Refund, "pay-1:0").is_none());
    assert_eq!(
        serde_json::to_value(&envelope).unwrap()["data"],
        json(text)["data"]
    );
}

#[test]
fn the_token_exchange_uses_the_documented_names() {
    let request = TokenRequest {
        grant_type: "client_credentials".into(),
        client_id: "4edbc2f0-a1b2-4ec1-a238-cfdfa2b54cee".into(),
        client_secret: "secret".into(),
        scope: "705798e0-8cef-427c-ae00-6023deba29af/.default".into(),
    };
    assert_eq!(
        keys(&serde_json::to_value(&request).unwrap()),
        ["client_id", "client_secret", "grant_type", "scope"]
    );
    let token: TokenResponse =
        serde_json::from_str(include_str!("../testdata/token_response.json")).unwrap();
    assert_eq!(token.expires_in, 3599);
    assert!(token.access_token.starts_with("eyJ"));
}

#[test]
fn the_documented_settlement_search_reads() {
    let text = include_str!("../testdata/settlements_page.json");
    let page: ReportPage<SettlementSummary> = serde_json::from_str(text).unwrap();
    let summary = &page.data[0];
    assert_eq!(summary.id, "1");
    assert_eq!(summary.currency, "SEK");
    assert_eq!(summary.captured, Decimal::from(103000));
    assert_eq!(summary.refunded, Decimal::from(-3000));
    assert_eq!(summary.total_amount, Decimal::from(100000));
    assert_eq!(summary.reference, "2134");
    assert_eq!(summary.store_id, 1);
    assert_eq!(
        report_day(&summary.end_date),
        Some("2022-12-30".parse::<Day>().unwrap())
    );
    assert_eq!(page.links.next.as_ref().unwrap().query, "page=2&perPage=1");
    let meta = page.meta_data.as_ref().unwrap();
    assert_eq!(meta.total_number_of_records, 100);
    assert_eq!(meta.number_of_pages, 100);
    assert_eq!(meta.range.to, 1);
    assert_written_back(&serde_json::to_value(&page).unwrap(), &json(text), "page");
}

#[test]
fn the_documented_transactions_read_into_entries() {
    let text = include_str!("../testdata/transactions_page.json");
    let page: ReportPage<SettlementLine> = serde_json::from_str(text).unwrap();
    let line = &page.data[0];
    assert_eq!(line.kind, "Purchase");
    assert_eq!(line.order_number, "TEST_230116_011045");
    assert_eq!(line.invoice_number, "11111111");
    assert_eq!(line.action_reference, None);
    let settled = "2023-01-02".parse::<Day>().unwrap();
    let entry = line.entry(settled).unwrap();
    assert_eq!(entry.kind, EntryKind::Capture);
    assert_eq!(entry.amount, 100_000);
    assert_eq!(entry.currency, sek());
    assert_eq!(entry.order_reference, "TEST_230116_011045");
    assert_eq!(
        entry.partner_reference,
        "4f35934d-dcf7-4929-b1ec-179155a6db58"
    );
    assert_eq!(entry.action_reference, "");
    // Dated by purchaseDate ("the date when the purchase was captured"), not
    // by transactionDate (a custom date the merchant gave).
    assert_eq!(entry.transaction_date, "2022-01-01".parse::<Day>().unwrap());
    let vat: Vec<(Decimal, i64)> = entry
        .vat
        .iter()
        .map(|v| (v.rate, v.amount.minor()))
        .collect();
    assert_eq!(vat, [(Decimal::from(25), 18000), (Decimal::from(6), 566)]);
    assert_written_back(&serde_json::to_value(&page).unwrap(), &json(text), "page");
}

#[test]
fn a_settlement_list_of_data_alone_reads() {
    // The documented example of the settlement list as some pages show it:
    // `data` without `links` or `metaData`.
    let text = include_str!("../testdata/settlements_data_only.json");
    let page: ReportPage<SettlementSummary> = serde_json::from_str(text).unwrap();
    assert_eq!(page.data.len(), 1);
    assert_eq!(page.meta_data, None);
    assert_eq!(page.links, Links::default());
}

#[test]
fn every_line_kind_reads_with_its_sign_and_an_unreadable_one_is_kept() {
    let documented: Value =
        json(include_str!("../testdata/transactions_page.json"))["data"][0].clone();
    let settled: Day = "2023-01-02".parse().unwrap();
    let with = |kind: &str, amount: &str| {
        let mut line = documented.clone();
        line["type"] = kind.into();
        line["amount"] = json(amount);
        read_line(&line, settled)
    };
    for (kind, amount, read, minor) in [
        ("Purchase", "-100.00", EntryKind::Capture, -10_000),
        ("Return", "-250.50", EntryKind::Refund, -25_050),
        (
            "PurchaseAmountAdjustment",
            "-12.00",
            EntryKind::Adjustment,
            -1_200,
        ),
        ("InvoiceFee", "-3.50", EntryKind::Fee, -350),
        ("Chargeback", "-1000.0", EntryKind::Chargeback, -100_000),
    ] {
        let line = with(kind, amount);
        let entry = line.entry().unwrap_or_else(|| panic!("{kind}: {line:?}"));
        assert_eq!((entry.kind, entry.amount), (read, minor), "{kind}");
    }
    for (kind, amount, why) in [("Mystery", "1.00", "type"), ("Purchase", "1.001", "amount")] {
        match with(kind, amount) {
            Line::Unreadable(unreadable) => {
                assert!(unreadable.why.contains(why), "{unreadable:?}");
                assert!(unreadable.raw.contains(kind), "kept as it came");
            }
            read => panic!("{kind} {amount} read as {read:?}"),
        }
    }
    let mut no_amount = documented.clone();
    no_amount.as_object_mut().unwrap().remove("amount");
    assert!(matches!(
        read_line(&no_amount, settled),
        Line::Unreadable(_)
    ));
    // Without purchaseDate, the settlement's day; never today.
    let mut undated = documented.clone();
    undated["purchaseDate"] = Value::Null;
    assert_eq!(
        read_line(&undated, settled)
            .entry()
            .unwrap()
            .transaction_date,
        settled
    );
}

#[test]
fn a_return_line_is_a_refund_taken_back() {
    let mut line: Value =
        json(include_str!("../testdata/transactions_page.json"))["data"][0].clone();
    line["type"] = "Return".into();
    line["amount"] = json("-250.50");
    line["actionReference"] = "pay-1:1".into();
    let line: SettlementLine = serde_json::from_value(line).unwrap();
    let entry = line.entry("2023-01-02".parse().unwrap()).unwrap();
    assert_eq!(entry.kind, EntryKind::Refund);
    assert_eq!(entry.amount, -25_050, "taken back: negative, as reported");
    assert_eq!(entry.magnitude(), Amount::from_minor(25_050).unwrap());
    assert_eq!(entry.action_reference, "pay-1:1");
}

#[test]
fn a_problem_reads_its_code_and_title() {
    // Walley's pages list error statuses, not their body: this is the shape
    // the sandbox simulation answers.
    let problem: Problem =
        serde_json::from_str(r#"{"code": "ORDER_NOT_FOUND", "title": "no such order"}"#).unwrap();
    assert_eq!(problem.code, "ORDER_NOT_FOUND");
    assert_eq!(problem.title, "no such order");
    // An error body of another shape reads as empty, not as a failure.
    let other: Problem = serde_json::from_str(r#"{"message": "x"}"#).unwrap();
    assert!(other.code.is_empty());
}
