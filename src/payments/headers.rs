//! The payment headers this replica last wrote, with their versions: a
//! capture, refund or void opens on the one held here instead of reading it
//! from the store first. The open step's compare-and-set on the version is
//! the check, so a header another replica (or the resolver) changed since
//! costs one conflict and a fresh read, never a wrong decision; a refusal
//! decided from it is kept only if the header did not move either.
//!
//! Bounded: beyond `capacity` an arbitrary header is forgotten. Zero turns
//! it off (the embedded store reads headers from memory anyway).

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use uuid::Uuid;

use crate::{domain::payment::Payment, store::Versioned};

#[derive(Debug)]
pub(super) struct Headers {
    held: Mutex<HashMap<Uuid, Versioned<Payment>>>,
    capacity: usize,
}

impl Headers {
    pub(super) fn new(capacity: usize) -> Self {
        Headers {
            held: Mutex::default(),
            capacity,
        }
    }

    fn held(&self) -> MutexGuard<'_, HashMap<Uuid, Versioned<Payment>>> {
        // Each change is one insert or remove: a poisoned lock is sound.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The header of `id` as this replica last wrote it, if held.
    pub(super) fn get(&self, id: Uuid) -> Option<Versioned<Payment>> {
        if self.capacity == 0 {
            return None;
        }
        self.held().get(&id).cloned()
    }

    /// Holds `header` (a later version replaces an earlier one).
    pub(super) fn remember(&self, header: &Versioned<Payment>) {
        if self.capacity == 0 {
            return;
        }
        let mut held = self.held();
        if !held.contains_key(&header.value.id)
            && held.len() >= self.capacity
            && let Some(any) = held.keys().next().copied()
        {
            held.remove(&any);
        }
        let newer = held
            .get(&header.value.id)
            .is_none_or(|known| known.version < header.version);
        if newer {
            held.insert(header.value.id, header.clone());
        }
    }

    /// Forgets `id`'s header (it moved on elsewhere).
    pub(super) fn forget(&self, id: Uuid) {
        if self.capacity > 0 {
            self.held().remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(id: Uuid, version: u64) -> Versioned<Payment> {
        use crate::domain::{
            money::{Amount, Currency},
            payment::NewPayment,
            session::CaptureMode,
        };
        let (payment, _) = Payment::new(
            NewPayment {
                id,
                merchant: "demo".into(),
                session_id: Uuid::now_v7(),
                order_reference: "order-1".into(),
                amount: Amount::from_minor(100).unwrap(),
                currency: Currency::parse("EUR").unwrap(),
                capture_mode: CaptureMode::Manual,
                legs: Vec::new(),
                webhook: None,
                authorization_id: Uuid::now_v7(),
                origin: None,
                items: Vec::new(),
            },
            std::time::SystemTime::now(),
        );
        Versioned {
            value: payment,
            version,
        }
    }

    #[test]
    fn it_holds_the_latest_version_within_its_capacity() {
        let headers = Headers::new(2);
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        headers.remember(&header(a, 2));
        headers.remember(&header(a, 1));
        assert_eq!(headers.get(a).map(|h| h.version), Some(2), "never older");
        headers.remember(&header(b, 1));
        headers.remember(&header(c, 1));
        let held = [a, b, c]
            .iter()
            .filter(|id| headers.get(**id).is_some())
            .count();
        assert_eq!(held, 2, "bounded");
        assert!(headers.get(c).is_some(), "the newest is held");
        headers.forget(c);
        assert!(headers.get(c).is_none());
        let off = Headers::new(0);
        off.remember(&header(a, 1));
        assert!(off.get(a).is_none());
    }
}
