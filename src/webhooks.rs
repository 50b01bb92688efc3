//! Outbound merchant notifications, as the Standard Webhooks specification
//! defines them.
//!
//! An event is a `payment_orchestrator.v1.WebhookEvent` in the proto3 JSON
//! mapping (the spelling grpcurl shows), POSTed to the session's webhook URL
//! with its configured headers and
//!
//! ```text
//! webhook-id: <event id>
//! webhook-timestamp: <unix seconds>
//! webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")> …
//! ```
//!
//! one `v1,` signature per active secret of the merchant (secrets are
//! `whsec_<base64 key>`), so a secret is rotated by adding the new one,
//! moving receivers over, then removing the old one.
//!
//! Event ids are derived from the operation and the event type, so emitting
//! the same event twice (a retry, a second replica) stores one delivery.
//! Delivery is at least once: receivers deduplicate by `webhook-id`. A
//! delivery that is not answered 2xx is retried after 1m, 5m, 30m, 2h, 6h,
//! 12h and 24h, then kept among the failed deliveries for an operator.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

pub mod destinations;

use crate::{
    domain::{
        dispute::Dispute, operation::Operation, payment::Payment, settlement::ReconciliationIssue,
    },
    store::{Shard, WebhookDelivery},
};

pub use destinations::{Destinations, Refusal};

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// Pauses before the 2nd, 3rd, … attempt; after the last one the delivery is
/// given up (logged, counted and kept for an operator).
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

/// A signing key: the bytes of a `whsec_<base64>` secret. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// Reads `whsec_<base64>` with a key of 24 to 64 bytes (what Standard
    /// Webhooks asks of secrets).
    pub fn parse(secret: &str) -> Result<SigningKey, String> {
        let key = secret
            .strip_prefix("whsec_")
            .and_then(|b64| BASE64.decode(b64).ok())
            .ok_or("a webhook secret is whsec_ followed by base64")?;
        if !(24..=64).contains(&key.len()) {
            return Err("a webhook secret's key is 24 to 64 bytes".into());
        }
        Ok(SigningKey(key))
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// Per-merchant signing keys, every one active (each signs every delivery).
#[derive(Clone, Default)]
pub struct Secrets(BTreeMap<String, Vec<SigningKey>>);

impl Secrets {
    pub fn new(secrets: impl IntoIterator<Item = (String, SigningKey)>) -> Self {
        let mut by_merchant: BTreeMap<String, Vec<SigningKey>> = BTreeMap::new();
        for (merchant, key) in secrets {
            by_merchant.entry(merchant).or_default().push(key);
        }
        Secrets(by_merchant)
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

/// Why an attempt failed; what an operator sees as its last error (no URL,
/// no header value, no secret).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("no webhook secret is configured for the merchant")]
    NoSecret,
    #[error("the receiver answered HTTP {0}")]
    Rejected(u16),
    #[error("the destination is refused: {0}")]
    Refused(Refusal),
    #[error("the receiver did not answer within the webhook timeout")]
    TimedOut,
    #[error("the receiver could not be reached ({0})")]
    Unreachable(&'static str),
}

impl DeliveryError {
    fn of(error: &reqwest::Error) -> DeliveryError {
        if error.is_timeout() {
            return DeliveryError::TimedOut;
        }
        // A refusal by the vetting resolver, wherever reqwest wrapped it.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(cause) = source {
            if let Some(refusal) = cause.downcast_ref::<Refusal>() {
                return DeliveryError::Refused(refusal.clone());
            }
            source = cause.source();
        }
        DeliveryError::Unreachable(if error.is_connect() {
            "cannot connect"
        } else if error.is_request() {
            "request failed"
        } else {
            "no answer"
        })
    }
}

/// Writes the body of an event: the gRPC layer renders its proto messages
/// (`api::events`), handed in by `app.rs`, so this adapter never imports the
/// layer above it.
pub trait EventBody: Send + Sync + std::fmt::Debug {
    /// The body of an event about an operation.
    fn operation(
        &self,
        id: Uuid,
        kind: &str,
        payment: &Payment,
        operation: &Operation,
        now: SystemTime,
    ) -> String;

    /// The body of an event about a reconciliation issue.
    fn issue(
        &self,
        id: Uuid,
        kind: &str,
        payment: Uuid,
        issue: &ReconciliationIssue,
        now: SystemTime,
    ) -> String;

    /// The body of an event about a dispute.
    fn dispute(
        &self,
        id: Uuid,
        kind: &str,
        payment: Uuid,
        dispute: &Dispute,
        now: SystemTime,
    ) -> String;
}

#[derive(Debug, Clone)]
pub struct Webhooks {
    client: reqwest::Client,
    secrets: Secrets,
    destinations: Destinations,
    bodies: std::sync::Arc<dyn EventBody>,
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `v1,<base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>"))>`, one per key,
/// space separated.
pub fn signature(keys: &[SigningKey], id: &str, timestamp: u64, body: &str) -> String {
    keys.iter()
        .map(|key| {
            // HMAC takes keys of any length.
            let mut mac = Hmac::<Sha256>::new_from_slice(&key.0)
                .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
            mac.update(format!("{id}.{timestamp}.").as_bytes());
            mac.update(body.as_bytes());
            format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Webhooks {
    /// A client that connects only to vetted addresses (no proxy, no
    /// redirects: a 3xx is a failed attempt), each attempt bounded by
    /// `timeout`.
    pub fn new(
        secrets: Secrets,
        timeout: Duration,
        destinations: Destinations,
        bodies: std::sync::Arc<dyn EventBody>,
    ) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(std::sync::Arc::new(destinations::VettingResolver {
                destinations: destinations.clone(),
            }))
            .build()
            .unwrap_or_default();
        Webhooks {
            client,
            secrets,
            destinations,
            bodies,
        }
    }

    pub fn destinations(&self) -> &Destinations {
        &self.destinations
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
        self.delivery(payment, &operation.id.to_string(), kind.name(), now, |id| {
            self.bodies
                .operation(id, kind.name(), payment, operation, now)
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
        let kind = "reconciliation.issue";
        self.delivery(payment, &issue.id.to_string(), kind, now, |id| {
            self.bodies.issue(id, kind, payment.id, issue, now)
        })
    }

    /// The `dispute.opened` or `dispute.closed` event of a dispute, if the
    /// payment has a webhook; its id is derived from the dispute's and the
    /// event's, in the payment's shard.
    pub fn dispute_event(
        &self,
        payment: &Payment,
        dispute: &Dispute,
        kind: &str,
        now: SystemTime,
    ) -> Option<WebhookDelivery> {
        self.delivery(payment, &dispute.id.to_string(), kind, now, |id| {
            self.bodies.dispute(id, kind, payment.id, dispute, now)
        })
    }

    fn delivery(
        &self,
        payment: &Payment,
        about: &str,
        kind: &str,
        now: SystemTime,
        body: impl FnOnce(Uuid) -> String,
    ) -> Option<WebhookDelivery> {
        let webhook = payment.webhook.as_ref()?;
        let id = Shard::of(payment.id).stamp(Uuid::new_v5(
            &EVENT_NAMESPACE,
            format!("{about}:{kind}").as_bytes(),
        ));
        Some(WebhookDelivery {
            id,
            merchant: payment.merchant.clone(),
            url: webhook.url.clone(),
            headers: webhook.headers.clone(),
            body: body(id),
            attempts: 0,
            created_at: now,
            last_error: None,
        })
    }

    /// Whether `merchant`'s events can be signed (it has a secret): a
    /// webhook of a merchant without one could never be delivered.
    pub fn signs_for(&self, merchant: &str) -> bool {
        self.secrets
            .0
            .get(merchant)
            .is_some_and(|keys| !keys.is_empty())
    }

    /// One POST of the delivery, signed with every active secret of the
    /// merchant, to a destination checked again now (the rules may have
    /// changed since the session was created).
    pub async fn deliver(
        &self,
        delivery: &WebhookDelivery,
        now: SystemTime,
    ) -> Result<(), DeliveryError> {
        let keys = self
            .secrets
            .0
            .get(&delivery.merchant)
            .filter(|keys| !keys.is_empty())
            .ok_or(DeliveryError::NoSecret)?;
        let url = self
            .destinations
            .check_url(&delivery.url)
            .map_err(DeliveryError::Refused)?;
        let id = delivery.id.to_string();
        let timestamp = unix_seconds(now);
        let mut request = self.client.post(url);
        for (name, value) in &delivery.headers {
            if destinations::header_refusal(name).is_none() {
                request = request.header(name.as_str(), value.expose());
            }
        }
        let response = request
            .header("content-type", "application/json")
            .header(ID_HEADER, &id)
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(
                SIGNATURE_HEADER,
                signature(keys, &id, timestamp, &delivery.body),
            )
            .body(delivery.body.clone())
            .send()
            .await
            .map_err(|error| DeliveryError::of(&error))?;
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
    fn signature_is_standard_webhooks_v1_over_id_timestamp_and_body() {
        // The example of the Standard Webhooks specification.
        let key = SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signature(
                &[key],
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn secrets_are_whsec_base64_of_24_to_64_bytes() {
        assert!(SigningKey::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(SigningKey::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(SigningKey::parse("whsec_demo").is_err(), "3 bytes");
        assert!(SigningKey::parse("whsec_not base64!").is_err());
    }
}
