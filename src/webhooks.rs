//! Outbound merchant notifications.
//!
//! An event is a JSON document `{id, type, created_at, payment_id, operation}`
//! POSTed to the session's webhook URL with its configured headers and
//!
//! ```text
//! Payment-Orchestrator-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//! ```
//!
//! Event ids are derived from the operation and the event type, so emitting
//! the same event twice (a retry, a second replica) stores one delivery.
//! Delivery is at least once: receivers deduplicate by `id`. A delivery that
//! is not answered 2xx is retried after 1m, 5m, 30m, 2h, 6h, 12h and 24h.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use uuid::Uuid;

pub mod worker;

use crate::{
    domain::{
        items::ItemLine, operation::Operation, payment::Payment, settlement::ReconciliationIssue,
    },
    store::{Shard, WebhookDelivery},
};

pub const SIGNATURE_HEADER: &str = "Payment-Orchestrator-Signature";

/// Pauses before the 2nd, 3rd, … attempt; after the last one the delivery is
/// given up (logged and counted).
pub const RETRY_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(60),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(6 * 3600),
    Duration::from_secs(12 * 3600),
    Duration::from_secs(24 * 3600),
];

/// Namespace of the deterministic (UUIDv5) event ids.
const EVENT_NAMESPACE: Uuid = Uuid::from_u128(0x5f0c_7a52_93c1_4f0e_8d2b_1c3a_6e4d_9b17);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The operation reached a final status.
    OperationFinal,
    /// The operation could not be resolved automatically in time.
    RequiresReview,
}

impl EventType {
    fn name(self) -> &'static str {
        match self {
            EventType::OperationFinal => "operation.final",
            EventType::RequiresReview => "operation.requires_review",
        }
    }
}

#[derive(Serialize)]
struct IssueEvent<'a> {
    id: Uuid,
    #[serde(rename = "type")]
    kind: &'static str,
    created_at: u64,
    payment_id: Uuid,
    issue: EventIssue<'a>,
}

#[derive(Serialize)]
struct EventIssue<'a> {
    id: Uuid,
    kind: String,
    partner: &'a str,
    settlement_id: Option<Uuid>,
    operation_id: Option<Uuid>,
    partner_transaction_id: Option<Uuid>,
    currency: &'a str,
    expected: i64,
    settled: i64,
    description: &'a str,
}

/// Per-merchant signing secrets. Never printed.
#[derive(Clone, Default)]
pub struct Secrets(BTreeMap<String, String>);

impl Secrets {
    pub fn new(secrets: BTreeMap<String, String>) -> Self {
        Secrets(secrets)
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("no webhook secret is configured for the merchant")]
    NoSecret,
    #[error("the receiver answered HTTP {0}")]
    Rejected(u16),
    #[error("the receiver could not be reached")]
    Unreachable(#[source] reqwest::Error),
}

#[derive(Debug, Clone)]
pub struct Webhooks {
    client: reqwest::Client,
    secrets: Secrets,
}

#[derive(Serialize)]
struct Event<'a> {
    id: Uuid,
    #[serde(rename = "type")]
    kind: &'static str,
    created_at: u64,
    payment_id: Uuid,
    operation: EventOperation<'a>,
}

#[derive(Serialize)]
struct EventOperation<'a> {
    id: Uuid,
    kind: String,
    status: String,
    amount: i64,
    currency: &'a str,
    triggered_by: String,
    merchant_reference: &'a str,
    requires_review: bool,
    partner_transactions: Vec<EventTransaction<'a>>,
    /// Amounts in minor units, the tax rate a decimal string.
    items: &'a [ItemLine],
}

#[derive(Serialize)]
struct EventTransaction<'a> {
    id: Uuid,
    partner: &'a str,
    method: &'a str,
    amount: i64,
    status: String,
    partner_reference: &'a str,
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `hex(HMAC-SHA256(secret, "<timestamp>.<body>"))`.
pub fn signature(secret: &str, timestamp: u64, body: &str) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

impl Webhooks {
    pub fn new(secrets: Secrets, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        Webhooks { client, secrets }
    }

    /// The delivery of `kind` for an operation, if the payment has a webhook.
    /// Its id is derived from the operation and the event type, in the
    /// payment's shard.
    pub fn event(
        &self,
        payment: &Payment,
        operation: &Operation,
        kind: EventType,
        now: SystemTime,
    ) -> Option<WebhookDelivery> {
        let webhook = payment.webhook.as_ref()?;
        let id = Shard::of(payment.id).stamp(Uuid::new_v5(
            &EVENT_NAMESPACE,
            format!("{}:{}", operation.id, kind.name()).as_bytes(),
        ));
        let upper = |name: &str| name.to_ascii_uppercase();
        let event = Event {
            id,
            kind: kind.name(),
            created_at: unix_seconds(now),
            payment_id: payment.id,
            operation: EventOperation {
                id: operation.id,
                kind: upper(operation.kind.as_str()),
                status: upper(operation.status.as_str()),
                amount: operation.amount.minor(),
                currency: payment.currency.code(),
                triggered_by: upper(operation.triggered_by.as_str()),
                merchant_reference: &operation.merchant_reference,
                requires_review: operation.requires_review,
                partner_transactions: operation
                    .transactions
                    .iter()
                    .map(|tx| {
                        let leg = payment.legs.get(tx.leg);
                        EventTransaction {
                            id: tx.id,
                            partner: leg.map_or("", |l| l.partner.as_str()),
                            method: leg.map_or("", |l| l.method.as_str()),
                            amount: tx.amount.minor(),
                            status: upper(tx.status.as_str()),
                            partner_reference: tx.partner_reference.as_deref().unwrap_or(""),
                        }
                    })
                    .collect(),
                items: &operation.items,
            },
        };
        Some(WebhookDelivery {
            id,
            merchant: payment.merchant.clone(),
            url: webhook.url.clone(),
            headers: webhook.headers.clone(),
            // Serializing plain data cannot fail.
            body: serde_json::to_string(&event).unwrap_or_default(),
            attempts: 0,
            created_at: now,
            last_error: None,
        })
    }

    /// The `reconciliation.issue` event of an issue on one of the payment's
    /// transactions, if the payment has a webhook; its id is derived from
    /// the issue's, in the payment's shard.
    pub fn issue_event(
        &self,
        payment: &Payment,
        issue: &ReconciliationIssue,
        now: SystemTime,
    ) -> Option<WebhookDelivery> {
        let webhook = payment.webhook.as_ref()?;
        let kind = "reconciliation.issue";
        let id = Shard::of(payment.id).stamp(Uuid::new_v5(
            &EVENT_NAMESPACE,
            format!("{}:{kind}", issue.id).as_bytes(),
        ));
        let event = IssueEvent {
            id,
            kind,
            created_at: unix_seconds(now),
            payment_id: payment.id,
            issue: EventIssue {
                id: issue.id,
                kind: issue.kind.as_str().to_ascii_uppercase(),
                partner: &issue.partner,
                settlement_id: issue.settlement_id,
                operation_id: issue.operation_id,
                partner_transaction_id: issue.partner_transaction_id,
                currency: issue.currency.code(),
                expected: issue.expected.minor(),
                settled: issue.settled.minor(),
                description: &issue.description,
            },
        };
        Some(WebhookDelivery {
            id,
            merchant: payment.merchant.clone(),
            url: webhook.url.clone(),
            headers: webhook.headers.clone(),
            body: serde_json::to_string(&event).unwrap_or_default(),
            attempts: 0,
            created_at: now,
            last_error: None,
        })
    }

    /// One POST of the delivery, signed with the merchant's secret.
    pub async fn deliver(
        &self,
        delivery: &WebhookDelivery,
        now: SystemTime,
    ) -> Result<(), DeliveryError> {
        let secret = self
            .secrets
            .0
            .get(&delivery.merchant)
            .ok_or(DeliveryError::NoSecret)?;
        let timestamp = unix_seconds(now);
        let mut request = self
            .client
            .post(&delivery.url)
            .header("content-type", "application/json")
            .header("Payment-Orchestrator-Event-Id", delivery.id.to_string())
            .header(
                SIGNATURE_HEADER,
                format!(
                    "t={timestamp},v1={}",
                    signature(secret, timestamp, &delivery.body)
                ),
            );
        for (name, value) in &delivery.headers {
            request = request.header(name.as_str(), value.expose());
        }
        let response = request
            .body(delivery.body.clone())
            .send()
            .await
            .map_err(DeliveryError::Unreachable)?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Rejected(response.status().as_u16()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_and_body() {
        // printf '%s' '1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test
        assert_eq!(
            signature("whsec_test", 1_700_000_000, r#"{"a":1}"#),
            "38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
    }
}
