//! Sessions, payments and their operations: reads, the listings, and the
//! [`PaymentStore`] port.

use super::*;

/// Locks over the listing indexes (by merchant).
pub(super) const LISTING_LOCKS: usize = 16;

pub(super) type Listing = HashMap<(String, Option<String>), BTreeSet<String>>;

pub(super) fn listing_lock(merchant: &str) -> usize {
    let mut hasher = DefaultHasher::new();
    merchant.hash(&mut hasher);
    usize::try_from(hasher.finish() % LISTING_LOCKS as u64).unwrap_or(0)
}

/// Lists `member` in the (locked) `listing` under `merchant`, and under
/// `merchant` and its order `reference`.
fn index(mut listing: MutexGuard<'_, Listing>, merchant: &str, reference: &str, member: String) {
    for order_reference in [None, Some(reference.to_owned())] {
        listing
            .entry((merchant.to_owned(), order_reference))
            .or_default()
            .insert(member.clone());
    }
}

/// Takes `member` out of what [`index`] listed it in (a listing left
/// empty goes, as an empty Redis key does).
fn unindex(mut listing: MutexGuard<'_, Listing>, merchant: &str, reference: &str, member: &str) {
    for order_reference in [None, Some(reference.to_owned())] {
        let key = (merchant.to_owned(), order_reference);
        if let Some(members) = listing.get_mut(&key) {
            members.remove(member);
            if members.is_empty() {
                listing.remove(&key);
            }
        }
    }
}

/// Members of a listing in the query's range and order.
pub(super) fn listed(listing: &Listing, query: &ListQuery) -> Vec<String> {
    let key = (query.merchant.clone(), query.order_reference.clone());
    let Some(members) = listing.get(&key) else {
        return Vec::new();
    };
    let range = members.range::<String, _>(query.bounds());
    if query.newest_first {
        range.rev().take(query.limit).cloned().collect()
    } else {
        range.take(query.limit).cloned().collect()
    }
}

#[async_trait]
impl PaymentStore for MemoryStore {
    async fn commit(&self, step: Step) -> Result<Committed, StoreError> {
        let now = self.clock.now();
        let mut shard = self.shard(step.shard);
        if let Some(refused) = shard.check(&step, now) {
            return Ok(refused);
        }
        let announce = step.announce;
        let applied = shard.apply(step, self.session_retention, now);
        drop(shard);
        if let Some(operation) = announce {
            // No receiver: nobody waits.
            let _ = self.finals.send(operation);
        }
        Ok(applied)
    }

    async fn session(&self, id: Uuid) -> Result<Option<Versioned<Session>>, StoreError> {
        let now = self.clock.now();
        Ok(self.shard(Shard::of(id)).session(id, now).cloned())
    }

    async fn header(&self, id: Uuid) -> Result<Option<Versioned<Payment>>, StoreError> {
        Ok(self
            .shard(Shard::of(id))
            .payments
            .get(&id)
            .map(|record| record.header.clone()))
    }

    async fn operation(
        &self,
        payment: Uuid,
        operation: Uuid,
    ) -> Result<Option<(Versioned<Payment>, Operation)>, StoreError> {
        let shard = self.shard(Shard::of(payment));
        Ok(shard.payments.get(&payment).and_then(|record| {
            let op = record.operations.get(&operation)?;
            Some((record.header.clone(), (**op).clone()))
        }))
    }

    async fn find_operation(
        &self,
        operation: Uuid,
    ) -> Result<Option<(Versioned<Payment>, Operation)>, StoreError> {
        let payment = self
            .shard(Shard::of(operation))
            .operations
            .get(&operation)
            .copied();
        match payment {
            Some(payment) => self.operation(payment, operation).await,
            None => Ok(None),
        }
    }

    async fn payment(&self, id: Uuid) -> Result<Option<StoredPayment>, StoreError> {
        Ok(self.shard(Shard::of(id)).stored_payment(id))
    }

    async fn index_payment(&self, payment: &Payment) -> Result<(), StoreError> {
        let member = listing_member(payment.created_at, payment.id);
        let (merchant, reference) = (&payment.merchant, &payment.order_reference);
        index(self.listing(merchant), merchant, reference, member);
        Ok(())
    }

    async fn index_session(&self, session: &Session) -> Result<(), StoreError> {
        let member = listing_member(session.created_at, session.id);
        let (merchant, reference) = (&session.merchant, &session.order_reference);
        index(self.session_listing(merchant), merchant, reference, member);
        Ok(())
    }

    async fn forget_payment(
        &self,
        payment: &StoredPayment,
        session: Option<&Versioned<Session>>,
        caller_now: SystemTime,
    ) -> Result<bool, StoreError> {
        let header = &payment.header.value;
        if caller_now > self.clock.now() + crate::store::CLOCK_AHEAD {
            return Ok(false);
        }
        let session_forgotten = {
            let mut shard = self.shard(Shard::of(header.id));
            match shard.payments.get(&header.id) {
                Some(record) if record.header.version == payment.header.version => {}
                _ => return Ok(false),
            }
            shard.payments.remove(&header.id);
            for operation in &payment.operations {
                shard.operations.remove(&operation.id);
            }
            for item in payment.due_items() {
                shard.unschedule(&item);
            }
            // Their expiry entries go with them (they would wait for the
            // session retention otherwise).
            let mut records = payment.record_ids();
            let id = header.session_id;
            let session_at = shard.sessions.get(&id).map(|r| r.session.version);
            let session_forgotten =
                session.is_some_and(|s| s.value.id == id && Some(s.version) == session_at);
            if session_forgotten {
                records.push(id);
                if let Some(record) = shard.sessions.remove(&id) {
                    shard
                        .expiries
                        .remove(&(record.expires_at, Expiring::Session(id)));
                }
            }
            for record in records {
                if let Some(key) = shard.keys.remove(&record) {
                    shard
                        .expiries
                        .remove(&(key.expires_at, Expiring::Key(record)));
                }
            }
            session_forgotten
        };
        let session = session.filter(|_| session_forgotten).map(|s| &s.value);
        if session.is_some() {
            lock(&self.checkouts).remove(&header.session_id);
        }
        let member = listing_member(header.created_at, header.id);
        unindex(
            self.listing(&header.merchant),
            &header.merchant,
            &header.order_reference,
            &member,
        );
        if let Some(session) = session {
            let member = listing_member(session.created_at, session.id);
            unindex(
                self.session_listing(&session.merchant),
                &session.merchant,
                &session.order_reference,
                &member,
            );
        }
        Ok(true)
    }

    async fn list_sessions(&self, query: &ListQuery) -> Result<Vec<ListedSession>, StoreError> {
        let members = listed(&self.session_listing(&query.merchant), query);
        let now = self.clock.now();
        Ok(members
            .into_iter()
            .map(|member| {
                let session = member_id(&member)
                    .and_then(|id| self.shard(Shard::of(id)).session(id, now).cloned());
                ListedSession {
                    cursor: member,
                    session,
                }
            })
            .collect())
    }

    async fn list_payments(&self, query: &ListQuery) -> Result<Vec<ListedPayment>, StoreError> {
        let members = listed(&self.listing(&query.merchant), query);
        Ok(members
            .into_iter()
            .map(|member| {
                let payment =
                    member_id(&member).and_then(|id| self.shard(Shard::of(id)).stored_payment(id));
                ListedPayment {
                    cursor: member,
                    payment,
                }
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
