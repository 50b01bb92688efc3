//! Sessions: authorization, compensation, automatic capture, expiry and
//! cancellation.

use std::time::Duration;

use payment_orchestrator::{
    api::proto::{self, OperationStatus, PaymentState, SessionStatus, TriggeredBy},
    domain::operation::OperationKind,
};
use tonic::Code;

use super::support::harness::*;

#[tokio::test]
async fn declined_leg_voids_the_authorized_legs_and_reopens_the_session() {
    let server = TestServer::start().await;
    let split = vec![card(10000, "tok"), gift(2000, "authorize=decline")];
    let (session, payment) = submitted(&server, proto::CaptureMode::Manual, split).await;
    assert_eq!(payment.state(), PaymentState::Failed);
    let authorization = payment.authorization.clone().unwrap();
    assert_eq!(authorization.status(), OperationStatus::Failure);
    assert_eq!(
        legs_of(&authorization),
        vec![
            ("ingenico".into(), 10000, OperationStatus::Success),
            ("illicado".into(), 2000, OperationStatus::Failure),
        ]
    );
    // Compensation: the card hold is released by a SYSTEM void.
    assert_eq!(payment.voids.len(), 1);
    let compensation = &payment.voids[0];
    assert_eq!(compensation.triggered_by(), TriggeredBy::System);
    assert_eq!(compensation.status(), OperationStatus::Success);
    assert_eq!(
        legs_of(compensation),
        vec![("ingenico".into(), 10000, OperationStatus::Success)]
    );
    let card_ledger = ledger(&server, "ingenico");
    assert_eq!(
        (card_ledger[0].authorized, card_ledger[0].voided),
        (10000, 10000)
    );

    // The shopper can try again with another split: a new payment.
    let status = session_status(&server, &session.id).await;
    assert_eq!(status, SessionStatus::Open);
    let retry = submit(&server, &session.id, vec![card(12000, "tok")])
        .await
        .unwrap();
    assert_ne!(retry.id, payment.id);
    assert_eq!(retry.state(), PaymentState::Authorized);
    let status = session_status(&server, &session.id).await;
    assert_eq!(status, SessionStatus::Submitted);
}

#[tokio::test]
async fn a_leg_after_the_declined_one_is_never_sent() {
    let server = TestServer::start().await;
    let split = vec![gift(2000, "authorize=decline"), card(10000, "tok")];
    let (_, payment) = submitted(&server, proto::CaptureMode::Manual, split).await;
    let authorization = payment.authorization.unwrap();
    assert_eq!(
        authorization.partner_transactions[1].partner_status,
        "NOT_ATTEMPTED"
    );
    assert_eq!(server.sent("ingenico", OperationKind::Authorization), 0);
    assert!(payment.voids.is_empty());
}

#[tokio::test]
async fn automatic_mode_captures_the_full_amount_exactly_once() {
    let server = TestServer::start().await;
    let session = open_session(&server, 12000, proto::CaptureMode::Automatic).await;
    let request = proto::SubmitSessionRequest {
        session_id: session.id.clone(),
        idempotency_key: new_key(),
        split: vec![card(10000, "tok"), gift(2000, "tok")],
    };
    let submit = async || {
        let answer = server.sessions().submit_session(request.clone()).await;
        answer.expect("submitted").into_inner()
    };
    let payment = submit().await;
    assert_eq!(payment.state(), PaymentState::Captured);
    assert_eq!(payment.captures.len(), 1);
    let capture = &payment.captures[0];
    assert_eq!(
        (capture.triggered_by(), capture.amount, capture.status()),
        (TriggeredBy::System, 12000, OperationStatus::Success)
    );
    // A replay is the stored response, with no second capture anywhere.
    assert_eq!(submit().await, payment);
    assert_eq!(server.sent("ingenico", OperationKind::Capture), 1);
    assert_eq!(server.sent("illicado", OperationKind::Capture), 1);
}

#[tokio::test]
async fn unspecified_capture_mode_is_automatic() {
    let server = TestServer::start().await;
    let session = open_session(&server, 500, proto::CaptureMode::Unspecified).await;
    assert_eq!(session.capture_mode(), proto::CaptureMode::Automatic);
}

#[tokio::test]
async fn session_expires_at_its_deadline_and_cannot_be_submitted() {
    let server = TestServer::start().await;
    let mut request = create_request(12000, proto::CaptureMode::Manual);
    request.expires_in = Some(prost_types::Duration {
        seconds: 60,
        nanos: 0,
    });
    let session = server.sessions().opened(request).await;
    server.clock.advance(Duration::from_secs(59));
    let status = session_status(&server, &session.id).await;
    assert_eq!(status, SessionStatus::Open);
    server.clock.advance(Duration::from_secs(1));
    let status = session_status(&server, &session.id).await;
    assert_eq!(status, SessionStatus::Expired);
    let error = submit(&server, &session.id, vec![card(12000, "tok")])
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(reason(&error).as_deref(), Some("SESSION_EXPIRED"));
    assert_eq!(server.sent("ingenico", OperationKind::Authorization), 0);
}

#[tokio::test]
async fn sessions_expire_after_thirty_minutes_by_default() {
    let server = TestServer::start().await;
    let session = open_session(&server, 100, proto::CaptureMode::Manual).await;
    let created = session.created_at.unwrap();
    let expires = session.expires_at.unwrap();
    assert_eq!(expires.seconds - created.seconds, 30 * 60);
    server.clock.advance(Duration::from_secs(30 * 60));
    let status = session_status(&server, &session.id).await;
    assert_eq!(status, SessionStatus::Expired);
}

#[tokio::test]
async fn cancelled_session_cannot_be_submitted() {
    let server = TestServer::start().await;
    let session = open_session(&server, 12000, proto::CaptureMode::Manual).await;
    let cancelled = server
        .sessions()
        .try_cancel(&session.id, "shopper left")
        .await
        .unwrap();
    assert_eq!(cancelled.status(), SessionStatus::Cancelled);
    assert_eq!(cancelled.cancellation_reason, "shopper left");
    let error = submit(&server, &session.id, vec![card(12000, "tok")])
        .await
        .unwrap_err();
    assert_eq!(reason(&error).as_deref(), Some("SESSION_NOT_OPEN"));
}

#[tokio::test]
async fn submitted_session_cannot_be_cancelled() {
    let server = TestServer::start().await;
    let (session, _) = submitted(
        &server,
        proto::CaptureMode::Manual,
        vec![card(12000, "tok")],
    )
    .await;
    let error = server
        .sessions()
        .try_cancel(&session.id, "")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::FailedPrecondition);
    assert_eq!(reason(&error).as_deref(), Some("SESSION_NOT_OPEN"));
}

#[tokio::test]
async fn pending_authorization_leaves_the_payment_authorizing() {
    let server = TestServer::start().await;
    let split = vec![card(10000, "authorize=pending"), gift(2000, "tok")];
    let (session, payment) = submitted(&server, proto::CaptureMode::Automatic, split).await;
    assert_eq!(payment.state(), PaymentState::Authorizing);
    assert_eq!(
        payment.authorization.as_ref().unwrap().status(),
        OperationStatus::Pending
    );
    assert_eq!(amounts(&payment).authorize_pending, 10000);
    assert!(
        payment.captures.is_empty(),
        "no automatic capture before the authorization is final"
    );
    let status = session_status(&server, &session.id).await;
    assert_eq!(status, SessionStatus::Processing);
}

/// Sessions of an order, newest first, by status now.
async fn sessions_are_listed_by_order_reference_and_status(server: TestServer) {
    let create = |order: &str, seconds: u64| {
        let mut request = create_request(1_000, proto::CaptureMode::Manual);
        request.order_reference = order.into();
        request.expires_in = Some(prost_types::Duration {
            seconds: i64::try_from(seconds).unwrap(),
            nanos: 0,
        });
        let mut sessions = server.sessions();
        async move { sessions.opened(request).await }
    };
    let submitted = create("order-7", 3600).await;
    submit(&server, submitted.id.as_str(), vec![card(1_000, "tok")])
        .await
        .unwrap();
    server.clock.advance(Duration::from_secs(1));
    let cancelled = create("order-7", 3600).await;
    server
        .sessions()
        .try_cancel(&cancelled.id, "shopper left")
        .await
        .unwrap();
    server.clock.advance(Duration::from_secs(1));
    let expiring = create("order-7", 60).await;
    server.clock.advance(Duration::from_secs(1));
    let open = create("order-7", 3600).await;
    server.clock.advance(Duration::from_secs(1));
    let elsewhere = create("order-8", 3600).await;
    server.clock.advance(Duration::from_secs(120));

    let list = |request: proto::ListSessionsRequest| {
        let mut sessions = server.sessions();
        async move {
            let page = sessions.list_sessions(request).await.answer();
            let ids: Vec<String> = page.sessions.iter().map(|s| s.id.clone()).collect();
            (ids, page.next_page_token)
        }
    };
    let of_order = |status: SessionStatus| proto::ListSessionsRequest {
        order_reference: "order-7".into(),
        status: status.into(),
        ..Default::default()
    };
    let (all, _) = list(of_order(SessionStatus::Unspecified)).await;
    assert_eq!(
        all,
        [
            open.id.as_str(),
            expiring.id.as_str(),
            cancelled.id.as_str(),
            submitted.id.as_str()
        ],
        "newest first, only order-7"
    );
    for (status, session) in [
        (SessionStatus::Open, &open),
        (SessionStatus::Expired, &expiring),
        (SessionStatus::Cancelled, &cancelled),
        (SessionStatus::Submitted, &submitted),
    ] {
        assert_eq!(
            list(of_order(status)).await.0,
            [session.id.as_str()],
            "{status:?}"
        );
    }
    // Two per page, then the rest; another merchant sees none of them.
    let (first, token) = list(proto::ListSessionsRequest {
        page_size: 2,
        ..of_order(SessionStatus::Unspecified)
    })
    .await;
    assert_eq!(first, [open.id.as_str(), expiring.id.as_str()]);
    let (second, last) = list(proto::ListSessionsRequest {
        page_size: 2,
        page_token: token,
        ..of_order(SessionStatus::Unspecified)
    })
    .await;
    assert_eq!(second, [cancelled.id.as_str(), submitted.id.as_str()]);
    assert!(
        last.is_empty()
            || list(proto::ListSessionsRequest {
                page_size: 2,
                page_token: last,
                ..of_order(SessionStatus::Unspecified)
            })
            .await
            .0
            .is_empty()
    );
    let (every, _) = list(proto::ListSessionsRequest::default()).await;
    assert_eq!(every.len(), 5);
    assert_eq!(every[0], elsewhere.id);
    let foreign = server
        .sessions_as(Some(OTHER_KEY))
        .list_sessions(proto::ListSessionsRequest::default())
        .await
        .answer();
    assert!(foreign.sessions.is_empty());
}

#[tokio::test]
async fn sessions_are_listed_by_order_reference_and_status_in_memory() {
    sessions_are_listed_by_order_reference_and_status(TestServer::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_by_order_reference_and_status_on_redis() {
    let redis = super::support::redis_server::RedisServer::start();
    let url = redis.url();
    let server = TestServer::start_with(&["--redis-url", &url]).await;
    sessions_are_listed_by_order_reference_and_status(server).await;
}
