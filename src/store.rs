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

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{payment::Payment, session::Session};

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
    /// Compare-and-set on `version`; returns the new version. Also indexes
    /// the payment's operations for [`PaymentStore::payment_of_operation`].
    async fn update_payment(&self, payment: &Payment, version: u64) -> Result<u64, StoreError>;
    async fn payment_of_operation(&self, operation: Uuid) -> Result<Option<Uuid>, StoreError>;

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
    /// Forgets a claim whose request changed nothing (e.g. NOT_FOUND), so a
    /// corrected retry with the same key works.
    async fn release(&self, scope: &IdempotencyScope) -> Result<(), StoreError>;
}
