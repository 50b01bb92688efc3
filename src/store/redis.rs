//! The production store: Redis (a single server or a Redis Cluster).
//!
//! Every key of one payment shares the hash tag `{p:<payment id>}` (sessions
//! `{s:<id>}`, merchant-wide keys `{m:<merchant>}`), so each write is a single
//! Lua script on one slot: atomic, and unchanged on Redis Cluster. Indexes
//! live in other slots; they are derived data. `docs/redis.md` lists every key.
//!
//! One multiplexed connection (or cluster connection) is shared and cloned per
//! call; it reconnects by itself after Redis comes back.

use std::{
    sync::LazyLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use futures_util::future::try_join_all;
use redis::{
    AsyncCommands, Cmd, Pipeline, RedisFuture, Script, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{
    Claim, ClaimRequest, DueItem, IdempotencyScope, ListQuery, ListedPayment, PaymentStore,
    StoreError, Versioned, WebhookDelivery, listing_member,
};
use crate::domain::{payment::Payment, session::Session};

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
    session_retention: Duration,
}

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

/// Inserts a versioned record if the key does not exist.
/// KEYS[1] record; ARGV[1] data, ARGV[2] ttl ms ("" = none). → 1 inserted, 0 exists.
static INSERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
        redis.call('HSET', KEYS[1], 'v', 1, 'data', ARGV[1])
        if ARGV[2] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
        return 1
        ",
    )
});

/// Compare-and-set on the record's version.
/// KEYS[1] record; ARGV[1] expected version, ARGV[2] data, ARGV[3] ttl ms ("" = none).
/// → new version, 0 on a version mismatch, -1 if the record is gone.
static UPDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local v = redis.call('HGET', KEYS[1], 'v')
        if not v then return -1 end
        if v ~= ARGV[1] then return 0 end
        local next = tonumber(v) + 1
        redis.call('HSET', KEYS[1], 'v', next, 'data', ARGV[2])
        if ARGV[3] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
        return next
        ",
    )
});

/// Claims an idempotency key.
/// KEYS[1] record; ARGV: fingerprint, reserved id, now ms, lease ms, ttl ms.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local now = tonumber(ARGV[3])
        if redis.call('EXISTS', KEYS[1]) == 0 then
          redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'rid', ARGV[2], 'state', 'inflight',
                     'lease_until', now + tonumber(ARGV[4]), 'lease', ARGV[4])
          redis.call('PEXPIRE', KEYS[1], ARGV[5])
          return {'acquired'}
        end
        local r = redis.call('HMGET', KEYS[1], 'fp', 'rid', 'state', 'lease_until', 'lease', 'outcome')
        if r[1] ~= ARGV[1] then return {'mismatch'} end
        if r[3] == 'done' then return {'done', r[6]} end
        if tonumber(r[4]) > now then return {'inflight'} end
        redis.call('HSET', KEYS[1], 'lease_until', now + tonumber(r[5]))
        return {'taken_over', r[2]}
        ",
    )
});

/// Stores the outcome of a claimed key, keeping its TTL.
/// KEYS[1] record; ARGV[1] outcome; ARGV[2] "1" = only if still in flight.
static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
        if ARGV[2] == '1' and redis.call('HGET', KEYS[1], 'state') ~= 'inflight' then return 0 end
        redis.call('HSET', KEYS[1], 'state', 'done', 'outcome', ARGV[1])
        return 1
        ",
    )
});

/// Takes the due items and moves them to the end of their lease.
/// KEYS[1] due-queue; ARGV: now ms, lease end ms, limit.
static CLAIM_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
        for _, item in ipairs(items) do
          redis.call('ZADD', KEYS[1], ARGV[2], item)
        end
        return items
        ",
    )
});

/// The due-queue: one sorted set (one slot), score = due time in ms.
const DUE_KEY: &str = "po:{due}:queue";

fn webhook_key(id: Uuid) -> String {
    format!("po:{{w:{id}}}:webhook")
}

fn event_key(partner: &str, event_id: &str) -> String {
    format!("po:{{e:{partner}}}:event:{}", digest(event_id))
}

fn session_key(id: Uuid) -> String {
    format!("po:{{s:{id}}}:session")
}

fn payment_key(id: Uuid) -> String {
    format!("po:{{p:{id}}}:payment")
}

fn operation_key(id: Uuid) -> String {
    format!("po:{{o:{id}}}:payment")
}

fn listing_key(merchant: &str, order_reference: Option<&str>) -> String {
    match order_reference {
        None => format!("po:{{m:{merchant}}}:payments"),
        Some(reference) => format!("po:{{m:{merchant}}}:payments:order:{}", digest(reference)),
    }
}

/// The record of an idempotency key lives in the slot of what it is about.
fn idempotency_key(scope: &IdempotencyScope) -> String {
    let tag = match scope.resource.split_once(':') {
        Some(("payment", id)) => format!("p:{id}"),
        Some(("session", id)) => format!("s:{id}"),
        _ => format!("m:{}", scope.merchant),
    };
    format!(
        "po:{{{tag}}}:idem:{}:{}:{}",
        scope.merchant,
        scope.resource,
        digest(&scope.key)
    )
}

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

fn encode<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(Box::new(e)))
}

fn decode<T: DeserializeOwned>(data: &str) -> Result<T, StoreError> {
    serde_json::from_str(data).map_err(|e| StoreError::Corrupt(Box::new(e)))
}

fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn ttl_millis(ttl: Duration) -> String {
    ttl.as_millis().max(1).to_string()
}

impl RedisStore {
    /// Connects (failing fast if Redis cannot be reached).
    pub async fn connect(settings: &RedisSettings) -> Result<RedisStore, redis::RedisError> {
        let connection = if settings.cluster {
            let client = ClusterClientBuilder::new(settings.urls.clone())
                .connection_timeout(settings.connect_timeout)
                .response_timeout(settings.response_timeout)
                .retries(2)
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
        Ok(RedisStore {
            connection,
            session_retention: settings.session_retention,
        })
    }

    fn connection(&self) -> Connection {
        self.connection.clone()
    }

    async fn read<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<Versioned<T>>, StoreError> {
        let mut connection = self.connection();
        let (version, data): (Option<u64>, Option<String>) = redis::cmd("HMGET")
            .arg(key)
            .arg("v")
            .arg("data")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        match (version, data) {
            (Some(version), Some(data)) => Ok(Some(Versioned {
                value: decode(&data)?,
                version,
            })),
            _ => Ok(None),
        }
    }

    async fn insert<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let mut connection = self.connection();
        let inserted: i64 = INSERT
            .key(key)
            .arg(encode(value)?)
            .arg(ttl.map(ttl_millis).unwrap_or_default())
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if inserted == 1 {
            Ok(())
        } else {
            Err(StoreError::AlreadyExists)
        }
    }

    async fn update<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        version: u64,
        ttl: Option<Duration>,
    ) -> Result<u64, StoreError> {
        let mut connection = self.connection();
        let result: i64 = UPDATE
            .key(key)
            .arg(version)
            .arg(encode(value)?)
            .arg(ttl.map(ttl_millis).unwrap_or_default())
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        u64::try_from(result)
            .ok()
            .filter(|v| *v > 0)
            .ok_or(StoreError::Conflict)
    }
}

#[async_trait]
impl PaymentStore for RedisStore {
    async fn insert_session(&self, session: &Session) -> Result<(), StoreError> {
        self.insert(
            &session_key(session.id),
            session,
            Some(self.session_retention),
        )
        .await
    }

    async fn session(&self, id: Uuid) -> Result<Option<Versioned<Session>>, StoreError> {
        self.read(&session_key(id)).await
    }

    async fn update_session(&self, session: &Session, version: u64) -> Result<u64, StoreError> {
        self.update(
            &session_key(session.id),
            session,
            version,
            Some(self.session_retention),
        )
        .await
    }

    async fn insert_payment(&self, payment: &Payment) -> Result<(), StoreError> {
        self.insert(&payment_key(payment.id), payment, None).await?;
        // Derived indexes, in the merchant's slot (one MULTI there).
        let member = listing_member(payment.created_at, payment.id);
        let mut pipeline = redis::pipe();
        pipeline
            .atomic()
            .zadd(listing_key(&payment.merchant, None), &member, 0)
            .zadd(
                listing_key(&payment.merchant, Some(&payment.order_reference)),
                &member,
                0,
            );
        let mut connection = self.connection();
        pipeline
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn payment(&self, id: Uuid) -> Result<Option<Versioned<Payment>>, StoreError> {
        self.read(&payment_key(id)).await
    }

    async fn update_payment(&self, payment: &Payment, version: u64) -> Result<u64, StoreError> {
        self.update(&payment_key(payment.id), payment, version, None)
            .await
    }

    async fn index_operation(&self, operation: Uuid, payment: Uuid) -> Result<(), StoreError> {
        let mut connection = self.connection();
        connection
            .set::<_, _, ()>(operation_key(operation), payment.to_string())
            .await
            .map_err(unavailable)
    }

    async fn payment_of_operation(&self, operation: Uuid) -> Result<Option<Uuid>, StoreError> {
        let mut connection = self.connection();
        let id: Option<String> = connection
            .get(operation_key(operation))
            .await
            .map_err(unavailable)?;
        Ok(id.and_then(|id| Uuid::try_parse(&id).ok()))
    }

    async fn list_payments(&self, query: &ListQuery) -> Result<Vec<ListedPayment>, StoreError> {
        let key = listing_key(&query.merchant, query.order_reference.as_deref());
        let (low, high) = query.lex_bounds();
        let mut command = redis::cmd("ZRANGE");
        command.arg(&key);
        if query.newest_first {
            command.arg(&high).arg(&low).arg("BYLEX").arg("REV");
        } else {
            command.arg(&low).arg(&high).arg("BYLEX");
        }
        command.arg("LIMIT").arg(0).arg(query.limit);
        let mut connection = self.connection();
        let members: Vec<String> = command
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let ids: Vec<(String, Uuid)> = members
            .into_iter()
            .filter_map(|member| {
                let id = Uuid::try_parse(member.split_once(':')?.1).ok()?;
                Some((member, id))
            })
            .collect();
        // Every payment has its own slot: one command each, sent concurrently
        // (the multiplexed connection pipelines them on the wire).
        let data: Vec<Option<String>> = try_join_all(ids.iter().map(|(_, id)| {
            let mut connection = self.connection();
            async move { connection.hget(payment_key(*id), "data").await }
        }))
        .await
        .map_err(unavailable)?;
        ids.into_iter()
            .zip(data)
            .map(|((cursor, _), data)| {
                Ok(ListedPayment {
                    cursor,
                    payment: data.map(|d| decode(&d)).transpose()?,
                })
            })
            .collect()
    }

    async fn claim(
        &self,
        scope: &IdempotencyScope,
        request: &ClaimRequest,
        now: SystemTime,
    ) -> Result<Claim, StoreError> {
        let mut connection = self.connection();
        let answer: Vec<Value> = CLAIM
            .key(idempotency_key(scope))
            .arg(&request.fingerprint)
            .arg(request.reserved_id.to_string())
            .arg(millis(now))
            .arg(request.lease.as_millis().to_string())
            .arg(ttl_millis(request.ttl))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let text = |value: Option<&Value>| -> Option<Vec<u8>> {
            match value? {
                Value::BulkString(bytes) => Some(bytes.clone()),
                Value::SimpleString(text) => Some(text.clone().into_bytes()),
                _ => None,
            }
        };
        let corrupt = || StoreError::Corrupt("unexpected answer to the claim script".into());
        let tag = text(answer.first()).ok_or_else(corrupt)?;
        Ok(match tag.as_slice() {
            b"acquired" => Claim::Acquired,
            b"mismatch" => Claim::Mismatch,
            b"inflight" => Claim::InFlight,
            b"done" => Claim::Done(text(answer.get(1)).unwrap_or_default()),
            b"taken_over" => {
                let id = text(answer.get(1)).ok_or_else(corrupt)?;
                let id = std::str::from_utf8(&id)
                    .ok()
                    .and_then(|s| Uuid::try_parse(s).ok());
                Claim::TakenOver {
                    reserved_id: id.ok_or_else(corrupt)?,
                }
            }
            _ => return Err(corrupt()),
        })
    }

    async fn complete(
        &self,
        scope: &IdempotencyScope,
        outcome: &[u8],
        _now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut connection = self.connection();
        COMPLETE
            .key(idempotency_key(scope))
            .arg(outcome)
            .arg("0")
            .invoke_async::<i64>(&mut connection)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn complete_if_in_flight(
        &self,
        scope: &IdempotencyScope,
        outcome: &[u8],
    ) -> Result<(), StoreError> {
        let mut connection = self.connection();
        COMPLETE
            .key(idempotency_key(scope))
            .arg(outcome)
            .arg("1")
            .invoke_async::<i64>(&mut connection)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn release(&self, scope: &IdempotencyScope) -> Result<(), StoreError> {
        let mut connection = self.connection();
        connection
            .del::<_, ()>(idempotency_key(scope))
            .await
            .map_err(unavailable)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn schedule(&self, item: &DueItem, due_at: SystemTime) -> Result<(), StoreError> {
        let mut connection = self.connection();
        connection
            .zadd::<_, _, _, ()>(DUE_KEY, item.encode(), millis(due_at))
            .await
            .map_err(unavailable)
    }

    async fn unschedule(&self, item: &DueItem) -> Result<(), StoreError> {
        let mut connection = self.connection();
        connection
            .zrem::<_, _, ()>(DUE_KEY, item.encode())
            .await
            .map_err(unavailable)
    }

    async fn claim_due(
        &self,
        now: SystemTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<DueItem>, StoreError> {
        let mut connection = self.connection();
        let items: Vec<String> = CLAIM_DUE
            .key(DUE_KEY)
            .arg(millis(now))
            .arg(millis(now + lease))
            .arg(limit)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(items
            .iter()
            .filter_map(|item| DueItem::decode(item))
            .collect())
    }

    async fn due_summary(&self) -> Result<(usize, Option<SystemTime>), StoreError> {
        let mut connection = self.connection();
        let count: usize = connection.zcard(DUE_KEY).await.map_err(unavailable)?;
        let first: Vec<(String, u64)> = connection
            .zrange_withscores(DUE_KEY, 0, 0)
            .await
            .map_err(unavailable)?;
        let earliest = first
            .first()
            .map(|(_, ms)| UNIX_EPOCH + Duration::from_millis(*ms));
        Ok((count, earliest))
    }

    async fn put_webhook(&self, delivery: &WebhookDelivery) -> Result<bool, StoreError> {
        let mut connection = self.connection();
        redis::cmd("SET")
            .arg(webhook_key(delivery.id))
            .arg(encode(delivery)?)
            .arg("NX")
            .query_async::<Option<String>>(&mut connection)
            .await
            .map(|set| set.is_some())
            .map_err(unavailable)
    }

    async fn webhook(&self, id: Uuid) -> Result<Option<WebhookDelivery>, StoreError> {
        let mut connection = self.connection();
        let data: Option<String> = connection.get(webhook_key(id)).await.map_err(unavailable)?;
        data.map(|d| decode(&d)).transpose()
    }

    async fn update_webhook(&self, delivery: &WebhookDelivery) -> Result<(), StoreError> {
        let mut connection = self.connection();
        connection
            .set::<_, _, ()>(webhook_key(delivery.id), encode(delivery)?)
            .await
            .map_err(unavailable)
    }

    async fn delete_webhook(&self, id: Uuid) -> Result<(), StoreError> {
        let mut connection = self.connection();
        connection
            .del::<_, ()>(webhook_key(id))
            .await
            .map_err(unavailable)
    }

    async fn first_sighting(
        &self,
        partner: &str,
        event_id: &str,
        ttl: Duration,
        _now: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut connection = self.connection();
        redis::cmd("SET")
            .arg(event_key(partner, event_id))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1).to_string())
            .query_async::<Option<String>>(&mut connection)
            .await
            .map(|set| set.is_some())
            .map_err(unavailable)
    }
}
