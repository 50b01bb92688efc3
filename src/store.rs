//! The storage port: sessions, payments (with all their operations) and
//! idempotency records.
//!
//! Contract every implementation keeps (checked by one shared test suite):
//! - writes of a payment or a session are compare-and-set on a version:
//!   `update_*` fails with [`StoreError::Conflict`] if someone else wrote
//!   first, and then nothing was written;
//! - `claim` is atomic: for one scope exactly one caller acquires it;
//! - reads never see a half-written payment;
//! - [`StoreError::Unavailable`] means the store could not be reached and the
//!   call may be retried; nothing is known to have been written.

pub mod memory;
pub mod redis;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use uuid::Uuid;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{
    payment::Payment,
    session::{HeaderValue, Session},
};

/// A value with the version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the record was changed concurrently")]
    Conflict,
    #[error("the record already exists")]
    AlreadyExists,
    #[error("the store is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("a stored record could not be read")]
    Corrupt(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Where an idempotency key applies: the merchant, and for operations on a
/// session or payment, that resource too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyScope {
    pub merchant: String,
    /// e.g. `create-session`, `session:<id>`, `payment:<id>`.
    pub resource: String,
    pub key: String,
}

/// A request's claim on its idempotency key.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub fingerprint: String,
    /// The id the request's resource will get; kept with the claim so that a
    /// retry after a crash finds what the first attempt created.
    pub reserved_id: Uuid,
    pub lease: Duration,
    pub ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// First use of the key: go ahead.
    Acquired,
    /// The first attempt stopped without finishing (its lease ran out): go
    /// ahead with the id it reserved, looking for what it left behind.
    TakenOver { reserved_id: Uuid },
    /// The first attempt is still running.
    InFlight,
    /// The first attempt finished: its stored outcome.
    Done(Vec<u8>),
    /// The key was used for a different request.
    Mismatch,
}

#[async_trait]
pub trait PaymentStore: Send + Sync + std::fmt::Debug {
    async fn insert_session(&self, session: &Session) -> Result<(), StoreError>;
    async fn session(&self, id: Uuid) -> Result<Option<Versioned<Session>>, StoreError>;
    /// Compare-and-set on `version`; returns the new version.
    async fn update_session(&self, session: &Session, version: u64) -> Result<u64, StoreError>;

    async fn insert_payment(&self, payment: &Payment) -> Result<(), StoreError>;
    async fn payment(&self, id: Uuid) -> Result<Option<Versioned<Payment>>, StoreError>;
    /// Compare-and-set on `version`; returns the new version.
    async fn update_payment(&self, payment: &Payment, version: u64) -> Result<u64, StoreError>;
    /// Records which payment an operation belongs to (written before the
    /// operation itself, so a visible operation is always found; an entry
    /// whose operation was never written reads as NOT_FOUND).
    async fn index_operation(&self, operation: Uuid, payment: Uuid) -> Result<(), StoreError>;
    async fn payment_of_operation(&self, operation: Uuid) -> Result<Option<Uuid>, StoreError>;
    /// Payments of a merchant in creation order (see [`ListQuery`]), with the
    /// cursor of each; `payment` is `None` if the index outlived its payment.
    async fn list_payments(&self, query: &ListQuery) -> Result<Vec<ListedPayment>, StoreError>;

    async fn claim(
        &self,
        scope: &IdempotencyScope,
        request: &ClaimRequest,
        now: SystemTime,
    ) -> Result<Claim, StoreError>;
    /// Stores the outcome of a claimed key (kept until the claim's ttl).
    async fn complete(
        &self,
        scope: &IdempotencyScope,
        outcome: &[u8],
        now: SystemTime,
    ) -> Result<(), StoreError>;
    /// Stores the outcome of a key only if its request is still in flight
    /// (it died): a finished request's response is never replaced.
    async fn complete_if_in_flight(
        &self,
        scope: &IdempotencyScope,
        outcome: &[u8],
    ) -> Result<(), StoreError>;
    /// Forgets a claim whose request changed nothing (e.g. NOT_FOUND), so a
    /// corrected retry with the same key works.
    async fn release(&self, scope: &IdempotencyScope) -> Result<(), StoreError>;

    /// Puts `item` on the due-queue (or moves it) to become due at `due_at`.
    async fn schedule(&self, item: &DueItem, due_at: SystemTime) -> Result<(), StoreError>;
    async fn unschedule(&self, item: &DueItem) -> Result<(), StoreError>;
    /// Atomically takes up to `limit` items due at `now` and moves each to
    /// `now + lease`: a worker that dies leaves them to be taken again.
    async fn claim_due(
        &self,
        now: SystemTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<DueItem>, StoreError>;
    /// How many items are queued, and the earliest due time.
    async fn due_summary(&self) -> Result<(usize, Option<SystemTime>), StoreError>;

    /// Whether the store answers (readiness probes).
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Stores a webhook delivery unless one with its id exists (event ids are
    /// deterministic, so a repeated emission is one delivery). Returns
    /// whether it was stored.
    async fn put_webhook(&self, delivery: &WebhookDelivery) -> Result<bool, StoreError>;
    async fn webhook(&self, id: Uuid) -> Result<Option<WebhookDelivery>, StoreError>;
    async fn update_webhook(&self, delivery: &WebhookDelivery) -> Result<(), StoreError>;
    async fn delete_webhook(&self, id: Uuid) -> Result<(), StoreError>;

    /// Records a partner event id; `true` the first time it is seen (within
    /// `ttl`).
    async fn first_sighting(
        &self,
        partner: &str,
        event_id: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<bool, StoreError>;
}

/// Work that becomes due at a time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DueItem {
    /// A non-final operation to resolve (or a running one whose lease ran out).
    Operation { payment: Uuid, operation: Uuid },
    /// An authorization whose lifetime ends: release what was not captured.
    AuthorizationExpiry { payment: Uuid },
    /// A webhook to (re)deliver.
    Webhook { delivery: Uuid },
}

impl DueItem {
    /// A compact, parseable form (Redis sorted-set member).
    pub fn encode(&self) -> String {
        match self {
            DueItem::Operation { payment, operation } => format!("op:{payment}:{operation}"),
            DueItem::AuthorizationExpiry { payment } => format!("auth-expiry:{payment}"),
            DueItem::Webhook { delivery } => format!("webhook:{delivery}"),
        }
    }

    pub fn decode(text: &str) -> Option<DueItem> {
        let (kind, rest) = text.split_once(':')?;
        Some(match kind {
            "op" => {
                let (payment, operation) = rest.split_once(':')?;
                DueItem::Operation {
                    payment: Uuid::try_parse(payment).ok()?,
                    operation: Uuid::try_parse(operation).ok()?,
                }
            }
            "auth-expiry" => DueItem::AuthorizationExpiry {
                payment: Uuid::try_parse(rest).ok()?,
            },
            "webhook" => DueItem::Webhook {
                delivery: Uuid::try_parse(rest).ok()?,
            },
            _ => return None,
        })
    }
}

/// A merchant notification waiting to be delivered (at least once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// The event id (receivers deduplicate by it).
    pub id: Uuid,
    pub merchant: String,
    pub url: String,
    pub headers: BTreeMap<String, HeaderValue>,
    /// The JSON body, exactly as signed and sent.
    pub body: String,
    pub attempts: u32,
    pub created_at: SystemTime,
}

/// One page of the creation-ordered index of a merchant's payments.
///
/// The index holds `listing_member(created_at, id)` strings, which sort by
/// creation time then id: time bounds and page cursors are exact string
/// bounds, the same in every store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub merchant: String,
    pub order_reference: Option<String>,
    /// Inclusive.
    pub created_after: Option<SystemTime>,
    /// Exclusive.
    pub created_before: Option<SystemTime>,
    /// Continue after this member (exclusive), in the direction of `newest_first`.
    pub cursor: Option<String>,
    pub newest_first: bool,
    pub limit: usize,
}

#[derive(Debug, Clone)]
pub struct ListedPayment {
    pub cursor: String,
    pub payment: Option<Payment>,
}

/// The index member of a payment: zero-padded creation millis, then the id.
pub fn listing_member(created_at: SystemTime, id: Uuid) -> String {
    format!("{:015}:{id}", unix_millis(created_at))
}

fn unix_millis(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

impl ListQuery {
    /// `(low, high)` in Redis `BYLEX` syntax.
    pub fn lex_bounds(&self) -> (String, String) {
        let after = |t: SystemTime| format!("[{:015}:", unix_millis(t));
        let before = |t: SystemTime| format!("({:015}:", unix_millis(t));
        let mut low = self.created_after.map_or_else(|| "-".to_owned(), after);
        let mut high = self.created_before.map_or_else(|| "+".to_owned(), before);
        if let Some(cursor) = &self.cursor {
            let bound = format!("({cursor}");
            if self.newest_first {
                high = bound;
            } else {
                low = bound;
            }
        }
        (low, high)
    }

    /// Whether an index member is within the bounds (for stores that filter
    /// in process).
    pub fn admits(&self, member: &str) -> bool {
        let (low, high) = self.lex_bounds();
        let above = match low.split_at(1) {
            ("[", bound) => member >= bound,
            ("(", bound) => member > bound,
            _ => true,
        };
        let below = match high.split_at(1) {
            ("[", bound) => member <= bound,
            ("(", bound) => member < bound,
            _ => true,
        };
        above && below
    }
}
