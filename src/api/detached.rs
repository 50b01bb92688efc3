//! Mutating use cases run detached from their RPC. A request cut by its
//! client's deadline or a dropped connection (tonic drops the handler's
//! future) still finishes its work on the server: its answer is stored under
//! its idempotency key, so the client's retry gets it within the partners'
//! latency instead of waiting for a lease to run out.
//!
//! Detached work is bounded: each piece by the request timeout, all of it
//! by a limit (beyond it a call is refused with `RESOURCE_EXHAUSTED` before
//! anything happens), and on SIGTERM the server waits for it to finish.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::sync::Semaphore;
use tonic::Status;
use tracing::Instrument;

use crate::payments::PaymentError;

#[derive(Debug, Clone)]
pub struct Detached {
    permits: Arc<Semaphore>,
    capacity: u32,
    deadline: Duration,
}

impl Detached {
    /// At most `capacity` pieces of work at once, each for at most
    /// `deadline`.
    pub fn new(capacity: usize, deadline: Duration) -> Self {
        let capacity = u32::try_from(capacity.max(1)).unwrap_or(u32::MAX);
        Detached {
            permits: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            deadline,
        }
    }

    /// Runs the use case `work` to its end whatever becomes of the caller,
    /// and answers what it came to (an error as its `Status`) while the
    /// caller still waits.
    ///
    /// The use case's future is large (every step of a request is in it):
    /// it is boxed here, once, so that the handler's future, the task and
    /// the layers between them move a pointer instead of copying it (the
    /// copies and the fresh pages they touched were a fifth of a capture's
    /// CPU).
    pub fn run<T, F>(&self, work: F) -> impl Future<Output = Result<T, Status>> + Send + 'static
    where
        T: Send + 'static,
        F: Future<Output = Result<T, PaymentError>> + Send + 'static,
    {
        let work = Box::pin(work);
        let permit = self.permits.clone().try_acquire_owned();
        let deadline = self.deadline;
        async move {
            let Ok(permit) = permit else {
                return Err(super::error::overloaded());
            };
            let task = tokio::spawn(
                async move {
                    let _permit = permit;
                    tokio::time::timeout(deadline, work).await
                }
                .in_current_span(),
            );
            match task.await {
                Ok(Ok(answer)) => answer.map_err(super::error::status_of),
                // Cut off mid-way, like a replica that stopped: the resolver
                // finishes it, a retry gets the outcome.
                Ok(Err(_)) => Err(super::error::status_of(PaymentError::RequestInProgress)),
                Err(error) => {
                    tracing::error!(%error, "detached work panicked");
                    Err(Status::internal("internal error"))
                }
            }
        }
    }

    /// Waits (at most `within`) until no detached work runs; whether it
    /// all finished.
    pub async fn drained(&self, within: Duration) -> bool {
        tokio::time::timeout(within, self.permits.acquire_many(self.capacity))
            .await
            .is_ok_and(|permits| permits.is_ok())
    }
}
