//! Dry runs (`validate_only`): a capture, refund or void answers what it
//! would do, and nothing happens until the real call with the same key.

use payment_orchestrator::api::proto::{self, OperationStatus};
use tonic::Code;

use payment_orchestrator::partners::sandbox::AuthorizationTotals;

use super::support::harness::*;

/// What a dry run and the real call must agree on: each leg's partner,
/// method and amount, and the payment's amounts after it.
fn allocation(result: &proto::OperationResult) -> (Vec<(String, String, i64)>, proto::Amounts) {
    let operation = result.operation.as_ref().expect("an operation");
    let legs = operation
        .partner_transactions
        .iter()
        .map(|tx| (tx.partner.clone(), tx.method.clone(), tx.amount))
        .collect();
    let payment = result.payment.as_ref().expect("the payment");
    (legs, amounts(payment))
}

/// Everything the dry run must leave as it was.
#[derive(Debug, PartialEq)]
struct World {
    operations: usize,
    amounts: proto::Amounts,
    card_ledger: Vec<AuthorizationTotals>,
    gift_ledger: Vec<AuthorizationTotals>,
    webhooks: usize,
}

async fn world(
    server: &TestServer,
    payment: &proto::Payment,
    receiver: &wiremock::MockServer,
) -> World {
    // Any delivery due is made first.
    server.resolve_after(std::time::Duration::ZERO).await;
    let now = payment_now(server, &payment.id).await;
    let request = proto::ListOperationsRequest::default();
    let listed = server.payments().list_operations(request).await.answer();
    let ours = listed
        .operations
        .iter()
        .filter(|o| o.payment_id == payment.id);
    let operations = ours.count();
    World {
        operations,
        amounts: amounts(&now),
        card_ledger: ledger(server, "ingenico"),
        gift_ledger: ledger(server, "illicado"),
        webhooks: receiver.received_requests().await.unwrap_or_default().len(),
    }
}

/// Checks that the dry run of `call` changes nothing and answers the
/// allocation the real call (same key, afterwards) makes.
macro_rules! dry_run_then_real {
    ($server:expr, $payment:expr, $receiver:expr, $request:expr, $call:ident) => {{
        let mut request = $request;
        let before = world($server, $payment, $receiver).await;
        request.validate_only = true;
        let dry = $server.payments().$call(request.clone()).await.answer();
        let operation = dry.operation.as_ref().expect("an operation");
        assert_eq!(operation.status(), OperationStatus::Unspecified);
        assert!(
            operation
                .partner_transactions
                .iter()
                .all(|tx| tx.status() == OperationStatus::Unspecified),
            "{operation:#?}"
        );
        assert_eq!(
            world($server, $payment, $receiver).await,
            before,
            "a dry run changed something"
        );
        request.validate_only = false;
        let real = $server.payments().$call(request).await.answer();
        assert_eq!(allocation(&dry), allocation(&real));
        assert_eq!(
            dry.operation.as_ref().map(|o| &o.id),
            real.operation.as_ref().map(|o| &o.id),
            "the same key names the same operation"
        );
        assert_eq!(
            real.operation.as_ref().map(|o| o.status()),
            Some(OperationStatus::Success)
        );
        assert_ne!(world($server, $payment, $receiver).await, before);
        dry
    }};
}

#[tokio::test]
async fn dry_runs_of_capture_refund_and_void_answer_the_real_allocation_and_change_nothing() {
    let receiver = webhook_receiver().await;
    let server = TestServer::start().await;
    let session = open_session_with_webhook(&server, 12000, Some(receiver.uri())).await;
    let payment = submit(
        &server,
        &session.id,
        vec![card(10000, "tok"), gift(2000, "tok")],
    )
    .await
    .expect("submitted");

    // A capture spanning both legs: the gift card first, then the card.
    let capture_dry = dry_run_then_real!(
        &server,
        &payment,
        &receiver,
        capture(&payment, Some(5000)),
        capture
    );
    let (legs, after) = allocation(&capture_dry);
    assert_eq!(
        legs,
        vec![
            ("illicado".into(), "giftcard".into(), 2000),
            ("ingenico".into(), "creditcard".into(), 3000)
        ]
    );
    assert_eq!(after.total_captured, 5000);
    assert_eq!(after.available_to_capture, 7000);

    // A refund spanning both legs: card money back first.
    let refund_dry = dry_run_then_real!(
        &server,
        &payment,
        &receiver,
        refund(&payment, Some(4000)),
        refund
    );
    assert_eq!(
        allocation(&refund_dry).0,
        vec![
            ("ingenico".into(), "creditcard".into(), 3000),
            ("illicado".into(), "giftcard".into(), 1000)
        ]
    );

    // A void of what is left on the card.
    let void_dry = dry_run_then_real!(&server, &payment, &receiver, void(&payment, None), void);
    assert_eq!(
        allocation(&void_dry).0,
        vec![("ingenico".into(), "creditcard".into(), 7000)]
    );
    assert_eq!(allocation(&void_dry).1.available_to_capture, 0);
}

/// The operation a (dry) capture answers.
async fn dry_operation(server: &TestServer, request: &proto::CaptureRequest) -> proto::Operation {
    let answer = server.payments().capture(request.clone()).await;
    answer
        .expect("answered")
        .into_inner()
        .operation
        .expect("an operation")
}

/// The refusal of `request`, dry or real.
async fn refused(
    server: &TestServer,
    request: &proto::CaptureRequest,
    validate_only: bool,
) -> tonic::Status {
    let request = proto::CaptureRequest {
        validate_only,
        ..request.clone()
    };
    server.payments().capture(request).await.unwrap_err()
}

#[tokio::test]
async fn a_dry_run_refuses_exactly_as_the_real_call_and_answers_a_used_key_as_it_would() {
    let server = TestServer::start().await;
    let payment = card_and_gift(&server, "tok", "tok").await;
    // Over-asking.
    let request = capture(&payment, Some(12001));
    let dry = refused(&server, &request, true).await;
    let real = refused(&server, &request, false).await;
    assert_eq!(dry.code(), Code::FailedPrecondition);
    assert_eq!(
        (dry.code(), dry.message(), reason(&dry)),
        (real.code(), real.message(), reason(&real))
    );
    // Bad input: the same violations.
    let mut bad = capture(&payment, Some(0));
    bad.idempotency_key = String::new();
    let dry = refused(&server, &bad, true).await;
    let real = refused(&server, &bad, false).await;
    assert_eq!(dry.code(), Code::InvalidArgument);
    assert_eq!(violations(&dry), violations(&real));
    // A key already used for this capture: the operation it made; for
    // another request: refused as reused.
    let request = capture(&payment, Some(1000));
    let done = captured(&server, request.clone()).await;
    let mut again = request.clone();
    again.validate_only = true;
    assert_eq!(dry_operation(&server, &again).await, done.operation);
    // Still its stored answer once nothing is left to capture.
    voided(&server, void(&payment, None)).await;
    assert_eq!(dry_operation(&server, &again).await, done.operation);
    again.amount = Some(2000);
    let reused = server.payments().capture(again).await.unwrap_err();
    assert_eq!(reason(&reused).as_deref(), Some("IDEMPOTENCY_KEY_REUSED"));
    // A refused call's key replays the refusal, the same as the real retry.
    let too_much = capture(&payment, Some(500));
    let first = refused(&server, &too_much, false).await;
    let dry = refused(&server, &too_much, true).await;
    assert_eq!((dry.code(), reason(&dry)), (first.code(), reason(&first)));
    // Another merchant's payment is not found, dry or not.
    let mut theirs = capture(&payment, Some(1000));
    theirs.validate_only = true;
    let hidden = server
        .payments_as(Some(OTHER_KEY))
        .capture(theirs)
        .await
        .refusal();
    assert_eq!(hidden.code(), Code::NotFound);
}
