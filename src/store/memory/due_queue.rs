//! The due-queue's lanes and the webhook outbox.

use super::*;

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

#[async_trait]
impl WebhookOutbox for MemoryStore {
    async fn delivery(&self, id: Uuid) -> Result<Option<WebhookDelivery>, StoreError> {
        Ok(self.shard(Shard::of(id)).outbox.get(&id).cloned())
    }
}
