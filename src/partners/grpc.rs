//! Partners reached over gRPC through `PartnerGatewayService`
//! (`proto/payment_orchestrator/partner/v1`): the client adapter
//! [`GrpcPartner`]. The server half (a gateway in front of sandboxes) is the
//! `sandbox-partner` crate's.
//!
//! A transport failure is `Unknown`: once a request may have left, only a
//! lookup can tell whether it was executed. A gateway answers with an explicit
//! outcome (`PartnerOutcome`), mapped one to one onto the port's errors.

use std::time::Duration;

use async_trait::async_trait;
use tonic::{
    Request, Status,
    transport::{Certificate, Channel, ClientTlsConfig},
};

use super::{
    Lookup, Partner, PartnerAnswer, PartnerError, PartnerRequest, SettlementPage, SettlementReport,
};
use crate::domain::{
    items::ItemLine,
    money::{Amount, Currency},
    operation::OperationKind,
    settlement::{Control, Day, EntryKind, Line, SettlementEntry, UnreadableLine, VatAmount},
};

/// Generated client of `proto/payment_orchestrator/partner/v1/gateway.proto`.
pub mod proto {
    #![allow(missing_docs, clippy::all, missing_debug_implementations)]
    tonic::include_proto!("payment_orchestrator.partner.v1");
}

use proto::partner_gateway_service_client::PartnerGatewayServiceClient;

/// A partner behind a `PartnerGatewayService`.
#[derive(Debug, Clone)]
pub struct GrpcPartner {
    partner: String,
    client: PartnerGatewayServiceClient<Channel>,
}

/// Why a gateway cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("not a valid URL")]
    Url(#[source] tonic::codegen::http::uri::InvalidUri),
    #[error("TLS settings refused")]
    Tls(#[source] tonic::transport::Error),
}

impl GrpcPartner {
    /// Connects lazily: the gateway may start after the orchestrator. An
    /// `https://` URL speaks TLS, trusting the system's roots and `ca_pem`
    /// (a private CA) when given.
    pub fn new(
        partner: String,
        url: &str,
        timeout: Duration,
        ca_pem: Option<&[u8]>,
    ) -> Result<Self, GatewayError> {
        let mut endpoint = Channel::from_shared(url.to_owned())
            .map_err(GatewayError::Url)?
            .connect_timeout(Duration::from_secs(1))
            .timeout(timeout);
        if url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(pem) = ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls).map_err(GatewayError::Tls)?;
        }
        Ok(GrpcPartner {
            partner,
            client: PartnerGatewayServiceClient::new(endpoint.connect_lazy()),
        })
    }

    fn operation(&self, request: &PartnerRequest) -> proto::PartnerOperation {
        proto::PartnerOperation {
            partner: self.partner.clone(),
            idempotency_key: request.idempotency_key.clone(),
            amount: request.amount.minor(),
            currency: request.currency.code().to_owned(),
            method: request.method.clone(),
            payment_token: request.token.expose().to_owned(),
            authorization_reference: request.authorization_reference.clone().unwrap_or_default(),
            currency_exponent: request.currency.exponent(),
            order_reference: request.order_reference.clone(),
            merchant_reference: request.merchant_reference.clone(),
            reason: request.reason.clone(),
            items: request.items.iter().map(item_line).collect(),
            refunded_before: request.refunded_before.minor(),
        }
    }
}

fn kind_of(kind: OperationKind) -> proto::PartnerOperationKind {
    match kind {
        OperationKind::Authorization => proto::PartnerOperationKind::Authorize,
        OperationKind::Capture => proto::PartnerOperationKind::Capture,
        OperationKind::Refund => proto::PartnerOperationKind::Refund,
        OperationKind::Void => proto::PartnerOperationKind::Void,
    }
}

fn item_line(line: &ItemLine) -> proto::ItemLine {
    proto::ItemLine {
        sku_reference: line.sku_reference.clone(),
        name: line.name.clone(),
        quantity: line.quantity,
        unit_price: line.unit_price.minor(),
        tax_rate: line.tax_rate.to_string(),
        discount_amount: line.discount_amount.minor(),
        net_amount: line.net_amount.minor(),
        tax_amount: line.tax_amount.minor(),
    }
}

/// Writes the current trace context into outgoing metadata (`traceparent`).
struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl opentelemetry::propagation::Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// A request carrying the current span's trace context.
fn traced<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    let context = tracing_opentelemetry::OpenTelemetrySpanExt::context(&tracing::Span::current());
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(request.metadata_mut()));
    });
    request
}

fn transport(status: Status) -> PartnerError {
    PartnerError::Unknown {
        description: format!("partner gateway call failed: {}", status.code()),
    }
}

fn answer_of(response: proto::PartnerOperationResponse) -> Result<PartnerAnswer, PartnerError> {
    let answer = |settled| PartnerAnswer {
        settled,
        reference: response.reference.clone(),
        partner_status: response.partner_status.clone(),
        description: response.description.clone(),
        instrument: None,
    };
    match response.outcome() {
        proto::PartnerOutcome::Succeeded => Ok(answer(true)),
        proto::PartnerOutcome::Pending => Ok(answer(false)),
        proto::PartnerOutcome::Declined => Err(PartnerError::Declined {
            code: response.partner_status,
            description: response.description,
        }),
        proto::PartnerOutcome::Unavailable => Err(PartnerError::Unavailable {
            description: response.description,
        }),
        proto::PartnerOutcome::Unknown | proto::PartnerOutcome::Unspecified => {
            Err(PartnerError::Unknown {
                description: response.description,
            })
        }
    }
}

#[async_trait]
impl Partner for GrpcPartner {
    async fn send(&self, request: &PartnerRequest) -> Result<PartnerAnswer, PartnerError> {
        let operation = Some(self.operation(request));
        let mut client = self.client.clone();
        let response = match request.kind {
            OperationKind::Authorization => {
                client
                    .authorize(traced(proto::AuthorizeRequest { operation }))
                    .await
            }
            OperationKind::Capture => {
                client
                    .capture(traced(proto::CaptureRequest { operation }))
                    .await
            }
            OperationKind::Refund => {
                client
                    .refund(traced(proto::RefundRequest { operation }))
                    .await
            }
            OperationKind::Void => client.void(traced(proto::VoidRequest { operation })).await,
        };
        answer_of(response.map_err(transport)?.into_inner())
    }

    async fn lookup(
        &self,
        request: &PartnerRequest,
        reference: Option<&str>,
    ) -> Result<Lookup, PartnerError> {
        let request = proto::LookupOperationRequest {
            partner: self.partner.clone(),
            idempotency_key: request.idempotency_key.clone(),
            operation: Some(self.operation(request)),
            reference: reference.unwrap_or_default().to_owned(),
            kind: kind_of(request.kind).into(),
        };
        let response = self
            .client
            .clone()
            .lookup_operation(traced(request))
            .await
            .map_err(transport)?;
        let response = response.into_inner();
        Ok(match (response.found, response.result) {
            (true, Some(result)) => Lookup::Found(answer_of(result)),
            _ => Lookup::NotFound,
        })
    }

    fn settles(&self) -> bool {
        true
    }

    async fn settlements(&self, since: Day) -> Result<Vec<super::Listed>, PartnerError> {
        let request = proto::ListSettlementsRequest {
            partner: self.partner.clone(),
            since: since.to_string(),
        };
        let response = self
            .client
            .clone()
            .list_settlements(traced(request))
            .await
            .map_err(read_failed)?;
        Ok(response
            .into_inner()
            .settlements
            .into_iter()
            .map(|s| {
                let reference = s.reference.clone();
                let read = || {
                    Some(SettlementReport {
                        date: s.date.parse().ok()?,
                        currency: Currency::parse(&s.currency).ok()?,
                        fees: Amount::from_minor(s.fees).ok()?,
                        control: Control {
                            count: Some(u64::try_from(s.transactions).ok()?),
                            ..Control::default()
                        },
                        reference: s.reference.clone(),
                        payout_reference: s.payout_reference.clone(),
                    })
                };
                read().ok_or_else(|| format!("settlement {reference}'s header does not read"))
            })
            .collect())
    }

    async fn settlement_page(
        &self,
        report: &SettlementReport,
        page: u32,
        per_page: u32,
    ) -> Result<SettlementPage, PartnerError> {
        let request = proto::ListSettlementLinesRequest {
            partner: self.partner.clone(),
            reference: report.reference.clone(),
            page,
            per_page,
        };
        let response = self
            .client
            .clone()
            .list_settlement_lines(traced(request))
            .await
            .map_err(read_failed)?
            .into_inner();
        Ok(SettlementPage {
            lines: response.lines.into_iter().map(line_of).collect(),
            total: Some(u64::try_from(response.total).map_err(|_| unreadable_settlement())?),
            pages: Some(response.pages),
        })
    }
}

/// A settlement line from the wire, or kept as it came if it does not
/// read.
fn line_of(line: proto::SettlementLine) -> Line {
    let raw = format!("{line:?}");
    match entry_of(line) {
        Some(entry) => Line::Entry(entry),
        None => Line::Unreadable(UnreadableLine {
            raw,
            why: "a field of the gateway's line does not read".into(),
        }),
    }
}

/// A settlement line from the wire (amounts positive, a refund's taken
/// back); `None` if it does not read.
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

/// A read that failed changed nothing: try later.
fn read_failed(status: Status) -> PartnerError {
    PartnerError::Unavailable {
        description: format!("partner gateway call failed: {}", status.code()),
    }
}

fn unreadable_settlement() -> PartnerError {
    PartnerError::Unavailable {
        description: "the partner gateway sent a settlement that does not read".into(),
    }
}
