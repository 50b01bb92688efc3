//! Finals announced on `po:finals`, or on a cluster on each shard's
//! `po:{S}:finals` (every replica relays them to its waiters), partner health changes on `po:partner-health`, and partner
//! event ids seen.

use super::*;

/// Relays what is announced on `channel` from Redis to `sink` (what
/// `parse` reads of it) until the store is dropped, subscribing again after
/// a lost connection (waiters re-read slowly in the meantime).
pub(super) async fn listen<T: Clone>(
    url: String,
    channel: &'static str,
    sink: tokio::sync::broadcast::Sender<T>,
    parse: fn(String) -> Option<T>,
    alive: std::sync::Weak<()>,
) {
    use futures_util::StreamExt;
    while alive.strong_count() > 0 {
        let subscribed = async {
            let mut pubsub = redis::Client::open(url.as_str())?
                .get_async_pubsub()
                .await?;
            pubsub.subscribe(channel).await?;
            Ok::<_, RedisError>(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(5), subscribed).await {
            Ok(Ok(mut pubsub)) => {
                let mut messages = pubsub.on_message();
                loop {
                    match tokio::time::timeout(Duration::from_secs(5), messages.next()).await {
                        Ok(Some(message)) => {
                            let value = message.get_payload::<String>().ok().and_then(parse);
                            if let Some(value) = value {
                                let _ = sink.send(value);
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
                tracing::debug!(%error, channel, "cannot subscribe; retrying");
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// On a cluster: relays the finals announced on every shard's channel
/// (`po:{S}:finals`, sharded pub/sub over RESP3) to `sink` until the store
/// is dropped. Each node sends only its own shards' finals, so a final costs
/// one node's bandwidth, not every node's. The client subscribes again by
/// itself after a lost connection or a moved slot.
pub(super) async fn listen_sharded(
    settings: RedisSettings,
    sink: tokio::sync::broadcast::Sender<Uuid>,
    alive: std::sync::Weak<()>,
) {
    let relay = move |push: redis::PushInfo| {
        if push.kind == redis::PushKind::SMessage
            && let Some(redis::Value::BulkString(payload)) = push.data.get(1)
            && let Some(id) = std::str::from_utf8(payload)
                .ok()
                .and_then(|text| Uuid::try_parse(text).ok())
        {
            let _ = sink.send(id);
        }
        Ok::<(), std::convert::Infallible>(())
    };
    while alive.strong_count() > 0 {
        let subscribed = async {
            let client = ClusterClientBuilder::new(settings.urls.clone())
                .connection_timeout(settings.connect_timeout)
                .response_timeout(settings.response_timeout)
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(relay.clone())
                .build()?;
            let mut connection = client.get_async_connection().await?;
            // One channel a call: each lives in its shard's slot.
            for shard in Shard::all() {
                connection.ssubscribe(in_shard(shard, "finals")).await?;
            }
            Ok::<_, RedisError>(connection)
        };
        match tokio::time::timeout(Duration::from_secs(30), subscribed).await {
            Ok(Ok(connection)) => {
                // Held while the store lives; resubscribed by the client.
                while alive.strong_count() > 0 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                drop(connection);
                return;
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "cannot subscribe to the shards' finals; retrying");
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[async_trait]
impl Notices for RedisStore {
    fn finals(&self) -> tokio::sync::broadcast::Receiver<Uuid> {
        self.finals.subscribe()
    }

    async fn announce_health(&self, notice: &str) -> Result<(), StoreError> {
        let mut connection = self.connection();
        redis::cmd("PUBLISH")
            .arg(HEALTH_CHANNEL)
            .arg(notice)
            .query_async::<i64>(&mut connection)
            .await
            .map(drop)
            .map_err(write_failed)
    }

    fn health_notices(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.health.subscribe()
    }
}

#[async_trait]
impl WebhookOutbox for RedisStore {
    async fn delivery(&self, id: Uuid) -> Result<Option<WebhookDelivery>, StoreError> {
        self.record(delivery_key(id)).await
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
