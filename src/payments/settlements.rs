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
mod matching;
mod reading;

pub use issues::MAX_NOTE_CHARS;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, SystemTime},
};

use futures_util::{StreamExt, stream};
use uuid::Uuid;

use self::matching::Named;
use super::{PaymentError, Payments};
use crate::{
    domain::{
        money::Currency,
        settlement::{
            Day, EntryKind, FailedSettlement, Line, LineSums, Match, ReconciliationIssue,
            SettledBy, Settlement, SettlementReport, SettlementTransaction, Totals, compare,
        },
    },
    partners::PartnerError,
};

/// Lines read per request to a partner (the most Walley's report API gives).
pub const PARTNER_PAGE_SIZE: u32 = 5_000;
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
            results.push(result?);
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
                match self.import_one(partner, &report, importer).await? {
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
        loop {
            let page = match self.settlement_page(partner, report, page_number).await {
                Ok(page) => page,
                Err(error) => return Ok(SettlementImport::Stopped(error)),
            };
            let read = page.lines.len();
            if read == 0 {
                break;
            }
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

    /// Matches, claims, stores and counts one page of lines. The inner
    /// error: the settlement cannot be right (its totals overflow).
    async fn read_page(
        &self,
        reading: &mut Reading<'_>,
        lines: Vec<Line>,
    ) -> Result<Result<(), String>, PaymentError> {
        let first = reading.index;
        reading.index += u64::try_from(lines.len()).unwrap_or(u64::MAX);
        let partner = reading.partner;
        let settlement = reading.settlement;
        let currency = reading.report.currency;
        // What each line names, looked up concurrently.
        let named: Vec<Result<Judged, PaymentError>> = stream::iter(lines.into_iter().enumerate())
            .map(|(offset, line)| {
                let index = first + u64::try_from(offset).unwrap_or(u64::MAX);
                self.judge(partner, settlement, currency, index, line)
            })
            .buffered(MATCHING_CONCURRENCY)
            .collect()
            .await;
        let mut judged = named.into_iter().collect::<Result<Vec<_>, _>>()?;
        // Claims, in line order: the first line for a transaction settles it;
        // a later one (here, or in an earlier settlement) is a duplicate.
        let mut claims = Vec::new();
        let mut first_claims = HashMap::new();
        for (at, line) in judged.iter_mut().enumerate() {
            let Some(transaction) = line.claims() else {
                continue;
            };
            if first_claims.insert(transaction, line.index).is_some() {
                line.duplicate();
            } else {
                claims.push((at, transaction));
            }
        }
        let requested: Vec<(Uuid, SettledBy)> = claims
            .iter()
            .map(|(at, transaction)| {
                let index = judged[*at].index;
                (
                    *transaction,
                    SettledBy {
                        settlement,
                        line: index,
                    },
                )
            })
            .collect();
        let held = self
            .store
            .claim_settled(&requested, reading.retain_until)
            .await?;
        for (((at, _), (_, wanted)), holder) in claims.iter().zip(&requested).zip(held) {
            if !holder.is(*wanted) {
                judged[*at].duplicate();
            }
        }
        // Counted, then acted on: settled from the report, resolved, or
        // raised as an issue.
        for line in &judged {
            reading.sums.count_line();
            let Some(entry) = line.line.entry() else {
                continue;
            };
            if entry.currency != currency {
                continue;
            }
            reading.sums.add(entry);
            if line.matched.counts() && reading.totals.add(entry).is_err() {
                return Ok(Err(format!(
                    "settlement {}: its totals overflow",
                    reading.report.reference
                )));
            }
        }
        let acted: Vec<Result<(SettlementTransaction, bool, Option<String>), PaymentError>> =
            stream::iter(judged)
                .map(|line| self.act_on(reading, line))
                .buffered(MATCHING_CONCURRENCY)
                .collect()
                .await;
        let mut stored = Vec::with_capacity(acted.len());
        for result in acted {
            let (line, new_issue, merchant) = result?;
            reading.issues += u64::from(new_issue);
            reading.mismatched += u64::from(line.matched != Match::Matched);
            match merchant {
                Some(merchant) => {
                    reading.merchants.insert(merchant);
                }
                None => reading.unattributed = true,
            }
            stored.push(line);
        }
        self.store
            .put_settlement_lines(settlement, &stored, reading.retain_until)
            .await?;
        Ok(Ok(()))
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
    async fn list_reports(
        &self,
        partner: &str,
        since: Day,
    ) -> Result<Vec<SettlementReport>, String> {
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

    /// What one line is: what it names of ours and how it compares.
    async fn judge(
        &self,
        partner: &str,
        settlement: Uuid,
        currency: Currency,
        index: u64,
        line: Line,
    ) -> Result<Judged, PaymentError> {
        let entry = match &line {
            Line::Entry(entry) => entry,
            Line::Unreadable(unreadable) => {
                let note = format!(
                    "a line could not be read ({}); it is kept as the partner sent it and not counted",
                    unreadable.why
                );
                return Ok(Judged {
                    index,
                    line,
                    matched: Match::UnreadableLine,
                    named: Named::Nothing(None),
                    note: Some(note),
                });
            }
        };
        let claim = SettledBy {
            settlement,
            line: index,
        };
        let named = self.transaction_named(partner, entry, claim).await?;
        let mut note = None;
        let mut matched = match (&named, entry.kind.operation_kind()) {
            (Named::Found(found), Some(_)) => compare(entry, Some(&found.ours())),
            (Named::Ambiguous(many), _) => {
                note = Some(format!(
                    "the line names no action reference and {many} transactions of ours fit its order, kind and amount: none is guessed"
                ));
                Match::UnknownToUs
            }
            (Named::Nothing(_), Some(_)) => Match::UnknownToUs,
            // A fee, an adjustment or a chargeback names no operation: it is
            // ours when its order is, and a fee of the settlement is.
            (Named::Found(_) | Named::Nothing(Some(_)), None) => Match::Matched,
            (Named::Nothing(None), None) if entry.kind == EntryKind::Fee => Match::Matched,
            (Named::Nothing(None), None) => Match::UnknownToUs,
        };
        if entry.currency != currency {
            note = Some(format!(
                "the line is in {}, its settlement in {currency}: it is not counted",
                entry.currency
            ));
            if matched == Match::Matched {
                matched = Match::AmountMismatch;
            }
        }
        Ok(Judged {
            index,
            line,
            matched,
            named,
            note,
        })
    }

    /// Stores what a judged line came to: an open transaction it settles is
    /// settled from the report, a MISSING issue on it resolved; a line that
    /// does not match raises its issue. With whether an issue was first
    /// found now, and the merchant whose line it is.
    async fn act_on(
        &self,
        reading: &Reading<'_>,
        judged: Judged,
    ) -> Result<(SettlementTransaction, bool, Option<String>), PaymentError> {
        let Judged {
            index,
            line,
            matched,
            named,
            note,
        } = judged;
        let (payment, found) = match named {
            Named::Found(found) => (Some(found.header.value.clone()), Some(*found)),
            Named::Nothing(payment) => (payment.map(|p| *p), None),
            Named::Ambiguous(_) => (None, None),
        };
        let transaction = SettlementTransaction {
            index,
            matched,
            operation_id: found.as_ref().map(|f| f.operation.id),
            partner_transaction_id: found.as_ref().map(|f| f.transaction),
            payment_id: payment.as_ref().map(|p| p.id),
            line,
        };
        let merchant = payment.as_ref().map(|p| p.merchant.clone());
        if matched != Match::Matched {
            let issue = self.line_issue(
                reading,
                &transaction,
                found.as_ref(),
                payment.as_ref(),
                note,
            );
            let new_issue = self
                .raise(&issue, payment.as_ref(), reading.retain_until)
                .await?;
            return Ok((transaction, new_issue, merchant));
        }
        if let Some(found) = found
            && transaction
                .line
                .entry()
                .and_then(|e| e.kind.operation_kind())
                .is_some()
        {
            let ours = found.ours();
            let tx = found.transaction;
            let succeeded_long_ago = found
                .operation
                .transactions
                .iter()
                .find(|t| t.id == tx)
                .is_some_and(|t| {
                    t.updated_at + self.settings.settlements.missing_after <= self.clock.now()
                });
            if !ours.status.is_final() {
                self.settle_from_report(found.header, found.operation, tx, &reading.note)
                    .await?;
            } else if succeeded_long_ago {
                let resolution = format!(
                    "settled in settlement {} of {} (line {index})",
                    reading.report.reference, reading.partner
                );
                self.store
                    .resolve_issue(
                        ReconciliationIssue::id_for_missing(tx),
                        &resolution,
                        self.clock.now(),
                    )
                    .await?;
            }
        }
        Ok((transaction, false, merchant))
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

/// A line judged: what it names of ours, and how it compares.
struct Judged {
    index: u64,
    line: Line,
    matched: Match,
    named: Named,
    /// Why it does not match, where the importer knows better than the
    /// comparison (another currency, an ambiguous order, unreadable).
    note: Option<String>,
}

impl Judged {
    /// The transaction of ours this line settles: a capture or refund line
    /// that names one and agrees with it in kind and sign (matched, or for
    /// another amount: it still shows the transaction, which is then not
    /// missing from the settlements).
    fn claims(&self) -> Option<Uuid> {
        let settles = self
            .line
            .entry()
            .is_some_and(|e| e.kind.operation_kind().is_some());
        let shows = matches!(self.matched, Match::Matched | Match::AmountMismatch);
        match &self.named {
            Named::Found(found) if settles && shows => Some(found.transaction),
            _ => None,
        }
    }

    fn duplicate(&mut self) {
        self.matched = Match::Duplicate;
        self.note = None;
    }
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
