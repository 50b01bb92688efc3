//! Reconciliation issues: raised (recorded once, counted, announced to the
//! payment's webhook), resolved by a person with a note or by the service
//! when a missing transaction shows up, and the check that finds a
//! successful transaction no settlement showed in time.

use std::time::SystemTime;

use uuid::Uuid;

use super::{Reading, Viewer, matching::Found};
use crate::{
    domain::{
        money::Amount,
        operation::PartnerKey,
        payment::Payment,
        settlement::{
            Day, Match, Ours, ReconciliationIssue, SettlementEntry, SettlementTransaction,
        },
    },
    payments::{PaymentError, Payments},
    store::{DueChange, DueItem, OutboxChange, Shard, Step},
};

/// A stored settlement's line that settled a transaction.
struct SettledLine {
    reference: String,
    line: u64,
}

/// The longest note a person may resolve an issue with.
pub const MAX_NOTE_CHARS: usize = 1000;

impl Payments {
    /// Resolves an issue the viewer may see with a note; an issue already
    /// resolved is answered as it is.
    pub async fn resolve_issue(
        &self,
        viewer: Viewer<'_>,
        id: Uuid,
        note: &str,
    ) -> Result<ReconciliationIssue, PaymentError> {
        let visible = self
            .store
            .issue(id)
            .await?
            .filter(|issue| viewer.sees(issue.merchant.as_ref()));
        if visible.is_none() {
            return Err(PaymentError::NotFound);
        }
        self.store
            .resolve_issue(id, note, self.clock.now())
            .await?
            .ok_or(PaymentError::NotFound)
    }

    /// The issue of a line that does not match.
    pub(super) fn line_issue(
        &self,
        reading: &Reading<'_>,
        line: &SettlementTransaction,
        found: Option<&Found>,
        payment: Option<&Payment>,
        note: Option<String>,
    ) -> ReconciliationIssue {
        let ours = found.map(Found::ours);
        let entry = line.line.entry();
        ReconciliationIssue {
            id: ReconciliationIssue::id_for_line(reading.settlement, line.index),
            kind: line.matched,
            partner: reading.partner.to_owned(),
            merchant: payment.map(|p| p.merchant.clone()),
            settlement_id: Some(reading.settlement),
            line: Some(line.index),
            payment_id: line.payment_id,
            operation_id: line.operation_id,
            partner_transaction_id: line.partner_transaction_id,
            reference: entry
                .map(|e| e.action_reference.clone())
                .unwrap_or_default(),
            currency: entry.map_or(reading.report.currency, |e| e.currency),
            expected: ours.as_ref().map_or(Amount::ZERO, |o| o.amount),
            settled: entry.map_or(Amount::ZERO, SettlementEntry::magnitude),
            description: note.unwrap_or_else(|| match entry {
                Some(entry) => describe_issue(line.matched, entry, ours.as_ref()),
                None => "a line could not be read".into(),
            }),
            created_at: self.clock.now(),
            resolved_at: None,
            resolution: String::new(),
        }
    }

    /// The issue of a settlement whose lines do not add up to its header;
    /// `true` if it was first found now.
    pub(super) async fn raise_totals_mismatch(
        &self,
        reading: &Reading<'_>,
        merchant: Option<&str>,
        differences: &[String],
    ) -> Result<bool, PaymentError> {
        let control = reading.report.control;
        let magnitude = |minor: i64| {
            Amount::from_minor(i64::try_from(minor.unsigned_abs()).unwrap_or(i64::MAX))
        };
        let issue = ReconciliationIssue {
            id: ReconciliationIssue::id_for_totals(reading.settlement),
            kind: Match::TotalsMismatch,
            partner: reading.partner.to_owned(),
            merchant: merchant.map(str::to_owned),
            settlement_id: Some(reading.settlement),
            line: None,
            payment_id: None,
            operation_id: None,
            partner_transaction_id: None,
            reference: reading.report.reference.clone(),
            currency: reading.report.currency,
            expected: control
                .captured
                .and_then(|c| magnitude(c).ok())
                .unwrap_or(Amount::ZERO),
            settled: magnitude(reading.sums.captured).unwrap_or(Amount::ZERO),
            description: format!(
                "settlement {} does not add up to its header: {}",
                reading.report.reference,
                differences.join("; ")
            ),
            created_at: self.clock.now(),
            resolved_at: None,
            resolution: String::new(),
        };
        self.raise(&issue, None, reading.retain_until).await
    }

    /// Records an issue; the first time, counts it and announces it to the
    /// payment's webhook.
    pub(super) async fn raise(
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
    ///
    /// The issues first raised now; `None` when a settlement that is not
    /// stored yet holds one of the transactions (an import under way, or a
    /// settlement kept after it failed): ask again later.
    pub(in crate::payments) async fn check_settled(
        &self,
        payment: Uuid,
        operation: Uuid,
    ) -> Result<Option<u64>, PaymentError> {
        let Some((header, operation)) = self.store.operation(payment, operation).await? else {
            return Ok(Some(0));
        };
        let retain_until = self.clock.now() + self.settings.settlements.retention;
        let mut missing = 0;
        let mut pending = false;
        for tx in &operation.transactions {
            let Some(leg) = header.value.legs.get(tx.leg) else {
                continue;
            };
            let settles = self
                .partners
                .get(&leg.partner)
                .is_some_and(|p| p.settlement_reports);
            if tx.status != crate::domain::status::TransactionStatus::Success || !settles {
                continue;
            }
            if let Some(claim) = self.store.settled_in(tx.id).await? {
                if self.store.settlement(claim.settlement).await?.is_none() {
                    pending = true;
                }
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
                resolved_at: None,
                resolution: String::new(),
            };
            if self
                .raise(&issue, Some(&header.value), retain_until)
                .await?
            {
                missing += 1;
            }
            // An import that settled it meanwhile looked for this issue
            // before it existed: resolved here instead.
            if let Some(settled) = self.settled_by(tx.id).await? {
                let resolution = match settled.line {
                    u64::MAX => format!(
                        "settled in settlement {} of {}",
                        settled.reference, leg.partner
                    ),
                    line => format!(
                        "settled in settlement {} of {} (line {line})",
                        settled.reference, leg.partner
                    ),
                };
                self.store
                    .resolve_issue(issue.id, &resolution, self.clock.now())
                    .await?;
            }
        }
        Ok((!pending).then_some(missing))
    }

    /// The stored settlement whose line settled a transaction (a claim of
    /// a settlement never stored does not count), with the line.
    async fn settled_by(&self, transaction: Uuid) -> Result<Option<SettledLine>, PaymentError> {
        let Some(claim) = self.store.settled_in(transaction).await? else {
            return Ok(None);
        };
        Ok(self
            .store
            .settlement(claim.settlement)
            .await?
            .map(|settlement| SettledLine {
                reference: settlement.reference,
                line: claim.line,
            }))
    }
}

fn describe_issue(kind: Match, entry: &SettlementEntry, ours: Option<&Ours>) -> String {
    let settled = format!(
        "{} of {} {}",
        entry.kind.as_str(),
        entry.amount,
        entry.currency
    );
    match (kind, ours) {
        (Match::Duplicate, _) => format!(
            "the partner settled a {settled} for a transaction of ours that an earlier line already settled: not counted again"
        ),
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
