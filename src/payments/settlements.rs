//! Settlements: importing partners' reports, matching every line with our
//! books, and serving what was imported.
//!
//! **Import.** For each partner with reports, under a lease on that partner
//! (one replica imports it at a time), the settlements it closed within the
//! look-back are listed; each one not yet stored is read page by page, every
//! line matched and stored, then the settlement itself is stored, which makes
//! it visible. A settlement's id is derived from the partner and its
//! reference, lines are stored by their index and issues by derived ids: an
//! import that stops midway, or two replicas importing the same settlement
//! after a lease ran out, store everything once.
//!
//! **Matching.** A line names what it settles by its action reference, our
//! partner idempotency key `<operation>:<leg>`. The transaction it names is
//! compared in kind, amount and currency ([`compare`]); a line naming nothing
//! of ours is `UNKNOWN_TO_US`. A matched transaction still PENDING or
//! UNCERTAIN is settled from the report: the partner paid it out.
//! Every line that does not match is recorded as a reconciliation issue,
//! counted (`reconciliation_issues_total`) and announced to the merchant
//! (`reconciliation.issue`), once.
//!
//! **Reading** what was imported, as each viewer may see it, is in
//! `settlements/reading.rs`.

mod issues;
mod lines;
mod matching;
mod reading;

pub use issues::MAX_NOTE_CHARS;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, SystemTime},
};

use uuid::Uuid;

use super::{PaymentError, Payments};
use crate::{
    domain::settlement::{Day, FailedSettlement, LineSums, Settlement, SettlementReport, Totals},
    partners::{Listed, PartnerError},
};

/// Lines read per request to a partner (the most Walley's report API gives).
pub const PARTNER_PAGE_SIZE: u32 = 5_000;

/// The most pages of one settlement's lines read (5 million lines).
const MAX_SETTLEMENT_PAGES: u32 = 1_000;
/// Lines matched at once.
const MATCHING_CONCURRENCY: usize = 64;
/// Attempts at a partner's page that answers "try later" (`409`).
const PAGE_ATTEMPTS: u32 = 4;

/// How settlements are imported and kept.
#[derive(Debug, Clone)]
pub struct SettlementSettings {
    /// Settlements are listed from this many days back.
    pub look_back_days: u32,
    /// How long settlements, their lines and issues are kept.
    pub retention: Duration,
    /// How long one replica holds a partner's import before another may
    /// take it over (renewed with every page).
    pub import_lease: Duration,
    /// A successful capture or refund that no settlement showed this long
    /// after it succeeded is `MISSING_FROM_SETTLEMENT`.
    pub missing_after: Duration,
}

impl Default for SettlementSettings {
    fn default() -> Self {
        SettlementSettings {
            look_back_days: 7,
            retention: Duration::from_secs(400 * 86_400),
            import_lease: Duration::from_secs(300),
            missing_after: Duration::from_secs(3 * 86_400),
        }
    }
}

/// What one partner's import came to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartnerImport {
    pub partner: String,
    /// Settlements stored by this import.
    pub settlements: u32,
    pub lines: u64,
    /// Issues first found by this import.
    pub issues: u64,
    /// Another replica is importing this partner now.
    pub busy: bool,
    /// Why the partner's reports (or one settlement) could not be read
    /// (the next import tries again).
    pub error: Option<String>,
    /// The partner's settlements whose import failed, kept and retried.
    pub failed: Vec<FailedSettlement>,
}

/// A settlement as a merchant or an operator may see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer<'a> {
    Merchant(&'a str),
    Operator,
}

impl Payments {
    /// Imports the new settlements of every partner (or of one). A partner
    /// another import is busy with (on any replica) is skipped.
    pub async fn import_settlements(
        &self,
        only: Option<&str>,
    ) -> Result<Vec<PartnerImport>, PaymentError> {
        // This run's id holds the leases it takes.
        let importer = Uuid::now_v7();
        if let Some(name) = only
            && self.partners.get(name).is_none()
        {
            return Err(PaymentError::InvalidArgument {
                field: "partner".into(),
                description: format!("no partner named {name:?} is configured"),
            });
        }
        let names: Vec<String> = self
            .partners
            .iter()
            .filter(|(name, partner)| {
                // Asked by name, a partner without reports says so (an empty
                // import); otherwise only partners with reports are asked.
                only.map_or(partner.settlement_reports, |only| only == *name)
            })
            .map(|(name, _)| name.to_owned())
            .collect();
        let mut results = Vec::with_capacity(names.len());
        for name in names {
            let result = self.import_partner(&name, importer).await;
            if !result.as_ref().is_ok_and(|r| r.busy) {
                // Released for the next run; if this fails the lease runs out.
                let _ = self.store.release_lease(&lease_name(&name), importer).await;
            }
            // One partner's failure (its store unreachable midway) is its
            // own: the others are imported all the same.
            results.push(result.unwrap_or_else(|error| {
                tracing::warn!(partner = %name, %error, "a partner's settlement import stopped");
                PartnerImport {
                    partner: name.clone(),
                    error: Some(format!("the import stopped: {error}")),
                    ..PartnerImport::default()
                }
            }));
        }
        Ok(results)
    }

    /// Imports a partner's settlements not stored yet: those listed within
    /// the look-back and those that failed before (wherever they are). Each
    /// is imported on its own: one that fails is kept with its error and the
    /// others go on.
    async fn import_partner(
        &self,
        partner: &str,
        importer: Uuid,
    ) -> Result<PartnerImport, PaymentError> {
        let mut result = PartnerImport {
            partner: partner.to_owned(),
            ..PartnerImport::default()
        };
        if !self.renew_import_lease(partner, importer).await? {
            result.busy = true;
            return Ok(result);
        }
        let today = Day::of(self.clock.now());
        let since =
            Day::from_days(today.days() - i64::from(self.settings.settlements.look_back_days));
        let listed = self
            .list_reports(partner, since)
            .await
            .unwrap_or_else(|error| {
                result.error = Some(error);
                Vec::new()
            });
        // A header that does not read is reported (it has nothing to keep
        // and retry by); the others are imported.
        let mut unreadable = Vec::new();
        let listed: Vec<SettlementReport> = listed
            .into_iter()
            .filter_map(|read| read.map_err(|why| unreadable.push(why)).ok())
            .collect();
        if !unreadable.is_empty() {
            tracing::warn!(partner, ?unreadable, "settlement headers could not be read");
            result.error = Some(unreadable.join("; "));
        }
        let failed = self.store.failed_settlements(partner).await?;
        let mut reports: BTreeMap<(Day, String), (SettlementReport, Option<FailedSettlement>)> =
            BTreeMap::new();
        for earlier in failed {
            let key = (earlier.report.date, earlier.report.reference.clone());
            reports.insert(key, (earlier.report.clone(), Some(earlier)));
        }
        for report in listed {
            let key = (report.date, report.reference.clone());
            let earlier = reports.remove(&key).and_then(|(_, earlier)| earlier);
            reports.insert(key, (report, earlier));
        }
        for (report, earlier) in reports.into_values() {
            let id = Settlement::id_for(partner, &report.reference);
            if self.store.settlement(id).await?.is_none() {
                if !self.renew_import_lease(partner, importer).await? {
                    result.error = Some(LEASE_LOST.into());
                    break;
                }
                // A failure while reading one settlement (a record of ours
                // that cannot be read, the store stalling) is that
                // settlement's: kept with its error, and the others go on.
                let imported = self
                    .import_one(partner, &report, importer)
                    .await
                    .unwrap_or_else(|error| {
                        SettlementImport::Stopped(format!(
                            "settlement {}: {error}",
                            report.reference
                        ))
                    });
                match imported {
                    SettlementImport::Read {
                        lines,
                        issues,
                        stored,
                    } => {
                        result.settlements += u32::from(stored);
                        result.lines += lines;
                        result.issues += issues;
                    }
                    SettlementImport::Stopped(error) => {
                        self.keep_failed(partner, report, earlier, &error).await?;
                        result.error = Some(error);
                        continue;
                    }
                    SettlementImport::LeaseLost => {
                        result.error = Some(LEASE_LOST.into());
                        break;
                    }
                }
            }
            if earlier.is_some() {
                self.store
                    .clear_failed_settlement(partner, &report.reference)
                    .await?;
            }
        }
        result.failed = self.store.failed_settlements(partner).await?;
        if result.settlements > 0 || result.error.is_some() {
            tracing::info!(
                partner,
                settlements = result.settlements,
                lines = result.lines,
                issues = result.issues,
                failed = result.failed.len(),
                error = result.error.as_deref().unwrap_or(""),
                "settlements imported"
            );
        }
        Ok(result)
    }

    /// Records a settlement whose import failed, for the next imports to
    /// try again and operators to see.
    async fn keep_failed(
        &self,
        partner: &str,
        report: SettlementReport,
        earlier: Option<FailedSettlement>,
        error: &str,
    ) -> Result<(), PaymentError> {
        let now = self.clock.now();
        let failed = FailedSettlement {
            attempts: earlier.as_ref().map_or(0, |e| e.attempts) + 1,
            first_failed_at: earlier.as_ref().map_or(now, |e| e.first_failed_at),
            last_failed_at: now,
            error: error.to_owned(),
            report,
        };
        tracing::warn!(
            partner,
            reference = %failed.report.reference,
            attempts = failed.attempts,
            error,
            "a settlement could not be imported; later ones go on, and it is tried again"
        );
        Ok(self.store.put_failed_settlement(partner, &failed).await?)
    }

    async fn renew_import_lease(
        &self,
        partner: &str,
        importer: Uuid,
    ) -> Result<bool, PaymentError> {
        Ok(self
            .store
            .take_lease(
                &lease_name(partner),
                importer,
                self.clock.now(),
                self.settings.settlements.import_lease,
            )
            .await?)
    }

    /// Imports one settlement: its lines page by page (the lease renewed
    /// before each page's writes), then itself.
    async fn import_one(
        &self,
        partner: &str,
        report: &SettlementReport,
        importer: Uuid,
    ) -> Result<SettlementImport, PaymentError> {
        let id = Settlement::id_for(partner, &report.reference);
        let mut reading = Reading {
            partner,
            settlement: id,
            report,
            retain_until: self.clock.now() + self.settings.settlements.retention,
            note: format!(
                "settled from settlement {} of {partner} ({})",
                report.reference, report.date
            ),
            totals: Totals::default(),
            sums: LineSums::default(),
            merchants: BTreeSet::new(),
            unattributed: false,
            mismatched: 0,
            issues: 0,
            index: 0,
        };
        let mut page_number = 1;
        let mut previous = Vec::new();
        loop {
            let page = match self.settlement_page(partner, report, page_number).await {
                Ok(page) => page,
                Err(error) => return Ok(SettlementImport::Stopped(error)),
            };
            let read = page.lines.len();
            if read == 0 {
                break;
            }
            // A partner that ignores paging would be read for ever.
            if page_number > MAX_SETTLEMENT_PAGES || page.lines == previous {
                return Ok(SettlementImport::Stopped(format!(
                    "settlement {}: page {page_number} repeats the one before it, or passes \
                     {MAX_SETTLEMENT_PAGES} pages: the partner's paging cannot be followed",
                    report.reference
                )));
            }
            previous.clone_from(&page.lines);
            if !self.renew_import_lease(partner, importer).await? {
                return Ok(SettlementImport::LeaseLost);
            }
            if let Err(error) = self.read_page(&mut reading, page.lines).await? {
                return Ok(SettlementImport::Stopped(error));
            }
            let last = match page.pages {
                Some(pages) => page_number >= pages,
                None => read < PARTNER_PAGE_SIZE as usize,
            };
            if last {
                break;
            }
            page_number += 1;
        }
        let Ok(totals) = reading.totals.clone().with_fees(report.fees) else {
            return Ok(SettlementImport::Stopped(format!(
                "settlement {}: its totals overflow",
                report.reference
            )));
        };
        let merchant = self.settlement_owner(&mut reading);
        let differences = report.control.differences(&reading.sums);
        if !differences.is_empty() {
            let raised = self
                .raise_totals_mismatch(&reading, merchant.as_deref(), &differences)
                .await?;
            reading.issues += u64::from(raised);
        }
        let settlement = Settlement {
            id,
            partner: partner.to_owned(),
            reference: report.reference.clone(),
            payout_reference: report.payout_reference.clone(),
            date: report.date,
            currency: report.currency,
            totals,
            lines: reading.index,
            issues: reading.mismatched,
            merchant,
            imported_at: self.clock.now(),
        };
        let stored = self
            .store
            .finish_settlement(&settlement, reading.retain_until)
            .await?;
        Ok(SettlementImport::Read {
            lines: reading.index,
            issues: reading.issues,
            stored,
        })
    }

    /// Whose a settlement is: the one merchant its lines' payments belong to,
    /// provided every line belongs to it — or the partner account serves
    /// that merchant alone, which makes its lines of nobody's the
    /// merchant's too. Else nobody's: operators only (an account that
    /// served several merchants, then was narrowed to one, never shows one
    /// merchant the other's lines).
    fn settlement_owner(&self, reading: &mut Reading<'_>) -> Option<String> {
        if reading.merchants.len() != 1 {
            return None;
        }
        let merchant = reading.merchants.pop_first()?;
        let account_is_its = self
            .partners
            .get(reading.partner)
            .is_some_and(|p| p.merchants == [merchant.as_str()]);
        (!reading.unattributed || account_is_its).then_some(merchant)
    }

    /// The partner's settlements since `since`; "try later" answers are
    /// retried with a short backoff.
    async fn list_reports(&self, partner: &str, since: Day) -> Result<Vec<Listed>, String> {
        let mut pause = Duration::from_millis(200);
        for attempt in 1..=PAGE_ATTEMPTS {
            match self.partners.settlements(partner, since).await {
                Ok(reports) => return Ok(reports),
                Err(PartnerError::Unavailable { .. }) if attempt < PAGE_ATTEMPTS => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(error) => return Err(describe(&error)),
            }
        }
        Err("the partner kept asking to try later".into())
    }

    /// A page of a partner's report; "try later" answers are retried with a
    /// short backoff.
    async fn settlement_page(
        &self,
        partner: &str,
        report: &SettlementReport,
        page: u32,
    ) -> Result<crate::partners::SettlementPage, String> {
        let reference = &report.reference;
        let mut pause = Duration::from_millis(200);
        for attempt in 1..=PAGE_ATTEMPTS {
            match self
                .partners
                .settlement_page(partner, report, page, PARTNER_PAGE_SIZE)
                .await
            {
                Ok(page) => return Ok(page),
                Err(PartnerError::Unavailable { .. }) if attempt < PAGE_ATTEMPTS => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(error) => return Err(format!("settlement {reference}: {}", describe(&error))),
            }
        }
        Err(format!(
            "settlement {reference}: the partner kept asking to try later"
        ))
    }
}

fn lease_name(partner: &str) -> String {
    format!("settlements:{partner}")
}

fn describe(error: &PartnerError) -> String {
    match error {
        PartnerError::Declined { code, description } => format!("refused ({code}): {description}"),
        PartnerError::Unavailable { description }
        | PartnerError::Unknown { description }
        | PartnerError::Contradiction { description } => description.clone(),
    }
}

/// What the lease on an import being lost stops.
const LEASE_LOST: &str =
    "the import lease was lost (another replica may be importing): stopped before writing more";

/// One settlement being read: where it stands and what its lines came to.
struct Reading<'a> {
    partner: &'a str,
    settlement: Uuid,
    report: &'a SettlementReport,
    retain_until: SystemTime,
    /// What a transaction settled from the report says in its history.
    note: String,
    totals: Totals,
    sums: LineSums,
    /// The merchants of the payments its lines name.
    merchants: BTreeSet<String>,
    /// Some line belongs to no merchant we know (unknown to us,
    /// unreadable, a fee of the settlement).
    unattributed: bool,
    /// Its lines not MATCHED.
    mismatched: u64,
    /// Issues first found by this import.
    issues: u64,
    /// Lines read so far.
    index: u64,
}

/// What importing one settlement came to.
#[derive(Debug)]
enum SettlementImport {
    /// Read to its end: its lines, the issues they raised first, and
    /// whether this import stored it (else another one did, meanwhile).
    Read {
        lines: u64,
        issues: u64,
        stored: bool,
    },
    /// Stopped: the partner's pages could not be read, or its totals
    /// overflow. It is kept and tried again; later settlements go on.
    Stopped(String),
    /// The lease was lost: another replica may be importing the partner.
    LeaseLost,
}
