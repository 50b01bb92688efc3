//! Which payer each instrument belongs to: one key per instrument, in a
//! slot of its own; written with `WAIT` when replicas must acknowledge.

use super::*;

pub(super) fn held_instrument(stored: String, now: &str) -> Result<HeldInstrument, StoreError> {
    let claim = InstrumentClaim::decode(&stored).ok_or_else(|| corrupt("an instrument claim"))?;
    let now = now.parse().map_err(|_| corrupt("the store's time"))?;
    Ok(HeldInstrument { claim, now, stored })
}

impl RedisStore {
    /// Runs a write outside a step (an instrument claim): on the shared
    /// connection, or, when replicas must acknowledge writes, with its `WAIT`
    /// (not acknowledged: `NotReplicated`, nothing to rely on).
    pub(super) async fn written<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        key: &str,
    ) -> Result<T, StoreError> {
        match self.applied(invocation, key).await? {
            (value, true) => Ok(value),
            (_, false) => Err(not_replicated()),
        }
    }

    /// Runs a write outside a step and answers what it answered, and
    /// whether the replicas acknowledged it (always, when none must).
    pub(super) async fn applied<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        key: &str,
    ) -> Result<(T, bool), StoreError> {
        let (value, acknowledged) = match &self.replicated {
            None => {
                let mut connection = self.connection();
                let value = invocation.invoke_async(&mut connection).await;
                return Ok((value.map_err(write_failed)?, true));
            }
            Some(replicated) => replicated.run(invocation, key).await?,
        };
        let value = redis::from_redis_value(value).map_err(|_| corrupt("an unexpected answer"))?;
        Ok((value, acknowledged))
    }
}

/// A write that applied on the master, not on enough replicas.
pub(super) fn not_replicated() -> StoreError {
    StoreError::NotReplicated(Box::new(Committed::Applied {
        payment: None,
        session: None,
        answered: None,
    }))
}

#[async_trait]
impl Instruments for RedisStore {
    async fn claim_instrument(
        &self,
        instrument: &str,
        claim: &InstrumentClaim,
    ) -> Result<HeldInstrument, StoreError> {
        let key = instrument_key(instrument);
        let mut invocation = CLAIM_INSTRUMENT.prepare_invoke();
        invocation.key(&key).arg(claim.encode());
        let (held, now): (String, String) = self.written(&invocation, &key).await?;
        held_instrument(held, &now)
    }

    async fn instrument(&self, instrument: &str) -> Result<Option<HeldInstrument>, StoreError> {
        let mut connection = self.connection();
        let (held, now): (String, String) = READ_INSTRUMENT
            .key(instrument_key(instrument))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        if held.is_empty() {
            return Ok(None);
        }
        held_instrument(held, &now).map(Some)
    }

    async fn replace_instrument(
        &self,
        instrument: &str,
        held: &HeldInstrument,
        claim: Option<&InstrumentClaim>,
    ) -> Result<bool, StoreError> {
        let key = instrument_key(instrument);
        let mut invocation = REPLACE_INSTRUMENT.prepare_invoke();
        invocation
            .key(&key)
            .arg(&held.stored)
            .arg(claim.map(InstrumentClaim::encode).unwrap_or_default());
        let replaced: i64 = self.written(&invocation, &key).await?;
        Ok(replaced == 1)
    }
}
