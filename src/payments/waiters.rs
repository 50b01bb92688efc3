//! `WaitOperation` without polling: a waiter registers for its operation and
//! sleeps until a notice says the operation became final (announced through
//! the store to every replica), re-reading it only then — or, should a
//! notice be lost, after a slow safety interval. Each merchant has at most a
//! configured number of waiters.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

use super::PaymentError;

#[derive(Debug, Default)]
struct Registry {
    /// Each waited-for operation, with how many wait for it.
    operations: HashMap<Uuid, (Arc<Notify>, usize)>,
    per_merchant: HashMap<String, usize>,
}

#[derive(Debug)]
pub struct Waiters {
    registry: Mutex<Registry>,
    max_per_merchant: usize,
}

/// A registered waiter; dropping it unregisters it.
#[derive(Debug)]
pub struct Waiting {
    waiters: Arc<Waiters>,
    merchant: String,
    operation: Uuid,
    pub notify: Arc<Notify>,
}

impl Waiters {
    pub fn new(max_per_merchant: usize) -> Arc<Waiters> {
        Arc::new(Waiters {
            registry: Mutex::default(),
            max_per_merchant,
        })
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a waiter of `merchant` for `operation`; refused beyond the
    /// merchant's cap.
    pub fn wait(
        self: &Arc<Self>,
        merchant: &str,
        operation: Uuid,
    ) -> Result<Waiting, PaymentError> {
        let mut registry = self.registry();
        let count = registry
            .per_merchant
            .entry(merchant.to_owned())
            .or_default();
        if *count >= self.max_per_merchant {
            return Err(PaymentError::TooManyWaiters {
                max: self.max_per_merchant,
            });
        }
        *count += 1;
        let entry = registry
            .operations
            .entry(operation)
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        let notify = entry.0.clone();
        metrics::gauge!(crate::telemetry::series::WAITERS).increment(1.0);
        Ok(Waiting {
            waiters: self.clone(),
            merchant: merchant.to_owned(),
            operation,
            notify,
        })
    }

    /// Wakes the waiters of an operation.
    pub fn wake(&self, operation: Uuid) {
        if let Some((notify, _)) = self.registry().operations.get(&operation) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter (notices were lost: each re-reads its operation).
    pub fn wake_all(&self) {
        for (notify, _) in self.registry().operations.values() {
            notify.notify_waiters();
        }
    }

    /// Relays the store's notices until the store stops sending them.
    pub async fn listen(self: Arc<Self>, mut finals: broadcast::Receiver<Uuid>) {
        loop {
            match finals.recv().await {
                Ok(operation) => self.wake(operation),
                Err(broadcast::error::RecvError::Lagged(_)) => self.wake_all(),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut registry = self.waiters.registry();
        if let Some(count) = registry.per_merchant.get_mut(&self.merchant) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                registry.per_merchant.remove(&self.merchant);
            }
        }
        if let Some(entry) = registry.operations.get_mut(&self.operation) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                registry.operations.remove(&self.operation);
            }
        }
        metrics::gauge!(crate::telemetry::series::WAITERS).decrement(1.0);
    }
}
