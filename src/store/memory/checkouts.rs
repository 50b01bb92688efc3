//! The partner-hosted checkouts opened for sessions.

use std::collections::BTreeMap;

use async_trait::async_trait;
use uuid::Uuid;

use super::{MemoryStore, lock};
use crate::{
    domain::checkout::HostedCheckout,
    store::{Checkouts, StoreError},
};

/// Each session's checkouts, by partner.
pub(super) type Kept = std::collections::HashMap<Uuid, BTreeMap<String, HostedCheckout>>;

#[async_trait]
impl Checkouts for MemoryStore {
    async fn keep_checkout(
        &self,
        checkout: &HostedCheckout,
        replacing: Option<&str>,
    ) -> Result<HostedCheckout, StoreError> {
        let now = self.clock.now();
        let mut kept = lock(&self.checkouts);
        // Kept as long as their session: gone once it would be.
        let retention = self.session_retention;
        kept.retain(|_, by_partner| {
            by_partner.retain(|_, c| c.expires_at.max(c.opened_at) + retention > now);
            !by_partner.is_empty()
        });
        let by_partner = kept.entry(checkout.session).or_default();
        let held = by_partner.get(&checkout.partner);
        if held.map(|c| c.id.as_str()) == replacing {
            by_partner.insert(checkout.partner.clone(), checkout.clone());
            return Ok(checkout.clone());
        }
        // Absent but a replacement was asked for: keep it all the same
        // (what it replaced is gone).
        match held {
            Some(held) => Ok(held.clone()),
            None => {
                by_partner.insert(checkout.partner.clone(), checkout.clone());
                Ok(checkout.clone())
            }
        }
    }

    async fn checkouts(&self, session: Uuid) -> Result<Vec<HostedCheckout>, StoreError> {
        Ok(lock(&self.checkouts)
            .get(&session)
            .map(|by_partner| by_partner.values().cloned().collect())
            .unwrap_or_default())
    }
}
