//! The production store: Redis (a single server or a Redis Cluster).
//!
//! Every key of a shard carries the hash tag `{<shard>}`, so a [`Step`] is
//! one Lua script on one slot: atomic on a single server and unchanged on a
//! Cluster. The listing indexes (per merchant) and partner event ids live in
//! other slots; they are written beside the steps, never inside them.
//! `docs/redis.md` lists every key and its size.
//!
//! One multiplexed connection (or cluster connection) is shared and cloned per
//! call; it reconnects by itself after Redis comes back. A failed write is
//! classified: refused before it ran (nothing applied) or unknown (a timeout
//! or a connection lost after sending: it may have been applied).

mod checkouts;
mod codec;
mod due_queue;
mod events;
mod instruments;
mod keys;
mod payments;
mod replicated;
mod scripts;
mod settlements;
mod steps;

use std::{
    ops::Bound,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use futures_util::future::try_join_all;
use redis::{
    AsyncCommands, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use std::sync::Arc;

use self::{events::*, keys::*, payments::*, replicated::Replicated, scripts::*, steps::*};
use super::{
    ClaimChange, Committed, DueChange, DueItem, DueQueue, DueSummary, EventLog, HeldInstrument,
    InstrumentClaim, Instruments, IssueQuery, KeyChange, KeyState, Lane, ListQuery, ListedPayment,
    ListedSession, Notices, OperationWrite, OutboxChange, Outcome, PaymentStore, PaymentWrite,
    SettlementQuery, SettlementStore, Shard, Step, StoreError, StoredPayment, Versioned,
    WebhookDelivery, WebhookOutbox, Write, issue_member, listing_member, member_id,
    settlement_member, unix_millis,
};
use crate::domain::{
    operation::Operation,
    payment::Payment,
    session::Session,
    settlement::{
        FailedSettlement, ReconciliationIssue, SettledBy, Settlement, SettlementTransaction,
    },
};

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// One URL, or the seed nodes of a cluster.
    pub urls: Vec<String>,
    pub cluster: bool,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    /// How long sessions are kept after their last change.
    pub session_retention: Duration,
    /// Replicas that must acknowledge every step before its answer is
    /// trusted (`WAIT`); 0: none.
    pub wait_replicas: u32,
    /// How long a step waits for them.
    pub wait_timeout: Duration,
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

pub struct RedisStore {
    connection: Connection,
    /// With `wait_replicas`: the connections steps and their `WAIT` run on.
    replicated: Option<Replicated>,
    session_retention: Duration,
    finals: tokio::sync::broadcast::Sender<Uuid>,
    health: tokio::sync::broadcast::Sender<String>,
    /// Every issue is known to be in its merchant's index.
    issues_indexed: std::sync::atomic::AtomicBool,
    /// Every settlement is known to be in its merchant's index.
    settlements_indexed: std::sync::atomic::AtomicBool,
    /// While it lives, the subscription to announced finals runs.
    _alive: Arc<()>,
}

/// The pub/sub channel of operations that became final (payload: the
/// operation id) on one server. In a cluster each shard has its own sharded
/// channel, `po:{S}:finals`, relayed only by the node serving the shard (see
/// `events::listen_sharded`).
const FINALS_CHANNEL: &str = "po:finals";

/// The pub/sub channel of partner health changes (rare: a circuit opening
/// or closing).
const HEALTH_CHANNEL: &str = "po:partner-health";

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.connection {
            Connection::Single(_) => "single",
            Connection::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore")
            .field("mode", &kind)
            .finish_non_exhaustive()
    }
}

// ---- errors ----

/// A read that failed changed nothing.
fn unavailable(error: RedisError) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

/// A write that failed: refused before it ran (Redis answered with an error,
/// or the connection was refused), or unknown (no answer, or an unreadable
/// one: it may have run).
fn write_failed(error: RedisError) -> StoreError {
    let refused = match error.kind() {
        ErrorKind::Io => error.is_connection_refusal(),
        ErrorKind::Parse => false,
        _ => true,
    };
    if refused {
        StoreError::Unavailable(Box::new(error))
    } else {
        StoreError::Unknown(Box::new(error))
    }
}

fn corrupt(what: &'static str) -> StoreError {
    StoreError::Corrupt(what.into())
}

fn ttl_millis(ttl: Duration) -> String {
    ttl.as_millis().max(1).to_string()
}

fn bytes(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => std::str::from_utf8(bytes(other)?).ok()?.parse().ok(),
    }
}

/// `v` and the record of a versioned hash (HMGET v <field>).
fn versioned<T: codec::Record>(
    version: Option<u64>,
    data: Option<Vec<u8>>,
) -> Result<Option<Versioned<T>>, StoreError> {
    match (version, data) {
        (Some(version), Some(data)) => Ok(Some(Versioned {
            value: codec::decode(&data)?,
            version,
        })),
        _ => Ok(None),
    }
}

impl RedisStore {
    /// Connects (failing fast if Redis cannot be reached).
    pub async fn connect(settings: &RedisSettings) -> Result<RedisStore, RedisError> {
        let connection = if settings.cluster {
            // No command is ever re-sent by the client: a step script re-run
            // after a response timeout would answer as if someone else had
            // written (a claim "already there", a due item "gone"), and an
            // error on the re-run would hide that the first run applied. A
            // redirect (resharding, failover) fails the call as refused:
            // nothing ran, and the caller may try again.
            let client = ClusterClientBuilder::new(settings.urls.clone())
                .connection_timeout(settings.connect_timeout)
                .response_timeout(settings.response_timeout)
                .retries(0)
                .build()?;
            Connection::Cluster(client.get_async_connection().await?)
        } else {
            let url = settings.urls.first().cloned().unwrap_or_default();
            let client = redis::Client::open(url)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout))
                .set_response_timeout(Some(settings.response_timeout))
                // Reconnection is attempted in the background; a call made
                // while Redis is down fails fast instead of waiting for it.
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_secs(2));
            Connection::Single(ConnectionManager::new_with_config(client, config).await?)
        };
        let finals = tokio::sync::broadcast::channel(4096).0;
        let alive = Arc::new(());
        let url = settings.urls.first().cloned().unwrap_or_default();
        if settings.cluster {
            tokio::spawn(listen_sharded(
                settings.clone(),
                finals.clone(),
                Arc::downgrade(&alive),
            ));
        } else {
            tokio::spawn(listen(
                url.clone(),
                FINALS_CHANNEL,
                finals.clone(),
                |text| Uuid::try_parse(&text).ok(),
                Arc::downgrade(&alive),
            ));
        }
        let health = tokio::sync::broadcast::channel(64).0;
        tokio::spawn(listen(
            url,
            HEALTH_CHANNEL,
            health.clone(),
            Some,
            Arc::downgrade(&alive),
        ));
        let replicated = match settings.wait_replicas {
            0 => None,
            _ => Some(Replicated::new(settings)?),
        };
        Ok(RedisStore {
            connection,
            replicated,
            session_retention: settings.session_retention,
            finals,
            health,
            issues_indexed: std::sync::atomic::AtomicBool::new(false),
            settlements_indexed: std::sync::atomic::AtomicBool::new(false),
            _alive: alive,
        })
    }

    fn connection(&self) -> Connection {
        self.connection.clone()
    }

    /// Whether finals are announced on each shard's own channel (a cluster:
    /// sharded pub/sub, relayed only by the shard's node) rather than on
    /// `po:finals` (one server).
    fn sharded_notices(&self) -> bool {
        matches!(self.connection, Connection::Cluster(_))
    }

    /// The record at `key` (GET), if there is one.
    async fn record<T: codec::Record>(&self, key: String) -> Result<Option<T>, StoreError> {
        let mut connection = self.connection();
        let data: Option<Vec<u8>> = connection.get(key).await.map_err(unavailable)?;
        data.map(|d| codec::decode(&d)).transpose()
    }

    /// The record in `field` of the versioned hash at `key`, if there is one.
    async fn versioned_record<T: codec::Record>(
        &self,
        key: String,
        field: &str,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let mut connection = self.connection();
        let (version, data): (Option<u64>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(key)
            .arg("v")
            .arg(field)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        versioned(version, data)
    }

    /// What Redis says about settings that can lose data (for a startup
    /// warning): `(maxmemory-policy, appendonly)`.
    pub async fn durability(&self) -> Result<(String, String), StoreError> {
        let mut connection = self.connection();
        let get = |name: &'static str| redis::cmd("CONFIG").arg("GET").arg(name).clone();
        let policy: Vec<String> = get("maxmemory-policy")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let aof: Vec<String> = get("appendonly")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok((
            policy.get(1).cloned().unwrap_or_default(),
            aof.get(1).cloned().unwrap_or_default(),
        ))
    }
}
