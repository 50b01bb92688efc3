//! The connector's WePay bodies against bodies shaped as WePay's v2
//! reference defines them ("The /checkout API calls", API version
//! 2015-08-15 and later: the arguments of each call as WePay's own Java SDK
//! and the python-wepay binding send them; the checkout object with its
//! `fee`, `chargeback`, `refund`, `payment_method` and `payer` structures),
//! kept under `../testdata/`. The reference pages reachable here list the
//! calls and states but not full example bodies, so the example values are
//! ours, the names WePay's.

use rust_decimal::Decimal;
use serde_json::Value;

use super::*;
use crate::partners::documented::{json, keys};

fn assert_documented(value: &Value, documented: &[&str], what: &str) {
    for key in keys(value) {
        assert!(
            documented.contains(&key),
            "{what}: {key} is not an argument WePay defines"
        );
    }
}

/// `/checkout/create`'s arguments (2015-08-15).
const CREATE_ARGUMENTS: [&str; 17] = [
    "account_id",
    "short_description",
    "type",
    "amount",
    "currency",
    "long_description",
    "email_message",
    "fee",
    "callback_uri",
    "auto_capture",
    "reference_id",
    "unique_id",
    "hosted_checkout",
    "payment_method",
    "delivery_type",
    "payer_rbits",
    "transaction_rbits",
];

#[test]
fn a_create_round_trips_with_the_documented_arguments() {
    let text = include_str!("../testdata/create_request.json");
    let create: CreateCheckout = serde_json::from_str(text).unwrap();
    assert_eq!(create.account_id, 1723052);
    assert_eq!(create.amount, Decimal::new(2550, 2));
    assert_eq!(create.currency, "USD");
    assert_eq!(create.kind, "goods");
    assert_eq!(create.unique_id.as_deref(), Some("pay-1:0"));
    assert_eq!(create.reference_id, "pay-1:0");
    assert!(!create.auto_capture);
    let card = create.payment_method.as_ref().unwrap();
    assert_eq!(card.kind, "credit_card");
    assert_eq!(card.credit_card.id, 2178922317);
    let written = serde_json::to_value(&create).unwrap();
    assert_eq!(written, json(text));
    assert_documented(&written, &CREATE_ARGUMENTS, "/checkout/create");
    assert_documented(
        &written["payment_method"],
        &["type", "credit_card", "preapproval", "payment_bank"],
        "payment_method",
    );
    assert_documented(
        &written["payment_method"]["credit_card"],
        &["id", "data", "auto_capture"],
        "credit_card",
    );
    let text = serde_json::to_string(&create).unwrap();
    assert!(text.contains(r#""amount":25.50"#), "{text}");
}

#[test]
fn a_refund_round_trips_with_the_documented_arguments() {
    let text = include_str!("../testdata/refund_request.json");
    let refund: RefundCheckout = serde_json::from_str(text).unwrap();
    assert_eq!(refund.checkout_id, 649945633);
    assert_eq!(refund.amount, Some(Decimal::new(500, 2)));
    assert_eq!(refund.refund_reason, "Customer returned the ball");
    let written = serde_json::to_value(&refund).unwrap();
    assert_eq!(written, json(text));
    assert_documented(
        &written,
        &[
            "checkout_id",
            "refund_reason",
            "amount",
            "app_fee",
            "payer_email_message",
            "payee_email_message",
        ],
        "/checkout/refund",
    );
    // All that is left: no amount at all, not `null`.
    let whole = RefundCheckout {
        amount: None,
        ..refund
    };
    assert_eq!(
        keys(&serde_json::to_value(&whole).unwrap()),
        ["checkout_id", "refund_reason"]
    );
}

#[test]
fn a_refund_reads_back_what_it_writes() {
    for amount in [
        Some(Decimal::new(2500, 2)),
        Some(Decimal::new(300, 0)),
        None,
    ] {
        let refund = RefundCheckout {
            checkout_id: 7,
            refund_reason: "returned".into(),
            amount,
        };
        let text = serde_json::to_string(&refund).unwrap();
        assert_eq!(
            serde_json::from_str::<RefundCheckout>(&text).unwrap(),
            refund,
            "{text}"
        );
    }
    let text = serde_json::to_string(&RefundCheckout {
        checkout_id: 7,
        refund_reason: String::new(),
        amount: Some(Decimal::new(12345, 3)),
    })
    .unwrap();
    assert!(text.contains(r#""amount":12.345"#), "{text}");
}

#[test]
fn cancel_capture_lookup_and_find_round_trip() {
    let text = include_str!("../testdata/cancel_request.json");
    let cancel: CancelCheckout = serde_json::from_str(text).unwrap();
    assert_eq!(cancel.cancel_reason, "Out of stock");
    assert_eq!(serde_json::to_value(&cancel).unwrap(), json(text));

    let text = include_str!("../testdata/capture_request.json");
    let capture: CheckoutId = serde_json::from_str(text).unwrap();
    assert_eq!(capture.checkout_id, 649945633);
    assert_eq!(serde_json::to_value(&capture).unwrap(), json(text));

    let text = include_str!("../testdata/find_request.json");
    let find: FindCheckouts = serde_json::from_str(text).unwrap();
    assert_eq!(find.reference_id, "pay-1:0");
    let written = serde_json::to_value(&find).unwrap();
    assert_eq!(written, json(text));
    assert_documented(
        &written,
        &[
            "account_id",
            "start",
            "limit",
            "reference_id",
            "state",
            "preapproval_id",
            "start_time",
            "end_time",
            "sort_order",
            "shipping_fee",
        ],
        "/checkout/find",
    );
}

#[test]
fn the_documented_checkout_reads() {
    let checkout: Checkout =
        serde_json::from_str(include_str!("../testdata/checkout.json")).unwrap();
    assert_eq!(checkout.checkout_id, 649945633);
    assert_eq!(checkout.account_id, 1723052);
    assert_eq!(checkout.state, "captured");
    assert_eq!(Stage::of(&checkout.state), Some(Stage::Captured));
    assert_eq!(checkout.amount, Decimal::new(2550, 2));
    assert_eq!(checkout.currency, "USD");
    assert_eq!(checkout.reference_id.as_deref(), Some("pay-1:0"));
    // A list of them is what `/checkout/find` answers.
    let found: Vec<Checkout> =
        serde_json::from_str(&format!("[{}]", include_str!("../testdata/checkout.json"))).unwrap();
    assert_eq!(found, [checkout]);
}

/// WePay's reference (2015-08-15 and later) keeps what was refunded in the
/// checkout's `refund` structure; the 2014-01-08 shape has a top-level
/// `amount_refunded`. Either reads; a `refund` structure without a figure
/// leaves the top-level one; no figure, or two that differ, is no answer
/// (the refund guard then sends nothing).
#[test]
fn the_refunded_total_reads_in_either_shape_and_only_when_it_is_one_figure() {
    let documented = || json(include_str!("../testdata/checkout.json"));
    let refunded = |body: Value| serde_json::from_value::<Checkout>(body).unwrap().refunded();
    let five = Some(Decimal::new(500, 2));
    assert_eq!(refunded(documented()), five, "the documented body");

    let mut old = documented();
    let refund = old.as_object_mut().unwrap().remove("refund").unwrap();
    old["amount_refunded"] = refund["amount_refunded"].clone();
    assert_eq!(refunded(old.clone()), five, "the 2014 shape");

    let mut empty_refund = old.clone();
    empty_refund["refund"] = serde_json::json!({});
    assert_eq!(
        refunded(empty_refund),
        five,
        "a refund structure without a figure"
    );

    let mut both = documented();
    both["amount_refunded"] = serde_json::json!(5.00);
    assert_eq!(refunded(both.clone()), five, "two figures that agree");
    both["amount_refunded"] = serde_json::json!(0);
    assert_eq!(refunded(both), None, "two figures that differ");

    let mut neither = documented();
    neither.as_object_mut().unwrap().remove("refund");
    assert_eq!(refunded(neither), None, "no figure");
}

/// WePay answers `"reference_id": null` for a checkout created without one.
#[test]
fn a_checkout_without_a_reference_reads() {
    let mut checkout = json(include_str!("../testdata/checkout.json"));
    checkout["reference_id"] = Value::Null;
    assert!(serde_json::from_value::<Checkout>(checkout).is_ok());
}

#[test]
fn the_answers_of_changes_and_errors_read() {
    let text = include_str!("../testdata/state_answer.json");
    let answer: StateAnswer = serde_json::from_str(text).unwrap();
    assert_eq!(answer.checkout_id, 649945633);
    assert_eq!(Stage::of(&answer.state), Some(Stage::Captured));
    assert_eq!(serde_json::to_value(&answer).unwrap(), json(text));

    let text = include_str!("../testdata/error.json");
    let error: ErrorBody = serde_json::from_str(text).unwrap();
    assert_eq!(error.error, "invalid_request");
    assert_eq!(error.error_code, 4004);
    assert_eq!(serde_json::to_value(&error).unwrap(), json(text));
}

#[test]
fn every_documented_state_has_a_stage() {
    for state in [
        "new",
        "authorized",
        "captured",
        "released",
        "cancelled",
        "refunded",
        "charged back",
        "failed",
        "expired",
    ] {
        assert!(Stage::of(state).is_some(), "{state}");
    }
}
