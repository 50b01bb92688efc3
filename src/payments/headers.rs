//! The payment headers this replica last wrote, with their versions: a
//! capture, refund or void opens on the one held here instead of reading it
//! from the store first. The open step's compare-and-set on the version is
//! the check, so a header another replica (or the resolver) changed since
//! costs one conflict and a fresh read, never a wrong decision; a refusal
//! decided from it is kept only if the header did not move either.
//!
//! Bounded: beyond `capacity` the header written longest ago is forgotten
//! (a payment in use keeps its place). Zero turns it off (the embedded store reads headers from
//! memory anyway).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Mutex, MutexGuard},
};

use uuid::Uuid;

use crate::{domain::payment::Payment, store::Versioned};

#[derive(Debug)]
pub(super) struct Headers {
    held: Mutex<Held>,
    capacity: usize,
}

/// The headers, and the order they were written in: each payment with the
/// number of its last arrival (a header written again, or forgotten and
/// held again, arrives anew; its earlier place in the queue is stale and
/// skipped).
#[derive(Debug, Default)]
struct Held {
    headers: HashMap<Uuid, (Versioned<Payment>, u64)>,
    arrivals: VecDeque<(Uuid, u64)>,
    next: u64,
}

impl Held {
    /// Forgets the header held longest.
    fn evict(&mut self) {
        while let Some((id, arrival)) = self.arrivals.pop_front() {
            if self.headers.get(&id).is_some_and(|(_, at)| *at == arrival) {
                self.headers.remove(&id);
                return;
            }
        }
    }

    /// Drops the stale places once they outnumber the headers (many
    /// forgotten and held again without any eviction).
    fn compact(&mut self) {
        if self.arrivals.len() > 2 * self.headers.len() + 64 {
            let headers = &self.headers;
            (self.arrivals)
                .retain(|(id, arrival)| headers.get(id).is_some_and(|(_, at)| at == arrival));
        }
    }
}

impl Headers {
    pub(super) fn new(capacity: usize) -> Self {
        Headers {
            held: Mutex::default(),
            capacity,
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // Each change leaves the map and the queue consistent: a poisoned
        // lock is sound.
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The header of `id` as this replica last wrote it, if held.
    pub(super) fn get(&self, id: Uuid) -> Option<Versioned<Payment>> {
        if self.capacity == 0 {
            return None;
        }
        self.held()
            .headers
            .get(&id)
            .map(|(header, _)| header.clone())
    }

    /// Holds `header` (a later version replaces an earlier one).
    pub(super) fn remember(&self, header: &Versioned<Payment>) {
        if self.capacity == 0 {
            return;
        }
        let mut held = self.held();
        let id = header.value.id;
        let known = held.headers.get(&id).map(|(known, _)| known.version);
        if known.is_some_and(|version| version >= header.version) {
            return;
        }
        if known.is_none() && held.headers.len() >= self.capacity {
            held.evict();
        }
        // Written again, it goes to the back of the queue (its earlier place
        // is stale from now on).
        let arrival = held.next;
        held.next += 1;
        held.headers.insert(id, (header.clone(), arrival));
        held.arrivals.push_back((id, arrival));
        held.compact();
    }

    /// Forgets `id`'s header (it moved on elsewhere).
    pub(super) fn forget(&self, id: Uuid) {
        if self.capacity > 0 {
            self.held().headers.remove(&id);
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
        assert!(
            headers.get(a).is_none(),
            "the one written longest ago went first"
        );
        headers.forget(c);
        assert!(headers.get(c).is_none());
        // Held again, it arrives anew: its stale place is skipped.
        let d = Uuid::now_v7();
        headers.remember(&header(c, 2));
        headers.remember(&header(d, 1));
        assert!(headers.get(b).is_none(), "b had waited longest");
        assert!(headers.get(c).is_some() && headers.get(d).is_some());
        // Written again, c goes to the back: d is the one to go.
        headers.remember(&header(c, 3));
        headers.remember(&header(Uuid::now_v7(), 1));
        assert!(headers.get(d).is_none(), "d was written longest ago");
        assert_eq!(headers.get(c).map(|h| h.version), Some(3));
        let off = Headers::new(0);
        off.remember(&header(a, 1));
        assert!(off.get(a).is_none());
    }
}
