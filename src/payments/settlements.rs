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

mod reading;

use std::time::{Duration, SystemTime};

use futures_util::{StreamExt, stream};
use uuid::Uuid;

use super::{PaymentError, Payments};
use crate::{
    domain::{
        money::Amount,
        operation::{Operation, PartnerKey},
        payment::Payment,
        settlement::{
            Day, Match, Ours, ReconciliationIssue, Settlement, SettlementEntry,
            SettlementTransaction, Totals, compare,
        },
    },
    partners::{PartnerError, SettlementReport},
    store::{DueChange, DueItem, OutboxChange, Shard, Step, Versioned},
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
    /// Why the partner's reports could not be read (the next import tries
    /// again).
    pub error: Option<String>,
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
        let reports = match self.list_reports(partner, since).await {
            Ok(reports) => reports,
            Err(error) => {
                result.error = Some(error);
                return Ok(result);
            }
        };
        for report in reports {
            let id = Settlement::id_for(partner, &report.reference);
            if self.store.settlement(id).await?.is_some() {
                continue;
            }
            match self.import_one(partner, report, importer).await? {
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
                    // Later settlements wait: reports are imported in order.
                    result.error = Some(error);
                    break;
                }
            }
        }
        if result.settlements > 0 || result.error.is_some() {
            tracing::info!(
                partner,
                settlements = result.settlements,
                lines = result.lines,
                issues = result.issues,
                error = result.error.as_deref().unwrap_or(""),
                "settlements imported"
            );
        }
        Ok(result)
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

    /// Imports one settlement: its lines page by page, then itself.
    async fn import_one(
        &self,
        partner: &str,
        report: SettlementReport,
        importer: Uuid,
    ) -> Result<SettlementImport, PaymentError> {
        let id = Settlement::id_for(partner, &report.reference);
        let retain_until = self.clock.now() + self.settings.settlements.retention;
        let note = format!(
            "settled from settlement {} of {partner} ({})",
            report.reference, report.date
        );
        let mut totals = Totals::default();
        let mut issues = 0;
        let mut index = 0u64;
        let mut page_number = 1;
        loop {
            let page = match self
                .settlement_page(partner, &report.reference, page_number)
                .await
            {
                Ok(page) => page,
                Err(error) => return Ok(SettlementImport::Stopped(error)),
            };
            let entries = page.entries;
            if entries.is_empty() {
                break;
            }
            for entry in &entries {
                if totals.add(entry).is_err() {
                    return Ok(SettlementImport::Stopped(format!(
                        "settlement {}: its totals overflow",
                        report.reference
                    )));
                }
            }
            let first = index;
            index += u64::try_from(entries.len()).unwrap_or(u64::MAX);
            let matched: Vec<Result<(SettlementTransaction, bool), PaymentError>> =
                stream::iter(entries.into_iter().enumerate())
                    .map(|(offset, entry)| {
                        let line = first + u64::try_from(offset).unwrap_or(u64::MAX);
                        self.reconcile_line(partner, id, line, entry, &note, retain_until)
                    })
                    .buffered(MATCHING_CONCURRENCY)
                    .collect()
                    .await;
            let mut lines = Vec::with_capacity(matched.len());
            for result in matched {
                let (line, new_issue) = result?;
                issues += u64::from(new_issue);
                lines.push(line);
            }
            self.store
                .put_settlement_lines(id, &lines, retain_until)
                .await?;
            let ours: Vec<(Uuid, Uuid)> = lines
                .iter()
                .filter_map(|line| line.partner_transaction_id)
                .map(|transaction| (transaction, id))
                .collect();
            self.store.mark_settled(&ours, retain_until).await?;
            if page_number >= page.pages {
                break;
            }
            page_number += 1;
            self.renew_import_lease(partner, importer).await?;
        }
        let Ok(totals) = totals.with_fees(report.fees) else {
            return Ok(SettlementImport::Stopped(format!(
                "settlement {}: its totals overflow",
                report.reference
            )));
        };
        let mismatched = self.count_issues(id, index).await?;
        let settlement = Settlement {
            id,
            partner: partner.to_owned(),
            reference: report.reference,
            payout_reference: report.payout_reference,
            date: report.date,
            currency: report.currency,
            totals,
            issues: mismatched,
            merchant: self.settlement_owner(partner),
            imported_at: self.clock.now(),
        };
        let stored = self
            .store
            .finish_settlement(&settlement, retain_until)
            .await?;
        Ok(SettlementImport::Read {
            lines: index,
            issues,
            stored,
        })
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
        reference: &str,
        page: u32,
    ) -> Result<crate::partners::SettlementPage, String> {
        let mut pause = Duration::from_millis(200);
        for attempt in 1..=PAGE_ATTEMPTS {
            match self
                .partners
                .settlement_page(partner, reference, page, PARTNER_PAGE_SIZE)
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

    /// Issues among a settlement's stored lines (all of them, also those an
    /// earlier, interrupted import stored).
    async fn count_issues(&self, settlement: Uuid, lines: u64) -> Result<u64, PaymentError> {
        let mut count = 0;
        let mut offset = 0;
        while offset < lines {
            let page = self
                .store
                .settlement_lines(settlement, offset, PARTNER_PAGE_SIZE as usize)
                .await?;
            if page.is_empty() {
                break;
            }
            offset += u64::try_from(page.len()).unwrap_or(u64::MAX);
            count += page
                .iter()
                .filter(|line| line.matched != Match::Matched)
                .count() as u64;
        }
        Ok(count)
    }

    /// Whose a partner's settlements are: the one merchant its account
    /// serves, else nobody's (operators only).
    fn settlement_owner(&self, partner: &str) -> Option<String> {
        match self.partners.get(partner).map(|p| p.merchants.as_slice()) {
            Some([merchant]) => Some(merchant.clone()),
            _ => None,
        }
    }

    /// Matches one line; records its issue (and announces it) or settles the
    /// open transaction it names. The flag: an issue was first found now.
    async fn reconcile_line(
        &self,
        partner: &str,
        settlement: Uuid,
        index: u64,
        entry: SettlementEntry,
        note: &str,
        retain_until: SystemTime,
    ) -> Result<(SettlementTransaction, bool), PaymentError> {
        let found = self
            .transaction_named(partner, &entry.action_reference)
            .await?;
        let ours = found.as_ref().map(|(header, operation, leg)| {
            let tx = operation.transactions.iter().find(|tx| tx.leg == *leg);
            Ours {
                kind: operation.kind,
                amount: tx.map_or(Amount::ZERO, |tx| tx.amount),
                currency: header.value.currency,
                status: tx.map_or(crate::domain::status::TransactionStatus::Failure, |tx| {
                    tx.status
                }),
            }
        });
        let matched = compare(&entry, ours.as_ref());
        let transaction = found.as_ref().and_then(|(_, operation, leg)| {
            operation
                .transactions
                .iter()
                .find(|tx| tx.leg == *leg)
                .map(|tx| tx.id)
        });
        let line = SettlementTransaction {
            index,
            matched,
            operation_id: found.as_ref().map(|(_, op, _)| op.id),
            partner_transaction_id: transaction,
            payment_id: found.as_ref().map(|(header, _, _)| header.value.id),
            entry,
        };
        let mut new_issue = false;
        match (matched, found, transaction) {
            (Match::Matched, Some((header, operation, _)), Some(tx)) => {
                let open = ours.is_some_and(|o| !o.status.is_final());
                if open {
                    self.settle_from_report(header, operation, tx, note).await?;
                }
            }
            (Match::Matched, _, _) => {}
            (kind, found, _) => {
                let payment = found.as_ref().map(|(header, _, _)| &header.value);
                let issue = ReconciliationIssue {
                    id: ReconciliationIssue::id_for_line(settlement, index),
                    kind,
                    partner: partner.to_owned(),
                    merchant: payment.map(|p| p.merchant.clone()),
                    settlement_id: Some(settlement),
                    line: Some(index),
                    payment_id: line.payment_id,
                    operation_id: line.operation_id,
                    partner_transaction_id: line.partner_transaction_id,
                    reference: line.entry.action_reference.clone(),
                    currency: line.entry.currency,
                    expected: ours.as_ref().map_or(Amount::ZERO, |o| o.amount),
                    settled: line.entry.amount,
                    description: describe_issue(kind, &line.entry, ours.as_ref()),
                    created_at: self.clock.now(),
                };
                new_issue = self.raise(&issue, payment, retain_until).await?;
            }
        }
        Ok((line, new_issue))
    }

    /// Records an issue; the first time, counts it and announces it to the
    /// payment's webhook.
    async fn raise(
        &self,
        issue: &ReconciliationIssue,
        payment: Option<&Payment>,
        retain_until: SystemTime,
    ) -> Result<bool, PaymentError> {
        if !self.store.record_issue(issue, retain_until).await? {
            return Ok(false);
        }
        metrics::counter!(
            crate::telemetry::series::RECONCILIATION_ISSUES,
            "partner" => issue.partner.clone(),
            "kind" => issue.kind.as_str(),
        )
        .increment(1);
        tracing::warn!(
            issue_id = %issue.id,
            partner = %issue.partner,
            kind = issue.kind.as_str(),
            reference = %issue.reference,
            "reconciliation issue"
        );
        let now = self.clock.now();
        if let Some(payment) = payment
            && let Some(delivery) = self.webhooks.issue_event(payment, issue, now)
        {
            let mut step = Step::new(Shard::of(payment.id), now);
            step.due.push(DueChange::Schedule(
                DueItem::Webhook {
                    delivery: delivery.id,
                },
                now,
            ));
            step.outbox.push(OutboxChange::Put(delivery));
            self.store.commit(step).await?;
            metrics::counter!(crate::telemetry::series::WEBHOOKS_ENQUEUED).increment(1);
        }
        Ok(true)
    }

    /// A capture or refund succeeded `missing_after` ago: each of its
    /// successful transactions at a partner that reports settlements must
    /// have been in one by now, else it is `MISSING_FROM_SETTLEMENT`.
    pub(super) async fn check_settled(
        &self,
        payment: Uuid,
        operation: Uuid,
    ) -> Result<u64, PaymentError> {
        let Some((header, operation)) = self.store.operation(payment, operation).await? else {
            return Ok(0);
        };
        let retain_until = self.clock.now() + self.settings.settlements.retention;
        let mut missing = 0;
        for tx in &operation.transactions {
            let Some(leg) = header.value.legs.get(tx.leg) else {
                continue;
            };
            let settles = self
                .partners
                .get(&leg.partner)
                .is_some_and(|p| p.settlement_reports);
            if tx.status != crate::domain::status::TransactionStatus::Success
                || !settles
                || self.store.settled_in(tx.id).await?.is_some()
            {
                continue;
            }
            let issue = ReconciliationIssue {
                id: ReconciliationIssue::id_for_missing(tx.id),
                kind: Match::MissingFromSettlement,
                partner: leg.partner.clone(),
                merchant: Some(header.value.merchant.clone()),
                settlement_id: None,
                line: None,
                payment_id: Some(header.value.id),
                operation_id: Some(operation.id),
                partner_transaction_id: Some(tx.id),
                reference: PartnerKey::new(operation.id, tx.leg).to_string(),
                currency: header.value.currency,
                expected: tx.amount,
                settled: Amount::ZERO,
                description: format!(
                    "our {} of {} {} succeeded on {} and no settlement of {} showed it",
                    operation.kind.as_str(),
                    tx.amount,
                    header.value.currency,
                    Day::of(tx.updated_at),
                    leg.partner
                ),
                created_at: self.clock.now(),
            };
            if self
                .raise(&issue, Some(&header.value), retain_until)
                .await?
            {
                missing += 1;
            }
        }
        Ok(missing)
    }

    /// The payment, operation and leg an action reference names, if it is
    /// one of ours at this partner.
    async fn transaction_named(
        &self,
        partner: &str,
        reference: &str,
    ) -> Result<Option<(Versioned<Payment>, Operation, usize)>, PaymentError> {
        let Some(PartnerKey { operation, leg }) = PartnerKey::parse(reference) else {
            return Ok(None);
        };
        let Some((header, operation)) = self.store.find_operation(operation).await? else {
            return Ok(None);
        };
        let ours = header
            .value
            .legs
            .get(leg)
            .is_some_and(|l| l.partner == partner)
            && operation.transactions.iter().any(|tx| tx.leg == leg);
        Ok(ours.then_some((header, operation, leg)))
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

fn describe_issue(kind: Match, entry: &SettlementEntry, ours: Option<&Ours>) -> String {
    let settled = format!(
        "{} {} {}",
        entry.kind.as_str(),
        entry.amount,
        entry.currency
    );
    match (kind, ours) {
        (Match::UnknownToUs, _) | (_, None) => {
            format!("the partner settled a {settled} that no transaction of ours made")
        }
        (_, Some(ours)) => format!(
            "the partner settled a {settled}; ours is a {} of {} {} ({})",
            ours.kind.as_str(),
            ours.amount,
            ours.currency,
            ours.status.as_str()
        ),
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
    /// overflow. Later settlements of the partner wait behind it.
    Stopped(String),
}
