//! Settlements, their lines and reconciliation issues at the edge: list
//! requests (filters, page sizes lowered to the maximum, page tokens tied to
//! their filters) and the messages and CSV rows shown.

use std::fmt::Write as _;

use tonic::Status;
use uuid::Uuid;

use super::super::{proto, views::timestamp, violations::Violations};
use crate::{
    domain::settlement::{
        Day, EntryKind, Line, Match, ReconciliationIssue, Settlement, SettlementTransaction,
        VatAmount,
    },
    payments::{MAX_NOTE_CHARS, PartnerImport, page_token},
    store::{IssueQuery, SettlementQuery},
};

pub const DEFAULT_PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;
pub const DEFAULT_LINES_PAGE_SIZE: usize = 1000;
pub const MAX_LINES_PAGE_SIZE: usize = 5000;

fn day(v: &mut Violations, field: &str, text: &str) -> Option<Day> {
    if text.is_empty() {
        return None;
    }
    text.parse()
        .map_err(|_| v.add(field, "must be a date of the form YYYY-MM-DD"))
        .ok()
}

fn partner(v: &mut Violations, name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    v.text("partner", name, false);
    Some(name.to_owned())
}

/// The query of a ListSettlements request, and the filters its page tokens
/// are tied to.
pub fn list_settlements(
    request: &proto::ListSettlementsRequest,
) -> Result<(SettlementQuery, String), Status> {
    let mut v = Violations::default();
    let filters = format!(
        "settlements|{}|{}|{}",
        request.partner, request.from_date, request.to_date
    );
    let query = SettlementQuery {
        partner: partner(&mut v, &request.partner),
        merchant: None,
        from: day(&mut v, "from_date", &request.from_date),
        to: day(&mut v, "to_date", &request.to_date),
        cursor: v.cursor(&filters, &request.page_token),
        limit: v.page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
    };
    v.finish(|| (query, filters))
}

/// The settlement, the first line and how many lines of a
/// ListSettlementTransactions request.
pub fn list_settlement_transactions(
    request: &proto::ListSettlementTransactionsRequest,
) -> Result<(Uuid, u64, usize), Status> {
    let mut v = Violations::default();
    let id = v.id("settlement_id", &request.settlement_id);
    let filters = format!("lines|{}", request.settlement_id);
    let offset = v.cursor(&filters, &request.page_token).and_then(|cursor| {
        cursor
            .parse::<u64>()
            .map_err(|_| v.add("page_token", "not a page token of this listing"))
            .ok()
    });
    let size = v.page_size(
        request.page_size,
        DEFAULT_LINES_PAGE_SIZE,
        MAX_LINES_PAGE_SIZE,
    );
    v.finish(|| (id.unwrap_or_default(), offset.unwrap_or(0), size))
}

/// The token of the page of lines after `next`.
pub fn lines_token(settlement: Uuid, next: u64) -> String {
    page_token::issue(&format!("lines|{settlement}"), &next.to_string())
}

pub fn list_issues(
    request: &proto::ListReconciliationIssuesRequest,
) -> Result<(IssueQuery, String), Status> {
    let mut v = Violations::default();
    let filters = format!(
        "issues|{}|{}|{:?}|{:?}|{}",
        request.partner,
        request.kind,
        request.created_after,
        request.created_before,
        request.open_only
    );
    let kind = match proto::ReconciliationStatus::try_from(request.kind) {
        Ok(proto::ReconciliationStatus::Unspecified) => None,
        Ok(proto::ReconciliationStatus::Matched) | Err(_) => {
            v.add(
                "kind",
                "an issue kind: any reconciliation status but MATCHED",
            );
            None
        }
        Ok(kind) => Some(match_of(kind)),
    };
    let query = IssueQuery {
        partner: partner(&mut v, &request.partner),
        kind,
        merchant: None,
        created_after: v.instant("created_after", request.created_after),
        created_before: v.instant("created_before", request.created_before),
        open_only: request.open_only,
        cursor: v.cursor(&filters, &request.page_token),
        limit: v.page_size(request.page_size, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
    };
    v.finish(|| (query, filters))
}

/// The issue and the note of a ResolveReconciliationIssue request.
pub fn resolve_issue(
    request: &proto::ResolveReconciliationIssueRequest,
) -> Result<(Uuid, String), Status> {
    let mut v = Violations::default();
    let id = v.id("issue_id", &request.issue_id);
    let note = request.note.trim();
    if note.is_empty() || note.chars().count() > MAX_NOTE_CHARS {
        v.add("note", format!("1 to {MAX_NOTE_CHARS} characters"));
    }
    v.finish(|| (id.unwrap_or_default(), note.to_owned()))
}

/// The statuses as the proto names them.
const STATUSES: [(Match, proto::ReconciliationStatus); 8] = [
    (Match::Matched, proto::ReconciliationStatus::Matched),
    (
        Match::AmountMismatch,
        proto::ReconciliationStatus::AmountMismatch,
    ),
    (Match::UnknownToUs, proto::ReconciliationStatus::UnknownToUs),
    (
        Match::MissingFromSettlement,
        proto::ReconciliationStatus::MissingFromSettlement,
    ),
    (
        Match::KindMismatch,
        proto::ReconciliationStatus::KindMismatch,
    ),
    (Match::Duplicate, proto::ReconciliationStatus::Duplicate),
    (
        Match::TotalsMismatch,
        proto::ReconciliationStatus::TotalsMismatch,
    ),
    (
        Match::UnreadableLine,
        proto::ReconciliationStatus::UnreadableLine,
    ),
];

fn match_of(status: proto::ReconciliationStatus) -> Match {
    STATUSES
        .iter()
        .find(|(_, s)| *s == status)
        .map_or(Match::Matched, |(m, _)| *m)
}

fn reconciliation(matched: Match) -> proto::ReconciliationStatus {
    STATUSES
        .iter()
        .find(|(m, _)| *m == matched)
        .map_or(proto::ReconciliationStatus::Unspecified, |(_, s)| *s)
}

fn vat(lines: &[VatAmount]) -> Vec<proto::VatAmount> {
    lines
        .iter()
        .map(|vat| proto::VatAmount {
            rate: vat.rate.normalize().to_string(),
            amount: vat.amount.minor(),
        })
        .collect()
}

fn id_text(id: Option<Uuid>) -> String {
    id.map(|id| id.to_string()).unwrap_or_default()
}

fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub fn settlement(settlement: &Settlement) -> proto::Settlement {
    let totals = &settlement.totals;
    proto::Settlement {
        id: settlement.id.to_string(),
        partner: settlement.partner.clone(),
        reference: settlement.reference.clone(),
        payout_reference: settlement.payout_reference.clone(),
        settlement_date: settlement.date.to_string(),
        currency: settlement.currency.code().to_owned(),
        captured: totals.captured,
        refunded: totals.refunded,
        fees: totals.fees,
        net: totals.net,
        adjustments: totals.adjustments,
        chargebacks: totals.chargebacks,
        vat_per_rate: totals
            .vat
            .iter()
            .map(|(rate, amount)| proto::VatAmount {
                rate: rate.normalize().to_string(),
                amount: *amount,
            })
            .collect(),
        transaction_count: count(settlement.lines),
        issue_count: count(settlement.issues),
        imported_at: timestamp(settlement.imported_at),
    }
}

pub fn settlement_transaction(line: &SettlementTransaction) -> proto::SettlementTransaction {
    let mut view = proto::SettlementTransaction {
        index: count(line.index),
        reconciliation: reconciliation(line.matched).into(),
        payment_id: id_text(line.payment_id),
        operation_id: id_text(line.operation_id),
        partner_transaction_id: id_text(line.partner_transaction_id),
        ..Default::default()
    };
    match &line.line {
        Line::Entry(entry) => {
            view.kind = entry_kind(entry.kind).into();
            view.amount = entry.magnitude().minor();
            view.signed_amount = entry.amount;
            view.currency = entry.currency.code().to_owned();
            view.order_reference.clone_from(&entry.order_reference);
            view.partner_reference.clone_from(&entry.partner_reference);
            view.action_reference.clone_from(&entry.action_reference);
            view.transaction_date = entry.transaction_date.to_string();
            view.vat = vat(&entry.vat);
        }
        Line::Unreadable(unreadable) => view.raw.clone_from(&unreadable.raw),
    }
    view
}

fn entry_kind(kind: EntryKind) -> proto::SettlementEntryKind {
    match kind {
        EntryKind::Capture => proto::SettlementEntryKind::Capture,
        EntryKind::Refund => proto::SettlementEntryKind::Refund,
        EntryKind::Fee => proto::SettlementEntryKind::Fee,
        EntryKind::Adjustment => proto::SettlementEntryKind::Adjustment,
        EntryKind::Chargeback => proto::SettlementEntryKind::Chargeback,
    }
}

pub fn issue(issue: &ReconciliationIssue) -> proto::ReconciliationIssue {
    proto::ReconciliationIssue {
        id: issue.id.to_string(),
        kind: reconciliation(issue.kind).into(),
        partner: issue.partner.clone(),
        settlement_id: id_text(issue.settlement_id),
        line: issue.line.map_or(0, count),
        payment_id: id_text(issue.payment_id),
        operation_id: id_text(issue.operation_id),
        partner_transaction_id: id_text(issue.partner_transaction_id),
        reference: issue.reference.clone(),
        currency: issue.currency.code().to_owned(),
        expected: issue.expected.minor(),
        settled: issue.settled.minor(),
        description: issue.description.clone(),
        created_at: timestamp(issue.created_at),
        resolved_at: issue.resolved_at.map(timestamp).unwrap_or_default(),
        resolution: issue.resolution.clone(),
    }
}

pub fn partner_import(import: &PartnerImport) -> proto::PartnerImport {
    proto::PartnerImport {
        partner: import.partner.clone(),
        settlements: i32::try_from(import.settlements).unwrap_or(i32::MAX),
        transactions: count(import.lines),
        issues: count(import.issues),
        busy: import.busy,
        error: import.error.clone().unwrap_or_default(),
        failed: import
            .failed
            .iter()
            .map(|failed| proto::FailedSettlement {
                reference: failed.report.reference.clone(),
                settlement_date: failed.report.date.to_string(),
                error: failed.error.clone(),
                attempts: count(failed.attempts),
                first_failed_at: timestamp(failed.first_failed_at),
                last_failed_at: timestamp(failed.last_failed_at),
            })
            .collect(),
    }
}

/// The CSV header row of an export.
pub const CSV_HEADER: &str = "index,kind,amount,currency,order_reference,partner_reference,\
action_reference,transaction_date,vat,reconciliation,payment_id,operation_id,\
partner_transaction_id,signed_amount,raw\n";

/// A CSV field of text a partner supplied: one that a spreadsheet would
/// read as a formula (`=`, `+`, `-`, `@`, a tab or a carriage return
/// first) is prefixed with `'`; quoted (with doubled quotes) when it holds
/// a comma, a semicolon or a tab (what spreadsheets split on in some
/// locales: a cell after it could start a formula), a quote or a line break.
fn field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', ';', '\t', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// Appends a line's CSV row: the columns of ListSettlementTransactions, in
/// the same spellings (enum values without their prefix).
pub fn csv_row(out: &mut String, line: &SettlementTransaction) {
    let row = settlement_transaction(line);
    let vat = row
        .vat
        .iter()
        .map(|v| format!("{}:{}", v.rate, v.amount))
        .collect::<Vec<_>>()
        .join("|");
    let kind = line
        .line
        .entry()
        .map_or("UNREADABLE", |e| e.kind.as_str())
        .to_ascii_uppercase();
    let reconciliation = line.matched.as_str().to_ascii_uppercase();
    let _ = writeln!(
        out,
        "{},{kind},{},{},{},{},{},{},{vat},{reconciliation},{},{},{},{},{}",
        row.index,
        row.amount,
        row.currency,
        field(&row.order_reference),
        field(&row.partner_reference),
        field(&row.action_reference),
        row.transaction_date,
        row.payment_id,
        row.operation_id,
        row.partner_transaction_id,
        row.signed_amount,
        field(&row.raw),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partners_text_that_a_spreadsheet_would_run_is_neutralised() {
        for (text, written) in [
            (
                "=HYPERLINK(\"http://x\")",
                "\"'=HYPERLINK(\"\"http://x\"\")\"",
            ),
            ("+1", "'+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tcmd", "\"'\tcmd\""),
            ("order-1", "order-1"),
            ("a,b", "\"a,b\""),
            // Split on `;` or a tab in some locales: the cell after it
            // would start with `=`.
            ("x;=1+1", "\"x;=1+1\""),
            ("x\t=1+1", "\"x\t=1+1\""),
            ("", ""),
        ] {
            assert_eq!(field(text), written, "{text:?}");
        }
    }
}
