//! The settlement importer: every replica imports the partners' new
//! settlements on an interval; one replica per partner at a time, under a
//! lease in the store (see `payments::settlements`). Operators import on
//! demand with `AdminService.ImportSettlements`.

use std::{future::Future, time::Duration};

use super::Steps;
use crate::payments::Payments;

#[derive(Debug, Clone)]
pub struct SettlementImporter {
    payments: Payments,
}

impl SettlementImporter {
    pub fn new(payments: Payments) -> Self {
        SettlementImporter { payments }
    }

    /// One step: imports every partner's new settlements (a failure is
    /// logged; the next step tries again).
    pub async fn import_new(&self) {
        if let Err(error) = self.payments.import_settlements(None).await {
            tracing::warn!(%error, "settlement import failed; the next one retries");
        }
    }

    /// Steps every `interval` until `shutdown` completes.
    pub async fn run(self, interval: Duration, shutdown: impl Future<Output = ()>) {
        let mut steps = Steps::new(interval, shutdown);
        while steps.next().await {
            self.import_new().await;
        }
    }
}
