//! Partner circuits shared between replicas: each replica keeps its own in
//! memory (no request reads the store for them) and tells the others only
//! when one opens or closes, through the store's notices.

use std::{
    future::Future,
    sync::{Arc, Weak},
};

use tokio::sync::broadcast::error::RecvError;

use crate::{
    partners::health::{Health, HealthNotice},
    store::Store,
};

/// Publishes this replica's changes and applies the others' until the
/// store is dropped (it holds the store weakly: the store's own tasks end
/// with it). Both subscriptions are taken here, before the loop is spawned,
/// so no change made after this call is missed. A notice that cannot be
/// published is logged: the other replicas then find the partner's state
/// from their own calls.
pub fn relay(store: &Arc<dyn Store>, health: Arc<Health>) -> impl Future<Output = ()> + use<> {
    let mut mine = health.changes();
    let mut theirs = store.health_notices();
    let store: Weak<dyn Store> = Arc::downgrade(store);
    async move {
        loop {
            tokio::select! {
                change = mine.recv() => match change {
                    Ok(notice) => {
                        let Some(store) = store.upgrade() else { return };
                        if let Err(error) = store.announce_health(&notice.encode()).await {
                            tracing::warn!(%error, partner = %notice.partner,
                                "cannot tell the other replicas of a partner circuit change");
                        }
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                told = theirs.recv() => match told {
                    Ok(text) => match HealthNotice::decode(&text) {
                        Some(notice) => health.apply(&notice),
                        None => tracing::debug!("a partner health notice that does not read"),
                    },
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
            }
        }
    }
}
