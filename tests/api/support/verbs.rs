//! The calls as the tests speak them: each answers its domain result (the
//! proto message unwrapped) or panics naming the call. On any client of the
//! harness's types, so on an in-process server and on a deployment's
//! replicas alike; [`super::harness`] has the same verbs on a `TestServer`.

use std::time::Duration;

use payment_orchestrator::api::proto;
use tonic::Status;

use super::harness::{Payments, Sessions, new_key};

/// What a capture, refund or void came to: its operation, and the payment
/// after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub operation: proto::Operation,
    pub payment: proto::Payment,
}

impl From<proto::OperationResult> for Done {
    fn from(result: proto::OperationResult) -> Done {
        Done {
            operation: result.operation.expect("an operation"),
            payment: result.payment.expect("the payment"),
        }
    }
}

/// `timeout` as the proto's duration.
pub fn seconds(timeout: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(timeout.as_secs()).expect("a short timeout"),
        nanos: i32::try_from(timeout.subsec_nanos()).expect("nanos"),
    }
}

// Test code: the futures are awaited where they are made, or spawned on a
// concrete client (whose futures are Send).
#[allow(async_fn_in_trait)]
pub trait PaymentCalls {
    async fn captured(&mut self, request: proto::CaptureRequest) -> Done;
    async fn refunded(&mut self, request: proto::RefundRequest) -> Done;
    async fn voided(&mut self, request: proto::VoidRequest) -> Done;
    /// The payment as the service has it now.
    async fn payment(&mut self, id: &str) -> proto::Payment;
    /// The operation as the service has it now.
    async fn operation(&mut self, id: &str) -> proto::Operation;
    /// `WaitOperation`: the operation once final, or as it is after `timeout`.
    async fn waited(&mut self, id: &str, timeout: Duration) -> proto::Operation;
}

/// The message of an answer, or a panic naming the call.
pub fn answered<T>(answer: Result<tonic::Response<T>, Status>, call: &str) -> T {
    match answer {
        Ok(answer) => answer.into_inner(),
        Err(status) => panic!("{call} refused: {status:?}"),
    }
}

/// A call's result as a test reads it: [`Answer::answer`] when it must
/// succeed, [`Answer::refusal`] when it must not.
pub trait Answer<T> {
    /// The message, or a panic showing the refusal.
    fn answer(self) -> T;
    /// The refusal, or a panic showing the message.
    fn refusal(self) -> Status;
}

impl<T: std::fmt::Debug> Answer<T> for Result<tonic::Response<T>, Status> {
    fn answer(self) -> T {
        self.expect("answered").into_inner()
    }

    fn refusal(self) -> Status {
        self.expect_err("refused")
    }
}

/// Runs `calls` at once, each on a task of its own, and answers what each
/// came to, in the order given.
pub async fn concurrently<T, F>(calls: impl IntoIterator<Item = F>) -> Vec<Result<T, Status>>
where
    F: Future<Output = Result<tonic::Response<T>, Status>> + Send + 'static,
    T: Send + 'static,
{
    let tasks: Vec<_> = calls.into_iter().map(tokio::spawn).collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(
            task.await
                .expect("the call's task")
                .map(tonic::Response::into_inner),
        );
    }
    results
}

/// The answers of duplicates sent at once, and how many of them were
/// refused as REQUEST_IN_PROGRESS (ABORTED, with RetryInfo); any other
/// refusal panics.
pub fn answered_or_in_progress<T>(results: Vec<Result<T, Status>>) -> (Vec<T>, usize) {
    let mut answers = Vec::new();
    let mut in_progress = 0;
    for result in results {
        match result {
            Ok(answer) => answers.push(answer),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Aborted, "{status:?}");
                let reason = super::harness::reason(&status);
                assert_eq!(reason.as_deref(), Some("REQUEST_IN_PROGRESS"));
                let details = tonic_types::StatusExt::get_error_details(&status);
                assert!(details.retry_info().is_some());
                in_progress += 1;
            }
        }
    }
    (answers, in_progress)
}

impl Done {
    /// The operation, which must have succeeded.
    pub fn succeeded(self) -> proto::Operation {
        let operation = self.operation;
        assert_eq!(
            operation.status(),
            proto::OperationStatus::Success,
            "{operation:?}"
        );
        operation
    }
}

/// What an operation call came to, or a panic naming the call.
fn done(answer: Result<tonic::Response<proto::OperationResult>, Status>, call: &str) -> Done {
    answered(answer, call).into()
}

impl PaymentCalls for Payments {
    async fn captured(&mut self, request: proto::CaptureRequest) -> Done {
        done(self.capture(request).await, "capture")
    }

    async fn refunded(&mut self, request: proto::RefundRequest) -> Done {
        done(self.refund(request).await, "refund")
    }

    async fn voided(&mut self, request: proto::VoidRequest) -> Done {
        done(self.void(request).await, "void")
    }

    async fn payment(&mut self, id: &str) -> proto::Payment {
        let request = proto::GetPaymentRequest {
            payment_id: id.into(),
        };
        answered(self.get_payment(request).await, "GetPayment")
    }

    async fn operation(&mut self, id: &str) -> proto::Operation {
        let request = proto::GetOperationRequest {
            operation_id: id.into(),
        };
        answered(self.get_operation(request).await, "GetOperation")
    }

    async fn waited(&mut self, id: &str, timeout: Duration) -> proto::Operation {
        let request = proto::WaitOperationRequest {
            operation_id: id.into(),
            timeout: Some(seconds(timeout)),
        };
        answered(self.wait_operation(request).await, "WaitOperation")
    }
}

#[allow(async_fn_in_trait)]
pub trait SessionCalls {
    async fn opened(&mut self, request: proto::CreateSessionRequest) -> proto::Session;
    /// Submits `split` under a new key; the service's answer.
    async fn try_submit(
        &mut self,
        session: &str,
        split: Vec<proto::SplitLeg>,
    ) -> Result<proto::Payment, Status>;
    async fn submitted(&mut self, session: &str, split: Vec<proto::SplitLeg>) -> proto::Payment;
    /// Cancels under a new key; the service's answer.
    async fn try_cancel(&mut self, session: &str, reason: &str) -> Result<proto::Session, Status>;
    /// The session as the service has it now.
    async fn session(&mut self, id: &str) -> proto::Session;
}

impl SessionCalls for Sessions {
    async fn opened(&mut self, request: proto::CreateSessionRequest) -> proto::Session {
        answered(self.create_session(request).await, "CreateSession")
    }

    async fn try_submit(
        &mut self,
        session: &str,
        split: Vec<proto::SplitLeg>,
    ) -> Result<proto::Payment, Status> {
        self.submit_session(proto::SubmitSessionRequest {
            session_id: session.into(),
            idempotency_key: new_key(),
            split,
        })
        .await
        .map(tonic::Response::into_inner)
    }

    async fn submitted(&mut self, session: &str, split: Vec<proto::SplitLeg>) -> proto::Payment {
        self.try_submit(session, split).await.expect("submitted")
    }

    async fn try_cancel(&mut self, session: &str, reason: &str) -> Result<proto::Session, Status> {
        self.cancel_session(proto::CancelSessionRequest {
            session_id: session.into(),
            idempotency_key: new_key(),
            reason: reason.into(),
        })
        .await
        .map(tonic::Response::into_inner)
    }

    async fn session(&mut self, id: &str) -> proto::Session {
        let request = proto::GetSessionRequest {
            session_id: id.into(),
        };
        answered(self.get_session(request).await, "GetSession")
    }
}
