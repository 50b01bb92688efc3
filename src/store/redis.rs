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

mod codec;
mod replicated;
mod scripts;

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

use self::{
    replicated::Replicated,
    scripts::{CLAIM_DUE, CONCLUDE, OPEN, STEP},
};
use super::{
    ClaimChange, Committed, DueChange, DueItem, DueQueue, DueSummary, EventLog, HeldInstrument,
    InstrumentClaim, Instruments, IssueQuery, KeyChange, KeyState, Lane, ListQuery, ListedPayment,
    ListedSession, Notices, OperationWrite, OutboxChange, Outcome, PaymentStore, PaymentWrite,
    SettlementQuery, SettlementStore, Shard, Step, StoreError, StoredPayment, Versioned,
    WebhookDelivery, WebhookOutbox, Write, issue_member, listing_member, settlement_member,
    unix_millis,
};
use crate::domain::{
    operation::Operation,
    payment::Payment,
    session::Session,
    settlement::{ReconciliationIssue, Settlement, SettlementTransaction},
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
    /// While it lives, the subscription to announced finals runs.
    _alive: Arc<()>,
}

/// The pub/sub channel of operations that became final (payload: the
/// operation id). Classic pub/sub: in a cluster every node relays it.
const FINALS_CHANNEL: &str = "po:finals";

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

// ---- keys ----

fn in_shard(shard: Shard, rest: &str) -> String {
    format!("po:{{{}}}:{rest}", shard.index())
}

fn session_key(id: Uuid) -> String {
    format!("po:{{{}}}:s:{id}", Shard::of(id).index())
}

fn payment_key(id: Uuid) -> String {
    format!("po:{{{}}}:p:{id}", Shard::of(id).index())
}

fn operation_index_key(shard: Shard) -> String {
    in_shard(shard, "ops")
}

fn record_key(id: Uuid) -> String {
    format!("po:{{{}}}:k:{id}", Shard::of(id).index())
}

/// The send claim of one leg of an operation (in the operation's shard).
fn claim_key(operation: Uuid, leg: usize) -> String {
    format!(
        "po:{{{}}}:c:{operation}:{leg}",
        Shard::of(operation).index()
    )
}

fn due_key(shard: Shard) -> String {
    lane_key(shard, Lane::Resolution)
}

/// The sorted set of a lane's items in a shard, by due time (ms).
fn lane_key(shard: Shard, lane: Lane) -> String {
    in_shard(
        shard,
        match lane {
            Lane::Resolution => "due",
            Lane::Delivery => "hooks",
            Lane::Failed => "hooks-failed",
        },
    )
}

fn delivery_key(id: Uuid) -> String {
    format!("po:{{{}}}:w:{id}", Shard::of(id).index())
}

fn event_key(partner: &str, event_id: &str) -> String {
    format!("po:{{e:{partner}}}:event:{}", digest(event_id))
}

fn listing_key(merchant: &str, order_reference: Option<&str>) -> String {
    match order_reference {
        None => format!("po:{{m:{merchant}}}:payments"),
        Some(reference) => format!("po:{{m:{merchant}}}:payments:order:{}", digest(reference)),
    }
}

fn settlement_key(id: Uuid) -> String {
    format!("po:{{stl:{id}}}:settlement")
}

fn settlement_lines_key(id: Uuid) -> String {
    format!("po:{{stl:{id}}}:lines")
}

const SETTLEMENT_INDEX: &str = "po:{stl}:index";
const ISSUE_INDEX: &str = "po:{rec}:index";

fn issue_key(id: Uuid) -> String {
    format!("po:{{rec}}:issue:{id}")
}

/// Which settlement showed a partner transaction (in the transaction's
/// shard: written and read one key at a time).
fn settled_key(transaction: Uuid) -> String {
    format!(
        "po:{{{}}}:settled:{transaction}",
        Shard::of(transaction).index()
    )
}

/// An instrument's claim: a key in a slot of its own.
fn instrument_key(instrument: &str) -> String {
    format!("po:{{tok:{instrument}}}")
}

/// `@now` in a claim's attempts (its third field) becomes Redis's time in
/// ms; the merchant's name (the last field) is never touched.
macro_rules! stamp {
    () => {
        r"
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local function stamp(v)
  local _, last = string.find(v, '^[^|]*|[^|]*|[^|]*|')
  if not last then return v end
  return (string.gsub(string.sub(v, 1, last), '@now', '@' .. now)) .. string.sub(v, last + 1)
end
"
    };
}

/// Claims an instrument unless claimed; answers the claim that holds it and
/// Redis's time.
const CLAIM_INSTRUMENT: &str = concat!(
    stamp!(),
    r"
local held = redis.call('GET', KEYS[1])
if not held then
  held = stamp(ARGV[1])
  redis.call('SET', KEYS[1], held)
end
return {held, now}
"
);

/// Replaces the claim ARGV[1] (as read) by ARGV[2] (`` removes it);
/// 0 if it changed since.
const REPLACE_INSTRUMENT: &str = concat!(
    stamp!(),
    r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('SET', KEYS[1], stamp(ARGV[2]))
return 1
"
);

/// What GET of a claim answers, with Redis's time.
const READ_INSTRUMENT: &str = r"
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
return {redis.call('GET', KEYS[1]) or '', now}
";

fn lease_key(name: &str) -> String {
    format!("po:{{lease:{name}}}")
}

/// Takes the lease if it is free or ours: `KEYS[1]` the lease,
/// `ARGV` owner and lease millis.
const TAKE_LEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Deletes the lease if `ARGV[1]` holds it.
const RELEASE_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
";

fn session_listing_key(merchant: &str, order_reference: Option<&str>) -> String {
    match order_reference {
        None => format!("po:{{m:{merchant}}}:sessions"),
        Some(reference) => format!("po:{{m:{merchant}}}:sessions:order:{}", digest(reference)),
    }
}

fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
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
        tokio::spawn(listen_for_finals(
            url,
            finals.clone(),
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
            _alive: alive,
        })
    }

    fn connection(&self) -> Connection {
        self.connection.clone()
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

    async fn read_header_and(
        &self,
        payment: Uuid,
        operation: Uuid,
    ) -> Result<Option<(Versioned<Payment>, Operation)>, StoreError> {
        let mut connection = self.connection();
        let (version, header, op): (Option<u64>, Option<Vec<u8>>, Option<Vec<u8>>) =
            redis::cmd("HMGET")
                .arg(payment_key(payment))
                .arg("v")
                .arg("h")
                .arg(operation.to_string())
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
        let Some(header) = versioned(version, header)? else {
            return Ok(None);
        };
        op.map(|op| Ok((header, codec::decode(&op)?))).transpose()
    }

    /// A stored answer, with the final operations it refers to read back.
    async fn outcome(&self, bytes: &[u8]) -> Result<Outcome, StoreError> {
        let stored: codec::StoredOutcome = codec::decode(bytes)?;
        if let Some(id) = stored.session() {
            let session = self.session(id).await?.map(|s| s.value);
            return stored.resolve(session, &[]);
        }
        let Some((payment, ids)) = stored.references() else {
            return stored.resolve(None, &[]);
        };
        let mut command = redis::cmd("HMGET");
        command.arg(payment_key(payment));
        for id in &ids {
            command.arg(id.to_string());
        }
        let mut connection = self.connection();
        let records: Vec<Option<Vec<u8>>> = command
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let operations = records
            .into_iter()
            .flatten()
            .map(|record| codec::decode(&record))
            .collect::<Result<Vec<Operation>, _>>()?;
        stored.resolve(None, &operations)
    }

    async fn stored_payment(&self, id: Uuid) -> Result<Option<StoredPayment>, StoreError> {
        let mut connection = self.connection();
        let fields: Vec<(Vec<u8>, Vec<u8>)> = connection
            .hgetall(payment_key(id))
            .await
            .map_err(unavailable)?;
        let (mut version, mut header, mut operations) = (None, None, Vec::new());
        for (field, value) in fields {
            match field.as_slice() {
                b"v" => {
                    version = std::str::from_utf8(&value)
                        .ok()
                        .and_then(|v| v.parse().ok());
                }
                b"h" => header = Some(value),
                _ => operations.push(codec::decode::<Operation>(&value)?),
            }
        }
        let Some(header) = versioned(version, header)? else {
            return Ok(None);
        };
        operations.sort_by_key(|op| op.sequence);
        Ok(Some(StoredPayment { header, operations }))
    }
}

/// The keys and arguments of a step, in the order `STEP` reads them.
fn step_invocation(
    step: &Step,
    session_retention: Duration,
) -> Result<redis::ScriptInvocation<'static>, StoreError> {
    let shard = step.shard;
    let mut invocation = STEP.prepare_invoke();
    let placeholder = || in_shard(shard, "-");
    invocation.key(
        step.key
            .as_ref()
            .map_or_else(placeholder, |k| record_key(k.record())),
    );
    let session_id = step.session.as_ref().map(|write| match write {
        Write::Insert(session) | Write::Update { value: session, .. } => session.id,
        Write::Check { id, .. } => *id,
    });
    invocation.key(session_id.map_or_else(placeholder, session_key));
    let payment_id = step.payment.as_ref().map(|write| match &write.header {
        Write::Insert(payment) | Write::Update { value: payment, .. } => payment.id,
        Write::Check { id, .. } => *id,
    });
    invocation.key(payment_id.map_or_else(placeholder, payment_key));
    invocation.key(operation_index_key(shard));
    for lane in Lane::ALL {
        invocation.key(lane_key(shard, lane));
    }
    for change in &step.outbox {
        let id = match change {
            OutboxChange::Put(delivery) | OutboxChange::Update(delivery) => delivery.id,
            OutboxChange::Delete(id) => *id,
        };
        invocation.key(delivery_key(id));
    }
    for change in &step.claims {
        let (operation, leg) = change.leg();
        invocation.key(claim_key(operation, leg));
    }

    invocation.arg(unix_millis(step.now));
    match &step.key {
        None => invocation.arg("").arg("").arg("").arg("").arg(""),
        Some(KeyChange::Claim {
            fingerprint,
            lease,
            ttl,
            ..
        }) => invocation
            .arg("claim")
            .arg(fingerprint.0.as_slice())
            .arg(ttl_millis(*lease))
            .arg(ttl_millis(*ttl))
            .arg(""),
        Some(KeyChange::Answer {
            fingerprint,
            outcome,
            ttl,
            ..
        }) => invocation
            .arg("answer")
            .arg(fingerprint.0.as_slice())
            .arg("")
            .arg(ttl_millis(*ttl))
            .arg(codec::encode_outcome(outcome)?),
        Some(KeyChange::Abandon { .. }) => {
            invocation.arg("abandon").arg("").arg("").arg("").arg("")
        }
        Some(KeyChange::Complete { outcome, .. }) => invocation
            .arg("complete")
            .arg("")
            .arg("")
            .arg("")
            .arg(codec::encode_outcome(outcome)?),
    };
    match &step.session {
        None => invocation.arg("").arg("").arg(""),
        Some(Write::Insert(session)) => invocation
            .arg("insert")
            .arg("")
            .arg(codec::encode(session)?),
        Some(Write::Update { expected, value }) => invocation
            .arg("update")
            .arg(*expected)
            .arg(codec::encode(value)?),
        Some(Write::Check { expected, .. }) => invocation.arg("check").arg(*expected).arg(""),
    };
    invocation.arg(ttl_millis(session_retention));
    let (mode, expected, header) = match step.payment.as_ref().map(|p| &p.header) {
        None => ("", None, None),
        Some(Write::Insert(payment)) => ("insert", None, Some(codec::encode(payment)?)),
        Some(Write::Update { expected, value }) => {
            ("update", Some(*expected), Some(codec::encode(value)?))
        }
        Some(Write::Check { expected, .. }) => ("check", Some(*expected), None),
    };
    invocation
        .arg(mode)
        .arg(expected.map(|v| v.to_string()).unwrap_or_default())
        .arg(header.unwrap_or_default())
        .arg(payment_id.map_or_else(Vec::new, |id| id.as_bytes().to_vec()));
    let operations = step.payment.as_ref().map_or(&[][..], |p| &p.operations[..]);
    invocation.arg(operations.len());
    for write in operations {
        let (mode, op) = match write {
            OperationWrite::Insert(op) => ("i", op),
            OperationWrite::Update(op) => ("u", op),
        };
        invocation
            .arg(op.id.to_string())
            .arg(mode)
            .arg(codec::encode(op)?)
            .arg(op.id.as_bytes().as_slice());
    }
    invocation.arg(step.due.len());
    for change in &step.due {
        match change {
            DueChange::Schedule(item, at) => {
                invocation.arg("+").arg(item.encode()).arg(unix_millis(*at))
            }
            DueChange::Unschedule(item) => invocation.arg("-").arg(item.encode()).arg(""),
        };
    }
    invocation.arg(step.outbox.len());
    for change in &step.outbox {
        match change {
            OutboxChange::Put(delivery) => invocation.arg("p").arg(codec::encode(delivery)?),
            OutboxChange::Update(delivery) => invocation.arg("u").arg(codec::encode(delivery)?),
            OutboxChange::Delete(_) => invocation.arg("d").arg(""),
        };
    }
    invocation.arg(announced(step));
    invocation.arg(step.claims.len());
    claim_args(&mut invocation, &step.claims);
    Ok(invocation)
}

/// `(t|r, fence, ttl ms)` per claim change, in the order of their keys.
fn claim_args(invocation: &mut redis::ScriptInvocation<'static>, claims: &[ClaimChange]) {
    for change in claims {
        match change {
            ClaimChange::Take { fence, ttl, .. } => {
                invocation.arg("t").arg(*fence).arg(ttl_millis(*ttl))
            }
            ClaimChange::Release { fence, .. } => invocation.arg("r").arg(*fence).arg(""),
        };
    }
}

/// The `announce` argument of a step script: the operation id, or empty.
fn announced(step: &Step) -> String {
    step.announce.map(|id| id.to_string()).unwrap_or_default()
}

/// The hot shapes of a step get a lean script: opening an operation
/// (claim, header compare-and-set, one new operation, its due entry) and
/// writing one (header compare-and-set, the operation, maybe the answer,
/// due-queue moves). `None`: any other shape, for [`STEP`].
fn lean_invocation(step: &Step) -> Result<Option<redis::ScriptInvocation<'static>>, StoreError> {
    let resolution_only = step.due.iter().all(|change| match change {
        DueChange::Schedule(item, _) | DueChange::Unschedule(item) => {
            item.lane() == Lane::Resolution
        }
    });
    if step.session.is_some() || !step.outbox.is_empty() || !resolution_only {
        return Ok(None);
    }
    let opens = matches!(step.key, Some(KeyChange::Claim { .. }));
    if opens && step.announce.is_some() {
        return Ok(None);
    }
    let Some(PaymentWrite {
        header: Write::Update { expected, value },
        operations,
    }) = &step.payment
    else {
        return Ok(None);
    };
    let shard = step.shard;
    match (&step.key, operations.as_slice(), step.due.as_slice()) {
        (
            Some(KeyChange::Claim {
                record,
                fingerprint,
                lease,
                ttl,
            }),
            [OperationWrite::Insert(op)],
            [DueChange::Schedule(item, at)],
        ) => {
            let first = match step.claims.as_slice() {
                [] => None,
                [
                    ClaimChange::Take {
                        operation,
                        leg,
                        fence,
                        ttl,
                    },
                ] if *operation == op.id => Some((*leg, *fence, *ttl)),
                _ => return Ok(None),
            };
            let mut invocation = OPEN.prepare_invoke();
            invocation
                .key(record_key(*record))
                .key(payment_key(value.id))
                .key(operation_index_key(shard))
                .key(due_key(shard))
                .key(first.map_or_else(|| in_shard(shard, "-"), |(leg, ..)| claim_key(op.id, leg)))
                .arg(fingerprint.0.as_slice())
                .arg(ttl_millis(*lease))
                .arg(ttl_millis(*ttl))
                .arg(*expected)
                .arg(codec::encode(value)?)
                .arg(op.id.to_string())
                .arg(codec::encode(op)?)
                .arg(value.id.as_bytes().as_slice())
                .arg(item.encode())
                .arg(unix_millis(*at))
                .arg(op.id.as_bytes().as_slice())
                .arg(expected + 1)
                .arg(
                    first
                        .map(|(_, fence, _)| fence.to_string())
                        .unwrap_or_default(),
                )
                .arg(first.map(|(.., ttl)| ttl_millis(ttl)).unwrap_or_default());
            Ok(Some(invocation))
        }
        (None | Some(KeyChange::Complete { .. }), [OperationWrite::Update(op)], due) => {
            let mut invocation = CONCLUDE.prepare_invoke();
            let (record, outcome) = match &step.key {
                Some(KeyChange::Complete { record, outcome }) => {
                    (record_key(*record), codec::encode_outcome(outcome)?)
                }
                _ => (in_shard(shard, "-"), Vec::new()),
            };
            invocation
                .key(record)
                .key(payment_key(value.id))
                .key(due_key(shard));
            for change in &step.claims {
                let (operation, leg) = change.leg();
                invocation.key(claim_key(operation, leg));
            }
            invocation
                .arg(*expected)
                .arg(codec::encode(value)?)
                .arg(op.id.to_string())
                .arg(codec::encode(op)?)
                .arg(outcome)
                .arg(expected + 1)
                .arg(announced(step))
                .arg(due.len());
            for change in due {
                match change {
                    DueChange::Schedule(item, at) => {
                        invocation.arg("+").arg(item.encode()).arg(unix_millis(*at))
                    }
                    DueChange::Unschedule(item) => invocation.arg("-").arg(item.encode()).arg(""),
                };
            }
            claim_args(&mut invocation, &step.claims);
            Ok(Some(invocation))
        }
        _ => Ok(None),
    }
}

/// A step script's answer, before stored answers are read back.
enum Answer {
    Applied {
        payment: Option<u64>,
        session: Option<u64>,
        answered: Option<Vec<u8>>,
    },
    Conflict,
    Exists,
    Busy,
    Mismatch,
    Done(Vec<u8>),
    InFlight {
        lease_expired: bool,
    },
}

fn answer(values: &[Value]) -> Result<Answer, StoreError> {
    let tag = values
        .first()
        .and_then(bytes)
        .ok_or_else(|| corrupt("an empty step answer"))?;
    Ok(match tag {
        b"ok" => Answer::Applied {
            payment: values.get(1).and_then(number),
            session: values.get(2).and_then(number),
            answered: match values.get(3) {
                Some(Value::BulkString(outcome)) => Some(outcome.clone()),
                _ => None,
            },
        },
        b"conflict" => Answer::Conflict,
        b"exists" => Answer::Exists,
        b"busy" => Answer::Busy,
        b"mismatch" => Answer::Mismatch,
        b"done" => Answer::Done(
            values
                .get(1)
                .and_then(bytes)
                .ok_or_else(|| corrupt("a done key without outcome"))?
                .to_vec(),
        ),
        b"inflight" => Answer::InFlight {
            lease_expired: false,
        },
        b"expired" => Answer::InFlight {
            lease_expired: true,
        },
        _ => return Err(corrupt("an unknown step answer")),
    })
}

/// A listing bound in `ZRANGE … BYLEX` syntax.
fn lex(bound: &Bound<String>, unbounded: &str) -> String {
    match bound {
        Bound::Included(member) => format!("[{member}"),
        Bound::Excluded(member) => format!("({member}"),
        Bound::Unbounded => unbounded.to_owned(),
    }
}

impl RedisStore {
    /// What a step script answered, with stored answers read back.
    async fn committed(&self, values: &[Value]) -> Result<Committed, StoreError> {
        Ok(match answer(values)? {
            Answer::Applied {
                payment,
                session,
                answered,
            } => Committed::Applied {
                payment,
                session,
                answered: match answered {
                    Some(bytes) => Some(Box::new(self.outcome(&bytes).await?)),
                    None => None,
                },
            },
            Answer::Conflict => Committed::Conflict,
            Answer::Exists => Committed::Exists,
            Answer::Busy => Committed::Busy,
            Answer::Mismatch => Committed::Claimed(KeyState::Mismatch),
            Answer::Done(bytes) => {
                Committed::Claimed(KeyState::Done(Box::new(self.outcome(&bytes).await?)))
            }
            Answer::InFlight { lease_expired } => {
                Committed::Claimed(KeyState::InFlight { lease_expired })
            }
        })
    }
}

#[async_trait]
impl PaymentStore for RedisStore {
    async fn commit(&self, step: Step) -> Result<Committed, StoreError> {
        let invocation = match lean_invocation(&step)? {
            Some(lean) => lean,
            None => step_invocation(&step, self.session_retention)?,
        };
        let (values, acknowledged) = match &self.replicated {
            None => {
                let mut connection = self.connection();
                let values: Vec<Value> = invocation
                    .invoke_async(&mut connection)
                    .await
                    .map_err(write_failed)?;
                (values, true)
            }
            Some(replicated) => {
                match replicated
                    .run(&invocation, &in_shard(step.shard, "-"))
                    .await?
                {
                    (Value::Array(values), acknowledged) => (values, acknowledged),
                    _ => return Err(corrupt("a step answered an unexpected shape")),
                }
            }
        };
        let committed = self.committed(&values).await?;
        match (acknowledged, &committed) {
            // Only what the step wrote needs its replicas: a refusal wrote
            // nothing.
            (false, Committed::Applied { .. }) => {
                Err(StoreError::NotReplicated(Box::new(committed)))
            }
            _ => Ok(committed),
        }
    }

    async fn session(&self, id: Uuid) -> Result<Option<Versioned<Session>>, StoreError> {
        let mut connection = self.connection();
        let (version, data): (Option<u64>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(session_key(id))
            .arg("v")
            .arg("d")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        versioned(version, data)
    }

    async fn header(&self, id: Uuid) -> Result<Option<Versioned<Payment>>, StoreError> {
        let mut connection = self.connection();
        let (version, data): (Option<u64>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(payment_key(id))
            .arg("v")
            .arg("h")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        versioned(version, data)
    }

    async fn operation(
        &self,
        payment: Uuid,
        operation: Uuid,
    ) -> Result<Option<(Versioned<Payment>, Operation)>, StoreError> {
        self.read_header_and(payment, operation).await
    }

    async fn find_operation(
        &self,
        operation: Uuid,
    ) -> Result<Option<(Versioned<Payment>, Operation)>, StoreError> {
        let mut connection = self.connection();
        let payment: Option<Vec<u8>> = connection
            .hget(
                operation_index_key(Shard::of(operation)),
                operation.as_bytes().as_slice(),
            )
            .await
            .map_err(unavailable)?;
        match payment.and_then(|id| Uuid::from_slice(&id).ok()) {
            Some(payment) => self.read_header_and(payment, operation).await,
            None => Ok(None),
        }
    }

    async fn payment(&self, id: Uuid) -> Result<Option<StoredPayment>, StoreError> {
        self.stored_payment(id).await
    }

    async fn index_payment(&self, payment: &Payment) -> Result<(), StoreError> {
        self.add_to_listings(
            [
                listing_key(&payment.merchant, None),
                listing_key(&payment.merchant, Some(&payment.order_reference)),
            ],
            listing_member(payment.created_at, payment.id),
        )
        .await
    }

    async fn index_session(&self, session: &Session) -> Result<(), StoreError> {
        self.add_to_listings(
            [
                session_listing_key(&session.merchant, None),
                session_listing_key(&session.merchant, Some(&session.order_reference)),
            ],
            listing_member(session.created_at, session.id),
        )
        .await
    }

    async fn list_sessions(&self, query: &ListQuery) -> Result<Vec<ListedSession>, StoreError> {
        let key = session_listing_key(&query.merchant, query.order_reference.as_deref());
        let members = self.listed(&key, query).await?;
        try_join_all(members.into_iter().map(|member| async move {
            let session = match member
                .split_once(':')
                .and_then(|(_, id)| Uuid::try_parse(id).ok())
            {
                Some(id) => self.session(id).await?,
                None => None,
            };
            Ok(ListedSession {
                cursor: member,
                session,
            })
        }))
        .await
    }

    async fn list_payments(&self, query: &ListQuery) -> Result<Vec<ListedPayment>, StoreError> {
        let key = listing_key(&query.merchant, query.order_reference.as_deref());
        let members = self.listed(&key, query).await?;
        // Every payment has its own key: one read each, sent concurrently
        // (the multiplexed connection pipelines them on the wire).
        try_join_all(members.into_iter().map(|member| async move {
            let id = member
                .split_once(':')
                .and_then(|(_, id)| Uuid::try_parse(id).ok());
            let payment = match id {
                Some(id) => self.stored_payment(id).await?,
                None => None,
            };
            Ok(ListedPayment {
                cursor: member,
                payment,
            })
        }))
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map(drop)
            .map_err(unavailable)
    }
}

impl RedisStore {
    /// Adds a member to a merchant's listings (one slot: one `MULTI`).
    async fn add_to_listings(&self, keys: [String; 2], member: String) -> Result<(), StoreError> {
        let mut pipeline = redis::pipe();
        pipeline.atomic();
        for key in keys {
            pipeline.zadd(key, &member, 0);
        }
        let mut connection = self.connection();
        pipeline
            .query_async::<()>(&mut connection)
            .await
            .map_err(write_failed)
    }

    /// Members of a listing in the query's range and order.
    async fn listed(&self, key: &str, query: &ListQuery) -> Result<Vec<String>, StoreError> {
        let (low, high) = query.bounds();
        let (low, high) = (lex(&low, "-"), lex(&high, "+"));
        let mut command = redis::cmd("ZRANGE");
        command.arg(key);
        if query.newest_first {
            command.arg(&high).arg(&low).arg("BYLEX").arg("REV");
        } else {
            command.arg(&low).arg(&high).arg("BYLEX");
        }
        command.arg("LIMIT").arg(0).arg(query.limit);
        let mut connection = self.connection();
        command
            .query_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    /// How many items each shard has due at `now`, read concurrently.
    async fn due_counts(
        &self,
        lane: Lane,
        now: SystemTime,
    ) -> Result<Vec<(Shard, usize)>, StoreError> {
        try_join_all(Shard::all().map(|shard| async move {
            let mut connection = self.connection();
            let due: usize = connection
                .zcount(lane_key(shard, lane), "-inf", unix_millis(now))
                .await
                .map_err(unavailable)?;
            Ok((shard, due))
        }))
        .await
    }
}

#[async_trait]
impl DueQueue for RedisStore {
    async fn claim_due(
        &self,
        lane: Lane,
        now: SystemTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<DueItem>, StoreError> {
        // Look first (cheap, all shards at once), then claim where items are
        // due, sharing the limit out so no busy shard starves the others.
        let mut busy: Vec<(Shard, usize)> = self
            .due_counts(lane, now)
            .await?
            .into_iter()
            .filter(|(_, due)| *due > 0)
            .collect();
        if busy.is_empty() {
            return Ok(Vec::new());
        }
        busy.sort_by_key(|(_, due)| *due);
        let mut left = limit;
        let mut plan = Vec::new();
        for (index, (shard, due)) in busy.iter().enumerate() {
            let share = (left / (busy.len() - index)).max(1).min(*due);
            if left == 0 {
                break;
            }
            plan.push((*shard, share));
            left = left.saturating_sub(share);
        }
        let claimed: Vec<Vec<String>> =
            try_join_all(plan.into_iter().map(|(shard, take)| async move {
                let mut connection = self.connection();
                CLAIM_DUE
                    .key(lane_key(shard, lane))
                    .arg(unix_millis(now))
                    .arg(unix_millis(now + lease))
                    .arg(take)
                    .invoke_async::<Vec<String>>(&mut connection)
                    .await
                    .map_err(write_failed)
            }))
            .await?;
        Ok(claimed
            .iter()
            .flatten()
            .filter_map(|member| DueItem::decode(member))
            .collect())
    }

    async fn open_operations(&self, limit: usize) -> Result<Vec<(Uuid, Uuid)>, StoreError> {
        let shards =
            try_join_all(Shard::all().map(|shard| async move {
                let mut connection = self.connection();
                let mut cursor = 0u64;
                let mut found = Vec::new();
                loop {
                    let (next, members): (u64, Vec<String>) = redis::cmd("ZSCAN")
                        .arg(due_key(shard))
                        .arg(cursor)
                        .arg("MATCH")
                        .arg("o:*")
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut connection)
                        .await
                        .map_err(unavailable)?;
                    // ZSCAN answers member, score, member, score…
                    found.extend(members.iter().step_by(2).filter_map(
                        |m| match DueItem::decode(m)? {
                            DueItem::Operation { payment, operation } => Some((payment, operation)),
                            _ => None,
                        },
                    ));
                    cursor = next;
                    if cursor == 0 || found.len() >= limit {
                        return Ok::<_, StoreError>(found);
                    }
                }
            }))
            .await?;
        let mut open: Vec<(Uuid, Uuid)> = shards.into_iter().flatten().collect();
        open.truncate(limit);
        Ok(open)
    }

    async fn due_summary(&self, lane: Lane) -> Result<DueSummary, StoreError> {
        let shards = try_join_all(Shard::all().map(|shard| async move {
            let mut connection = self.connection();
            let (depth, first): (usize, Vec<(String, u64)>) = redis::pipe()
                .zcard(lane_key(shard, lane))
                .zrange_withscores(lane_key(shard, lane), 0, 0)
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            let earliest = first
                .first()
                .map(|(_, ms)| UNIX_EPOCH + Duration::from_millis(*ms));
            Ok::<_, StoreError>((depth, earliest))
        }))
        .await?;
        Ok(DueSummary {
            depth: shards.iter().map(|s| s.0).sum(),
            earliest: shards.iter().filter_map(|s| s.1).min(),
        })
    }

    async fn scheduled(&self, item: &DueItem) -> Result<Option<SystemTime>, StoreError> {
        let mut connection = self.connection();
        let ms: Option<u64> = connection
            .zscore(lane_key(item.shard(), item.lane()), item.encode())
            .await
            .map_err(unavailable)?;
        Ok(ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms)))
    }

    async fn list_lane(
        &self,
        lane: Lane,
        after: Option<(SystemTime, DueItem)>,
        limit: usize,
    ) -> Result<Vec<(SystemTime, DueItem)>, StoreError> {
        let after = after.as_ref();
        let shards = try_join_all(Shard::all().map(|shard| async move {
            let mut connection = self.connection();
            // From the cursor's time on (ties are filtered below), one page
            // more than needed per shard at most.
            let from = after.map_or(0, |(at, _)| unix_millis(*at));
            let members: Vec<(String, u64)> = redis::cmd("ZRANGE")
                .arg(lane_key(shard, lane))
                .arg(from)
                .arg("+inf")
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(0)
                .arg(limit + 1)
                .arg("WITHSCORES")
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok::<_, StoreError>(members)
        }))
        .await?;
        let mut found: Vec<(SystemTime, DueItem)> = shards
            .into_iter()
            .flatten()
            .filter_map(|(member, ms)| {
                Some((
                    UNIX_EPOCH + Duration::from_millis(ms),
                    DueItem::decode(&member)?,
                ))
            })
            .filter(|entry| after.is_none_or(|after| entry > after))
            .collect();
        found.sort();
        found.truncate(limit);
        Ok(found)
    }
}

/// Relays the announced finals from Redis to `sink` until the store is
/// dropped, subscribing again after a lost connection (waiters re-read
/// slowly in the meantime).
async fn listen_for_finals(
    url: String,
    sink: tokio::sync::broadcast::Sender<Uuid>,
    alive: std::sync::Weak<()>,
) {
    use futures_util::StreamExt;
    while alive.strong_count() > 0 {
        let subscribed = async {
            let mut pubsub = redis::Client::open(url.as_str())?
                .get_async_pubsub()
                .await?;
            pubsub.subscribe(FINALS_CHANNEL).await?;
            Ok::<_, RedisError>(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(5), subscribed).await {
            Ok(Ok(mut pubsub)) => {
                let mut messages = pubsub.on_message();
                loop {
                    match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
                        Ok(Some(message)) => {
                            let id = message
                                .get_payload::<String>()
                                .ok()
                                .and_then(|text| Uuid::try_parse(&text).ok());
                            if let Some(id) = id {
                                let _ = sink.send(id);
                            }
                        }
                        // The connection ended: subscribe again.
                        Ok(None) => break,
                        // Quiet: is the store still there?
                        Err(_) if alive.strong_count() == 0 => return,
                        Err(_) => {}
                    }
                }
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "cannot subscribe to announced finals; retrying");
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Notices for RedisStore {
    fn finals(&self) -> tokio::sync::broadcast::Receiver<Uuid> {
        self.finals.subscribe()
    }
}

#[async_trait]
impl WebhookOutbox for RedisStore {
    async fn delivery(&self, id: Uuid) -> Result<Option<WebhookDelivery>, StoreError> {
        let mut connection = self.connection();
        let data: Option<Vec<u8>> = connection
            .get(delivery_key(id))
            .await
            .map_err(unavailable)?;
        data.map(|d| codec::decode(&d)).transpose()
    }
}

#[async_trait]
impl EventLog for RedisStore {
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
            .arg(ttl_millis(ttl))
            .query_async::<Option<String>>(&mut connection)
            .await
            .map(|set| set.is_some())
            .map_err(write_failed)
    }
}

/// Milliseconds since the epoch, as `PXAT` wants them (at least 1).
fn at_millis(time: SystemTime) -> u64 {
    unix_millis(time).max(1)
}

impl RedisStore {
    /// Index members from `low`, a batch at a time, with the records they
    /// name (`None` where the record expired: the member is then removed).
    async fn indexed<T: codec::Record>(
        &self,
        index: &str,
        low: &Bound<String>,
        batch: usize,
        key_of: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, Option<T>)>, StoreError> {
        let mut connection = self.connection();
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(index)
            .arg(lex(low, "-"))
            .arg("+")
            .arg("BYLEX")
            .arg("LIMIT")
            .arg(0)
            .arg(batch)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let keys: Vec<String> = members.iter().filter_map(|m| key_of(m)).collect();
        if keys.len() != members.len() {
            return Err(corrupt("an index member"));
        }
        // One GET each, sent concurrently (the records may sit in different
        // slots of a cluster).
        let records: Vec<Option<Vec<u8>>> = try_join_all(keys.iter().map(|key| {
            let mut connection = self.connection();
            async move { connection.get(key).await.map_err(unavailable) }
        }))
        .await?;
        let mut found = Vec::with_capacity(members.len());
        let mut gone = Vec::new();
        for (member, record) in members.into_iter().zip(records) {
            match record {
                Some(bytes) => found.push((member, Some(codec::decode(&bytes)?))),
                None => {
                    gone.push(member.clone());
                    found.push((member, None));
                }
            }
        }
        if !gone.is_empty() {
            // Derived data: a failed clean-up is done by the next read.
            let _: Result<(), _> = connection.zrem(index, gone).await;
        }
        Ok(found)
    }
}

impl RedisStore {
    /// Stores a record unless it exists (`true` if this call stored it), then
    /// adds its index member — also when it existed: a writer that stopped
    /// between the two is completed by the next one.
    async fn put_indexed<T: serde::Serialize>(
        &self,
        key: &str,
        record: &T,
        index: &str,
        member: &str,
        retain_until: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut connection = self.connection();
        let stored: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(codec::encode(record)?)
            .arg("NX")
            .arg("PXAT")
            .arg(at_millis(retain_until))
            .query_async(&mut connection)
            .await
            .map_err(write_failed)?;
        connection
            .zadd::<_, _, _, ()>(index, member, 0)
            .await
            .map_err(write_failed)?;
        Ok(stored.is_some())
    }

    /// Up to `limit` records an index names from `low` on that `admits`
    /// takes, stopping at the first that is `past_end`; with their members.
    async fn page_of_index<T: codec::Record>(
        &self,
        index: &str,
        mut low: Bound<String>,
        key_of: impl Fn(&str) -> Option<String> + Copy,
        past_end: impl Fn(&T) -> bool,
        admits: impl Fn(&T) -> bool,
        limit: usize,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let mut page = Vec::new();
        loop {
            let batch: Vec<(String, Option<T>)> =
                self.indexed(index, &low, LISTING_BATCH, key_of).await?;
            let Some((last, _)) = batch.last() else {
                return Ok(page);
            };
            low = Bound::Excluded(last.clone());
            let last_batch = batch.len() < LISTING_BATCH;
            for (member, record) in batch {
                let Some(record) = record else {
                    continue;
                };
                if past_end(&record) {
                    return Ok(page);
                }
                if admits(&record) {
                    page.push((member, record));
                    if page.len() == limit {
                        return Ok(page);
                    }
                }
            }
            if last_batch {
                return Ok(page);
            }
        }
    }
}

fn id_of_member(member: &str) -> Option<Uuid> {
    member
        .rsplit_once(':')
        .and_then(|(_, id)| Uuid::try_parse(id).ok())
}

/// Index members read per round trip while filtering a listing.
const LISTING_BATCH: usize = 500;

#[async_trait]
impl SettlementStore for RedisStore {
    async fn settlement(&self, id: Uuid) -> Result<Option<Settlement>, StoreError> {
        let mut connection = self.connection();
        let data: Option<Vec<u8>> = connection
            .get(settlement_key(id))
            .await
            .map_err(unavailable)?;
        data.map(|d| codec::decode(&d)).transpose()
    }

    async fn put_settlement_lines(
        &self,
        settlement: Uuid,
        lines: &[SettlementTransaction],
        retain_until: SystemTime,
    ) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let key = settlement_lines_key(settlement);
        let mut fields = Vec::with_capacity(lines.len());
        for line in lines {
            fields.push((line.index, codec::encode(line)?));
        }
        let mut pipeline = redis::pipe();
        pipeline
            .hset_multiple(&key, &fields)
            .ignore()
            .cmd("PEXPIREAT")
            .arg(&key)
            .arg(at_millis(retain_until))
            .ignore();
        let mut connection = self.connection();
        pipeline
            .query_async::<()>(&mut connection)
            .await
            .map_err(write_failed)
    }

    async fn finish_settlement(
        &self,
        settlement: &Settlement,
        retain_until: SystemTime,
    ) -> Result<bool, StoreError> {
        let key = settlement_key(settlement.id);
        let member = settlement_member(settlement);
        self.put_indexed(&key, settlement, SETTLEMENT_INDEX, &member, retain_until)
            .await
    }

    async fn settlement_lines(
        &self,
        settlement: Uuid,
        offset: u64,
        limit: usize,
    ) -> Result<Vec<SettlementTransaction>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let end = offset.saturating_add(u64::try_from(limit).unwrap_or(u64::MAX));
        let fields: Vec<u64> = (offset..end).collect();
        let mut connection = self.connection();
        let lines: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(settlement_lines_key(settlement))
            .arg(&fields)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        lines
            .into_iter()
            .map_while(|line| line)
            .map(|bytes| codec::decode(&bytes))
            .collect()
    }

    async fn list_settlements(
        &self,
        query: &SettlementQuery,
    ) -> Result<Vec<(String, Settlement)>, StoreError> {
        self.page_of_index(
            SETTLEMENT_INDEX,
            query.low(),
            |member| id_of_member(member).map(settlement_key),
            |settlement: &Settlement| query.to.is_some_and(|to| settlement.date > to),
            |settlement| query.admits(settlement),
            query.limit,
        )
        .await
    }

    async fn record_issue(
        &self,
        issue: &ReconciliationIssue,
        retain_until: SystemTime,
    ) -> Result<bool, StoreError> {
        let key = issue_key(issue.id);
        let member = issue_member(issue);
        self.put_indexed(&key, issue, ISSUE_INDEX, &member, retain_until)
            .await
    }

    async fn list_issues(
        &self,
        query: &IssueQuery,
    ) -> Result<Vec<(String, ReconciliationIssue)>, StoreError> {
        self.page_of_index(
            ISSUE_INDEX,
            query.low(),
            |member| id_of_member(member).map(issue_key),
            |issue: &ReconciliationIssue| {
                query.created_before.is_some_and(|t| issue.created_at >= t)
            },
            |issue| query.admits(issue),
            query.limit,
        )
        .await
    }

    async fn mark_settled(
        &self,
        settled: &[(Uuid, Uuid)],
        retain_until: SystemTime,
    ) -> Result<(), StoreError> {
        let at = at_millis(retain_until);
        try_join_all(settled.iter().map(|(transaction, settlement)| {
            let mut connection = self.connection();
            async move {
                redis::cmd("SET")
                    .arg(settled_key(*transaction))
                    .arg(settlement.as_bytes().as_slice())
                    .arg("PXAT")
                    .arg(at)
                    .query_async::<()>(&mut connection)
                    .await
                    .map_err(write_failed)
            }
        }))
        .await
        .map(drop)
    }

    async fn settled_in(&self, transaction: Uuid) -> Result<Option<Uuid>, StoreError> {
        let mut connection = self.connection();
        let settlement: Option<Vec<u8>> = connection
            .get(settled_key(transaction))
            .await
            .map_err(unavailable)?;
        settlement
            .map(|bytes| Uuid::from_slice(&bytes).map_err(|_| corrupt("a settled marker")))
            .transpose()
    }

    async fn take_lease(
        &self,
        name: &str,
        owner: Uuid,
        _now: SystemTime,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let mut connection = self.connection();
        let taken: i64 = redis::Script::new(TAKE_LEASE)
            .key(lease_key(name))
            .arg(owner.to_string())
            .arg(ttl_millis(lease))
            .invoke_async(&mut connection)
            .await
            .map_err(write_failed)?;
        Ok(taken == 1)
    }

    async fn release_lease(&self, name: &str, owner: Uuid) -> Result<(), StoreError> {
        let mut connection = self.connection();
        redis::Script::new(RELEASE_LEASE)
            .key(lease_key(name))
            .arg(owner.to_string())
            .invoke_async::<i64>(&mut connection)
            .await
            .map(drop)
            .map_err(write_failed)
    }
}

static CLAIM_INSTRUMENT_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(CLAIM_INSTRUMENT));
static REPLACE_INSTRUMENT_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(REPLACE_INSTRUMENT));
static READ_INSTRUMENT_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(READ_INSTRUMENT));

fn held_instrument(stored: String, now: &str) -> Result<HeldInstrument, StoreError> {
    let claim = InstrumentClaim::decode(&stored).ok_or_else(|| corrupt("an instrument claim"))?;
    let now = now.parse().map_err(|_| corrupt("the store's time"))?;
    Ok(HeldInstrument { claim, now, stored })
}

impl RedisStore {
    /// Runs a write outside a step (an instrument claim): on the shared
    /// connection, or, when replicas must acknowledge writes, with its `WAIT`
    /// (not acknowledged: `NotReplicated`, nothing to rely on).
    async fn written<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        key: &str,
    ) -> Result<T, StoreError> {
        let value = match &self.replicated {
            None => {
                let mut connection = self.connection();
                return invocation
                    .invoke_async(&mut connection)
                    .await
                    .map_err(write_failed);
            }
            Some(replicated) => match replicated.run(invocation, key).await? {
                (value, true) => value,
                (_, false) => {
                    return Err(StoreError::NotReplicated(Box::new(Committed::Applied {
                        payment: None,
                        session: None,
                        answered: None,
                    })));
                }
            },
        };
        redis::from_redis_value(value).map_err(|_| corrupt("an unexpected answer"))
    }
}

#[async_trait]
impl Instruments for RedisStore {
    async fn claim_instrument(
        &self,
        instrument: &str,
        claim: &InstrumentClaim,
    ) -> Result<HeldInstrument, StoreError> {
        let key = instrument_key(instrument);
        let mut invocation = CLAIM_INSTRUMENT_SCRIPT.prepare_invoke();
        invocation.key(&key).arg(claim.encode());
        let (held, now): (String, String) = self.written(&invocation, &key).await?;
        held_instrument(held, &now)
    }

    async fn instrument(&self, instrument: &str) -> Result<Option<HeldInstrument>, StoreError> {
        let mut connection = self.connection();
        let (held, now): (String, String) = READ_INSTRUMENT_SCRIPT
            .key(instrument_key(instrument))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if held.is_empty() {
            return Ok(None);
        }
        held_instrument(held, &now).map(Some)
    }

    async fn replace_instrument(
        &self,
        instrument: &str,
        held: &HeldInstrument,
        claim: Option<&InstrumentClaim>,
    ) -> Result<bool, StoreError> {
        let key = instrument_key(instrument);
        let mut invocation = REPLACE_INSTRUMENT_SCRIPT.prepare_invoke();
        invocation
            .key(&key)
            .arg(&held.stored)
            .arg(claim.map(InstrumentClaim::encode).unwrap_or_default());
        let replaced: i64 = self.written(&invocation, &key).await?;
        Ok(replaced == 1)
    }
}
