//! Authentication, tenancy, ids, health and reflection.

use payment_orchestrator::api::proto;
use tonic::Code;

use super::support::harness::*;

#[tokio::test]
async fn missing_or_wrong_api_key_is_unauthenticated() {
    let server = TestServer::start().await;
    for key in [None, Some("sk_wrong"), Some("")] {
        let error = server
            .sessions_as(key)
            .create_session(create_request(100, proto::CaptureMode::Manual))
            .await
            .refusal();
        assert_eq!(error.code(), Code::Unauthenticated, "key {key:?}");
        let error = server
            .payments_as(key)
            .get_payment(proto::GetPaymentRequest {
                payment_id: new_key(),
            })
            .await
            .refusal();
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

    assert_eq!(payment_now(&server, &payment.id).await, payment);
    let status = session_status(&server, &session.id).await;
    assert_eq!(status, proto::SessionStatus::Open);
}

#[tokio::test]
async fn malformed_ids_are_invalid_and_unknown_ids_not_found() {
    let server = TestServer::start().await;
    let mut payments = server.payments();
    let payment = |payment_id: String| proto::GetPaymentRequest { payment_id };
    let malformed = payments.get_payment(payment("pay_123".into())).await;
    assert_eq!(malformed.refusal().code(), Code::InvalidArgument);
    let unknown = payments.get_payment(payment(new_key())).await;
    assert_eq!(unknown.refusal().code(), Code::NotFound);
    let operation_id = new_key();
    let unknown = payments
        .get_operation(proto::GetOperationRequest { operation_id })
        .await;
    assert_eq!(unknown.refusal().code(), Code::NotFound);
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
            .answer();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
}

fn with_id<T>(id: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().unwrap());
    request
}

/// Every error carries an ErrorInfo with a stable reason (the proto's
/// `ErrorReason`) and a RequestInfo naming the call's request id.
#[tokio::test]
async fn every_error_carries_error_info_and_the_request_id() {
    use payment_orchestrator::api::proto::ErrorReason;
    use tonic_types::StatusExt;
    let server = TestServer::start().await;
    let unknown = proto::GetPaymentRequest {
        payment_id: uuid::Uuid::now_v7().to_string(),
    };
    let cases: Vec<(tonic::Status, ErrorReason)> = vec![
        (
            server
                .payments()
                .get_payment(with_id("req-not-found", unknown.clone()))
                .await
                .refusal(),
            ErrorReason::NotFound,
        ),
        (
            server
                .payments_as(None)
                .get_payment(with_id("req-unauthenticated", unknown.clone()))
                .await
                .refusal(),
            ErrorReason::ApiKeyInvalid,
        ),
        (
            server
                .admin_as(DEMO_KEY)
                .list_failed_webhooks(with_id(
                    "req-permission-denied",
                    proto::ListFailedWebhooksRequest::default(),
                ))
                .await
                .refusal(),
            ErrorReason::PermissionDenied,
        ),
        (
            server
                .payments()
                .get_payment(with_id(
                    "req-invalid-argument",
                    proto::GetPaymentRequest {
                        payment_id: "nope".into(),
                    },
                ))
                .await
                .refusal(),
            ErrorReason::RequestInvalid,
        ),
    ];
    for (status, reason) in cases {
        let details = status.get_error_details();
        let info = details.error_info().unwrap_or_else(|| panic!("{status:?}"));
        assert_eq!(info.reason, reason.as_str_name(), "{status:?}");
        assert_eq!(info.domain, "payment-orchestrator");
        let request = details.request_info().expect("a RequestInfo");
        assert!(request.request_id.starts_with("req-"), "{request:?}");
    }
}
