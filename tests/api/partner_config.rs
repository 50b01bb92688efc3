//! Partners as the configuration file declares them: what each supports
//! steers routing, whom and what it serves bounds the split, and
//! ListPaymentMethods tells a checkout what will work.

use payment_orchestrator::api::proto;
use tonic::Code;

use super::support::harness::*;

/// `acme` takes only whole captures, once, and only EUR and SEK of `demo`.
const ACME: &str = r#"
[partners.acme]
kind = "sandbox"
methods = ["creditcard", "debitcard"]
currencies = ["EUR", "SEK"]
merchants = ["demo"]
authorization_lifetime = "14d"
capabilities = { partial_capture = false, multiple_captures = false }
"#;

async fn server() -> TestServer {
    TestServer::start_configured(ACME, &[]).await
}

fn acme(amount: i64) -> proto::SplitLeg {
    leg("acme", "creditcard", amount, "tok")
}

#[tokio::test]
async fn a_partial_capture_is_routed_around_a_whole_capture_only_leg() {
    let server = server().await;
    let payment = authorized(&server, vec![acme(10000), gift(2000, "tok")]).await;
    // The card is first, but cannot take 20.00 of its 100.00: the gift card does.
    let request = proto::CaptureRequest {
        priority: vec![rule("acme", "*"), rule("*", "*")],
        ..capture(&payment, Some(2000))
    };
    let operation = captured(&server, request).await.operation;
    assert_eq!(legs_of(&operation), succeeded(&[("illicado", 2000)]));
    // What is left of the card can be captured whole.
    let operation = captured(&server, capture(&payment, Some(10000)))
        .await
        .operation;
    assert_eq!(legs_of(&operation), succeeded(&[("acme", 10000)]));
}

#[tokio::test]
async fn an_amount_no_leg_can_take_is_refused_naming_the_reason_and_changes_nothing() {
    let server = server().await;
    let payment = authorized(&server, vec![acme(10000), gift(2000, "tok")]).await;
    // 50.00: the gift card takes 20.00, the 30.00 left is part of the card.
    let request = capture(&payment, Some(5000));
    let status = server.payments().capture(request).await.refusal();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        reason(&status).as_deref(),
        Some("PARTIAL_CAPTURE_NOT_SUPPORTED")
    );
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    assert_eq!(details.error_info().unwrap().metadata["partner"], "acme");
    let after = payment_now(&server, &payment.id).await;
    assert_eq!(amounts(&after).total_captured, 0);
    assert_eq!(amounts(&after).available_to_capture, 12000);
    assert!(
        server.sandbox("illicado").received().len() == 1,
        "only the authorization"
    );

    // Whole, once: after a whole capture the card takes nothing more.
    let payment = authorized(&server, vec![acme(3000)]).await;
    captured(&server, capture(&payment, None)).await;
    let request = capture(&payment, Some(1));
    let status = server.payments().capture(request).await.refusal();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
}

#[tokio::test]
async fn a_split_names_a_partner_that_does_not_serve_the_merchant_or_the_currency() {
    let server = server().await;
    // `other` is not among acme's merchants.
    let mut other = server.sessions_as(Some(OTHER_KEY));
    let request = create_request(1000, proto::CaptureMode::Manual);
    let session = other.opened(request).await;
    let status = other
        .try_submit(&session.id, vec![acme(1000)])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        violations(&status),
        [(
            "split[0].partner".into(),
            "does not serve this merchant".into()
        )]
    );

    let session = open_session_in(&server, 1000, "JPY").await;
    let status = submit(&server, &session.id, vec![acme(1000)])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        violations(&status),
        [("split[0].partner".into(), "does not take JPY".into())]
    );
    let status = session_status(&server, &session.id).await;
    assert_eq!(status, proto::SessionStatus::Open);
}

#[tokio::test]
async fn list_payment_methods_answers_what_the_partners_offer_the_calling_merchant() {
    let server = server().await;
    let list = |key: &'static str, currency: &'static str| {
        let server = &server;
        async move {
            server
                .sessions_as(Some(key))
                .list_payment_methods(proto::ListPaymentMethodsRequest {
                    currency: currency.into(),
                })
                .await
                .answer()
                .payment_methods
        }
    };
    let names = |methods: &[proto::PaymentMethod]| -> Vec<String> {
        methods
            .iter()
            .map(|m| format!("{}:{}", m.partner, m.method))
            .collect()
    };

    let demo = list(DEMO_KEY, "").await;
    assert_eq!(
        names(&demo),
        [
            "acme:creditcard",
            "acme:debitcard",
            "clover:giftcard",
            "illicado:giftcard",
            "ingenico:creditcard"
        ]
    );
    let card = &demo[0];
    assert_eq!(card.currencies, ["EUR", "SEK"]);
    let capabilities = card.capabilities.unwrap();
    assert!(!capabilities.partial_capture && !capabilities.multiple_captures);
    assert!(capabilities.partial_refund && capabilities.partial_void);
    assert_eq!(card.authorization_lifetime.unwrap().seconds, 14 * 86_400);
    let sandbox = &demo[4];
    assert!(sandbox.currencies.is_empty(), "any currency");
    assert!(sandbox.capabilities.unwrap().partial_capture);

    // Another merchant, another currency: acme is not offered.
    assert!(
        !names(&list(OTHER_KEY, "").await)
            .iter()
            .any(|n| n.starts_with("acme"))
    );
    assert!(
        !names(&list(DEMO_KEY, "JPY").await)
            .iter()
            .any(|n| n.starts_with("acme"))
    );
    assert_eq!(list(DEMO_KEY, "SEK").await.len(), 5);

    let status = server
        .sessions()
        .list_payment_methods(proto::ListPaymentMethodsRequest {
            currency: "euro".into(),
        })
        .await
        .refusal();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn each_leg_is_voided_when_its_partners_authorization_lifetime_ends() {
    use std::time::Duration;
    const DAY: u64 = 24 * 3600;
    let server = server().await;
    // acme holds 14 days, the card partner the default 7.
    let payment = authorized(&server, vec![card(10000, "tok"), acme(2000)]).await;
    captured(&server, capture(&payment, Some(4000))).await;

    server.resolve_after(Duration::from_secs(7 * DAY)).await;
    let after_a_week = payment_now(&server, &payment.id).await;
    assert_eq!(after_a_week.voids.len(), 1, "{:?}", after_a_week.voids);
    assert_eq!(
        legs_of(&after_a_week.voids[0]),
        succeeded(&[("ingenico", 6000)])
    );
    assert_eq!(amounts(&after_a_week).available_to_capture, 2000);

    server.resolve_after(Duration::from_secs(7 * DAY)).await;
    let after_two = payment_now(&server, &payment.id).await;
    assert_eq!(after_two.voids.len(), 2);
    assert_eq!(legs_of(&after_two.voids[1]), succeeded(&[("acme", 2000)]));
    assert_eq!(amounts(&after_two).available_to_capture, 0);
    // Nothing more is due.
    server.resolve_after(Duration::from_secs(30 * DAY)).await;
    assert_eq!(payment_now(&server, &payment.id).await.voids.len(), 2);
}
