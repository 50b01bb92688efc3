//! Priority routing: the defaults per operation and custom lists with
//! wildcards.

use payment_orchestrator::api::proto::{
    self,
    OperationStatus::{Conflict, Failure, Success},
};

use super::support::harness::*;

/// 30.00 on a gift card, 50.00 on a card, 40.00 on another gift card
/// (`clover`), in that split order.
async fn three_partners(server: &TestServer) -> proto::Payment {
    let clover = leg("clover", "giftcard", 4000, "tok");
    authorized(server, vec![gift(3000, "tok"), card(5000, "tok"), clover]).await
}

/// The operations whose default priority is checked.
enum Kind {
    Capture,
    Refund,
    Void,
}

/// The legs an operation of `kind` and `amount` takes by default on a
/// payment of 100.00 on a card and 20.00 on a gift card (captured in full
/// first, for a refund).
async fn routed_by_default(kind: Kind, amount: i64) -> Vec<(String, i64, proto::OperationStatus)> {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "tok", "tok").await;
    let done = match kind {
        Kind::Capture => captured(&server, capture(&payment, Some(amount))).await,
        Kind::Refund => {
            captured(&server, capture(&payment, None)).await;
            refunded(&server, refund(&payment, Some(amount))).await
        }
        Kind::Void => voided(&server, void(&payment, Some(amount))).await,
    };
    legs_of(&done.operation)
}

#[tokio::test]
async fn capture_takes_gift_cards_first_by_default() {
    let legs = routed_by_default(Kind::Capture, 2500).await;
    assert_eq!(legs, succeeded(&[("illicado", 2000), ("ingenico", 500)]));
}

#[tokio::test]
async fn refund_gives_card_money_back_first_by_default() {
    let legs = routed_by_default(Kind::Refund, 10500).await;
    assert_eq!(legs, succeeded(&[("ingenico", 10000), ("illicado", 500)]));
}

#[tokio::test]
async fn void_releases_card_holds_first_by_default() {
    let legs = routed_by_default(Kind::Void, 10500).await;
    assert_eq!(legs, succeeded(&[("ingenico", 10000), ("illicado", 500)]));
}

#[tokio::test]
async fn catch_all_before_a_specific_rule_puts_that_partner_last() {
    let server = TestServer::start().await;
    let payment = three_partners(&server).await;
    let priority = vec![
        rule("*", "creditcard"),
        rule("*", "*"),
        rule("illicado", "*"),
    ];
    let request = proto::CaptureRequest {
        priority,
        ..capture(&payment, Some(10000))
    };
    let done = captured(&server, request).await;
    let expected = succeeded(&[("ingenico", 5000), ("clover", 4000), ("illicado", 1000)]);
    assert_eq!(legs_of(&done.operation), expected);
}

#[tokio::test]
async fn legs_no_rule_matches_come_last_in_split_order() {
    let server = TestServer::start().await;
    let payment = three_partners(&server).await;
    let request = proto::CaptureRequest {
        priority: vec![rule("clover", "*")],
        ..capture(&payment, None)
    };
    let done = captured(&server, request).await;
    let order: Vec<String> = legs_of(&done.operation).into_iter().map(|l| l.0).collect();
    assert_eq!(order, vec!["clover", "illicado", "ingenico"]);
}

#[tokio::test]
async fn declined_leg_falls_back_to_the_next_leg() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "tok", "capture=decline").await;
    let Done { operation, payment } = captured(&server, capture(&payment, Some(5000))).await;
    assert_eq!(operation.status(), Success);
    let expected = vec![
        ("illicado".into(), 2000, Failure),
        ("ingenico".into(), 5000, Success),
    ];
    assert_eq!(legs_of(&operation), expected);
    let a = amounts(&payment);
    assert_eq!((a.total_captured, a.available_to_capture), (5000, 7000));
}

#[tokio::test]
async fn disable_fallback_leaves_a_conflict() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "tok", "capture=decline").await;
    let request = proto::CaptureRequest {
        disable_fallback: true,
        ..capture(&payment, Some(5000))
    };
    let Done { operation, payment } = captured(&server, request).await;
    assert_eq!(operation.status(), Conflict);
    let expected = vec![
        ("illicado".into(), 2000, Failure),
        ("ingenico".into(), 3000, Success),
    ];
    assert_eq!(legs_of(&operation), expected);
    assert_eq!(amounts(&payment).total_captured, 3000);
}

#[tokio::test]
async fn unavailable_partner_fails_its_leg_and_falls_back() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "tok", "capture=error").await;
    let operation = captured(&server, capture(&payment, Some(2000)))
        .await
        .operation;
    assert_eq!(operation.status(), Success);
    let tx = &operation.partner_transactions[0];
    assert_eq!(
        (tx.partner.as_str(), tx.status(), tx.partner_status.as_str()),
        ("illicado", Failure, "UNAVAILABLE")
    );
    assert_eq!(legs_of(&operation)[1], ("ingenico".into(), 2000, Success));
}
