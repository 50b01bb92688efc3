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

use std::{
    collections::BTreeMap,
    ops::Bound,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{
    operation::{Fingerprint, Operation},
    payment::{Payment, Snapshot},
    precondition::Precondition,
    session::{HeaderValue, Session, SessionView},
    settlement::{Day, Match, ReconciliationIssue, Settlement, SettlementTransaction},
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

// ---- idempotency records ----

/// What an idempotent request answered, kept under its key: a replay gets
/// exactly this. It never grows with the payment's history: a payment is
/// kept as its [`Snapshot`] and the operations the request touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Session(SessionView),
    Payment {
        snapshot: Snapshot,
        operations: Vec<Operation>,
    },
    Operation {
        snapshot: Snapshot,
        operation: Operation,
    },
    Refused(Precondition),
}

/// The idempotency part of a step. A record is named by the id of what its
/// request creates (derived from merchant, scope and key) and lives in that
/// id's shard; it expires `ttl` after it was created.
///
/// - `Claim`: the request starts. If the record exists, **nothing** of the
///   step is applied and the commit answers [`Committed::Claimed`].
/// - `Answer`: the request is answered at once (a refusal, a session
///   created): like `Claim`, but the record is created done.
/// - `Complete`: the request (or whoever finalized its work) stores its
///   answer if the record is still in flight. A record already done keeps its
///   first answer, which the commit hands back; a missing one stays missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    Claim {
        record: Uuid,
        fingerprint: Fingerprint,
        /// How long the request holds the key, by the store's clock.
        lease: Duration,
        ttl: Duration,
    },
    Answer {
        record: Uuid,
        fingerprint: Fingerprint,
        outcome: Outcome,
        ttl: Duration,
    },
    Complete {
        record: Uuid,
        outcome: Outcome,
    },
    /// The request gives its work up unfinished (it sent nothing that is
    /// not recorded): a record still in flight has its lease ended now, so
    /// a retry with the key takes the work over at once.
    Abandon {
        record: Uuid,
    },
}

impl KeyChange {
    pub fn record(&self) -> Uuid {
        match self {
            KeyChange::Claim { record, .. }
            | KeyChange::Answer { record, .. }
            | KeyChange::Complete { record, .. }
            | KeyChange::Abandon { record } => *record,
        }
    }
}

/// An existing record, found by a `Claim` or an `Answer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Its request still runs; `lease_expired` when it stopped without
    /// finishing (a retry may then answer from what it left behind).
    InFlight {
        lease_expired: bool,
    },
    Done(Box<Outcome>),
    /// The key was used for a different request.
    Mismatch,
}

// ---- the due-queue ----

/// Work that becomes due at a time. Each item lives in the shard of its
/// payment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DueItem {
    /// A non-final operation to resolve (or a running one whose lease ran out).
    Operation { payment: Uuid, operation: Uuid },
    /// An authorization whose lifetime ends: release what was not captured.
    AuthorizationExpiry { payment: Uuid },
    /// A webhook to (re)deliver.
    Webhook { delivery: Uuid },
    /// A webhook whose delivery was given up, kept for an operator to see
    /// and re-send (its time is when it was given up; never claimed).
    FailedWebhook { delivery: Uuid },
    /// A capture or refund that succeeded: by now a settlement should have
    /// shown it.
    SettlementCheck { payment: Uuid, operation: Uuid },
}

impl DueItem {
    pub fn shard(&self) -> Shard {
        match self {
            DueItem::Operation { payment, .. }
            | DueItem::AuthorizationExpiry { payment }
            | DueItem::SettlementCheck { payment, .. } => Shard::of(*payment),
            DueItem::Webhook { delivery } | DueItem::FailedWebhook { delivery } => {
                Shard::of(*delivery)
            }
        }
    }

    /// The queue the item waits in.
    pub fn lane(&self) -> Lane {
        match self {
            DueItem::Webhook { .. } => Lane::Delivery,
            DueItem::FailedWebhook { .. } => Lane::Failed,
            _ => Lane::Resolution,
        }
    }

    /// A compact, parseable form (a Redis sorted-set member).
    pub fn encode(&self) -> String {
        match self {
            DueItem::Operation { payment, operation } => format!("o:{payment}:{operation}"),
            DueItem::AuthorizationExpiry { payment } => format!("x:{payment}"),
            DueItem::Webhook { delivery } => format!("w:{delivery}"),
            DueItem::FailedWebhook { delivery } => format!("f:{delivery}"),
            DueItem::SettlementCheck { payment, operation } => format!("c:{payment}:{operation}"),
        }
    }

    pub fn decode(text: &str) -> Option<DueItem> {
        let (kind, rest) = text.split_once(':')?;
        Some(match kind {
            "o" => {
                let (payment, operation) = rest.split_once(':')?;
                DueItem::Operation {
                    payment: Uuid::try_parse(payment).ok()?,
                    operation: Uuid::try_parse(operation).ok()?,
                }
            }
            "x" => DueItem::AuthorizationExpiry {
                payment: Uuid::try_parse(rest).ok()?,
            },
            "w" => DueItem::Webhook {
                delivery: Uuid::try_parse(rest).ok()?,
            },
            "f" => DueItem::FailedWebhook {
                delivery: Uuid::try_parse(rest).ok()?,
            },
            "c" => {
                let (payment, operation) = rest.split_once(':')?;
                DueItem::SettlementCheck {
                    payment: Uuid::try_parse(payment).ok()?,
                    operation: Uuid::try_parse(operation).ok()?,
                }
            }
            _ => return None,
        })
    }
}

/// The queues of due work, each claimed by its own worker: the resolver
/// never waits on a merchant's webhook endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Operations, authorization expiries, settlement checks: the resolver.
    Resolution,
    /// Webhook deliveries: the delivery worker.
    Delivery,
    /// Deliveries given up: listed and re-sent by an operator, never claimed.
    Failed,
}

impl Lane {
    pub const ALL: [Lane; 3] = [Lane::Resolution, Lane::Delivery, Lane::Failed];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// The due-queue part of a step: put an item on the queue (or move it) to
/// become due at a time, or take it off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DueChange {
    Schedule(DueItem, SystemTime),
    Unschedule(DueItem),
}

/// How many items are queued and when the earliest is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DueSummary {
    pub depth: usize,
    pub earliest: Option<SystemTime>,
}

// ---- the webhook outbox ----

/// A merchant notification waiting to be delivered (at least once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// The event id (receivers deduplicate by it), in its payment's shard.
    pub id: Uuid,
    pub merchant: String,
    pub url: String,
    pub headers: BTreeMap<String, HeaderValue>,
    /// The JSON body, exactly as signed and sent.
    pub body: String,
    pub attempts: u32,
    pub created_at: SystemTime,
    /// Why the last attempt failed (no secret material: a status code or
    /// a connection error's kind).
    pub last_error: Option<String>,
}

/// The outbox part of a step. `Put` stores a delivery unless one with its id
/// exists (event ids are derived, so emitting an event twice is one
/// delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxChange {
    Put(WebhookDelivery),
    Update(WebhookDelivery),
    Delete(Uuid),
}

// ---- sessions and payments ----

/// A write of a versioned record: insert (fails the step with
/// [`Committed::Exists`] if it exists), compare-and-set on the version
/// (fails it with [`Committed::Conflict`]), or only check that the version
/// did not move (a refusal computed from what was read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write<T> {
    Insert(T),
    Update { expected: u64, value: T },
    Check { expected: u64, id: Uuid },
}

/// The payment part of a step: its header and the operations it writes
/// (never the others).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentWrite {
    pub header: Write<Payment>,
    pub operations: Vec<OperationWrite>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationWrite {
    /// A new operation (fails the step with [`Committed::Exists`] if its id
    /// is taken: ids are derived, so that is the first attempt's).
    Insert(Operation),
    Update(Operation),
}

impl OperationWrite {
    pub fn operation(&self) -> &Operation {
        match self {
            OperationWrite::Insert(op) | OperationWrite::Update(op) => op,
        }
    }
}

/// The send-claim part of a step. A partner call for one (operation, leg)
/// is sent only under its send claim, taken in the step that counts the
/// attempt: the attempt number is the claim's fence, and every later write
/// of the sender checks that the attempt count has not moved. A claim lives
/// for `ttl` by the store's own clock (never a replica's), so a sender that
/// died frees the leg after `ttl` and no clock can make two live claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimChange {
    /// Takes the claim as `fence`. If another claim of the leg is live,
    /// **nothing** of the step is applied: [`Committed::Busy`].
    Take {
        operation: Uuid,
        leg: usize,
        fence: u32,
        ttl: Duration,
    },
    /// Gives the claim up if it is still `fence`'s (the send is answered).
    Release {
        operation: Uuid,
        leg: usize,
        fence: u32,
    },
}

impl ClaimChange {
    pub fn leg(&self) -> (Uuid, usize) {
        match self {
            ClaimChange::Take { operation, leg, .. }
            | ClaimChange::Release { operation, leg, .. } => (*operation, *leg),
        }
    }
}

/// One atomic write to one shard: every part is applied, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub shard: Shard,
    /// The caller's time: due times are reckoned from it. Leases and claims
    /// are judged by the store's own clock.
    pub now: SystemTime,
    pub key: Option<KeyChange>,
    pub session: Option<Write<Session>>,
    pub payment: Option<PaymentWrite>,
    pub due: Vec<DueChange>,
    pub outbox: Vec<OutboxChange>,
    /// An operation that becomes final with this step: announced to every
    /// replica (see [`Notices`]) by the store as it applies the step.
    pub announce: Option<Uuid>,
    /// Send claims taken or given up (legs of the step's payment).
    pub claims: Vec<ClaimChange>,
}

impl Step {
    pub fn new(shard: Shard, now: SystemTime) -> Step {
        Step {
            shard,
            now,
            key: None,
            session: None,
            payment: None,
            due: Vec::new(),
            outbox: Vec::new(),
            announce: None,
            claims: Vec::new(),
        }
    }
}

/// What a step came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    /// Every part applied: the new versions of what was written, and for a
    /// `Complete` that found its record already done, that first answer.
    Applied {
        payment: Option<u64>,
        session: Option<u64>,
        answered: Option<Box<Outcome>>,
    },
    /// Nothing applied: a version moved (someone wrote first). Read again.
    Conflict,
    /// Nothing applied: something the step inserts exists.
    Exists,
    /// Nothing applied: the idempotency record exists.
    Claimed(KeyState),
    /// Nothing applied: another sender's claim of a leg the step would
    /// claim is live.
    Busy,
}

// ---- listing ----

/// One page of the creation-ordered index of a merchant's payments. The
/// index holds [`listing_member`] strings, which sort by creation time then
/// id: time bounds and page cursors are plain string bounds.
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

/// A payment as stored: its header and every operation, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPayment {
    pub header: Versioned<Payment>,
    pub operations: Vec<Operation>,
}

#[derive(Debug, Clone)]
pub struct ListedSession {
    pub cursor: String,
    /// `None` if the index outlived its session (retention).
    pub session: Option<Versioned<Session>>,
}

#[derive(Debug, Clone)]
pub struct ListedPayment {
    pub cursor: String,
    /// `None` if the index outlived (or came before) its payment.
    pub payment: Option<StoredPayment>,
}

/// The index member of a payment: zero-padded creation millis, then the id.
pub fn listing_member(created_at: SystemTime, id: Uuid) -> String {
    format!("{:015}:{id}", unix_millis(created_at))
}

pub fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl ListQuery {
    /// The members admitted, as bounds on the member strings (low, high).
    pub fn bounds(&self) -> (Bound<String>, Bound<String>) {
        let mut low = self.created_after.map_or(Bound::Unbounded, |t| {
            Bound::Included(format!("{:015}:", unix_millis(t)))
        });
        let mut high = self.created_before.map_or(Bound::Unbounded, |t| {
            Bound::Excluded(format!("{:015}:", unix_millis(t)))
        });
        if let Some(cursor) = &self.cursor {
            if self.newest_first {
                high = Bound::Excluded(cursor.clone());
            } else {
                low = Bound::Excluded(cursor.clone());
            }
        }
        (low, high)
    }
}

// ---- the ports ----

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

// ---- settlements ----

/// A page of settlements, by settlement date then id (a cursor is the last
/// member seen), oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SettlementQuery {
    pub partner: Option<String>,
    /// Only settlements of this merchant; `None`: every settlement.
    pub merchant: Option<String>,
    /// Inclusive.
    pub from: Option<Day>,
    /// Inclusive.
    pub to: Option<Day>,
    pub cursor: Option<String>,
    pub limit: usize,
}

/// A page of reconciliation issues, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IssueQuery {
    pub partner: Option<String>,
    pub kind: Option<Match>,
    /// Only issues of this merchant; `None`: every issue.
    pub merchant: Option<String>,
    /// Inclusive.
    pub created_after: Option<SystemTime>,
    /// Exclusive.
    pub created_before: Option<SystemTime>,
    pub cursor: Option<String>,
    pub limit: usize,
}

impl SettlementQuery {
    /// Whether a settlement in the range is one the query asks for.
    pub fn admits(&self, settlement: &Settlement) -> bool {
        self.partner
            .as_ref()
            .is_none_or(|p| *p == settlement.partner)
            && self
                .merchant
                .as_ref()
                .is_none_or(|m| settlement.merchant.as_ref() == Some(m))
            && self.from.is_none_or(|from| settlement.date >= from)
            && self.to.is_none_or(|to| settlement.date <= to)
    }

    /// The lowest member to read from (exclusive of the cursor).
    pub fn low(&self) -> Bound<String> {
        match (&self.cursor, self.from) {
            (Some(cursor), _) => Bound::Excluded(cursor.clone()),
            (None, Some(from)) => Bound::Included(format!("{from}:")),
            (None, None) => Bound::Unbounded,
        }
    }
}

impl IssueQuery {
    pub fn admits(&self, issue: &ReconciliationIssue) -> bool {
        self.partner.as_ref().is_none_or(|p| *p == issue.partner)
            && self.kind.is_none_or(|k| k == issue.kind)
            && self
                .merchant
                .as_ref()
                .is_none_or(|m| issue.merchant.as_ref() == Some(m))
            && self.created_after.is_none_or(|t| issue.created_at >= t)
            && self.created_before.is_none_or(|t| issue.created_at < t)
    }

    pub fn low(&self) -> Bound<String> {
        match (&self.cursor, self.created_after) {
            (Some(cursor), _) => Bound::Excluded(cursor.clone()),
            (None, Some(after)) => Bound::Included(format!("{:015}:", unix_millis(after))),
            (None, None) => Bound::Unbounded,
        }
    }
}

/// The index member of a settlement: its date, then its id.
pub fn settlement_member(settlement: &Settlement) -> String {
    format!("{}:{}", settlement.date, settlement.id)
}

/// The index member of an issue: zero-padded creation millis, then its id.
pub fn issue_member(issue: &ReconciliationIssue) -> String {
    listing_member(issue.created_at, issue.id)
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
    /// Notes which settlement showed each of our partner transactions.
    async fn mark_settled(
        &self,
        settled: &[(Uuid, Uuid)],
        retain_until: SystemTime,
    ) -> Result<(), StoreError>;
    /// The settlement that showed a partner transaction, if one did.
    async fn settled_in(&self, transaction: Uuid) -> Result<Option<Uuid>, StoreError>;
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

// ---- instruments ----

/// One payment's claim on an instrument, with when it was made by the
/// store's clock (ms); `None` in a write: the store's now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrumentAttempt {
    pub payment: Uuid,
    pub at: Option<u64>,
}

/// Which payer an instrument (a partner's payment token) belongs to: a
/// merchant, and the session that claimed it (a single-use instrument is
/// that session's). `confirmed` once a payment of the payer authorized it;
/// until then, the payer's payments that claimed it. Named in the store by
/// a keyed hash of the partner and the token, never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrumentClaim {
    pub merchant: String,
    pub session: Uuid,
    pub confirmed: bool,
    pub attempts: Vec<InstrumentAttempt>,
}

impl InstrumentClaim {
    /// `1|<session>|<payment>@<ms>;…|<merchant>` (`@now` for the store to
    /// fill in): one string, compared as a whole to replace it.
    pub fn encode(&self) -> String {
        let attempts: Vec<String> = self
            .attempts
            .iter()
            .map(|a| match a.at {
                Some(at) => format!("{}@{at}", a.payment),
                None => format!("{}@now", a.payment),
            })
            .collect();
        format!(
            "{}|{}|{}|{}",
            u8::from(self.confirmed),
            self.session,
            attempts.join(";"),
            self.merchant
        )
    }

    /// An encoded claim with its `@now` attempts stamped `@<now>` (only in
    /// the attempts: a merchant's name is never touched).
    pub fn stamp(encoded: &str, now: u64) -> String {
        let fields: Vec<&str> = encoded.splitn(4, '|').collect();
        match fields.as_slice() {
            [confirmed, session, attempts, merchant] => format!(
                "{confirmed}|{session}|{}|{merchant}",
                attempts.replace("@now", &format!("@{now}"))
            ),
            _ => encoded.to_owned(),
        }
    }

    pub fn decode(text: &str) -> Option<InstrumentClaim> {
        let mut parts = text.splitn(4, '|');
        let confirmed = parts.next()? == "1";
        let session = Uuid::try_parse(parts.next()?).ok()?;
        let attempts = parts
            .next()?
            .split(';')
            .filter(|a| !a.is_empty())
            .map(|a| {
                let (payment, at) = a.split_once('@')?;
                Some(InstrumentAttempt {
                    payment: Uuid::try_parse(payment).ok()?,
                    at: Some(at.parse().ok()?),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(InstrumentClaim {
            merchant: parts.next()?.to_owned(),
            session,
            confirmed,
            attempts,
        })
    }
}

/// A claim as found: what it says, the store's time when it was read (ms),
/// and its stored form (what a replacement compares with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldInstrument {
    pub claim: InstrumentClaim,
    pub now: u64,
    pub stored: String,
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

/// Every port: what the use cases are given.
/// Operations that became final, told to every replica (what wakes
/// `WaitOperation` calls without polling). A step's
/// [`announce`](Step::announce) is published as the step applies; a notice
/// lost on the way (a dropped subscription) is made up by the waiters' slow
/// re-read.
pub trait Notices: Send + Sync {
    /// The operations announced final from now on, by any replica.
    fn finals(&self) -> tokio::sync::broadcast::Receiver<Uuid>;
}

pub trait Store:
    PaymentStore + DueQueue + WebhookOutbox + EventLog + SettlementStore + Instruments + Notices
{
}

impl<
    T: PaymentStore + DueQueue + WebhookOutbox + EventLog + SettlementStore + Instruments + Notices,
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

    #[test]
    fn due_items_round_trip_and_know_their_shard() {
        let payment = Shard::of(Uuid::from_u128(5)).stamp(Uuid::now_v7());
        let items = [
            DueItem::Operation {
                payment,
                operation: Uuid::now_v7(),
            },
            DueItem::AuthorizationExpiry { payment },
            DueItem::Webhook {
                delivery: Shard::of(payment).stamp(Uuid::now_v7()),
            },
            DueItem::SettlementCheck {
                payment,
                operation: Uuid::now_v7(),
            },
        ];
        for item in items {
            assert_eq!(DueItem::decode(&item.encode()), Some(item.clone()));
            assert_eq!(item.shard(), Shard::of(payment));
        }
    }
}
