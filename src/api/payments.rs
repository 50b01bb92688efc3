//! `PaymentService`: payments, their captures, refunds and voids, and their
//! operations (read, listed, waited on).

pub(super) mod convert;

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Detached, auth::merchant, error, proto, views, violations};
use crate::{
    domain::{
        operation::{Operation, OperationKind},
        payment::Payment,
    },
    payments::{Payments, Viewer},
};

#[derive(Debug, Clone)]
pub struct PaymentService {
    payments: Arc<Payments>,
    detached: Detached,
}

impl PaymentService {
    /// Its mutating calls run as `detached` work.
    pub fn new(payments: Arc<Payments>, detached: Detached) -> Self {
        PaymentService { payments, detached }
    }

    async fn operate(
        &self,
        merchant: &str,
        kind: OperationKind,
        fields: convert::OperationFields,
    ) -> Result<Response<proto::OperationResult>, Status> {
        let validate_only = fields.validate_only;
        let command = convert::operation(kind, fields, self.payments.partners())?;
        tracing::Span::current().record(
            "payment_id",
            tracing::field::display(command.command.payment_id),
        );
        let (payments, merchant) = (self.payments.clone(), merchant.to_owned());
        let result = if validate_only {
            error::answer(payments.dry_run(&merchant, command)).await?
        } else {
            self.detached
                .run(async move { payments.operate(&merchant, command).await })
                .await?
        };
        tracing::Span::current()
            .record("operation_id", tracing::field::display(result.operation.id));
        Ok(Response::new(views::operation_result(&result)))
    }
}

#[tonic::async_trait]
impl proto::payment_service_server::PaymentService for PaymentService {
    async fn get_payment(
        &self,
        request: Request<proto::GetPaymentRequest>,
    ) -> Result<Response<proto::Payment>, Status> {
        let merchant = merchant(&request)?;
        let id = violations::parse_id("payment_id", &request.get_ref().payment_id)?;
        tracing::Span::current().record("payment_id", tracing::field::display(id));
        let payment = error::answer(self.payments.payment(&merchant, id)).await?;
        Ok(Response::new(views::payment(&payment)))
    }

    async fn list_payments(
        &self,
        request: Request<proto::ListPaymentsRequest>,
    ) -> Result<Response<proto::ListPaymentsResponse>, Status> {
        let merchant = merchant(&request)?;
        let query = convert::list_payments(request.into_inner())?;
        let page = error::answer(self.payments.list_payments(&merchant, query)).await?;
        Ok(Response::new(convert::payment_page(&page)))
    }

    async fn list_operations(
        &self,
        request: Request<proto::ListOperationsRequest>,
    ) -> Result<Response<proto::ListOperationsResponse>, Status> {
        let merchant = merchant(&request)?;
        let query = convert::list_operations(request.into_inner())?;
        let viewer = Viewer::Merchant(&merchant);
        let page = error::answer(self.payments.list_operations(viewer, query)).await?;
        Ok(Response::new(convert::operation_page(&page)))
    }

    async fn capture(
        &self,
        request: Request<proto::CaptureRequest>,
    ) -> Result<Response<proto::OperationResult>, Status> {
        let merchant = merchant(&request)?;
        self.operate(
            &merchant,
            OperationKind::Capture,
            request.into_inner().into(),
        )
        .await
    }

    async fn refund(
        &self,
        request: Request<proto::RefundRequest>,
    ) -> Result<Response<proto::OperationResult>, Status> {
        let merchant = merchant(&request)?;
        self.operate(
            &merchant,
            OperationKind::Refund,
            request.into_inner().into(),
        )
        .await
    }

    async fn void(
        &self,
        request: Request<proto::VoidRequest>,
    ) -> Result<Response<proto::OperationResult>, Status> {
        let merchant = merchant(&request)?;
        self.operate(&merchant, OperationKind::Void, request.into_inner().into())
            .await
    }

    async fn get_operation(
        &self,
        request: Request<proto::GetOperationRequest>,
    ) -> Result<Response<proto::Operation>, Status> {
        let merchant = merchant(&request)?;
        let id = violations::parse_id("operation_id", &request.get_ref().operation_id)?;
        tracing::Span::current().record("operation_id", tracing::field::display(id));
        let (payment, operation) = error::answer(self.payments.operation(&merchant, id)).await?;
        Ok(operation_of(&payment, &operation))
    }

    async fn wait_operation(
        &self,
        request: Request<proto::WaitOperationRequest>,
    ) -> Result<Response<proto::Operation>, Status> {
        let merchant = merchant(&request)?;
        let (id, timeout) = convert::wait(request.get_ref())?;
        let (payment, operation) =
            error::answer(self.payments.wait_operation(&merchant, id, timeout)).await?;
        Ok(operation_of(&payment, &operation))
    }
}

pub(super) fn operation_of(payment: &Payment, operation: &Operation) -> Response<proto::Operation> {
    Response::new(views::operation_proto(payment, operation))
}
