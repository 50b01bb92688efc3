//! Stored instruments: a leg reuses an earlier payment's instrument
//! (`parent_payment_id`), sent to the partner as a merchant-initiated
//! payment; partner transactions show the reusable instrument the partner
//! answered with, never the submitted token.

use payment_orchestrator::{api::proto, domain::operation::OperationKind};
use serde_json::json;
use tonic::Code;

use super::support::{harness::*, simulator::Partners};

/// A leg of `amount` at `partner`/`method` reusing `parent`'s instrument.
fn reusing(partner: &str, method: &str, amount: i64, parent: &proto::Payment) -> proto::SplitLeg {
    proto::SplitLeg {
        parent_payment_id: parent.id.clone(),
        ..leg(partner, method, amount, "")
    }
}

/// The partner token of the payment's authorization at `partner`.
fn stored_at(payment: &proto::Payment, partner: &str) -> String {
    let authorization = payment.authorization.as_ref().expect("authorization");
    authorization
        .partner_transactions
        .iter()
        .find(|tx| tx.partner == partner)
        .map(|tx| tx.partner_token.clone())
        .expect("a leg at the partner")
}

/// The first field a refusal names.
fn field_of(status: &tonic::Status) -> String {
    violations(status)
        .into_iter()
        .next()
        .map(|(field, _)| field)
        .unwrap_or_default()
}

#[tokio::test]
async fn a_sandbox_card_is_reused_by_a_later_payment_of_the_merchant_without_a_token() {
    let server = TestServer::start().await;
    let first = card_and_gift(&server, "tok_visa_4242", "tok_gift").await;
    let stored = stored_at(&first, "ingenico");
    assert!(stored.starts_with("card_"), "{stored}");
    assert!(
        !stored.contains("tok_visa_4242"),
        "the partner token is the partner's own, not the submitted one"
    );

    // A second payment on the stored card: no token given.
    let second = authorized(
        &server,
        vec![reusing("ingenico", "creditcard", 3000, &first)],
    )
    .await;
    let received = server.sandbox("ingenico").received();
    let authorization = received
        .iter()
        .rfind(|r| r.kind == OperationKind::Authorization)
        .expect("an authorization");
    assert_eq!(authorization.instrument.as_deref(), Some(stored.as_str()));
    assert_eq!(authorization.amount.minor(), 3000);
    let done = captured(&server, capture(&second, None)).await;
    assert_eq!(legs_of(&done.operation), succeeded(&[("ingenico", 3000)]));

    // The parent named by its authorization's transaction: the same card.
    let gift_tx = first
        .authorization
        .as_ref()
        .unwrap()
        .partner_transactions
        .iter()
        .find(|tx| tx.partner == "illicado")
        .unwrap()
        .id
        .clone();
    let mut by_transaction = reusing("illicado", "giftcard", 500, &first);
    by_transaction.parent_partner_transaction_id = gift_tx.clone();
    authorized(&server, vec![by_transaction]).await;

    // Another merchant cannot reuse it, nor learn that the parent exists.
    let mut other = server.sessions_as(Some(OTHER_KEY));
    let session = other
        .opened(create_request(3000, proto::CaptureMode::Manual))
        .await;
    let refused = other
        .try_submit(
            &session.id,
            vec![reusing("ingenico", "creditcard", 3000, &first)],
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    // Nor submit the stored card as a token of its own.
    let refused = other
        .try_submit(&session.id, vec![card(3000, &stored)])
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), field_of(&refused)),
        (Code::InvalidArgument, "split[0].payment_token".into())
    );

    // A parent without such a leg, or a leg of another kind, is bad input.
    let session = open_session(&server, 3000, proto::CaptureMode::Manual).await;
    for (leg, field) in [
        (
            reusing("illicado", "giftcard", 3000, &second),
            "split[0].parent_payment_id",
        ),
        (
            proto::SplitLeg {
                parent_partner_transaction_id: gift_tx,
                ..reusing("ingenico", "creditcard", 3000, &first)
            },
            "split[0].parent_partner_transaction_id",
        ),
        (
            proto::SplitLeg {
                payment_token: "tok".into(),
                ..reusing("ingenico", "creditcard", 3000, &first)
            },
            "split[0].payment_token",
        ),
    ] {
        let refused = submit(&server, &session.id, vec![leg]).await.unwrap_err();
        assert_eq!(
            (refused.code(), field_of(&refused)),
            (Code::InvalidArgument, field.to_owned())
        );
    }
}

#[tokio::test]
async fn a_wepay_card_is_reused_by_its_id_and_a_walley_order_is_not_reusable() {
    let (partners, server) = Partners::serving().await;
    let (card, first) = partners.wepay_payment(&server, 4000, json!({})).await;
    assert_eq!(
        stored_at(&first, "wepay"),
        "",
        "WePay answers no instrument of its own"
    );

    let second = authorized_in(
        &server,
        "EUR",
        vec![reusing("wepay", "creditcard", 1500, &first)],
    )
    .await;
    let creates = partners.wepay.bodies("/checkout/create").await;
    assert_eq!(creates.len(), 2);
    let sent: serde_json::Value = serde_json::from_str(&creates[1]).expect("json");
    assert_eq!(
        sent["payment_method"]["credit_card"]["id"].to_string(),
        card
    );
    assert_eq!(amounts(&second).total_authorized, 1500);

    // A Walley order backs one payment: no merchant-initiated reuse.
    let (_, walley_payment) = partners.walley_payment(&server, 2000, json!({})).await;
    let session = open_session_in(&server, 2000, "EUR").await;
    let refused = submit(
        &server,
        &session.id,
        vec![reusing("walley", "invoice", 2000, &walley_payment)],
    )
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let (field, description) = violations(&refused).remove(0);
    assert_eq!(field, "split[0].parent_payment_id");
    assert!(description.contains("walley"), "{description}");
}
