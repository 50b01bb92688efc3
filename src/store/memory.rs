//! The embedded store: everything in one process, behind one mutex. The
//! default for `cargo run` and for tests of the layers above the store.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use uuid::Uuid;

use super::{
    Claim, ClaimRequest, DueItem, IdempotencyScope, ListQuery, ListedPayment, PaymentStore,
    StoreError, Versioned, WebhookDelivery, listing_member,
};
use crate::domain::{payment::Payment, session::Session};

#[derive(Debug)]
enum KeyState {
    InFlight { lease_until: SystemTime },
    Done(Vec<u8>),
}

#[derive(Debug)]
struct KeyRecord {
    fingerprint: String,
    reserved_id: Uuid,
    state: KeyState,
    lease: Duration,
    expires_at: SystemTime,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<Uuid, Versioned<Session>>,
    payments: HashMap<Uuid, Versioned<Payment>>,
    operations: HashMap<Uuid, Uuid>,
    keys: HashMap<IdempotencyScope, KeyRecord>,
    /// `(merchant, order reference or None)` → listing members.
    listings: HashMap<(String, Option<String>), BTreeSet<String>>,
    due: HashMap<DueItem, SystemTime>,
    webhooks: HashMap<Uuid, WebhookDelivery>,
    /// `(partner, event id)` → when the sighting is forgotten.
    events: HashMap<(String, String), SystemTime>,
}

#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every mutation below is a single map operation: a panic cannot
        // leave a half-written record, so a poisoned lock is still sound.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl PaymentStore for MemoryStore {
    async fn insert_session(&self, session: &Session) -> Result<(), StoreError> {
        let mut inner = self.inner();
        if inner.sessions.contains_key(&session.id) {
            return Err(StoreError::AlreadyExists);
        }
        let value = Versioned {
            value: session.clone(),
            version: 1,
        };
        inner.sessions.insert(session.id, value);
        Ok(())
    }

    async fn session(&self, id: Uuid) -> Result<Option<Versioned<Session>>, StoreError> {
        Ok(self.inner().sessions.get(&id).cloned())
    }

    async fn update_session(&self, session: &Session, version: u64) -> Result<u64, StoreError> {
        let mut inner = self.inner();
        let stored = inner
            .sessions
            .get_mut(&session.id)
            .ok_or(StoreError::Conflict)?;
        if stored.version != version {
            return Err(StoreError::Conflict);
        }
        *stored = Versioned {
            value: session.clone(),
            version: version + 1,
        };
        Ok(version + 1)
    }

    async fn insert_payment(&self, payment: &Payment) -> Result<(), StoreError> {
        let mut inner = self.inner();
        if inner.payments.contains_key(&payment.id) {
            return Err(StoreError::AlreadyExists);
        }
        let member = listing_member(payment.created_at, payment.id);
        for order_reference in [None, Some(payment.order_reference.clone())] {
            inner
                .listings
                .entry((payment.merchant.clone(), order_reference))
                .or_default()
                .insert(member.clone());
        }
        let value = Versioned {
            value: payment.clone(),
            version: 1,
        };
        inner.payments.insert(payment.id, value);
        Ok(())
    }

    async fn payment(&self, id: Uuid) -> Result<Option<Versioned<Payment>>, StoreError> {
        Ok(self.inner().payments.get(&id).cloned())
    }

    async fn update_payment(&self, payment: &Payment, version: u64) -> Result<u64, StoreError> {
        let mut inner = self.inner();
        let stored = inner
            .payments
            .get_mut(&payment.id)
            .ok_or(StoreError::Conflict)?;
        if stored.version != version {
            return Err(StoreError::Conflict);
        }
        *stored = Versioned {
            value: payment.clone(),
            version: version + 1,
        };
        Ok(version + 1)
    }

    async fn index_operation(&self, operation: Uuid, payment: Uuid) -> Result<(), StoreError> {
        self.inner().operations.insert(operation, payment);
        Ok(())
    }

    async fn payment_of_operation(&self, operation: Uuid) -> Result<Option<Uuid>, StoreError> {
        Ok(self.inner().operations.get(&operation).copied())
    }

    async fn list_payments(&self, query: &ListQuery) -> Result<Vec<ListedPayment>, StoreError> {
        let inner = self.inner();
        let key = (query.merchant.clone(), query.order_reference.clone());
        let Some(members) = inner.listings.get(&key) else {
            return Ok(Vec::new());
        };
        let admitted = |member: &&String| query.admits(member);
        let chosen: Vec<&String> = if query.newest_first {
            members
                .iter()
                .rev()
                .filter(admitted)
                .take(query.limit)
                .collect()
        } else {
            members.iter().filter(admitted).take(query.limit).collect()
        };
        Ok(chosen
            .into_iter()
            .map(|member| ListedPayment {
                cursor: member.clone(),
                payment: member
                    .split_once(':')
                    .and_then(|(_, id)| Uuid::try_parse(id).ok())
                    .and_then(|id| inner.payments.get(&id))
                    .map(|p| p.value.clone()),
            })
            .collect())
    }

    async fn claim(
        &self,
        scope: &IdempotencyScope,
        request: &ClaimRequest,
        now: SystemTime,
    ) -> Result<Claim, StoreError> {
        let mut inner = self.inner();
        let fresh = || KeyRecord {
            fingerprint: request.fingerprint.clone(),
            reserved_id: request.reserved_id,
            state: KeyState::InFlight {
                lease_until: now + request.lease,
            },
            lease: request.lease,
            expires_at: now + request.ttl,
        };
        let Some(record) = inner.keys.get_mut(scope).filter(|r| r.expires_at > now) else {
            inner.keys.insert(scope.clone(), fresh());
            return Ok(Claim::Acquired);
        };
        if record.fingerprint != request.fingerprint {
            return Ok(Claim::Mismatch);
        }
        Ok(match &record.state {
            KeyState::Done(outcome) => Claim::Done(outcome.clone()),
            KeyState::InFlight { lease_until } if *lease_until > now => Claim::InFlight,
            KeyState::InFlight { .. } => {
                record.state = KeyState::InFlight {
                    lease_until: now + record.lease,
                };
                Claim::TakenOver {
                    reserved_id: record.reserved_id,
                }
            }
        })
    }

    async fn complete(
        &self,
        scope: &IdempotencyScope,
        outcome: &[u8],
        _now: SystemTime,
    ) -> Result<(), StoreError> {
        if let Some(record) = self.inner().keys.get_mut(scope) {
            record.state = KeyState::Done(outcome.to_vec());
        }
        Ok(())
    }

    async fn complete_if_in_flight(
        &self,
        scope: &IdempotencyScope,
        outcome: &[u8],
    ) -> Result<(), StoreError> {
        if let Some(record) = self.inner().keys.get_mut(scope)
            && matches!(record.state, KeyState::InFlight { .. })
        {
            record.state = KeyState::Done(outcome.to_vec());
        }
        Ok(())
    }

    async fn release(&self, scope: &IdempotencyScope) -> Result<(), StoreError> {
        self.inner().keys.remove(scope);
        Ok(())
    }

    async fn schedule(&self, item: &DueItem, due_at: SystemTime) -> Result<(), StoreError> {
        self.inner().due.insert(item.clone(), due_at);
        Ok(())
    }

    async fn unschedule(&self, item: &DueItem) -> Result<(), StoreError> {
        self.inner().due.remove(item);
        Ok(())
    }

    async fn claim_due(
        &self,
        now: SystemTime,
        lease: Duration,
        limit: usize,
    ) -> Result<Vec<DueItem>, StoreError> {
        let mut inner = self.inner();
        let mut due: Vec<(SystemTime, DueItem)> = inner
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(item, at)| (*at, item.clone()))
            .collect();
        due.sort();
        due.truncate(limit);
        for (_, item) in &due {
            inner.due.insert(item.clone(), now + lease);
        }
        Ok(due.into_iter().map(|(_, item)| item).collect())
    }

    async fn due_summary(&self) -> Result<(usize, Option<SystemTime>), StoreError> {
        let inner = self.inner();
        Ok((inner.due.len(), inner.due.values().min().copied()))
    }

    async fn put_webhook(&self, delivery: &WebhookDelivery) -> Result<bool, StoreError> {
        let mut inner = self.inner();
        if inner.webhooks.contains_key(&delivery.id) {
            return Ok(false);
        }
        inner.webhooks.insert(delivery.id, delivery.clone());
        Ok(true)
    }

    async fn webhook(&self, id: Uuid) -> Result<Option<WebhookDelivery>, StoreError> {
        Ok(self.inner().webhooks.get(&id).cloned())
    }

    async fn update_webhook(&self, delivery: &WebhookDelivery) -> Result<(), StoreError> {
        self.inner().webhooks.insert(delivery.id, delivery.clone());
        Ok(())
    }

    async fn delete_webhook(&self, id: Uuid) -> Result<(), StoreError> {
        self.inner().webhooks.remove(&id);
        Ok(())
    }

    async fn first_sighting(
        &self,
        partner: &str,
        event_id: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut inner = self.inner();
        let key = (partner.to_owned(), event_id.to_owned());
        if inner
            .events
            .get(&key)
            .is_some_and(|forget_at| *forget_at > now)
        {
            return Ok(false);
        }
        inner.events.insert(key, now + ttl);
        Ok(true)
    }
}
