//! The storage ports, and the layout contract their adapters share.
//!
//! **Shards.** Everything of one session — the session, its payments, their
//! operations, the idempotency records of requests on them, their due-queue
//! entries and webhook deliveries — lives in one of [`SHARDS`] shards, so that
//! every write is one atomic [`Step`] on one shard (one Lua script on one slot
//! in Redis, one lock in memory). A child's id carries its parent's shard
//! ([`Shard::stamp`]), so any id says where its records are.
//!
//! **Steps.** A phase of a use case (open an operation, record answers,
//! conclude) is one call to [`PaymentStore::commit`], whose parts each keep
//! one concern's contract: [`KeyChange`] (idempotency records), [`Write`] of
//! the session and of the payment header with its [`OperationWrite`]s,
//! [`DueChange`] (the due-queue), [`OutboxChange`] (webhook deliveries). A
//! step applies every part or none.
//!
//! **Reads and maintenance** are ports of their own concern: [`PaymentStore`]
//! (sessions, payments, operations, listing), [`DueQueue`] (leases on due
//! work), [`WebhookOutbox`], [`EventLog`] (partner event ids).
//!
//! **Errors.** [`StoreError::Unavailable`]: nothing was applied (refused, or
//! never sent), retrying is safe. [`StoreError::Unknown`]: it may have been
//! applied (timeout, connection lost after sending): never undo anything on
//! it, and never tell a caller that nothing changed.
//! [`StoreError::NotReplicated`]: it applied, but not on enough replicas to
//! survive a failover (when the deployment asks for that): nothing may be
//! sent to a partner on it.

pub mod memory;
pub mod redis;

mod due;
mod instruments;
mod listing;
mod step;

pub use due::{DueItem, DueSummary, Lane, WebhookDelivery};
pub use instruments::{HeldInstrument, InstrumentAttempt, InstrumentClaim};
pub use listing::{
    IssueQuery, ListQuery, ListedPayment, ListedSession, SettlementQuery, StoredPayment,
    issue_member, listing_member, member_id, settlement_member, unix_millis,
};
pub use step::{
    ClaimChange, Committed, DueChange, KeyChange, KeyState, OperationWrite, OutboxChange, Outcome,
    PaymentWrite, Step, Write,
};

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use uuid::Uuid;

use crate::domain::{
    checkout::HostedCheckout,
    operation::Operation,
    payment::Payment,
    session::Session,
    settlement::{
        FailedSettlement, ReconciliationIssue, SettledBy, Settlement, SettlementTransaction,
    },
};

/// How many shards the data is spread over. Part of the stored layout: ids
/// carry their shard, so changing it needs a migration.
pub const SHARDS: usize = 128;

/// One of the [`SHARDS`] shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard(u8);

impl Shard {
    /// The shard an id belongs to: the low 7 bits of its last byte.
    pub fn of(id: Uuid) -> Shard {
        Shard(id.as_bytes()[15] & 0x7f)
    }

    /// `id` moved into this shard (its last byte's low 7 bits replaced), so a
    /// child's records sit beside its parent's. The other 121 bits of a
    /// derived id are its hash.
    pub fn stamp(self, id: Uuid) -> Uuid {
        let mut bytes = *id.as_bytes();
        bytes[15] = (bytes[15] & 0x80) | self.0;
        Uuid::from_bytes(bytes)
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    pub fn all() -> impl Iterator<Item = Shard> {
        (0..SHARDS).filter_map(|n| u8::try_from(n).ok()).map(Shard)
    }
}

/// A value with the version it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Nothing was applied: the store refused or could not be reached.
    #[error("the store is unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// It may or may not have been applied.
    #[error("the store's answer was lost")]
    Unknown(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("a stored record could not be read")]
    Corrupt(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The step applied, but fewer replicas than required acknowledged it
    /// in time: a failover could still lose it. What it came to is kept.
    #[error("the step was not acknowledged by enough replicas")]
    NotReplicated(Box<Committed>),
}

// ---- the ports ----

/// How far a caller's clock may run ahead of the store's before the store
/// refuses to forget a payment for it.
pub const CLOCK_AHEAD: Duration = Duration::from_secs(60);

/// Sessions, payments and their operations, and the one write: [`Step`].
#[async_trait]
pub trait PaymentStore: Send + Sync + std::fmt::Debug {
    /// Applies every part of the step or none (see [`Committed`]).
    async fn commit(&self, step: Step) -> Result<Committed, StoreError>;

    async fn session(&self, id: Uuid) -> Result<Option<Versioned<Session>>, StoreError>;
    /// The header alone (what a capture reads before opening).
    async fn header(&self, id: Uuid) -> Result<Option<Versioned<Payment>>, StoreError>;
    /// The header with one of its operations.
    async fn operation(
        &self,
        payment: Uuid,
        operation: Uuid,
    ) -> Result<Option<(Versioned<Payment>, Operation)>, StoreError>;
    /// An operation by its id alone, with its payment's header.
    async fn find_operation(
        &self,
        operation: Uuid,
    ) -> Result<Option<(Versioned<Payment>, Operation)>, StoreError>;
    /// The header and every operation, oldest first.
    async fn payment(&self, id: Uuid) -> Result<Option<StoredPayment>, StoreError>;

    /// Adds a payment to its merchant's listing (derived data, kept in
    /// other shards: written beside the step that inserts the payment, and
    /// harmless if it comes first — a member without payment is skipped).
    async fn index_payment(&self, payment: &Payment) -> Result<(), StoreError>;
    /// Payments of a merchant in creation order (see [`ListQuery`]).
    async fn list_payments(&self, query: &ListQuery) -> Result<Vec<ListedPayment>, StoreError>;

    /// Adds a session to its merchant's listing (derived data, like
    /// [`PaymentStore::index_payment`]).
    async fn index_session(&self, session: &Session) -> Result<(), StoreError>;
    /// Sessions of a merchant in creation order (see [`ListQuery`]).
    async fn list_sessions(&self, query: &ListQuery) -> Result<Vec<ListedSession>, StoreError>;

    /// Forgets a payment whose retention ended, if it is still at the
    /// version read (`Ok(false)`, nothing deleted, if it moved): its header
    /// and operations, their index entries and due items, the idempotency
    /// records of what they created, then its listing entries (other slots:
    /// a crash between leaves listing members without payment, which
    /// listings skip). With `session` (as read: the caller passes it only
    /// when the session ended with this payment), the session goes too, with
    /// its hosted checkouts, idempotency record and listing entries — if it
    /// is still at the version read (else it is left to its own retention).
    /// Nothing is forgotten when `caller_now`, the caller's clock, runs more
    /// than [`CLOCK_AHEAD`] ahead of the store's (a replica whose clock
    /// jumped ahead would forget early).
    async fn forget_payment(
        &self,
        payment: &StoredPayment,
        session: Option<&Versioned<Session>>,
        caller_now: SystemTime,
    ) -> Result<bool, StoreError>;

    /// Whether the store answers (readiness probes).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Due work under leases.
#[async_trait]
pub trait DueQueue: Send + Sync {
    /// Atomically takes up to `limit` items of `lane` due at `now` and moves
    /// each to `now + lease`: a worker that dies leaves them to be taken
    /// again.
    async fn claim_due(
        &self,
        lane: Lane,
        now: SystemTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<DueItem>, StoreError>;
    async fn due_summary(&self, lane: Lane) -> Result<DueSummary, StoreError>;
    /// When an item is due, if it is queued.
    async fn scheduled(&self, item: &DueItem) -> Result<Option<SystemTime>, StoreError>;
    /// Items of `lane` by time then member, after `after` (exclusive), at
    /// most `limit` (the failed-deliveries listing).
    async fn list_lane(
        &self,
        lane: Lane,
        after: Option<(SystemTime, DueItem)>,
        limit: usize,
    ) -> Result<Vec<(SystemTime, DueItem)>, StoreError>;
    /// Every operation on the queue (the non-final ones), at most `limit`
    /// of them, as `(payment, operation)`.
    async fn open_operations(&self, limit: usize) -> Result<Vec<(Uuid, Uuid)>, StoreError>;
}

#[async_trait]
pub trait WebhookOutbox: Send + Sync {
    async fn delivery(&self, id: Uuid) -> Result<Option<WebhookDelivery>, StoreError>;
}

/// Partner event ids seen, for deduplication.
#[async_trait]
pub trait EventLog: Send + Sync {
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

/// Imported settlements, their lines and reconciliation issues, kept until
/// `retain_until`; and leases on background work shared by replicas.
///
/// An import writes a settlement's lines first (by index: writing a line
/// twice is writing it once), then finishes the settlement, which makes it
/// visible: a settlement is listed only once all its lines are stored.
#[async_trait]
pub trait SettlementStore: Send + Sync {
    async fn settlement(&self, id: Uuid) -> Result<Option<Settlement>, StoreError>;
    /// Stores lines of a settlement being imported.
    async fn put_settlement_lines(
        &self,
        settlement: Uuid,
        lines: &[SettlementTransaction],
        retain_until: SystemTime,
    ) -> Result<(), StoreError>;
    /// Stores the settlement unless it exists; `true` if this call stored it.
    async fn finish_settlement(
        &self,
        settlement: &Settlement,
        retain_until: SystemTime,
    ) -> Result<bool, StoreError>;
    /// Lines `offset..offset + limit` of a settlement.
    async fn settlement_lines(
        &self,
        settlement: Uuid,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<SettlementTransaction>, StoreError>;
    /// Settlements with their index members (the page cursors).
    async fn list_settlements(
        &self,
        query: &SettlementQuery,
    ) -> Result<Vec<(String, Settlement)>, StoreError>;
    /// Records an issue unless one with its id exists; `true` if this call
    /// recorded it (the caller counts and announces only then).
    async fn record_issue(
        &self,
        issue: &ReconciliationIssue,
        retain_until: SystemTime,
    ) -> Result<bool, StoreError>;
    /// Issues with their index members (the page cursors).
    async fn list_issues(
        &self,
        query: &IssueQuery,
    ) -> Result<Vec<(String, ReconciliationIssue)>, StoreError>;
    /// An issue by its id.
    async fn issue(&self, id: Uuid) -> Result<Option<ReconciliationIssue>, StoreError>;
    /// Resolves an open issue (`resolved_at`, `resolution`); an issue
    /// already resolved is left as it is. The issue as it is afterwards.
    async fn resolve_issue(
        &self,
        id: Uuid,
        resolution: &str,
        at: SystemTime,
    ) -> Result<Option<ReconciliationIssue>, StoreError>;
    /// Claims each of our partner transactions for the line that settles
    /// it, unless a line claimed it before; for each, the claim that holds
    /// afterwards (the caller compares it with its own: another line's is a
    /// duplicate).
    async fn claim_settled(
        &self,
        claims: &[(Uuid, SettledBy)],
        retain_until: SystemTime,
    ) -> Result<Vec<SettledBy>, StoreError>;
    /// Replaces the claim on a transaction if it is still `held`; `true` if
    /// `claim` holds it now.
    async fn replace_settled(
        &self,
        transaction: Uuid,
        held: SettledBy,
        claim: SettledBy,
        retain_until: SystemTime,
    ) -> Result<bool, StoreError>;
    /// The line that settled a partner transaction, if one did.
    async fn settled_in(&self, transaction: Uuid) -> Result<Option<SettledBy>, StoreError>;
    /// A partner's settlements whose import failed, oldest first.
    async fn failed_settlements(&self, partner: &str) -> Result<Vec<FailedSettlement>, StoreError>;
    /// Keeps (or replaces) a failed settlement of a partner, by reference.
    async fn put_failed_settlement(
        &self,
        partner: &str,
        failed: &FailedSettlement,
    ) -> Result<(), StoreError>;
    /// Forgets a partner's failed settlement (it was read).
    async fn clear_failed_settlement(
        &self,
        partner: &str,
        reference: &str,
    ) -> Result<(), StoreError>;
    /// Takes (or renews) the lease `name` for `owner` until `now + lease`;
    /// `false` while another owner holds it.
    async fn take_lease(
        &self,
        name: &str,
        owner: Uuid,
        now: SystemTime,
        lease: Duration,
    ) -> Result<bool, StoreError>;
    /// Gives the lease up if `owner` holds it.
    async fn release_lease(&self, name: &str, owner: Uuid) -> Result<(), StoreError>;
}

/// Which payer each instrument belongs to. Each instrument's claim is a key
/// of its own (its own slot on a cluster): written apart from any step.
#[async_trait]
pub trait Instruments: Send + Sync {
    /// Claims `instrument` for `claim` unless it is claimed; the claim that
    /// holds it afterwards (`claim` itself if this call wrote it).
    async fn claim_instrument(
        &self,
        instrument: &str,
        claim: &InstrumentClaim,
    ) -> Result<HeldInstrument, StoreError>;
    /// The claim on `instrument`, if any.
    async fn instrument(&self, instrument: &str) -> Result<Option<HeldInstrument>, StoreError>;
    /// Replaces `held` by `claim` (`None`: removes it); `false` if the
    /// claim changed since it was read.
    async fn replace_instrument(
        &self,
        instrument: &str,
        held: &HeldInstrument,
        claim: Option<&InstrumentClaim>,
    ) -> Result<bool, StoreError>;
}

/// The partner-hosted checkouts opened for sessions: one per session and
/// partner, replaced only when it is reopened (the session's amount or lines
/// changed). Kept for the session retention after the checkout's end.
#[async_trait]
pub trait Checkouts: Send + Sync {
    /// Keeps `checkout` as its session's checkout at its partner if that
    /// session has none there (`replacing: None`), or if the one kept has
    /// the id `replacing`; answers the checkout kept afterwards (another
    /// one if a concurrent call kept it first).
    async fn keep_checkout(
        &self,
        checkout: &HostedCheckout,
        replacing: Option<&str>,
    ) -> Result<HostedCheckout, StoreError>;
    /// The checkouts opened for a session, one per partner.
    async fn checkouts(&self, session: Uuid) -> Result<Vec<HostedCheckout>, StoreError>;
}

/// Operations that became final, told to every replica (what wakes
/// `WaitOperation` calls without polling). A step's
/// [`announce`](Step::announce) is published as the step applies; a notice
/// lost on the way (a dropped subscription) is made up by the waiters' slow
/// re-read.
#[async_trait]
pub trait Notices: Send + Sync {
    /// The operations announced final from now on, by any replica.
    fn finals(&self) -> tokio::sync::broadcast::Receiver<Uuid>;

    /// Tells every replica (this one too) of a change of a partner's
    /// health, as text the partners' layer writes and reads. A notice lost
    /// on the way leaves that replica to find the partner's state itself.
    async fn announce_health(&self, notice: &str) -> Result<(), StoreError>;

    /// The health notices announced from now on, by any replica.
    fn health_notices(&self) -> tokio::sync::broadcast::Receiver<String>;
}

/// Every port: what the use cases are given.
pub trait Store:
    PaymentStore
    + DueQueue
    + WebhookOutbox
    + EventLog
    + SettlementStore
    + Instruments
    + Checkouts
    + Notices
{
}

impl<
    T: PaymentStore
        + DueQueue
        + WebhookOutbox
        + EventLog
        + SettlementStore
        + Instruments
        + Checkouts
        + Notices,
> Store for T
{
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_id_is_in_the_shard_and_keeps_its_other_bits() {
        let id = Uuid::new_v5(&Uuid::NAMESPACE_OID, b"x");
        for shard in Shard::all() {
            let stamped = shard.stamp(id);
            assert_eq!(Shard::of(stamped), shard);
            assert_eq!(stamped.get_version_num(), 5);
            assert_eq!(stamped.as_bytes()[..15], id.as_bytes()[..15]);
        }
        assert_eq!(Shard::all().count(), SHARDS);
    }
}
