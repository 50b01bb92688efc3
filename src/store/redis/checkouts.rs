//! The partner-hosted checkouts opened for a session: one hash in the
//! session's slot, kept until the session retention has passed after the
//! checkout's end.

use super::*;
use crate::{domain::checkout::HostedCheckout, store::Checkouts};

#[async_trait]
impl Checkouts for RedisStore {
    async fn keep_checkout(
        &self,
        checkout: &HostedCheckout,
        replacing: Option<&str>,
    ) -> Result<HostedCheckout, StoreError> {
        let key = checkouts_key(checkout.session);
        let mut invocation = KEEP_CHECKOUT.prepare_invoke();
        invocation
            .key(&key)
            .arg(&checkout.partner)
            .arg(&checkout.id)
            .arg(codec::encode(checkout)?)
            .arg(replacing.unwrap_or_default())
            // Kept as long as a session that ends when the checkout does.
            .arg(unix_millis(
                checkout.expires_at.max(checkout.opened_at) + self.session_retention,
            ));
        let kept: Vec<u8> = self.written(&invocation, &key).await?;
        codec::decode(&kept)
    }

    async fn checkouts(&self, session: Uuid) -> Result<Vec<HostedCheckout>, StoreError> {
        let mut connection = self.connection();
        let fields: Vec<(String, Vec<u8>)> = redis::cmd("HGETALL")
            .arg(checkouts_key(session))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        fields
            .iter()
            .filter(|(field, _)| !field.ends_with("#id"))
            .map(|(_, value)| codec::decode(value))
            .collect()
    }
}
