//! Imported settlements, their lines, reconciliation issues, settled
//! markers and leases.

use super::*;

/// Milliseconds since the epoch, as `PXAT` wants them (at least 1).
pub(super) fn at_millis(time: SystemTime) -> u64 {
    unix_millis(time).max(1)
}

impl RedisStore {
    /// Index members from `low`, a batch at a time, with the records they
    /// name (`None` where the record expired: the member is then removed).
    pub(super) async fn indexed<T: codec::Record>(
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
    /// adds its index member — the stored record's, also when it existed: a
    /// writer that stopped between the two is completed by the next one,
    /// and a record found again (an issue raised again at another time)
    /// keeps the one member it has.
    pub(super) async fn put_indexed<T: serde::Serialize + codec::Record>(
        &self,
        key: &str,
        record: &T,
        indexes: &[String],
        member_of: impl Fn(&T) -> String,
        retain_until: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut connection = self.connection();
        let before: Option<Vec<u8>> = redis::cmd("SET")
            .arg(key)
            .arg(codec::encode(record)?)
            .arg("NX")
            .arg("GET")
            .arg("PXAT")
            .arg(at_millis(retain_until))
            .query_async(&mut connection)
            .await
            .map_err(write_failed)?;
        let member = match before.as_deref().map(codec::decode::<T>) {
            None => member_of(record),
            Some(Ok(stored)) => member_of(&stored),
            // A record this release cannot read (a later release's, during a
            // rollback) is indexed as this call would have written it.
            Some(Err(error)) => {
                tracing::warn!(%error, key, "a stored record could not be read; indexed as written now");
                member_of(record)
            }
        };
        for index in indexes {
            connection
                .zadd::<_, _, _, ()>(index, &member, 0)
                .await
                .map_err(write_failed)?;
        }
        Ok(before.is_none())
    }

    /// Up to `limit` records an index names from `low` on that `admits`
    /// takes, stopping at the first that is `past_end`; with their members.
    pub(super) async fn page_of_index<T: codec::Record>(
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

/// Tries at resolving an issue that others change meanwhile.
const RESOLVE_ATTEMPTS: usize = 8;

/// A global index whose records each name a merchant, mirrored in an
/// index per merchant (so that a merchant's listing reads only its own).
pub(super) struct PerMerchant<T> {
    pub global: &'static str,
    /// Set once every record of the global index is in its merchant's.
    pub marker: &'static str,
    pub merchant_index: fn(&str) -> String,
    pub key_of: fn(&str) -> Option<String>,
    pub merchant_of: fn(&T) -> Option<&String>,
}

pub(super) const ISSUES: PerMerchant<ReconciliationIssue> = PerMerchant {
    global: ISSUE_INDEX,
    marker: ISSUE_INDEX_MIGRATED,
    merchant_index: merchant_issue_index,
    key_of: |member| member_id(member).map(issue_key),
    merchant_of: |issue| issue.merchant.as_ref(),
};

pub(super) const SETTLEMENTS: PerMerchant<Settlement> = PerMerchant {
    global: SETTLEMENT_INDEX,
    marker: SETTLEMENT_INDEX_MIGRATED,
    merchant_index: merchant_settlement_index,
    key_of: |member| member_id(member).map(settlement_key),
    merchant_of: |settlement| settlement.merchant.as_ref(),
};

impl RedisStore {
    /// Puts every record of a global index in its merchant's index, once
    /// per store (records of an earlier release were only in the global
    /// one); the marker key says it was done.
    async fn index_per_merchant<T: codec::Record>(
        &self,
        indexes: &PerMerchant<T>,
        done_here: &std::sync::atomic::AtomicBool,
    ) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        if done_here.load(Relaxed) {
            return Ok(());
        }
        let mut connection = self.connection();
        let done: bool = connection
            .exists(indexes.marker)
            .await
            .map_err(unavailable)?;
        if !done {
            let mut low = Bound::Unbounded;
            loop {
                let batch: Vec<(String, Option<T>)> = self
                    .indexed(indexes.global, &low, LISTING_BATCH, indexes.key_of)
                    .await?;
                let Some((last, _)) = batch.last() else {
                    break;
                };
                low = Bound::Excluded(last.clone());
                let short = batch.len() < LISTING_BATCH;
                for (member, record) in &batch {
                    if let Some(merchant) = record.as_ref().and_then(indexes.merchant_of) {
                        connection
                            .zadd::<_, _, _, ()>((indexes.merchant_index)(merchant), member, 0)
                            .await
                            .map_err(write_failed)?;
                    }
                }
                if short {
                    break;
                }
            }
            connection
                .set::<_, _, ()>(indexes.marker, 1)
                .await
                .map_err(write_failed)?;
        }
        done_here.store(true, Relaxed);
        Ok(())
    }

    /// Stores a record in its global index and its merchant's (see
    /// [`RedisStore::put_indexed`]).
    async fn put_per_merchant<T: serde::Serialize + codec::Record>(
        &self,
        indexes: &PerMerchant<T>,
        key: &str,
        record: &T,
        member_of: impl Fn(&T) -> String,
        retain_until: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut names = vec![indexes.global.to_owned()];
        names.extend((indexes.merchant_of)(record).map(|m| (indexes.merchant_index)(m)));
        self.put_indexed(key, record, &names, member_of, retain_until)
            .await
    }

    /// The index a listing reads: the merchant's own when it asks for one.
    async fn index_for<T: codec::Record>(
        &self,
        indexes: &PerMerchant<T>,
        merchant: Option<&String>,
        done_here: &std::sync::atomic::AtomicBool,
    ) -> Result<String, StoreError> {
        Ok(match merchant {
            Some(merchant) => {
                self.index_per_merchant(indexes, done_here).await?;
                (indexes.merchant_index)(merchant)
            }
            None => indexes.global.to_owned(),
        })
    }
}

/// Index members read per round trip while filtering a listing.
pub(super) const LISTING_BATCH: usize = 500;

#[async_trait]
impl SettlementStore for RedisStore {
    async fn settlement(&self, id: Uuid) -> Result<Option<Settlement>, StoreError> {
        self.record(settlement_key(id)).await
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
        self.put_per_merchant(
            &SETTLEMENTS,
            &key,
            settlement,
            settlement_member,
            retain_until,
        )
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
        let index = self
            .index_for(
                &SETTLEMENTS,
                query.merchant.as_ref(),
                &self.settlements_indexed,
            )
            .await?;
        self.page_of_index(
            &index,
            query.low(),
            SETTLEMENTS.key_of,
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
        self.put_per_merchant(&ISSUES, &key, issue, issue_member, retain_until)
            .await
    }

    async fn list_issues(
        &self,
        query: &IssueQuery,
    ) -> Result<Vec<(String, ReconciliationIssue)>, StoreError> {
        let index = self
            .index_for(&ISSUES, query.merchant.as_ref(), &self.issues_indexed)
            .await?;
        self.page_of_index(
            &index,
            query.low(),
            ISSUES.key_of,
            |issue: &ReconciliationIssue| {
                query.created_before.is_some_and(|t| issue.created_at >= t)
            },
            |issue| query.admits(issue),
            query.limit,
        )
        .await
    }

    async fn issue(&self, id: Uuid) -> Result<Option<ReconciliationIssue>, StoreError> {
        self.record(issue_key(id)).await
    }

    async fn resolve_issue(
        &self,
        id: Uuid,
        resolution: &str,
        at: SystemTime,
    ) -> Result<Option<ReconciliationIssue>, StoreError> {
        let key = issue_key(id);
        // Compare-and-set on the stored bytes: two resolutions at once end
        // with one of them, whole.
        for _ in 0..RESOLVE_ATTEMPTS {
            let mut connection = self.connection();
            let Some(bytes): Option<Vec<u8>> = connection.get(&key).await.map_err(unavailable)?
            else {
                return Ok(None);
            };
            let mut issue: ReconciliationIssue = codec::decode(&bytes)?;
            if !issue.is_open() {
                return Ok(Some(issue));
            }
            issue.resolved_at = Some(at);
            resolution.clone_into(&mut issue.resolution);
            let replaced: i64 = REPLACE_KEEPING_TTL
                .key(&key)
                .arg(bytes)
                .arg(codec::encode(&issue)?)
                .invoke_async(&mut connection)
                .await
                .map_err(write_failed)?;
            if replaced == 1 {
                return Ok(Some(issue));
            }
        }
        Err(StoreError::Unavailable(
            "the issue kept changing while it was resolved".into(),
        ))
    }

    async fn claim_settled(
        &self,
        claims: &[(Uuid, SettledBy)],
        retain_until: SystemTime,
    ) -> Result<Vec<SettledBy>, StoreError> {
        let at = at_millis(retain_until);
        try_join_all(claims.iter().map(|(transaction, claim)| {
            let mut connection = self.connection();
            async move {
                let before: Option<Vec<u8>> = redis::cmd("SET")
                    .arg(settled_key(*transaction))
                    .arg(claim.to_bytes().as_slice())
                    .arg("NX")
                    .arg("GET")
                    .arg("PXAT")
                    .arg(at)
                    .query_async(&mut connection)
                    .await
                    .map_err(write_failed)?;
                match before {
                    None => Ok(*claim),
                    Some(bytes) => {
                        SettledBy::from_bytes(&bytes).ok_or_else(|| corrupt("a settled marker"))
                    }
                }
            }
        }))
        .await
    }

    async fn replace_settled(
        &self,
        transaction: Uuid,
        held: SettledBy,
        claim: SettledBy,
        _retain_until: SystemTime,
    ) -> Result<bool, StoreError> {
        // The claim keeps the expiry it was given: both were imported
        // with the same retention.
        let mut connection = self.connection();
        // A marker of an earlier release holds the settlement id alone.
        let held_bytes = match held.line {
            u64::MAX => held.settlement.as_bytes().to_vec(),
            _ => held.to_bytes().to_vec(),
        };
        let replaced: i64 = REPLACE_KEEPING_TTL
            .key(settled_key(transaction))
            .arg(held_bytes)
            .arg(claim.to_bytes().as_slice())
            .invoke_async(&mut connection)
            .await
            .map_err(write_failed)?;
        Ok(replaced == 1)
    }

    async fn settled_in(&self, transaction: Uuid) -> Result<Option<SettledBy>, StoreError> {
        let mut connection = self.connection();
        let settlement: Option<Vec<u8>> = connection
            .get(settled_key(transaction))
            .await
            .map_err(unavailable)?;
        settlement
            .map(|bytes| SettledBy::from_bytes(&bytes).ok_or_else(|| corrupt("a settled marker")))
            .transpose()
    }

    async fn failed_settlements(&self, partner: &str) -> Result<Vec<FailedSettlement>, StoreError> {
        let mut connection = self.connection();
        let records: Vec<Vec<u8>> = connection
            .hvals(failed_settlements_key(partner))
            .await
            .map_err(unavailable)?;
        let mut failed = records
            .iter()
            .map(|bytes| codec::decode::<FailedSettlement>(bytes))
            .collect::<Result<Vec<_>, _>>()?;
        failed.sort_by(FailedSettlement::oldest_first);
        Ok(failed)
    }

    async fn put_failed_settlement(
        &self,
        partner: &str,
        failed: &FailedSettlement,
    ) -> Result<(), StoreError> {
        let mut connection = self.connection();
        connection
            .hset::<_, _, _, ()>(
                failed_settlements_key(partner),
                &failed.report.reference,
                codec::encode(failed)?,
            )
            .await
            .map_err(write_failed)
    }

    async fn clear_failed_settlement(
        &self,
        partner: &str,
        reference: &str,
    ) -> Result<(), StoreError> {
        let mut connection = self.connection();
        connection
            .hdel::<_, _, ()>(failed_settlements_key(partner), reference)
            .await
            .map_err(write_failed)
    }

    async fn take_lease(
        &self,
        name: &str,
        owner: Uuid,
        _now: SystemTime,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let mut connection = self.connection();
        let taken: i64 = TAKE_LEASE
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
        RELEASE_LEASE
            .key(lease_key(name))
            .arg(owner.to_string())
            .invoke_async::<i64>(&mut connection)
            .await
            .map(drop)
            .map_err(write_failed)
    }
}
