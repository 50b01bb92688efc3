//! The due-queue's lanes, leased per shard, and the webhook outbox.

use super::*;

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
