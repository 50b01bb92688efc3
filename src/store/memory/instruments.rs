//! Which payer each instrument belongs to, stored as Redis stores it.

use super::*;

#[async_trait]
impl Instruments for MemoryStore {
    async fn claim_instrument(
        &self,
        instrument: &str,
        claim: &InstrumentClaim,
    ) -> Result<HeldInstrument, StoreError> {
        let now = unix_millis(self.clock.now());
        let mut instruments = lock(&self.instruments);
        let stored = instruments
            .entry(instrument.to_owned())
            .or_insert_with(|| InstrumentClaim::stamp(&claim.encode(), now))
            .clone();
        held_instrument(stored, now)
    }

    async fn instrument(&self, instrument: &str) -> Result<Option<HeldInstrument>, StoreError> {
        let now = unix_millis(self.clock.now());
        let stored = lock(&self.instruments).get(instrument).cloned();
        stored
            .map(|stored| held_instrument(stored, now))
            .transpose()
    }

    async fn replace_instrument(
        &self,
        instrument: &str,
        held: &HeldInstrument,
        claim: Option<&InstrumentClaim>,
    ) -> Result<bool, StoreError> {
        let now = unix_millis(self.clock.now());
        let mut instruments = lock(&self.instruments);
        if instruments.get(instrument) != Some(&held.stored) {
            return Ok(false);
        }
        match claim {
            Some(claim) => {
                let stored = InstrumentClaim::stamp(&claim.encode(), now);
                instruments.insert(instrument.to_owned(), stored);
            }
            None => {
                instruments.remove(instrument);
            }
        }
        Ok(true)
    }
}

pub(super) fn held_instrument(stored: String, now: u64) -> Result<HeldInstrument, StoreError> {
    let claim = InstrumentClaim::decode(&stored)
        .ok_or_else(|| StoreError::Corrupt("an instrument claim".into()))?;
    Ok(HeldInstrument { claim, now, stored })
}
