//! `SettlementService`: imported settlements, their lines (as messages and
//! as CSV) and reconciliation issues, for merchants (their own) and admins
//! (everyone's).

pub(super) mod convert;

use std::pin::Pin;

use futures_util::Stream;
use tonic::{Request, Response, Status};

use super::{
    auth::{Merchant, Operator},
    error, proto, violations,
};
use crate::payments::{Payments, Viewer, page_token};

/// Lines per CSV chunk of an export.
const EXPORT_CHUNK_LINES: usize = 1000;

#[derive(Debug, Clone)]
pub struct SettlementService {
    payments: Payments,
}

impl SettlementService {
    pub fn new(payments: Payments) -> Self {
        SettlementService { payments }
    }
}

/// Who is asking: the merchant of the key, or an operator.
fn viewer<T>(request: &Request<T>) -> Result<Viewer<'_>, Status> {
    let extensions = request.extensions();
    if let Some(Merchant(merchant)) = extensions.get::<Merchant>() {
        return Ok(Viewer::Merchant(merchant));
    }
    if extensions.get::<Operator>().is_some() {
        return Ok(Viewer::Operator);
    }
    // Only reachable if the service were mounted without the interceptor.
    Err(Status::unauthenticated("missing or invalid API key"))
}

fn as_viewer(merchant: &Option<String>) -> Viewer<'_> {
    match merchant {
        Some(merchant) => Viewer::Merchant(merchant),
        None => Viewer::Operator,
    }
}

/// The token of the page after `page` (of a listing under `filters`), when
/// it is full: more may follow.
fn next_page_token<T>(page: &[(String, T)], limit: usize, filters: &str) -> String {
    match page.last() {
        Some((cursor, _)) if page.len() == limit => page_token::issue(filters, cursor),
        _ => String::new(),
    }
}

type CsvStream = Pin<Box<dyn Stream<Item = Result<proto::CsvChunk, Status>> + Send>>;

#[tonic::async_trait]
impl proto::settlement_service_server::SettlementService for SettlementService {
    async fn list_settlements(
        &self,
        request: Request<proto::ListSettlementsRequest>,
    ) -> Result<Response<proto::ListSettlementsResponse>, Status> {
        let (query, filters) = convert::list_settlements(request.get_ref())?;
        let limit = query.limit;
        let page = error::answer(self.payments.list_settlements(viewer(&request)?, query)).await?;
        Ok(Response::new(proto::ListSettlementsResponse {
            settlements: page.iter().map(|(_, s)| convert::settlement(s)).collect(),
            next_page_token: next_page_token(&page, limit, &filters),
        }))
    }

    async fn get_settlement(
        &self,
        request: Request<proto::GetSettlementRequest>,
    ) -> Result<Response<proto::Settlement>, Status> {
        let id = violations::parse_id("settlement_id", &request.get_ref().settlement_id)?;
        let settlement = error::answer(self.payments.settlement(viewer(&request)?, id)).await?;
        Ok(Response::new(convert::settlement(&settlement)))
    }

    async fn list_settlement_transactions(
        &self,
        request: Request<proto::ListSettlementTransactionsRequest>,
    ) -> Result<Response<proto::ListSettlementTransactionsResponse>, Status> {
        let (id, offset, limit) = convert::list_settlement_transactions(request.get_ref())?;
        let viewer = viewer(&request)?;
        let (settlement, lines) =
            error::answer(self.payments.settlement_lines(viewer, id, offset, limit)).await?;
        let total = settlement.lines;
        let next = offset + lines.len() as u64;
        let next_page_token = if next < total && !lines.is_empty() {
            convert::lines_token(id, next)
        } else {
            String::new()
        };
        Ok(Response::new(proto::ListSettlementTransactionsResponse {
            transactions: lines.iter().map(convert::settlement_transaction).collect(),
            next_page_token,
            total_size: i64::try_from(total).unwrap_or(i64::MAX),
        }))
    }

    type ExportSettlementTransactionsStream = CsvStream;

    async fn export_settlement_transactions(
        &self,
        request: Request<proto::ExportSettlementTransactionsRequest>,
    ) -> Result<Response<CsvStream>, Status> {
        let id = violations::parse_id("settlement_id", &request.get_ref().settlement_id)?;
        let viewer = match viewer(&request)? {
            Viewer::Merchant(merchant) => Some(merchant.to_owned()),
            Viewer::Operator => None,
        };
        // Refuses an unknown or foreign settlement before the stream starts.
        let settlement = error::answer(self.payments.settlement(as_viewer(&viewer), id)).await?;
        let payments = self.payments.clone();
        let total = settlement.lines;
        let chunks = futures_util::stream::unfold(Some(0u64), move |next| {
            let payments = payments.clone();
            let viewer = viewer.clone();
            async move {
                let offset = next?;
                let mut csv = String::new();
                if offset == 0 {
                    csv.push_str(convert::CSV_HEADER);
                }
                let lines = payments
                    .settlement_lines(as_viewer(&viewer), id, offset, EXPORT_CHUNK_LINES)
                    .await
                    .map(|(_, lines)| lines);
                match lines {
                    Err(failure) => Some((Err(error::status_of(failure)), None)),
                    Ok(lines) => {
                        for line in &lines {
                            convert::csv_row(&mut csv, line);
                        }
                        let after = offset + lines.len() as u64;
                        let more = !lines.is_empty() && after < total;
                        Some((Ok(proto::CsvChunk { csv }), more.then_some(after)))
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn list_reconciliation_issues(
        &self,
        request: Request<proto::ListReconciliationIssuesRequest>,
    ) -> Result<Response<proto::ListReconciliationIssuesResponse>, Status> {
        let (query, filters) = convert::list_issues(request.get_ref())?;
        let limit = query.limit;
        let viewer = viewer(&request)?;
        let page = error::answer(self.payments.reconciliation_issues(viewer, query)).await?;
        Ok(Response::new(proto::ListReconciliationIssuesResponse {
            issues: page
                .iter()
                .map(|(_, issue)| convert::issue(issue))
                .collect(),
            next_page_token: next_page_token(&page, limit, &filters),
        }))
    }

    async fn resolve_reconciliation_issue(
        &self,
        request: Request<proto::ResolveReconciliationIssueRequest>,
    ) -> Result<Response<proto::ReconciliationIssue>, Status> {
        let (id, note) = convert::resolve_issue(request.get_ref())?;
        let viewer = viewer(&request)?;
        let issue = error::answer(self.payments.resolve_issue(viewer, id, &note)).await?;
        Ok(Response::new(convert::issue(&issue)))
    }
}
