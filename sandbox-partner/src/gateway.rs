//! The sandbox partner served over `PartnerGatewayService`: each partner
//! name gets its own in-process [`Sandbox`] (the service's own, with its
//! ledger), and `SandboxService` shows those ledgers and prepares settlement
//! discrepancies. Several orchestrator replicas pointed at one gateway share
//! one partner ledger.

use std::{collections::BTreeMap, sync::Arc};

use payment_orchestrator::{
    domain::{
        items::ItemLine,
        money::{Amount, Currency},
        operation::OperationKind,
        payment::PaymentToken,
        settlement::{Control, Day, EntryKind, Line, SettlementEntry, SettlementReport, VatAmount},
    },
    partners::{
        Lookup, Partner, PartnerAnswer, PartnerError, PartnerRequest,
        sandbox::{Discrepancy, Sandbox},
    },
};
use tonic::{Request, Response, Status};

use crate::proto::{
    self, partner_gateway_service_server::PartnerGatewayService,
    sandbox_service_server::SandboxService,
};

/// Serves sandbox partners over `PartnerGatewayService` and their ledgers
/// over `SandboxService`. A partner name it has not seen gets a fresh sandbox.
#[derive(Debug, Clone, Default)]
pub struct Gateway {
    sandboxes: Arc<std::sync::Mutex<BTreeMap<String, Sandbox>>>,
}

impl Gateway {
    pub fn new() -> Self {
        Gateway::default()
    }

    pub fn sandbox(&self, partner: &str) -> Sandbox {
        let mut sandboxes = self.sandboxes.lock().unwrap_or_else(|p| p.into_inner());
        sandboxes
            .entry(partner.to_owned())
            .or_insert_with(|| Sandbox::new(partner))
            .clone()
    }

    pub fn gateway_service(
        &self,
    ) -> proto::partner_gateway_service_server::PartnerGatewayServiceServer<Gateway> {
        proto::partner_gateway_service_server::PartnerGatewayServiceServer::new(self.clone())
    }

    pub fn sandbox_service(&self) -> proto::sandbox_service_server::SandboxServiceServer<Gateway> {
        proto::sandbox_service_server::SandboxServiceServer::new(self.clone())
    }

    async fn execute(
        &self,
        kind: OperationKind,
        operation: Option<proto::PartnerOperation>,
    ) -> Result<Response<proto::PartnerOperationResponse>, Status> {
        let operation =
            operation.ok_or_else(|| Status::invalid_argument("operation is required"))?;
        let sandbox = self.sandbox(&operation.partner);
        let request = request_of(kind, operation)?;
        Ok(Response::new(response_of(sandbox.send(&request).await)))
    }
}

#[tonic::async_trait]
impl PartnerGatewayService for Gateway {
    async fn list_settlements(
        &self,
        request: Request<proto::ListSettlementsRequest>,
    ) -> Result<Response<proto::ListSettlementsResponse>, Status> {
        let request = request.into_inner();
        let since: Day = request
            .since
            .parse()
            .map_err(|_| Status::invalid_argument("since must be YYYY-MM-DD"))?;
        let reports = self
            .sandbox(&request.partner)
            .settlements(since)
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        Ok(Response::new(proto::ListSettlementsResponse {
            settlements: reports
                .into_iter()
                .filter_map(Result::ok)
                .map(|r| proto::SettlementSummary {
                    reference: r.reference,
                    payout_reference: r.payout_reference,
                    date: r.date.to_string(),
                    currency: r.currency.code().to_owned(),
                    fees: r.fees.minor(),
                    transactions: r
                        .control
                        .count
                        .and_then(|count| i64::try_from(count).ok())
                        .unwrap_or(i64::MAX),
                })
                .collect(),
        }))
    }

    async fn list_settlement_lines(
        &self,
        request: Request<proto::ListSettlementLinesRequest>,
    ) -> Result<Response<proto::ListSettlementLinesResponse>, Status> {
        let request = request.into_inner();
        // The sandbox finds a settlement by its reference alone.
        let report = SettlementReport {
            reference: request.reference,
            payout_reference: String::new(),
            date: Day::from_days(0),
            currency: Currency::parse("EUR").map_err(|_| Status::internal("no EUR"))?,
            fees: Amount::ZERO,
            control: Control::default(),
        };
        let page = self
            .sandbox(&request.partner)
            .settlement_page(&report, request.page, request.per_page)
            .await
            .map_err(|_| Status::not_found("no such settlement"))?;
        Ok(Response::new(proto::ListSettlementLinesResponse {
            lines: page
                .lines
                .iter()
                .filter_map(Line::entry)
                .map(line_proto)
                .collect(),
            total: page
                .total
                .and_then(|total| i64::try_from(total).ok())
                .unwrap_or(i64::MAX),
            pages: page.pages.unwrap_or(1),
        }))
    }

    async fn authorize(
        &self,
        request: Request<proto::AuthorizeRequest>,
    ) -> Result<Response<proto::PartnerOperationResponse>, Status> {
        self.execute(OperationKind::Authorization, request.into_inner().operation)
            .await
    }

    async fn capture(
        &self,
        request: Request<proto::CaptureRequest>,
    ) -> Result<Response<proto::PartnerOperationResponse>, Status> {
        self.execute(OperationKind::Capture, request.into_inner().operation)
            .await
    }

    async fn refund(
        &self,
        request: Request<proto::RefundRequest>,
    ) -> Result<Response<proto::PartnerOperationResponse>, Status> {
        self.execute(OperationKind::Refund, request.into_inner().operation)
            .await
    }

    async fn void(
        &self,
        request: Request<proto::VoidRequest>,
    ) -> Result<Response<proto::PartnerOperationResponse>, Status> {
        self.execute(OperationKind::Void, request.into_inner().operation)
            .await
    }

    async fn lookup_operation(
        &self,
        request: Request<proto::LookupOperationRequest>,
    ) -> Result<Response<proto::LookupOperationResponse>, Status> {
        let request = request.into_inner();
        let sandbox = self.sandbox(&request.partner);
        let kind = match request.kind() {
            proto::PartnerOperationKind::Authorize => OperationKind::Authorization,
            proto::PartnerOperationKind::Capture => OperationKind::Capture,
            proto::PartnerOperationKind::Refund => OperationKind::Refund,
            proto::PartnerOperationKind::Void => OperationKind::Void,
            proto::PartnerOperationKind::Unspecified => {
                return Err(Status::invalid_argument("kind is required"));
            }
        };
        let mut operation = request
            .operation
            .ok_or_else(|| Status::invalid_argument("operation is required"))?;
        operation.idempotency_key = request.idempotency_key;
        let looked_up = request_of(kind, operation)?;
        let reference = Some(request.reference).filter(|r| !r.is_empty());
        let lookup = sandbox.lookup(&looked_up, reference.as_deref()).await;
        let response = match lookup {
            Ok(Lookup::Found(result)) => proto::LookupOperationResponse {
                found: true,
                result: Some(response_of(result)),
            },
            Ok(Lookup::NotFound) => proto::LookupOperationResponse::default(),
            Err(error) => proto::LookupOperationResponse {
                found: true,
                result: Some(response_of(Err(error))),
            },
        };
        Ok(Response::new(response))
    }
}

#[tonic::async_trait]
impl SandboxService for Gateway {
    async fn prepare_settlement(
        &self,
        request: Request<proto::PrepareSettlementRequest>,
    ) -> Result<Response<proto::PrepareSettlementResponse>, Status> {
        let request = request.into_inner();
        let sandbox = self.sandbox(&request.partner);
        for key in request.drop {
            sandbox.prepare(Discrepancy::Drop(key));
        }
        for (key, minor) in request.alter {
            let amount = Amount::from_minor(minor)
                .map_err(|_| Status::invalid_argument("alter: amounts are positive"))?;
            sandbox.prepare(Discrepancy::Alter(key, amount));
        }
        for line in request.unknown {
            let entry = entry_of(line)
                .ok_or_else(|| Status::invalid_argument("unknown: a line that does not read"))?;
            sandbox.prepare(Discrepancy::Unknown(entry));
        }
        Ok(Response::new(proto::PrepareSettlementResponse {}))
    }

    async fn get_ledger(
        &self,
        request: Request<proto::GetLedgerRequest>,
    ) -> Result<Response<proto::GetLedgerResponse>, Status> {
        let sandbox = self.sandbox(&request.get_ref().partner);
        Ok(Response::new(proto::GetLedgerResponse {
            received: sandbox
                .received()
                .into_iter()
                .map(|r| proto::ReceivedRequest {
                    kind: kind_name(r.kind).to_owned(),
                    idempotency_key: r.idempotency_key,
                    amount: r.amount.minor(),
                })
                .collect(),
            authorizations: sandbox
                .authorizations()
                .into_iter()
                .map(|(reference, t)| proto::AuthorizationTotals {
                    reference,
                    authorized: t.authorized,
                    captured: t.captured,
                    refunded: t.refunded,
                    voided: t.voided,
                })
                .collect(),
        }))
    }
}

/// A received operation as the sandbox's request.
fn request_of(
    kind: OperationKind,
    operation: proto::PartnerOperation,
) -> Result<PartnerRequest, Status> {
    let amount = |minor: i64| {
        Amount::from_minor(minor)
            .map_err(|_| Status::invalid_argument("amounts must not be negative"))
    };
    let items = operation
        .items
        .into_iter()
        .map(|line| {
            Ok(ItemLine {
                sku_reference: line.sku_reference,
                name: line.name,
                quantity: line.quantity,
                unit_price: amount(line.unit_price)?,
                tax_rate: line
                    .tax_rate
                    .parse()
                    .map_err(|_| Status::invalid_argument("tax_rate must be a decimal"))?,
                discount_amount: amount(line.discount_amount)?,
                net_amount: amount(line.net_amount)?,
                tax_amount: amount(line.tax_amount)?,
            })
        })
        .collect::<Result<_, Status>>()?;
    Ok(PartnerRequest {
        kind,
        idempotency_key: operation.idempotency_key,
        amount: amount(operation.amount)?,
        currency: Currency::parse(&operation.currency)
            .map_err(|_| Status::invalid_argument("unknown currency"))?,
        method: operation.method,
        token: PaymentToken::new(operation.payment_token),
        authorization_reference: Some(operation.authorization_reference).filter(|r| !r.is_empty()),
        order_reference: operation.order_reference,
        merchant_reference: operation.merchant_reference,
        reason: operation.reason,
        items,
        refunded_before: amount(operation.refunded_before)?,
    })
}

fn response_of(result: Result<PartnerAnswer, PartnerError>) -> proto::PartnerOperationResponse {
    use proto::PartnerOutcome as O;
    let (outcome, reference, partner_status, description) = match result {
        Ok(a) if a.settled => (O::Succeeded, a.reference, a.partner_status, a.description),
        Ok(a) => (O::Pending, a.reference, a.partner_status, a.description),
        Err(PartnerError::Declined { code, description }) => {
            (O::Declined, String::new(), code, description)
        }
        Err(PartnerError::Unavailable { description }) => {
            (O::Unavailable, String::new(), String::new(), description)
        }
        Err(
            PartnerError::Unknown { description } | PartnerError::Contradiction { description },
        ) => (O::Unknown, String::new(), String::new(), description),
    };
    proto::PartnerOperationResponse {
        outcome: outcome.into(),
        reference,
        partner_status,
        description,
    }
}

fn kind_name(kind: OperationKind) -> &'static str {
    match kind {
        OperationKind::Authorization => "authorize",
        OperationKind::Capture => "capture",
        OperationKind::Refund => "refund",
        OperationKind::Void => "void",
    }
}

/// A settlement line on the wire.
fn line_proto(entry: &SettlementEntry) -> proto::SettlementLine {
    proto::SettlementLine {
        // The gateway carries captures and refunds, amounts positive.
        kind: match entry.kind {
            EntryKind::Capture => proto::SettlementLineKind::Capture,
            EntryKind::Refund => proto::SettlementLineKind::Refund,
            _ => proto::SettlementLineKind::Unspecified,
        }
        .into(),
        amount: entry.magnitude().minor(),
        currency: entry.currency.code().to_owned(),
        order_reference: entry.order_reference.clone(),
        partner_reference: entry.partner_reference.clone(),
        action_reference: entry.action_reference.clone(),
        transaction_date: entry.transaction_date.to_string(),
        vat: entry
            .vat
            .iter()
            .map(|vat| proto::VatAmount {
                rate: vat.rate.normalize().to_string(),
                amount: vat.amount.minor(),
            })
            .collect(),
    }
}

/// A settlement line from the wire; `None` if it does not read.
fn entry_of(line: proto::SettlementLine) -> Option<SettlementEntry> {
    let (kind, sign) = match line.kind() {
        proto::SettlementLineKind::Capture => (EntryKind::Capture, 1),
        proto::SettlementLineKind::Refund => (EntryKind::Refund, -1),
        proto::SettlementLineKind::Unspecified => return None,
    };
    Some(SettlementEntry {
        kind,
        amount: Amount::from_minor(line.amount).ok()?.minor() * sign,
        currency: Currency::parse(&line.currency).ok()?,
        order_reference: line.order_reference,
        partner_reference: line.partner_reference,
        action_reference: line.action_reference,
        transaction_date: line.transaction_date.parse().ok()?,
        vat: line
            .vat
            .into_iter()
            .map(|vat| {
                Some(VatAmount {
                    rate: vat.rate.parse().ok()?,
                    amount: Amount::from_minor(vat.amount).ok()?,
                })
            })
            .collect::<Option<_>>()?,
    })
}
