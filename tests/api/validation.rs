//! Malformed requests: every one is INVALID_ARGUMENT naming the offending
//! field, and none changes anything.

use std::collections::BTreeMap;

use payment_orchestrator::api::proto;
use tonic::Code;
use tonic_types::StatusExt;

use super::support::harness::*;

enum Call {
    Create(proto::CreateSessionRequest),
    Submit(proto::SubmitSessionRequest),
    Cancel(proto::CancelSessionRequest),
    Update(proto::UpdateSessionRequest),
    Capture(proto::CaptureRequest),
    Refund(proto::RefundRequest),
    Void(proto::VoidRequest),
}

async fn send(server: &TestServer, call: Call) -> Result<(), tonic::Status> {
    let (mut sessions, mut payments) = (server.sessions(), server.payments());
    match call {
        Call::Create(r) => sessions.create_session(r).await.map(drop),
        Call::Submit(r) => sessions.submit_session(r).await.map(drop),
        Call::Cancel(r) => sessions.cancel_session(r).await.map(drop),
        Call::Update(r) => sessions.update_session(r).await.map(drop),
        Call::Capture(r) => payments.capture(r).await.map(drop),
        Call::Refund(r) => payments.refund(r).await.map(drop),
        Call::Void(r) => payments.void(r).await.map(drop),
    }
}

#[tokio::test]
async fn malformed_requests_name_the_field_and_change_nothing() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "tok", "tok").await;
    let session = open_session(&server, 12000, proto::CaptureMode::Manual).await;
    let long = "x".repeat(300);

    let create = |change: &dyn Fn(&mut proto::CreateSessionRequest)| {
        let mut request = create_request(12000, proto::CaptureMode::Manual);
        change(&mut request);
        Call::Create(request)
    };
    let item = |quantity: i64, unit_price: i64, tax_rate: &str| proto::ItemLine {
        sku_reference: "sku-1".into(),
        name: "Socks".into(),
        quantity,
        unit_price,
        tax_rate: tax_rate.into(),
        ..Default::default()
    };
    let submit = |split: Vec<proto::SplitLeg>| {
        Call::Submit(proto::SubmitSessionRequest {
            session_id: session.id.clone(),
            idempotency_key: new_key(),
            split,
        })
    };
    let capture_with = |change: &dyn Fn(&mut proto::CaptureRequest)| {
        let mut request = capture(&payment, Some(100));
        change(&mut request);
        Call::Capture(request)
    };

    // One case a line: (what is wrong, the call, the field it names).
    macro_rules! cases {
        ($($name:literal: $call:expr => $field:literal;)*) => {
            vec![$(($name, $call, $field)),*]
        };
    }
    #[rustfmt::skip]
    let cases: Vec<(&str, Call, &str)> = cases![
        "zero amount": create(&|r| r.amount = 0) => "amount";
        "negative amount": create(&|r| r.amount = -100) => "amount";
        "unknown currency": create(&|r| r.currency = "EURO".into()) => "currency";
        "lower-case currency": create(&|r| r.currency = "eur".into()) => "currency";
        "currency without minor unit": create(&|r| r.currency = "XAU".into()) => "currency";
        "missing idempotency key": create(&|r| r.idempotency_key.clear()) => "idempotency_key";
        "oversized idempotency key": create(&|r| r.idempotency_key = "k".repeat(256)) => "idempotency_key";
        "unprintable idempotency key": create(&|r| r.idempotency_key = "a\nb".into()) => "idempotency_key";
        "missing order reference": create(&|r| r.order_reference.clear()) => "order_reference";
        "oversized order reference": create(&|r| r.order_reference = "o".repeat(300)) => "order_reference";
        "tax rate not a number": create(&|r| r.items = vec![item(1, 100, "abc")]) => "items[0].tax_rate";
        "tax rate above 100": create(&|r| r.items = vec![item(1, 100, "150")]) => "items[0].tax_rate";
        "zero quantity": create(&|r| r.items = vec![item(0, 100, "25")]) => "items[0].quantity";
        "overflowing line": create(&|r| r.items = vec![item(2, i64::MAX, "0")]) => "items[0].unit_price";
        "negative unit price": create(&|r| r.items = vec![item(1, -1, "0")]) => "items[0].unit_price";
        "expiry beyond 24 h": create(&|r| {
            r.expires_in = Some(prost_types::Duration { seconds: 25 * 3600, nanos: 0 })
        }) => "expires_in";
        "non-http webhook": create(&|r| {
            let url = "ftp://example".into();
            r.webhook = Some(proto::Webhook { url, headers: BTreeMap::new() })
        }) => "webhook.url";
        "unknown capture mode": create(&|r| r.capture_mode = 7) => "capture_mode";
        "too much metadata": create(&|r| {
            r.metadata = (0..51).map(|i| (format!("k{i}"), "v".into())).collect()
        }) => "metadata";
        "malformed session id": Call::Submit(proto::SubmitSessionRequest {
            session_id: "not-a-uuid".into(),
            idempotency_key: new_key(),
            split: vec![card(12000, "tok")],
        }) => "session_id";
        "legs not summing to the amount": submit(vec![card(10000, "tok"), gift(1000, "tok")]) => "split";
        "no legs": submit(vec![]) => "split";
        "eleven legs": submit((0..11).map(|_| card(1, "tok")).collect()) => "split";
        "unknown partner": submit(vec![leg("nobody", "creditcard", 12000, "tok")]) => "split[0].partner";
        "method the partner lacks": submit(vec![leg("ingenico", "giftcard", 12000, "tok")]) => "split[0].method";
        "zero leg amount": submit(vec![card(0, "tok"), gift(12000, "tok")]) => "split[0].amount";
        "overflowing legs": submit(vec![card(i64::MAX, "tok"), gift(i64::MAX, "tok")]) => "split";
        "unparseable sandbox scenario": submit(vec![card(12000, "capture=maybe")]) => "split[0].payment_token";
        "missing payment token": submit(vec![card(12000, "")]) => "split[0].payment_token";
        "cancel with malformed id": Call::Cancel(proto::CancelSessionRequest {
            session_id: "42".into(),
            idempotency_key: new_key(),
            reason: String::new(),
        }) => "session_id";
        "update with malformed id": Call::Update(proto::UpdateSessionRequest {
            session_id: "42".into(),
            idempotency_key: new_key(),
            amount: 100,
            ..Default::default()
        }) => "session_id";
        "update of a field that cannot change": Call::Update(proto::UpdateSessionRequest {
            session_id: session.id.clone(),
            idempotency_key: new_key(),
            update_mask: Some(prost_types::FieldMask { paths: vec!["currency".into()] }),
            ..Default::default()
        }) => "update_mask";
        "update to a zero amount": Call::Update(proto::UpdateSessionRequest {
            session_id: session.id.clone(),
            idempotency_key: new_key(),
            update_mask: Some(prost_types::FieldMask { paths: vec!["amount".into()] }),
            ..Default::default()
        }) => "amount";
        "zero capture": capture_with(&|r| r.amount = Some(0)) => "amount";
        "negative capture": capture_with(&|r| r.amount = Some(-1)) => "amount";
        "unknown partner in priority": capture_with(&|r| r.priority = vec![rule("nobody", "*")]) => "priority[0].partner";
        "empty method in priority": capture_with(&|r| r.priority = vec![rule("*", "")]) => "priority[0].method";
        "too many priority rules": capture_with(&|r| {
            r.priority = (0..21).map(|_| rule("*", "*")).collect()
        }) => "priority";
        "oversized merchant reference": capture_with(&|r| r.merchant_reference = long.clone()) => "merchant_reference";
        "malformed payment id": capture_with(&|r| r.payment_id = "pay_1".into()) => "payment_id";
        "capture without key": capture_with(&|r| r.idempotency_key.clear()) => "idempotency_key";
        "oversized refund reason": Call::Refund(proto::RefundRequest {
            reason: long.clone(),
            ..refund(&payment, Some(100))
        }) => "reason";
        "void with a bad item line": Call::Void(proto::VoidRequest {
            items: vec![item(1, 100, "-3")],
            ..void(&payment, Some(100))
        }) => "items[0].tax_rate";
        "session lines that do not add up to the amount":
            create(&|r| r.items = vec![item(1, 9000, "25")]) => "items";
        "capture lines without an amount": capture_with(&|r| {
            r.amount = None;
            r.items = vec![item(1, 100, "0")];
        }) => "amount";
        "refund lines that do not add up to the amount": Call::Refund(proto::RefundRequest {
            // 90 + 9 tax = 99, not 100
            items: vec![item(1, 90, "10")],
            ..refund(&payment, Some(100))
        }) => "items";
    ];
    assert!(cases.len() >= 25);

    let payment_before = payment_now(&server, &payment.id).await;
    let calls_before: usize = ["ingenico", "illicado", "clover"]
        .iter()
        .map(|p| server.sandbox(p).received().len())
        .sum();

    for (name, call, field) in cases {
        let status = send(&server, call).await.expect_err(name);
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        let details = status.get_error_details();
        let violations = &details
            .bad_request()
            .unwrap_or_else(|| panic!("{name}: no BadRequest"))
            .field_violations;
        assert!(
            violations.iter().any(|v| v.field == field),
            "{name}: expected a violation of {field}, got {violations:?}"
        );
    }

    let payment_after = payment_now(&server, &payment.id).await;
    assert_eq!(payment_after, payment_before);
    let calls_after: usize = ["ingenico", "illicado", "clover"]
        .iter()
        .map(|p| server.sandbox(p).received().len())
        .sum();
    assert_eq!(calls_after, calls_before);
    let session_after = server.sessions().session(&session.id).await;
    assert_eq!(session_after, session);
}

#[tokio::test]
async fn every_violation_is_reported_at_once() {
    let server = TestServer::start().await;
    let request = proto::CreateSessionRequest {
        amount: -1,
        currency: "???".into(),
        ..Default::default()
    };
    let status = server.sessions().create_session(request).await.unwrap_err();
    let fields: Vec<String> = status
        .get_error_details()
        .bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(
        fields,
        vec!["idempotency_key", "order_reference", "amount", "currency"]
    );
}

#[tokio::test]
async fn a_corrected_retry_with_the_same_key_works() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "tok", "tok").await;
    let session = open_session(&server, 12000, proto::CaptureMode::Manual).await;

    let mut bad = capture(&payment, Some(0));
    assert_eq!(
        server
            .payments()
            .capture(bad.clone())
            .await
            .refusal()
            .code(),
        Code::InvalidArgument
    );
    bad.amount = Some(100);
    server.payments().capture(bad).await.unwrap();

    // The split sum is checked against the stored session: still not stored.
    let mut submit = proto::SubmitSessionRequest {
        session_id: session.id.clone(),
        idempotency_key: new_key(),
        split: vec![card(100, "tok")],
    };
    assert_eq!(
        server
            .sessions()
            .submit_session(submit.clone())
            .await
            .refusal()
            .code(),
        Code::InvalidArgument
    );
    submit.split = vec![card(12000, "tok")];
    server.sessions().submit_session(submit).await.unwrap();
}
