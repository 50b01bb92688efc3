//! Authentication, tenancy, ids, health and reflection.

use payment_orchestrator::api::proto;
use tonic::Code;

use super::harness::*;

#[tokio::test]
async fn missing_or_wrong_api_key_is_unauthenticated() {
    let server = TestServer::start().await;
    for key in [None, Some("sk_wrong"), Some("")] {
        let error = server
            .sessions_as(key)
            .create_session(create_request(100, proto::CaptureMode::Manual))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated, "key {key:?}");
        let error = server
            .payments_as(key)
            .get_payment(proto::GetPaymentRequest {
                payment_id: new_key(),
            })
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated, "key {key:?}");
        assert!(
            !error.message().contains("sk_"),
            "the key is echoed: {}",
            error.message()
        );
    }
}

fn not_found<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) {
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn another_merchants_resources_are_not_found_and_untouched() {
    let server = TestServer::start().await;
    let session = open_session(&server, 12000, proto::CaptureMode::Manual).await;
    let payment = card_and_gift(&server, "tok", "tok").await;
    let mut sessions = server.sessions_as(Some(OTHER_KEY));
    let mut payments = server.payments_as(Some(OTHER_KEY));

    not_found(
        sessions
            .get_session(proto::GetSessionRequest {
                session_id: session.id.clone(),
            })
            .await,
    );
    not_found(
        sessions
            .submit_session(proto::SubmitSessionRequest {
                session_id: session.id.clone(),
                idempotency_key: new_key(),
                split: vec![card(12000, "tok")],
            })
            .await,
    );
    not_found(
        sessions
            .cancel_session(proto::CancelSessionRequest {
                session_id: session.id.clone(),
                idempotency_key: new_key(),
                reason: String::new(),
            })
            .await,
    );
    not_found(
        payments
            .get_payment(proto::GetPaymentRequest {
                payment_id: payment.id.clone(),
            })
            .await,
    );
    not_found(payments.capture(capture(&payment, None)).await);
    not_found(payments.refund(refund(&payment, None)).await);
    not_found(payments.void(void(&payment, None)).await);

    let mine = server
        .payments()
        .get_payment(proto::GetPaymentRequest {
            payment_id: payment.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mine, payment);
    let session = server
        .sessions()
        .get_session(proto::GetSessionRequest {
            session_id: session.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(session.status(), proto::SessionStatus::Open);
}

#[tokio::test]
async fn malformed_ids_are_invalid_and_unknown_ids_not_found() {
    let server = TestServer::start().await;
    let mut payments = server.payments();
    let error = payments
        .get_payment(proto::GetPaymentRequest {
            payment_id: "pay_123".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument);
    let error = payments
        .get_payment(proto::GetPaymentRequest {
            payment_id: new_key(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    let error = payments
        .get_operation(proto::GetOperationRequest {
            operation_id: new_key(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
}

#[tokio::test]
async fn health_answers_without_credentials() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.channel());
    for service in [
        "",
        "payment_orchestrator.v1.PaymentService",
        "payment_orchestrator.v1.SessionService",
    ] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
}
