//! Steps (and instrument claims) whose replication is waited for
//! (`--redis-wait-replicas`).
//!
//! `WAIT n timeout` counts the writes of the connection it runs on, and
//! blocks that connection until they are acknowledged: it cannot share the
//! one multiplexed connection every request uses. So each waited step takes
//! a connection of its own from a small pool and sends the step's script
//! and its `WAIT` as one pipeline (one round trip), routed to the step's
//! slot on a cluster (where `WAIT` counts that shard's replicas). The pool's
//! connections never reconnect by themselves: one that failed is dropped,
//! so a `WAIT` never speaks for writes made on a connection before it
//! reconnected.

use std::time::Duration;

use redis::{
    Pipeline, RedisError, Value,
    aio::MultiplexedConnection,
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
    cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr},
};
use tokio::sync::Mutex;

use super::{RedisSettings, write_failed};
use crate::store::StoreError;

/// How many idle connections are kept.
const IDLE: usize = 64;

pub(super) struct Replicated {
    replicas: u32,
    timeout: Duration,
    open: Opener,
    idle: Mutex<Vec<Dedicated>>,
}

enum Opener {
    Single(redis::Client, redis::AsyncConnectionConfig),
    Cluster(ClusterClient),
}

enum Dedicated {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Replicated {
    pub(super) fn new(settings: &RedisSettings) -> Result<Replicated, RedisError> {
        // A waited step takes the wait on top of its own time.
        let response = settings.response_timeout + settings.wait_timeout;
        let open = if settings.cluster {
            Opener::Cluster(
                ClusterClientBuilder::new(settings.urls.clone())
                    .connection_timeout(settings.connect_timeout)
                    .response_timeout(response)
                    .retries(0)
                    .build()?,
            )
        } else {
            let url = settings.urls.first().cloned().unwrap_or_default();
            Opener::Single(
                redis::Client::open(url)?,
                redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(settings.connect_timeout))
                    .set_response_timeout(Some(response)),
            )
        };
        Ok(Replicated {
            replicas: settings.wait_replicas,
            timeout: settings.wait_timeout,
            open,
            idle: Mutex::new(Vec::new()),
        })
    }

    async fn take(&self) -> Result<Dedicated, StoreError> {
        if let Some(connection) = self.idle.lock().await.pop() {
            return Ok(connection);
        }
        let unavailable = |error: RedisError| StoreError::Unavailable(Box::new(error));
        Ok(match &self.open {
            Opener::Single(client, config) => Dedicated::Single(
                client
                    .get_multiplexed_async_connection_with_config(config)
                    .await
                    .map_err(unavailable)?,
            ),
            Opener::Cluster(client) => {
                Dedicated::Cluster(client.get_async_connection().await.map_err(unavailable)?)
            }
        })
    }

    async fn give_back(&self, connection: Dedicated) {
        let mut idle = self.idle.lock().await;
        if idle.len() < IDLE {
            idle.push(connection);
        }
    }

    /// Runs a script and waits for its replicas: the script's answer, and
    /// whether enough replicas acknowledged it. `key`: one of its keys (the
    /// slot it runs on).
    pub(super) async fn run(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        key: &str,
    ) -> Result<(Value, bool), StoreError> {
        let mut connection = self.take().await?;
        let millis = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        // A first use of the connection's server may need the script loaded.
        for _ in 0..2 {
            let mut pipe = redis::pipe();
            pipe.ignore_errors()
                .invoke_script(invocation)
                .cmd("WAIT")
                .arg(self.replicas)
                .arg(millis);
            let values = match connection.query(&pipe, key).await {
                Ok(values) => values,
                // The connection is not returned: it may be broken.
                Err(error) => return Err(write_failed(error)),
            };
            let (step, acknowledged) = match values.as_slice() {
                [step, Value::Int(acknowledged)] => (step, *acknowledged),
                _ => {
                    return Err(StoreError::Unknown(
                        "a waited step answered an unexpected shape".into(),
                    ));
                }
            };
            match step {
                Value::ServerError(error) if error.code() == "NOSCRIPT" => {
                    // Not run (the script is unknown there): load it, again.
                    connection.load(invocation).await.map_err(write_failed)?;
                }
                // Refused: the connection is dropped (a demoted master keeps
                // refusing writes on it).
                Value::ServerError(error) => {
                    return Err(write_failed(RedisError::from(error.clone())));
                }
                answer => {
                    let answer = answer.clone();
                    self.give_back(connection).await;
                    let enough = u32::try_from(acknowledged).unwrap_or(0) >= self.replicas;
                    return Ok((answer, enough));
                }
            }
        }
        Err(StoreError::Unavailable(
            "the step's script could not be loaded".into(),
        ))
    }
}

impl Dedicated {
    async fn query(&mut self, pipe: &Pipeline, key: &str) -> Result<Vec<Value>, RedisError> {
        match self {
            Dedicated::Single(connection) => pipe.query_async(connection).await,
            Dedicated::Cluster(connection) => {
                let route = Route::with_key(key, SlotAddr::Master);
                connection
                    .route_pipeline(
                        pipe.clone(),
                        0,
                        2,
                        SingleNodeRoutingInfo::SpecificNode(route),
                    )
                    .await
            }
        }
    }

    async fn load(&mut self, invocation: &redis::ScriptInvocation<'_>) -> Result<(), RedisError> {
        match self {
            Dedicated::Single(connection) => invocation.load_async(connection).await.map(drop),
            Dedicated::Cluster(connection) => invocation.load_async(connection).await.map(drop),
        }
    }
}
