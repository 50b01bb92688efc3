//! Sessions, payments and their operations: reads, listings, and the
//! [`PaymentStore`] port (its one write is in `steps`).

use super::*;

impl RedisStore {
    /// The members of `listed` that `query` pages through, each with what it
    /// names if that is still there. Every record has its own key: one read
    /// each, sent concurrently (the multiplexed connection pipelines them on
    /// the wire).
    async fn listed_with<T, F, Read>(
        &self,
        listed: Listed,
        query: &ListQuery,
        read: F,
    ) -> Result<Vec<(String, Option<T>)>, StoreError>
    where
        F: Fn(Uuid) -> Read,
        Read: Future<Output = Result<Option<T>, StoreError>>,
    {
        let keys = listing_reads(listed, &query.merchant, query.order_reference.as_deref());
        let members = self.listed(&keys, query).await?;
        try_join_all(members.into_iter().map(|member| {
            let found = member_id(&member).map(&read);
            async move {
                let found = match found {
                    Some(read) => read.await?,
                    None => None,
                };
                Ok((member, found))
            }
        }))
        .await
    }

    pub(super) async fn read_header_and(
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
    pub(super) async fn outcome(&self, bytes: &[u8]) -> Result<Outcome, StoreError> {
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

    pub(super) async fn stored_payment(
        &self,
        id: Uuid,
    ) -> Result<Option<StoredPayment>, StoreError> {
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

/// Where a payment is listed (its merchant's bucket, its order's listing)
/// and as what.
fn payment_listing(payment: &Payment) -> ([String; 2], String) {
    let (merchant, order) = (&payment.merchant, &payment.order_reference);
    (
        listings_of(Listed::Payments, merchant, order, payment.id),
        listing_member(payment.created_at, payment.id),
    )
}

/// Where a session is listed, and as what.
fn session_listing(session: &Session) -> ([String; 2], String) {
    let (merchant, order) = (&session.merchant, &session.order_reference);
    (
        listings_of(Listed::Sessions, merchant, order, session.id),
        listing_member(session.created_at, session.id),
    )
}

/// A listing bound in `ZRANGE … BYLEX` syntax.
pub(super) fn lex(bound: &Bound<String>, unbounded: &str) -> String {
    match bound {
        Bound::Included(member) => format!("[{member}"),
        Bound::Excluded(member) => format!("({member}"),
        Bound::Unbounded => unbounded.to_owned(),
    }
}

#[async_trait]
impl PaymentStore for RedisStore {
    async fn commit(&self, step: Step) -> Result<Committed, StoreError> {
        let sharded = self.sharded_notices();
        let invocation = match lean_invocation(&step, sharded)? {
            Some(lean) => lean,
            None => step_invocation(&step, self.session_retention, sharded)?,
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
        self.versioned_record(session_key(id), "d").await
    }

    async fn header(&self, id: Uuid) -> Result<Option<Versioned<Payment>>, StoreError> {
        self.versioned_record(payment_key(id), "h").await
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
        let (keys, member) = payment_listing(payment);
        self.add_to_listings(keys, member).await
    }

    async fn index_session(&self, session: &Session) -> Result<(), StoreError> {
        let (keys, member) = session_listing(session);
        self.add_to_listings(keys, member).await
    }

    async fn forget_payment(
        &self,
        payment: &StoredPayment,
        session: Option<&Versioned<Session>>,
        caller_now: SystemTime,
    ) -> Result<bool, StoreError> {
        let header = &payment.header.value;
        let key = payment_key(header.id);
        let ahead_of_us = caller_now
            .checked_sub(crate::store::CLOCK_AHEAD)
            .unwrap_or(UNIX_EPOCH);
        let not_before = ahead_of_us.duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut invocation = FORGET.prepare_invoke();
        invocation
            .key(&key)
            .key(operation_index_key(Shard::of(header.id)))
            .key(due_key(Shard::of(header.id)))
            .key(session_key(header.session_id))
            .key(checkouts_key(header.session_id))
            .key(record_key(header.session_id));
        for record in payment.record_ids() {
            invocation.key(record_key(record));
        }
        invocation
            .arg(payment.header.version)
            .arg(session.map(|s| s.version.to_string()).unwrap_or_default())
            .arg(
                session
                    .map(|s| codec::encode(&s.value))
                    .transpose()?
                    .unwrap_or_default(),
            )
            .arg(u64::try_from(not_before.as_millis()).unwrap_or(u64::MAX))
            .arg(payment.operations.len());
        for operation in &payment.operations {
            invocation.arg(operation.id.as_bytes().as_slice());
        }
        for item in payment.due_items() {
            invocation.arg(item.encode());
        }
        // Not acknowledged by the replicas, it applied on the master all the
        // same: the listings are cleaned before that is said (the forget step
        // took the payment's retention off the due-queue; nothing would
        // clean them later).
        let (forgotten, acknowledged): (i64, bool) = self.applied(&invocation, &key).await?;
        if forgotten == 0 {
            // Nothing was written: nothing to wait for.
            return Ok(false);
        }
        let session = session.filter(|_| forgotten == 2).map(|s| &s.value);
        // The listings live in other slots; a member without its payment
        // (a crash before these) is skipped by the listing.
        let mut removals = vec![payment_listing(header)];
        removals.extend(session.map(session_listing));
        try_join_all(removals.iter().flat_map(|(keys, member)| {
            keys.iter().map(move |key| {
                let mut connection = self.connection();
                async move {
                    connection
                        .zrem::<_, _, ()>(key, member)
                        .await
                        .map_err(write_failed)
                }
            })
        }))
        .await?;
        if !acknowledged {
            return Err(instruments::not_replicated());
        }
        Ok(true)
    }

    async fn list_sessions(&self, query: &ListQuery) -> Result<Vec<ListedSession>, StoreError> {
        let listed = self.listed_with(Listed::Sessions, query, |id| self.session(id));
        let listed = listed.await?.into_iter();
        Ok((listed.map(|(cursor, session)| ListedSession { cursor, session })).collect())
    }

    async fn list_payments(&self, query: &ListQuery) -> Result<Vec<ListedPayment>, StoreError> {
        let listed = self.listed_with(Listed::Payments, query, |id| self.stored_payment(id));
        let listed = listed.await?.into_iter();
        Ok((listed.map(|(cursor, payment)| ListedPayment { cursor, payment })).collect())
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
    /// Adds a member to a merchant's listings: two slots, written at once
    /// (derived data: a member listed without the other is harmless).
    pub(super) async fn add_to_listings(
        &self,
        keys: [String; 2],
        member: String,
    ) -> Result<(), StoreError> {
        try_join_all(keys.iter().map(|key| {
            let mut connection = self.connection();
            let member = &member;
            async move {
                connection
                    .zadd::<_, _, _, ()>(key, member, 0)
                    .await
                    .map_err(write_failed)
            }
        }))
        .await
        .map(drop)
    }

    /// Members of a listing spread over `keys`, in the query's range and
    /// order: the first `limit` of each key, read at once and merged (the
    /// first `limit` of the whole are among them).
    pub(super) async fn listed(
        &self,
        keys: &[String],
        query: &ListQuery,
    ) -> Result<Vec<String>, StoreError> {
        let read = try_join_all(keys.iter().map(|key| self.listed_in(key, query))).await?;
        let mut members: Vec<String> = read.into_iter().flatten().collect();
        members.sort_unstable();
        members.dedup();
        if query.newest_first {
            members.reverse();
        }
        members.truncate(query.limit);
        Ok(members)
    }

    /// Members of one listing key in the query's range and order.
    async fn listed_in(&self, key: &str, query: &ListQuery) -> Result<Vec<String>, StoreError> {
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
    pub(super) async fn due_counts(
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
