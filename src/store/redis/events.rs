//! Finals announced on `po:finals` (every replica relays them to its
//! waiters), partner health changes on `po:partner-health`, and partner
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
