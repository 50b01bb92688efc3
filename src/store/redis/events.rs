//! Finals announced on `po:finals` (every replica relays them to its
//! waiters) and partner event ids seen.

use super::*;

/// Relays the announced finals from Redis to `sink` until the store is
/// dropped, subscribing again after a lost connection (waiters re-read
/// slowly in the meantime).
pub(super) async fn listen_for_finals(
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
