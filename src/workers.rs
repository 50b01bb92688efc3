//! Background work. Every replica runs each worker; a worker is one step
//! (a function tests call directly, with the time they choose) and a loop
//! that calls it on an interval until shutdown. What is shared between
//! replicas is shared through the store, under leases.
//!
//! - [`resolver`]: non-final operations, authorization expiries, settlement
//!   checks (the resolution lane of the due-queue);
//! - [`deliveries`]: webhook deliveries (their own lane);
//! - [`settlement_import`]: the partners' new settlements;
//! - [`readiness`]: follows the store, for the health service;
//! - [`partner_health`]: tells the other replicas when a partner's circuit
//!   opens or closes, and takes theirs.

use std::{future::Future, pin::Pin, time::Duration};

pub mod deliveries;
pub mod partner_health;
pub mod readiness;
pub mod resolver;
pub mod settlement_import;

/// The rhythm of a worker's loop: its first step at once, each next one
/// `interval` after the last ended (at once after a step that left more to
/// do), until `shutdown` completes.
struct Steps<S> {
    interval: Duration,
    shutdown: Pin<Box<S>>,
    at_once: bool,
}

impl<S: Future<Output = ()>> Steps<S> {
    fn new(interval: Duration, shutdown: S) -> Self {
        Steps {
            interval,
            shutdown: Box::pin(shutdown),
            at_once: true,
        }
    }

    /// Waits for the next step; `false` once `shutdown` came first.
    async fn next(&mut self) -> bool {
        if std::mem::take(&mut self.at_once) {
            return true;
        }
        tokio::select! {
            () = &mut self.shutdown => false,
            () = tokio::time::sleep(self.interval) => true,
        }
    }

    /// The next step follows at once: the last one left more to do.
    fn more(&mut self) {
        self.at_once = true;
    }
}
