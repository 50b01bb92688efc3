//! Operator outcomes in; the failed-webhook listing in and out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tonic::Status;
use uuid::Uuid;

use super::super::{proto, views::timestamp, violations::Violations};
use crate::{
    domain::status::TransactionStatus,
    partners::health::{CircuitState, PartnerHealth},
    payments::{FailedDelivery, FailedPage, page_token},
    store::{WebhookDelivery, unix_millis},
};

/// Operator outcomes: one final status per open partner transaction.
pub type Outcomes = Vec<(Uuid, TransactionStatus)>;

pub fn resolve_operation(
    request: proto::ResolveOperationRequest,
) -> Result<(Uuid, Outcomes, String), Status> {
    let mut v = Violations::default();
    let id = v.id("operation_id", &request.operation_id);
    v.text("reason", &request.reason, true);
    let mut outcomes = Vec::new();
    for (index, outcome) in request.outcomes.iter().enumerate() {
        let field = format!("outcomes[{index}].partner_transaction_id");
        let tx = v.id(&field, &outcome.partner_transaction_id);
        let status = match proto::OperationStatus::try_from(outcome.status) {
            Ok(proto::OperationStatus::Success) => Some(TransactionStatus::Success),
            Ok(proto::OperationStatus::Failure) => Some(TransactionStatus::Failure),
            _ => {
                v.add(format!("outcomes[{index}].status"), "SUCCESS or FAILURE");
                None
            }
        };
        if let (Some(tx), Some(status)) = (tx, status) {
            outcomes.push((tx, status));
        }
    }
    match id {
        Some(id) => v.finish(|| (id, outcomes, request.reason)),
        None => Err(v.into_status()),
    }
}

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;

/// A checked `ListFailedWebhooksRequest`.
#[derive(Debug)]
pub struct FailedQuery {
    pub merchant: Option<String>,
    pub after: Option<(SystemTime, Uuid)>,
    pub limit: usize,
}

pub fn list_failed_webhooks(
    request: proto::ListFailedWebhooksRequest,
) -> Result<FailedQuery, tonic::Status> {
    let mut v = Violations::default();
    let limit = v.page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
    let after = v
        .cursor(&request.merchant, &request.page_token)
        .and_then(|text| {
            let (ms, id) = text.split_once(':')?;
            Some((
                UNIX_EPOCH + Duration::from_millis(ms.parse().ok()?),
                Uuid::try_parse(id).ok()?,
            ))
        });
    let merchant = (!request.merchant.is_empty()).then_some(request.merchant.clone());
    v.finish(|| FailedQuery {
        merchant,
        after,
        limit,
    })
}

/// `PurgeFailedWebhooks`: the merchant (if named) and the instant.
pub fn purge_failed_webhooks(
    request: proto::PurgeFailedWebhooksRequest,
) -> Result<(Option<String>, SystemTime), tonic::Status> {
    let mut v = Violations::default();
    if request.given_up_before.is_none() {
        v.add("given_up_before", "required");
    }
    let before = v.instant("given_up_before", request.given_up_before);
    let merchant = (!request.merchant.is_empty()).then_some(request.merchant);
    let Some(before) = before else {
        return Err(v.into_status());
    };
    v.finish(|| (merchant, before))
}

pub fn failed_page(merchant: &str, page: &FailedPage) -> proto::ListFailedWebhooksResponse {
    proto::ListFailedWebhooksResponse {
        webhooks: page
            .deliveries
            .iter()
            .map(|failed| failed_webhook(&failed.delivery, Some(failed)))
            .collect(),
        next_page_token: page.next.map_or_else(String::new, |(at, id)| {
            page_token::issue(merchant, &format!("{}:{id}", unix_millis(at)))
        }),
    }
}

pub fn failed_webhook(
    delivery: &WebhookDelivery,
    failed: Option<&FailedDelivery>,
) -> proto::FailedWebhook {
    let event_type = serde_json::from_str::<serde_json::Value>(&delivery.body)
        .ok()
        .and_then(|body| body.get("type")?.as_str().map(str::to_owned))
        .unwrap_or_default();
    proto::FailedWebhook {
        id: delivery.id.to_string(),
        merchant: delivery.merchant.clone(),
        endpoint: endpoint(&delivery.url),
        event_type,
        attempts: i32::try_from(delivery.attempts).unwrap_or(i32::MAX),
        last_error: delivery.last_error.clone().unwrap_or_default(),
        created_at: timestamp(delivery.created_at),
        given_up_at: failed.and_then(|f| timestamp(f.given_up_at)),
    }
}

/// The URL without what may be secret in it: credentials and query.
fn endpoint(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => String::new(),
    }
}

/// Every partner's circuit.
pub fn partner_health(partners: &[PartnerHealth]) -> proto::ListPartnerHealthResponse {
    let partners = partners
        .iter()
        .map(|health| proto::PartnerHealth {
            partner: health.partner.clone(),
            state: match health.state {
                CircuitState::Closed => proto::CircuitState::Closed,
                CircuitState::Open => proto::CircuitState::Open,
                CircuitState::HalfOpen => proto::CircuitState::HalfOpen,
            }
            .into(),
            consecutive_failures: i32::try_from(health.consecutive_failures).unwrap_or(i32::MAX),
            changed_at: health.changed_at.and_then(timestamp),
            retry_at: health.retry_at.and_then(timestamp),
            failures_to_open: if health.settings.enabled {
                i32::try_from(health.settings.failures).unwrap_or(i32::MAX)
            } else {
                0
            },
            cool_down: prost_types::Duration::try_from(health.settings.cool_down).ok(),
        })
        .collect();
    proto::ListPartnerHealthResponse { partners }
}
