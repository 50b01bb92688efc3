//! Finals announced to this process's waiters, and partner event ids seen.

use super::*;

#[async_trait]
impl Notices for MemoryStore {
    fn finals(&self) -> tokio::sync::broadcast::Receiver<Uuid> {
        self.finals.subscribe()
    }

    async fn announce_health(&self, notice: &str) -> Result<(), StoreError> {
        // Nobody listening is fine.
        let _ = self.health.send(notice.to_owned());
        Ok(())
    }

    fn health_notices(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.health.subscribe()
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
