//! The embedded store: everything in this process, the default for
//! `cargo run` and for tests of the layers above the store.
//!
//! Records are kept as domain values (nothing is serialized), behind one
//! lock per shard: a step locks the one shard it writes, so requests on
//! different payments never wait for each other. Idempotency records expire
//! after their ttl and sessions after the retention, like Redis keys: expired
//! records read as absent and are reclaimed by a sweep that runs with every
//! due-queue claim (the resolver's tick).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
    ops::Bound,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use uuid::Uuid;

use super::{
    ClaimChange, Committed, DueChange, DueItem, DueQueue, DueSummary, EventLog, HeldInstrument,
    InstrumentClaim, Instruments, IssueQuery, KeyChange, KeyState, Lane, ListQuery, ListedPayment,
    ListedSession, Notices, OperationWrite, OutboxChange, Outcome, PaymentStore, PaymentWrite,
    SHARDS, SettlementQuery, SettlementStore, Shard, Step, StoreError, StoredPayment, Versioned,
    WebhookDelivery, WebhookOutbox, Write, issue_member, listing_member, settlement_member,
    unix_millis,
};
use crate::{
    clock::Clock,
    domain::{
        operation::{Fingerprint, Operation},
        payment::{Payment, Snapshot},
        session::Session,
        settlement::{ReconciliationIssue, Settlement, SettlementTransaction},
    },
};

/// How many expired records one sweep of a shard reclaims at most.
const SWEEP_BATCH: usize = 10_000;
/// Locks over the listing indexes (by merchant).
const LISTING_LOCKS: usize = 16;

#[derive(Debug)]
enum KeyRecordState {
    InFlight { lease_until: SystemTime },
    Done(KeptOutcome),
}

/// An answer as kept here. The operations it shows are shared with the
/// payment when they are the same value (a final operation never changes),
/// so an answer costs little more than its snapshot.
#[derive(Debug)]
enum KeptOutcome {
    Other(Box<Outcome>),
    Payment {
        snapshot: Snapshot,
        operations: Vec<Arc<Operation>>,
    },
    Operation {
        snapshot: Snapshot,
        operation: Arc<Operation>,
    },
}

impl KeptOutcome {
    fn outcome(&self) -> Outcome {
        match self {
            KeptOutcome::Other(outcome) => (**outcome).clone(),
            KeptOutcome::Payment {
                snapshot,
                operations,
            } => Outcome::Payment {
                snapshot: *snapshot,
                operations: operations.iter().map(|op| (**op).clone()).collect(),
            },
            KeptOutcome::Operation {
                snapshot,
                operation,
            } => Outcome::Operation {
                snapshot: *snapshot,
                operation: (**operation).clone(),
            },
        }
    }
}

#[derive(Debug)]
struct KeyRecord {
    fingerprint: Fingerprint,
    state: KeyRecordState,
    expires_at: SystemTime,
}

#[derive(Debug)]
struct PaymentRecord {
    header: Versioned<Payment>,
    operations: HashMap<Uuid, Arc<Operation>>,
}

#[derive(Debug)]
struct SessionRecord {
    session: Versioned<Session>,
    expires_at: SystemTime,
}

/// Records that expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Expiring {
    Key(Uuid),
    Session(Uuid),
}

#[derive(Debug, Default)]
struct ShardData {
    sessions: HashMap<Uuid, SessionRecord>,
    payments: HashMap<Uuid, PaymentRecord>,
    /// Operation id → its payment.
    operations: HashMap<Uuid, Uuid>,
    keys: HashMap<Uuid, KeyRecord>,
    /// When records may expire; an entry whose record was renewed since is
    /// checked again and dropped.
    expiries: BTreeSet<(SystemTime, Expiring)>,
    due: HashMap<DueItem, SystemTime>,
    /// Live send claims: (operation, leg) → (fence, until).
    claims: HashMap<(Uuid, usize), (u32, SystemTime)>,
    /// Per lane ([`Lane::index`]).
    due_order: [BTreeSet<(SystemTime, DueItem)>; 3],
    outbox: HashMap<Uuid, WebhookDelivery>,
}

type Listing = HashMap<(String, Option<String>), BTreeSet<String>>;

/// Settlements, their lines and issues, each with when it expires.
#[derive(Debug, Default)]
struct Settlements {
    settlements: HashMap<Uuid, (Settlement, SystemTime)>,
    lines: HashMap<Uuid, (BTreeMap<u64, SettlementTransaction>, SystemTime)>,
    index: BTreeSet<String>,
    issues: HashMap<Uuid, (ReconciliationIssue, SystemTime)>,
    issue_index: BTreeSet<String>,
    leases: HashMap<String, (Uuid, SystemTime)>,
    /// Partner transaction → the settlement that showed it.
    settled: HashMap<Uuid, (Uuid, SystemTime)>,
}

impl Settlements {
    /// Drops what expired (with every write: settlements are few).
    fn sweep(&mut self, now: SystemTime) {
        let Settlements {
            settlements,
            lines,
            index,
            issues,
            issue_index,
            settled,
            ..
        } = self;
        settlements.retain(|_, (settlement, until)| {
            let keep = *until > now;
            if !keep {
                index.remove(&settlement_member(settlement));
            }
            keep
        });
        lines.retain(|_, (_, until)| *until > now);
        settled.retain(|_, (_, until)| *until > now);
        issues.retain(|_, (issue, until)| {
            let keep = *until > now;
            if !keep {
                issue_index.remove(&issue_member(issue));
            }
            keep
        });
    }
}

/// Members of an index after `low`, in order.
fn members_from<'a>(
    index: &'a BTreeSet<String>,
    low: &Bound<String>,
) -> impl Iterator<Item = &'a String> {
    index.range::<String, _>((low.as_ref(), Bound::Unbounded))
}

#[derive(Debug)]
pub struct MemoryStore {
    shards: Vec<Mutex<ShardData>>,
    listings: Vec<Mutex<Listing>>,
    session_listings: Vec<Mutex<Listing>>,
    events: Mutex<HashMap<(String, String), SystemTime>>,
    settlements: Mutex<Settlements>,
    /// Instrument → its claim, stored as Redis stores it.
    instruments: Mutex<HashMap<String, String>>,
    session_retention: Duration,
    /// The service's clock: what "expired" means here (Redis uses its own).
    clock: Arc<dyn Clock>,
    /// Where the next due-queue claim starts, so no shard is always last.
    next_shard: AtomicUsize,
    finals: tokio::sync::broadcast::Sender<Uuid>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A step checks everything before it writes anything, so a panic cannot
    // leave a half-applied step behind: a poisoned lock is still sound.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl MemoryStore {
    /// Sessions are kept `session_retention` after their last change; time
    /// is the service's `clock`.
    pub fn new(session_retention: Duration, clock: Arc<dyn Clock>) -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            listings: (0..LISTING_LOCKS).map(|_| Mutex::default()).collect(),
            session_listings: (0..LISTING_LOCKS).map(|_| Mutex::default()).collect(),
            events: Mutex::default(),
            settlements: Mutex::default(),
            instruments: Mutex::default(),
            session_retention,
            clock,
            next_shard: AtomicUsize::new(0),
            finals: tokio::sync::broadcast::channel(4096).0,
        }
    }

    fn shard(&self, shard: Shard) -> MutexGuard<'_, ShardData> {
        lock(&self.shards[shard.index()])
    }

    fn listing(&self, merchant: &str) -> MutexGuard<'_, Listing> {
        lock(&self.listings[listing_lock(merchant)])
    }

    fn session_listing(&self, merchant: &str) -> MutexGuard<'_, Listing> {
        lock(&self.session_listings[listing_lock(merchant)])
    }
}

fn listing_lock(merchant: &str) -> usize {
    let mut hasher = DefaultHasher::new();
    merchant.hash(&mut hasher);
    usize::try_from(hasher.finish() % LISTING_LOCKS as u64).unwrap_or(0)
}

/// Members of a listing in the query's range and order.
fn listed(listing: &Listing, query: &ListQuery) -> Vec<String> {
    let key = (query.merchant.clone(), query.order_reference.clone());
    let Some(members) = listing.get(&key) else {
        return Vec::new();
    };
    let range = members.range::<String, _>(query.bounds());
    if query.newest_first {
        range.rev().take(query.limit).cloned().collect()
    } else {
        range.take(query.limit).cloned().collect()
    }
}

impl ShardData {
    fn key(&self, record: Uuid, now: SystemTime) -> Option<&KeyRecord> {
        self.keys.get(&record).filter(|key| key.expires_at > now)
    }

    fn session(&self, id: Uuid, now: SystemTime) -> Option<&Versioned<Session>> {
        self.sessions
            .get(&id)
            .filter(|record| record.expires_at > now)
            .map(|record| &record.session)
    }

    /// Every check of a step, before anything is written. `now` is the
    /// store's time (leases, claims and expiries are judged by it).
    fn check(&self, step: &Step, now: SystemTime) -> Option<Committed> {
        if let Some(
            KeyChange::Claim {
                record,
                fingerprint,
                ..
            }
            | KeyChange::Answer {
                record,
                fingerprint,
                ..
            },
        ) = &step.key
            && let Some(existing) = self.key(*record, now)
        {
            let state = if existing.fingerprint != *fingerprint {
                KeyState::Mismatch
            } else {
                match &existing.state {
                    KeyRecordState::Done(kept) => KeyState::Done(Box::new(kept.outcome())),
                    KeyRecordState::InFlight { lease_until } => KeyState::InFlight {
                        lease_expired: *lease_until <= now,
                    },
                }
            };
            return Some(Committed::Claimed(state));
        }
        if let Some(write) = &step.session {
            let conflict = match write {
                Write::Insert(session) => {
                    if self.session(session.id, now).is_some() {
                        return Some(Committed::Exists);
                    }
                    false
                }
                Write::Update { expected, value } => {
                    self.session(value.id, now).map(|s| s.version) != Some(*expected)
                }
                Write::Check { expected, id } => {
                    self.session(*id, now).map(|s| s.version) != Some(*expected)
                }
            };
            if conflict {
                return Some(Committed::Conflict);
            }
        }
        if let Some(PaymentWrite { header, operations }) = &step.payment {
            let version = |id: &Uuid| self.payments.get(id).map(|p| p.header.version);
            let conflict = match header {
                Write::Insert(payment) => {
                    if self.payments.contains_key(&payment.id) {
                        return Some(Committed::Exists);
                    }
                    false
                }
                Write::Update { expected, value } => version(&value.id) != Some(*expected),
                Write::Check { expected, id } => version(id) != Some(*expected),
            };
            if conflict {
                return Some(Committed::Conflict);
            }
            let taken = operations.iter().any(|write| match write {
                OperationWrite::Insert(op) => self.operations.contains_key(&op.id),
                OperationWrite::Update(_) => false,
            });
            if taken {
                return Some(Committed::Exists);
            }
        }
        let busy = step.claims.iter().any(|change| match change {
            ClaimChange::Take { operation, leg, .. } => self
                .claims
                .get(&(*operation, *leg))
                .is_some_and(|(_, until)| *until > now),
            ClaimChange::Release { .. } => false,
        });
        if busy {
            return Some(Committed::Busy);
        }
        None
    }

    fn apply(&mut self, step: Step, session_retention: Duration, now: SystemTime) -> Committed {
        let mut session_version = None;
        let written = match step.session {
            Some(Write::Insert(session)) => Some((session, 1)),
            Some(Write::Update { expected, value }) => Some((value, expected + 1)),
            Some(Write::Check { .. }) | None => None,
        };
        {
            if let Some((session, version)) = written {
                let expires_at = now + session_retention;
                self.expiries
                    .insert((expires_at, Expiring::Session(session.id)));
                session_version = Some(version);
                self.sessions.insert(
                    session.id,
                    SessionRecord {
                        session: Versioned {
                            value: session,
                            version,
                        },
                        expires_at,
                    },
                );
            }
        }
        let mut payment_version = None;
        if let Some(PaymentWrite { header, operations }) = step.payment {
            match header {
                Write::Insert(payment) => {
                    payment_version = Some(1);
                    self.payments.insert(
                        payment.id,
                        PaymentRecord {
                            header: Versioned {
                                value: payment,
                                version: 1,
                            },
                            operations: HashMap::new(),
                        },
                    );
                }
                Write::Update { expected, value } => {
                    if let Some(record) = self.payments.get_mut(&value.id) {
                        record.header = Versioned {
                            value,
                            version: expected + 1,
                        };
                        payment_version = Some(expected + 1);
                    }
                }
                Write::Check { .. } => {}
            }
            for write in operations {
                let op = match write {
                    OperationWrite::Insert(op) | OperationWrite::Update(op) => op,
                };
                self.operations.insert(op.id, op.payment_id);
                if let Some(record) = self.payments.get_mut(&op.payment_id) {
                    record.operations.insert(op.id, Arc::new(op));
                }
            }
        }
        for change in step.due {
            match change {
                DueChange::Schedule(item, at) => self.schedule(item, at),
                DueChange::Unschedule(item) => self.unschedule(&item),
            }
        }
        for change in step.outbox {
            match change {
                OutboxChange::Put(delivery) => {
                    self.outbox.entry(delivery.id).or_insert(delivery);
                }
                OutboxChange::Update(delivery) => {
                    self.outbox.insert(delivery.id, delivery);
                }
                OutboxChange::Delete(id) => {
                    self.outbox.remove(&id);
                }
            }
        }
        for change in step.claims {
            match change {
                ClaimChange::Take {
                    operation,
                    leg,
                    fence,
                    ttl,
                } => {
                    self.claims.insert((operation, leg), (fence, now + ttl));
                }
                ClaimChange::Release {
                    operation,
                    leg,
                    fence,
                } => {
                    if self.claims.get(&(operation, leg)).map(|c| c.0) == Some(fence) {
                        self.claims.remove(&(operation, leg));
                    }
                }
            }
        }
        let mut answered = None;
        match step.key {
            Some(KeyChange::Claim {
                record,
                fingerprint,
                lease,
                ttl,
            }) => self.put_key(
                record,
                fingerprint,
                KeyRecordState::InFlight {
                    lease_until: now + lease,
                },
                now + ttl,
            ),
            Some(KeyChange::Answer {
                record,
                fingerprint,
                outcome,
                ttl,
            }) => self.put_key(
                record,
                fingerprint,
                KeyRecordState::Done(self.keep(outcome)),
                now + ttl,
            ),
            Some(KeyChange::Abandon { record }) => {
                if let Some(existing) = self.keys.get_mut(&record).filter(|k| k.expires_at > now)
                    && let KeyRecordState::InFlight { lease_until } = &mut existing.state
                {
                    *lease_until = now;
                }
            }
            Some(KeyChange::Complete { record, outcome }) => {
                let kept = self.keep(outcome);
                if let Some(existing) = self.keys.get_mut(&record).filter(|k| k.expires_at > now) {
                    match &existing.state {
                        KeyRecordState::InFlight { .. } => {
                            existing.state = KeyRecordState::Done(kept);
                        }
                        KeyRecordState::Done(first) => answered = Some(Box::new(first.outcome())),
                    }
                }
            }
            None => {}
        }
        Committed::Applied {
            payment: payment_version,
            session: session_version,
            answered,
        }
    }

    /// An answer to keep, sharing the operations it shows with the payment
    /// when they are the same.
    fn keep(&self, outcome: Outcome) -> KeptOutcome {
        let share = |op: Operation| -> Arc<Operation> {
            self.payments
                .get(&op.payment_id)
                .and_then(|record| record.operations.get(&op.id))
                .filter(|stored| ***stored == op)
                .cloned()
                .unwrap_or_else(|| Arc::new(op))
        };
        match outcome {
            Outcome::Operation {
                snapshot,
                operation,
            } => KeptOutcome::Operation {
                snapshot,
                operation: share(operation),
            },
            Outcome::Payment {
                snapshot,
                operations,
            } => KeptOutcome::Payment {
                snapshot,
                operations: operations.into_iter().map(share).collect(),
            },
            other => KeptOutcome::Other(Box::new(other)),
        }
    }

    fn put_key(
        &mut self,
        record: Uuid,
        fingerprint: Fingerprint,
        state: KeyRecordState,
        expires_at: SystemTime,
    ) {
        self.expiries.insert((expires_at, Expiring::Key(record)));
        self.keys.insert(
            record,
            KeyRecord {
                fingerprint,
                state,
                expires_at,
            },
        );
    }

    fn schedule(&mut self, item: DueItem, at: SystemTime) {
        let lane = item.lane().index();
        if let Some(previous) = self.due.insert(item.clone(), at) {
            self.due_order[lane].remove(&(previous, item.clone()));
        }
        self.due_order[lane].insert((at, item));
    }

    fn unschedule(&mut self, item: &DueItem) {
        if let Some(previous) = self.due.remove(item) {
            self.due_order[item.lane().index()].remove(&(previous, item.clone()));
        }
    }

    /// Reclaims records whose time is up.
    fn sweep(&mut self, now: SystemTime) {
        // Claims live only while a partner call is on its way: few.
        self.claims.retain(|_, (_, until)| *until > now);
        for _ in 0..SWEEP_BATCH {
            let Some(&(at, what)) = self.expiries.first() else {
                return;
            };
            if at > now {
                return;
            }
            self.expiries.pop_first();
            match what {
                Expiring::Key(id) => {
                    if self.keys.get(&id).is_some_and(|k| k.expires_at <= now) {
                        self.keys.remove(&id);
                    }
                }
                Expiring::Session(id) => {
                    if self.sessions.get(&id).is_some_and(|s| s.expires_at <= now) {
                        self.sessions.remove(&id);
                    }
                }
            }
        }
    }

    fn stored_payment(&self, id: Uuid) -> Option<StoredPayment> {
        let record = self.payments.get(&id)?;
        let mut operations: Vec<Operation> = record
            .operations
            .values()
            .map(|op| (**op).clone())
            .collect();
        operations.sort_by_key(|op| op.sequence);
        Some(StoredPayment {
            header: record.header.clone(),
            operations,
        })
    }
}

#[async_trait]
impl PaymentStore for MemoryStore {
    async fn commit(&self, step: Step) -> Result<Committed, StoreError> {
        let now = self.clock.now();
        let mut shard = self.shard(step.shard);
        if let Some(refused) = shard.check(&step, now) {
            return Ok(refused);
        }
        let announce = step.announce;
        let applied = shard.apply(step, self.session_retention, now);
        drop(shard);
        if let Some(operation) = announce {
            // No receiver: nobody waits.
            let _ = self.finals.send(operation);
        }
        Ok(applied)
    }

    async fn session(&self, id: Uuid) -> Result<Option<Versioned<Session>>, StoreError> {
        let now = self.clock.now();
        Ok(self.shard(Shard::of(id)).session(id, now).cloned())
    }

    async fn header(&self, id: Uuid) -> Result<Option<Versioned<Payment>>, StoreError> {
        Ok(self
            .shard(Shard::of(id))
            .payments
            .get(&id)
            .map(|record| record.header.clone()))
    }

    async fn operation(
        &self,
        payment: Uuid,
        operation: Uuid,
    ) -> Result<Option<(Versioned<Payment>, Operation)>, StoreError> {
        let shard = self.shard(Shard::of(payment));
        Ok(shard.payments.get(&payment).and_then(|record| {
            let op = record.operations.get(&operation)?;
            Some((record.header.clone(), (**op).clone()))
        }))
    }

    async fn find_operation(
        &self,
        operation: Uuid,
    ) -> Result<Option<(Versioned<Payment>, Operation)>, StoreError> {
        let payment = self
            .shard(Shard::of(operation))
            .operations
            .get(&operation)
            .copied();
        match payment {
            Some(payment) => self.operation(payment, operation).await,
            None => Ok(None),
        }
    }

    async fn payment(&self, id: Uuid) -> Result<Option<StoredPayment>, StoreError> {
        Ok(self.shard(Shard::of(id)).stored_payment(id))
    }

    async fn index_payment(&self, payment: &Payment) -> Result<(), StoreError> {
        let member = listing_member(payment.created_at, payment.id);
        let mut listing = self.listing(&payment.merchant);
        for order_reference in [None, Some(payment.order_reference.clone())] {
            listing
                .entry((payment.merchant.clone(), order_reference))
                .or_default()
                .insert(member.clone());
        }
        Ok(())
    }

    async fn index_session(&self, session: &Session) -> Result<(), StoreError> {
        let member = listing_member(session.created_at, session.id);
        let mut listing = self.session_listing(&session.merchant);
        for order_reference in [None, Some(session.order_reference.clone())] {
            listing
                .entry((session.merchant.clone(), order_reference))
                .or_default()
                .insert(member.clone());
        }
        Ok(())
    }

    async fn list_sessions(&self, query: &ListQuery) -> Result<Vec<ListedSession>, StoreError> {
        let members = listed(&self.session_listing(&query.merchant), query);
        let now = self.clock.now();
        Ok(members
            .into_iter()
            .map(|member| {
                let session = member
                    .split_once(':')
                    .and_then(|(_, id)| Uuid::try_parse(id).ok())
                    .and_then(|id| self.shard(Shard::of(id)).session(id, now).cloned());
                ListedSession {
                    cursor: member,
                    session,
                }
            })
            .collect())
    }

    async fn list_payments(&self, query: &ListQuery) -> Result<Vec<ListedPayment>, StoreError> {
        let members = listed(&self.listing(&query.merchant), query);
        Ok(members
            .into_iter()
            .map(|member| {
                let payment = member
                    .split_once(':')
                    .and_then(|(_, id)| Uuid::try_parse(id).ok())
                    .and_then(|id| self.shard(Shard::of(id)).stored_payment(id));
                ListedPayment {
                    cursor: member,
                    payment,
                }
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl DueQueue for MemoryStore {
    async fn claim_due(
        &self,
        lane: Lane,
        now: SystemTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<DueItem>, StoreError> {
        let start = self.next_shard.fetch_add(1, Ordering::Relaxed);
        let mut claimed = Vec::new();
        for offset in 0..SHARDS {
            let mut shard = lock(&self.shards[(start + offset) % SHARDS]);
            shard.sweep(self.clock.now());
            while claimed.len() < limit {
                let Some((at, item)) = shard.due_order[lane.index()].first().cloned() else {
                    break;
                };
                if at > now {
                    break;
                }
                shard.schedule(item.clone(), now + lease);
                claimed.push(item);
            }
        }
        Ok(claimed)
    }

    async fn open_operations(&self, limit: usize) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
        let mut open = Vec::new();
        for shard in Shard::all() {
            open.extend(self.shard(shard).due.keys().filter_map(|item| match item {
                DueItem::Operation { payment, operation } => Some((*payment, *operation)),
                _ => None,
            }));
            if open.len() >= limit {
                open.truncate(limit);
                break;
            }
        }
        Ok(open)
    }

    async fn due_summary(&self, lane: Lane) -> Result<DueSummary, StoreError> {
        let mut summary = DueSummary::default();
        for shard in &self.shards {
            let shard = lock(shard);
            let queue = &shard.due_order[lane.index()];
            summary.depth += queue.len();
            if let Some(&(at, _)) = queue.first() {
                summary.earliest = Some(summary.earliest.map_or(at, |e| e.min(at)));
            }
        }
        Ok(summary)
    }

    async fn scheduled(&self, item: &DueItem) -> Result<Option<SystemTime>, StoreError> {
        Ok(self.shard(item.shard()).due.get(item).copied())
    }

    async fn list_lane(
        &self,
        lane: Lane,
        after: Option<(SystemTime, DueItem)>,
        limit: usize,
    ) -> Result<Vec<(SystemTime, DueItem)>, StoreError> {
        let mut found = BTreeSet::new();
        for shard in &self.shards {
            let shard = lock(shard);
            let queue = &shard.due_order[lane.index()];
            let rest: Box<dyn Iterator<Item = _>> = match &after {
                Some(after) => Box::new(queue.range((
                    std::ops::Bound::Excluded(after.clone()),
                    std::ops::Bound::Unbounded,
                ))),
                None => Box::new(queue.iter()),
            };
            found.extend(rest.take(limit).cloned());
        }
        Ok(found.into_iter().take(limit).collect())
    }
}

impl Notices for MemoryStore {
    fn finals(&self) -> tokio::sync::broadcast::Receiver<Uuid> {
        self.finals.subscribe()
    }
}

#[async_trait]
impl WebhookOutbox for MemoryStore {
    async fn delivery(&self, id: Uuid) -> Result<Option<WebhookDelivery>, StoreError> {
        Ok(self.shard(Shard::of(id)).outbox.get(&id).cloned())
    }
}

#[async_trait]
impl EventLog for MemoryStore {
    async fn first_sighting(
        &self,
        partner: &str,
        event_id: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut events = lock(&self.events);
        let key = (partner.to_owned(), event_id.to_owned());
        if events.get(&key).is_some_and(|forget_at| *forget_at > now) {
            return Ok(false);
        }
        events.retain(|_, forget_at| *forget_at > now);
        events.insert(key, now + ttl);
        Ok(true)
    }
}

#[async_trait]
impl SettlementStore for MemoryStore {
    async fn settlement(&self, id: Uuid) -> Result<Option<Settlement>, StoreError> {
        let now = self.clock.now();
        Ok(lock(&self.settlements)
            .settlements
            .get(&id)
            .filter(|(_, until)| *until > now)
            .map(|(settlement, _)| settlement.clone()))
    }

    async fn put_settlement_lines(
        &self,
        settlement: Uuid,
        lines: &[SettlementTransaction],
        retain_until: SystemTime,
    ) -> Result<(), StoreError> {
        let mut data = lock(&self.settlements);
        let (stored, until) = data
            .lines
            .entry(settlement)
            .or_insert_with(|| (BTreeMap::new(), retain_until));
        *until = retain_until;
        for line in lines {
            stored.insert(line.index, line.clone());
        }
        Ok(())
    }

    async fn finish_settlement(
        &self,
        settlement: &Settlement,
        retain_until: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut data = lock(&self.settlements);
        data.sweep(self.clock.now());
        if data.settlements.contains_key(&settlement.id) {
            return Ok(false);
        }
        data.index.insert(settlement_member(settlement));
        data.settlements
            .insert(settlement.id, (settlement.clone(), retain_until));
        Ok(true)
    }

    async fn settlement_lines(
        &self,
        settlement: Uuid,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<SettlementTransaction>, StoreError> {
        let now = self.clock.now();
        let data = lock(&self.settlements);
        Ok(data
            .lines
            .get(&settlement)
            .filter(|(_, until)| *until > now)
            .map(|(lines, _)| {
                lines
                    .range(offset..)
                    .take(limit)
                    .map(|(_, l)| l.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn list_settlements(
        &self,
        query: &SettlementQuery,
    ) -> Result<Vec<(String, Settlement)>, StoreError> {
        let now = self.clock.now();
        let data = lock(&self.settlements);
        Ok(members_from(&data.index, &query.low())
            .filter_map(|member| {
                let id = member
                    .rsplit_once(':')
                    .and_then(|(_, id)| Uuid::try_parse(id).ok())?;
                let (settlement, until) = data.settlements.get(&id)?;
                (*until > now).then(|| (member.clone(), settlement.clone()))
            })
            .take_while(|(_, s)| query.to.is_none_or(|to| s.date <= to))
            .filter(|(_, s)| query.admits(s))
            .take(query.limit)
            .collect())
    }

    async fn record_issue(
        &self,
        issue: &ReconciliationIssue,
        retain_until: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut data = lock(&self.settlements);
        if data.issues.contains_key(&issue.id) {
            return Ok(false);
        }
        data.issue_index.insert(issue_member(issue));
        data.issues.insert(issue.id, (issue.clone(), retain_until));
        Ok(true)
    }

    async fn list_issues(
        &self,
        query: &IssueQuery,
    ) -> Result<Vec<(String, ReconciliationIssue)>, StoreError> {
        let now = self.clock.now();
        let data = lock(&self.settlements);
        Ok(members_from(&data.issue_index, &query.low())
            .filter_map(|member| {
                let id = member
                    .rsplit_once(':')
                    .and_then(|(_, id)| Uuid::try_parse(id).ok())?;
                let (issue, until) = data.issues.get(&id)?;
                (*until > now).then(|| (member.clone(), issue.clone()))
            })
            .take_while(|(_, i)| query.created_before.is_none_or(|t| i.created_at < t))
            .filter(|(_, i)| query.admits(i))
            .take(query.limit)
            .collect())
    }

    async fn mark_settled(
        &self,
        settled: &[(Uuid, Uuid)],
        retain_until: SystemTime,
    ) -> Result<(), StoreError> {
        let mut data = lock(&self.settlements);
        for (transaction, settlement) in settled {
            data.settled
                .insert(*transaction, (*settlement, retain_until));
        }
        Ok(())
    }

    async fn settled_in(&self, transaction: Uuid) -> Result<Option<Uuid>, StoreError> {
        let now = self.clock.now();
        Ok(lock(&self.settlements)
            .settled
            .get(&transaction)
            .filter(|(_, until)| *until > now)
            .map(|(settlement, _)| *settlement))
    }

    async fn take_lease(
        &self,
        name: &str,
        owner: Uuid,
        _now: SystemTime,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        // Judged by the store's clock, like Redis's PX.
        let now = self.clock.now();
        let mut data = lock(&self.settlements);
        let free = data
            .leases
            .get(name)
            .is_none_or(|(holder, until)| *holder == owner || *until <= now);
        if free {
            data.leases.insert(name.to_owned(), (owner, now + lease));
        }
        Ok(free)
    }

    async fn release_lease(&self, name: &str, owner: Uuid) -> Result<(), StoreError> {
        let mut data = lock(&self.settlements);
        if data
            .leases
            .get(name)
            .is_some_and(|(holder, _)| *holder == owner)
        {
            data.leases.remove(name);
        }
        Ok(())
    }
}

#[async_trait]
impl Instruments for MemoryStore {
    async fn claim_instrument(
        &self,
        instrument: &str,
        claim: &InstrumentClaim,
    ) -> Result<HeldInstrument, StoreError> {
        let now = unix_millis(self.clock.now());
        let mut instruments = lock(&self.instruments);
        let stored = instruments
            .entry(instrument.to_owned())
            .or_insert_with(|| InstrumentClaim::stamp(&claim.encode(), now))
            .clone();
        held_instrument(stored, now)
    }

    async fn instrument(&self, instrument: &str) -> Result<Option<HeldInstrument>, StoreError> {
        let now = unix_millis(self.clock.now());
        let stored = lock(&self.instruments).get(instrument).cloned();
        stored
            .map(|stored| held_instrument(stored, now))
            .transpose()
    }

    async fn replace_instrument(
        &self,
        instrument: &str,
        held: &HeldInstrument,
        claim: Option<&InstrumentClaim>,
    ) -> Result<bool, StoreError> {
        let now = unix_millis(self.clock.now());
        let mut instruments = lock(&self.instruments);
        if instruments.get(instrument) != Some(&held.stored) {
            return Ok(false);
        }
        match claim {
            Some(claim) => {
                let stored = InstrumentClaim::stamp(&claim.encode(), now);
                instruments.insert(instrument.to_owned(), stored);
            }
            None => {
                instruments.remove(instrument);
            }
        }
        Ok(true)
    }
}

fn held_instrument(stored: String, now: u64) -> Result<HeldInstrument, StoreError> {
    let claim = InstrumentClaim::decode(&stored)
        .ok_or_else(|| StoreError::Corrupt("an instrument claim".into()))?;
    Ok(HeldInstrument { claim, now, stored })
}
