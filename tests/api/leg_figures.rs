//! What each leg holds: `Payment.split`'s per-leg figures and each partner
//! transaction's `remaining_amount`, checked against the sandbox partners'
//! own books after a partial capture, a second capture and a refund of a
//! two-leg payment.

use payment_orchestrator::{api::proto, partners::sandbox::AuthorizationTotals};

use super::support::harness::*;

/// The one authorization the partner holds in this test, as it books it.
fn partner_books(server: &TestServer, partner: &str) -> AuthorizationTotals {
    let mut books = ledger(server, partner);
    assert_eq!(books.len(), 1, "one authorization at {partner}");
    books.remove(0)
}

/// `(authorized, captured, refunded, voided, to capture, to refund, to void)`
/// as a leg of the payment shows them.
fn shown(leg: &proto::PaymentLeg) -> [i64; 7] {
    [
        leg.authorized,
        leg.captured,
        leg.refunded,
        leg.voided,
        leg.available_to_capture,
        leg.available_to_refund,
        leg.available_to_void,
    ]
}

/// The same figures worked out from the partner's books (nothing is pending
/// here, and no dispute is open).
fn expected(books: &AuthorizationTotals) -> [i64; 7] {
    let to_capture = books.authorized - books.captured - books.voided;
    [
        books.authorized,
        books.captured,
        books.refunded,
        books.voided,
        to_capture,
        books.captured - books.refunded,
        to_capture,
    ]
}

/// Each leg of the payment against its partner's books.
fn assert_legs_match_partners(server: &TestServer, payment: &proto::Payment) {
    for leg in &payment.split {
        let books = partner_books(server, &leg.partner);
        assert_eq!(shown(leg), expected(&books), "leg at {}", leg.partner);
    }
}

/// `(partner, remaining_amount)` of each transaction of an operation.
fn remaining(operation: &proto::Operation) -> Vec<(String, i64)> {
    operation
        .partner_transactions
        .iter()
        .map(|tx| (tx.partner.clone(), tx.remaining_amount))
        .collect()
}

#[tokio::test]
async fn legs_show_what_each_partner_holds_and_transactions_what_they_left() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "tok", "tok").await;
    assert_legs_match_partners(&server, &payment);
    let authorization = payment.authorization.as_ref().expect("authorization");
    assert_eq!(
        remaining(authorization),
        vec![("ingenico".into(), 10000), ("illicado".into(), 2000)],
        "an authorization leaves all of it to capture"
    );

    // 50.00 captured: the gift card's 20.00 first, then 30.00 of the card.
    let first = captured(&server, capture(&payment, Some(5000))).await;
    assert_legs_match_partners(&server, &first.payment);
    let card_after_first = {
        let books = partner_books(&server, "ingenico");
        books.authorized - books.captured
    };
    let gift_after_first = {
        let books = partner_books(&server, "illicado");
        books.authorized - books.captured
    };
    assert_eq!(
        remaining(&first.operation),
        vec![
            ("illicado".into(), gift_after_first),
            ("ingenico".into(), card_after_first)
        ]
    );

    // 10.00 more from the card, then 40.00 refunded: card first (it holds
    // 40.00 now, so the refund is all card).
    let second = card_capture(&server, &payment, 1000).await;
    let card_after_second = {
        let books = partner_books(&server, "ingenico");
        books.authorized - books.captured
    };
    assert_eq!(
        remaining(&second.operation),
        vec![("ingenico".into(), card_after_second)]
    );
    let refund = refunded(&server, refund(&payment, Some(4000))).await;
    assert_legs_match_partners(&server, &refund.payment);
    let refundable = |partner: &str| {
        let books = partner_books(&server, partner);
        books.captured - books.refunded
    };
    assert_eq!(
        remaining(&refund.operation),
        vec![("ingenico".into(), refundable("ingenico"))]
    );
    assert_eq!(refundable("illicado"), 2000);

    // Read back whole, each operation still shows what it left then, not
    // what later ones left.
    let now = payment_now(&server, &payment.id).await;
    assert_legs_match_partners(&server, &now);
    assert_eq!(remaining(&now.captures[0]), remaining(&first.operation));
    assert_eq!(remaining(&now.captures[1]), remaining(&second.operation));
    assert_eq!(remaining(&now.refunds[0]), remaining(&refund.operation));
    assert_ne!(
        card_after_first, card_after_second,
        "the second capture changed what the card had left"
    );
    // The legs add up to the payment.
    let total = |figure: fn(&proto::PaymentLeg) -> i64| now.split.iter().map(figure).sum::<i64>();
    let amounts = amounts(&now);
    assert_eq!(
        [
            total(|l| l.captured),
            total(|l| l.refunded),
            total(|l| l.available_to_capture),
            total(|l| l.available_to_refund)
        ],
        [
            amounts.total_captured,
            amounts.total_refunded,
            amounts.available_to_capture,
            amounts.available_to_refund
        ]
    );
}
