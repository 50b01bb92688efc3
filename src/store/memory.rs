//! The embedded store: everything in this process, the default for
//! `cargo run` and for tests of the layers above the store.
//!
//! Records are kept as domain values (nothing is serialized), behind one
//! lock per shard: a step locks the one shard it writes, so requests on
//! different payments never wait for each other. Idempotency records expire
//! after their ttl and sessions after the retention, like Redis keys: expired
//! records read as absent and are reclaimed by a sweep that runs with every
//! due-queue claim (the resolver's tick).

mod checkouts;
mod due_queue;
mod events;
mod instruments;
mod payments;
mod settlements;
mod shard;

use self::{payments::*, settlements::*, shard::*};

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
    WebhookDelivery, WebhookOutbox, Write, issue_member, listing_member, member_id,
    settlement_member, unix_millis,
};
use crate::{
    clock::Clock,
    domain::{
        operation::{Fingerprint, Operation},
        payment::{Payment, Snapshot},
        session::Session,
        settlement::{
            FailedSettlement, ReconciliationIssue, SettledBy, Settlement, SettlementTransaction,
        },
    },
};

#[derive(Debug)]
pub struct MemoryStore {
    shards: Vec<Mutex<ShardData>>,
    listings: Vec<Mutex<Listing>>,
    session_listings: Vec<Mutex<Listing>>,
    events: Mutex<HashMap<(String, String), SystemTime>>,
    settlements: Mutex<Settlements>,
    /// Instrument → its claim, stored as Redis stores it.
    instruments: Mutex<HashMap<String, String>>,
    checkouts: Mutex<checkouts::Kept>,
    session_retention: Duration,
    /// The service's clock: what "expired" means here (Redis uses its own).
    clock: Arc<dyn Clock>,
    /// Where the next due-queue claim starts, so no shard is always last.
    next_shard: AtomicUsize,
    finals: tokio::sync::broadcast::Sender<Uuid>,
    health: tokio::sync::broadcast::Sender<String>,
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
            checkouts: Mutex::default(),
            session_retention,
            clock,
            next_shard: AtomicUsize::new(0),
            finals: tokio::sync::broadcast::channel(4096).0,
            health: tokio::sync::broadcast::channel(64).0,
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
