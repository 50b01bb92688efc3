//! Priority routing: the defaults per operation and custom lists with
//! wildcards.

use payment_orchestrator::api::proto::{self, OperationStatus::Success};

use super::support::harness::*;

#[tokio::test]
async fn capture_takes_gift_cards_first_by_default() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "tok", "tok").await;
    let result = server
        .payments()
        .capture(capture(&payment, Some(2500)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        legs_of(&result.operation.unwrap()),
        vec![
            ("illicado".into(), 2000, Success),
            ("ingenico".into(), 500, Success)
        ]
    );
}

#[tokio::test]
async fn refund_gives_card_money_back_first_by_default() {
    let server = TestServer::start().await;
    let mut payments = server.payments();
    let payment = card_and_gift(&server, "tok", "tok").await;
    payments.capture(capture(&payment, None)).await.unwrap();
    let result = payments
        .refund(refund(&payment, Some(10500)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        legs_of(&result.operation.unwrap()),
        vec![
            ("ingenico".into(), 10000, Success),
            ("illicado".into(), 500, Success)
        ]
    );
}

#[tokio::test]
async fn void_releases_card_holds_first_by_default() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "tok", "tok").await;
    let result = server
        .payments()
        .void(void(&payment, Some(10500)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        legs_of(&result.operation.unwrap()),
        vec![
            ("ingenico".into(), 10000, Success),
            ("illicado".into(), 500, Success)
        ]
    );
}

#[tokio::test]
async fn catch_all_before_a_specific_rule_puts_that_partner_last() {
    let server = TestServer::start().await;
    // Split order: illicado, ingenico, clover.
    let payment = authorized(
        &server,
        vec![
            gift(3000, "tok"),
            card(5000, "tok"),
            leg("clover", "giftcard", 4000, "tok"),
        ],
    )
    .await;
    let mut request = capture(&payment, Some(10000));
    request.priority = vec![
        rule("*", "creditcard"),
        rule("*", "*"),
        rule("illicado", "*"),
    ];
    let result = server
        .payments()
        .capture(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        legs_of(&result.operation.unwrap()),
        vec![
            ("ingenico".into(), 5000, Success),
            ("clover".into(), 4000, Success),
            ("illicado".into(), 1000, Success),
        ]
    );
}

#[tokio::test]
async fn legs_no_rule_matches_come_last_in_split_order() {
    let server = TestServer::start().await;
    let payment = authorized(
        &server,
        vec![
            gift(3000, "tok"),
            card(5000, "tok"),
            leg("clover", "giftcard", 4000, "tok"),
        ],
    )
    .await;
    let mut request = capture(&payment, None);
    request.priority = vec![rule("clover", "*")];
    let result = server
        .payments()
        .capture(request)
        .await
        .unwrap()
        .into_inner();
    let order: Vec<String> = legs_of(&result.operation.unwrap())
        .into_iter()
        .map(|l| l.0)
        .collect();
    assert_eq!(order, vec!["clover", "illicado", "ingenico"]);
}

#[tokio::test]
async fn declined_leg_falls_back_to_the_next_leg() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "tok", "capture=decline").await;
    let result = server
        .payments()
        .capture(capture(&payment, Some(5000)))
        .await
        .unwrap()
        .into_inner();
    let operation = result.operation.unwrap();
    assert_eq!(operation.status(), Success);
    assert_eq!(
        legs_of(&operation),
        vec![
            ("illicado".into(), 2000, proto::OperationStatus::Failure),
            ("ingenico".into(), 5000, Success),
        ]
    );
    let amounts = amounts(&result.payment.unwrap());
    assert_eq!(
        (amounts.total_captured, amounts.available_to_capture),
        (5000, 7000)
    );
}

#[tokio::test]
async fn disable_fallback_leaves_a_conflict() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "tok", "capture=decline").await;
    let mut request = capture(&payment, Some(5000));
    request.disable_fallback = true;
    let result = server
        .payments()
        .capture(request)
        .await
        .unwrap()
        .into_inner();
    let operation = result.operation.unwrap();
    assert_eq!(operation.status(), proto::OperationStatus::Conflict);
    assert_eq!(
        legs_of(&operation),
        vec![
            ("illicado".into(), 2000, proto::OperationStatus::Failure),
            ("ingenico".into(), 3000, Success),
        ]
    );
    assert_eq!(amounts(&result.payment.unwrap()).total_captured, 3000);
}

#[tokio::test]
async fn unavailable_partner_fails_its_leg_and_falls_back() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "tok", "capture=error").await;
    let result = server
        .payments()
        .capture(capture(&payment, Some(2000)))
        .await
        .unwrap()
        .into_inner();
    let operation = result.operation.unwrap();
    assert_eq!(operation.status(), Success);
    let tx = &operation.partner_transactions[0];
    assert_eq!(
        (tx.partner.as_str(), tx.status(), tx.partner_status.as_str()),
        ("illicado", proto::OperationStatus::Failure, "UNAVAILABLE")
    );
    assert_eq!(legs_of(&operation)[1], ("ingenico".into(), 2000, Success));
}
