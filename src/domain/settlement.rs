//! Settlements: what a partner paid out for a day, transaction by
//! transaction, and how each of its lines compares with our books.
//!
//! A partner's report lists **entries** (a capture it paid, a refund it took
//! back), each with the reference it was sent with (our partner idempotency
//! key, `<operation>:<leg>`), the amount and VAT per rate. Importing turns
//! the entries into [`SettlementTransaction`]s with a [`Match`] against our
//! partner transaction, and the report into a [`Settlement`] whose
//! [`Totals`] are computed here, exactly, from the entries.
//!
//! Dates are UTC calendar days, `YYYY-MM-DD` ([`Day`], from `domain::day`).

use std::{collections::BTreeMap, time::SystemTime};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use super::day::{BadDay, Day};
use super::{
    money::{Amount, AmountError, Currency},
    operation::OperationKind,
    status::TransactionStatus,
};

/// What a settlement line moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// Paid out to the merchant.
    Capture,
    /// Taken back from the merchant.
    Refund,
    /// What the partner kept.
    Fee,
    /// A change of an earlier purchase's amount, either sign.
    Adjustment,
    /// Taken back by the shopper's bank.
    Chargeback,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Capture => "capture",
            EntryKind::Refund => "refund",
            EntryKind::Fee => "fee",
            EntryKind::Adjustment => "adjustment",
            EntryKind::Chargeback => "chargeback",
        }
    }

    /// The kind of our operation a line of this kind settles, if any.
    pub fn operation_kind(self) -> Option<OperationKind> {
        match self {
            EntryKind::Capture => Some(OperationKind::Capture),
            EntryKind::Refund => Some(OperationKind::Refund),
            EntryKind::Fee | EntryKind::Adjustment | EntryKind::Chargeback => None,
        }
    }

    /// The sign of a line of this kind that agrees with its kind: money to
    /// the merchant is positive. `None`: either sign (adjustments).
    pub fn sign(self) -> Option<i64> {
        match self {
            EntryKind::Capture => Some(1),
            EntryKind::Refund | EntryKind::Fee | EntryKind::Chargeback => Some(-1),
            EntryKind::Adjustment => None,
        }
    }
}

/// VAT of one rate (percent), in minor units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VatAmount {
    pub rate: Decimal,
    pub amount: Amount,
}

/// One line of a partner's report, as the partner sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementEntry {
    pub kind: EntryKind,
    /// Minor units as money moves: positive paid to the merchant, negative
    /// taken back (the sign the partner's report gave it).
    pub amount: i64,
    pub currency: Currency,
    /// The order the line belongs to, as the partner knows it.
    pub order_reference: String,
    /// The partner's own id of the line (its order or transaction id).
    pub partner_reference: String,
    /// The reference the request was sent with: our partner idempotency
    /// key (empty when the partner's report leaves it out).
    pub action_reference: String,
    /// The day the partner booked it.
    pub transaction_date: Day,
    /// VAT per rate, magnitudes (a line's VAT moves with its sign).
    pub vat: Vec<VatAmount>,
}

impl SettlementEntry {
    /// The amount without its sign.
    pub fn magnitude(&self) -> Amount {
        let minor = i64::try_from(self.amount.unsigned_abs()).unwrap_or(i64::MAX);
        Amount::from_minor(minor).unwrap_or(Amount::ZERO)
    }

    /// Whether its sign is the one its kind carries (a negative purchase
    /// or a positive return is not).
    pub fn sign_agrees(&self) -> bool {
        self.kind
            .sign()
            .is_none_or(|sign| self.amount.signum() == sign)
    }
}

/// A line the partner sent that could not be read: kept as it came.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnreadableLine {
    /// The line as the partner sent it (its JSON, or its proto in text).
    pub raw: String,
    /// What could not be read.
    pub why: String,
}

/// A settlement line as read: an entry, or what could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Line {
    Entry(SettlementEntry),
    Unreadable(UnreadableLine),
}

impl Line {
    pub fn entry(&self) -> Option<&SettlementEntry> {
        match self {
            Line::Entry(entry) => Some(entry),
            Line::Unreadable(_) => None,
        }
    }
}

/// How a settlement line compares with our books.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Match {
    /// Ours, same kind, amount and currency.
    Matched,
    /// Ours, but the amount or the currency differs (or we hold it failed).
    AmountMismatch,
    /// No partner transaction of ours carries its reference.
    UnknownToUs,
    /// A successful capture or refund of ours in no settlement in time
    /// (reconciliation issues only; never a settlement line).
    MissingFromSettlement,
    /// Ours, but its kind or sign contradicts our transaction.
    KindMismatch,
    /// A second line for a transaction already settled: not counted again.
    Duplicate,
    /// A settlement's lines do not add up to its header (issues only).
    TotalsMismatch,
    /// A line that could not be read: kept raw, not counted.
    UnreadableLine,
}

impl Match {
    pub fn as_str(self) -> &'static str {
        match self {
            Match::Matched => "matched",
            Match::AmountMismatch => "amount_mismatch",
            Match::UnknownToUs => "unknown_to_us",
            Match::MissingFromSettlement => "missing_from_settlement",
            Match::KindMismatch => "kind_mismatch",
            Match::Duplicate => "duplicate",
            Match::TotalsMismatch => "totals_mismatch",
            Match::UnreadableLine => "unreadable_line",
        }
    }

    /// Whether a line of this match counts in the settlement's totals: a
    /// duplicate or unreadable line is never counted (nor a line in another
    /// currency, which the importer leaves out itself).
    pub fn counts(self) -> bool {
        !matches!(self, Match::Duplicate | Match::UnreadableLine)
    }
}

/// Our side of a line: the partner transaction its reference names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ours {
    pub kind: OperationKind,
    pub amount: Amount,
    pub currency: Currency,
    pub status: TransactionStatus,
}

/// Compares a capture or refund line with the transaction of ours it names.
/// A transaction not yet final (PENDING, UNCERTAIN) matches: the report is
/// the partner's word that it succeeded, and the caller settles it from
/// there. A line whose kind or sign contradicts ours is a kind mismatch,
/// before amounts are looked at.
pub fn compare(entry: &SettlementEntry, ours: Option<&Ours>) -> Match {
    let Some(ours) = ours else {
        return Match::UnknownToUs;
    };
    if entry.kind.operation_kind() != Some(ours.kind) || !entry.sign_agrees() {
        return Match::KindMismatch;
    }
    let agrees = ours.amount == entry.magnitude()
        && ours.currency == entry.currency
        && ours.status != TransactionStatus::Failure;
    if agrees {
        Match::Matched
    } else {
        Match::AmountMismatch
    }
}

/// A line as imported: what the partner sent, where it sits in its
/// settlement, and what it matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementTransaction {
    /// Its position in the settlement, from 0.
    pub index: u64,
    pub line: Line,
    pub matched: Match,
    /// Our operation and partner transaction, when the line names one.
    pub operation_id: Option<Uuid>,
    pub partner_transaction_id: Option<Uuid>,
    pub payment_id: Option<Uuid>,
}

/// Settlement totals, computed from the lines that count (see
/// [`Match::counts`]). `refunded`, `fees` and `chargebacks` are positive
/// (what was taken back); `adjustments`, `net` and VAT are signed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Totals {
    pub captured: i64,
    pub refunded: i64,
    /// What the partner kept: its header's fees and its fee lines.
    pub fees: i64,
    pub adjustments: i64,
    pub chargebacks: i64,
    /// `captured - refunded - fees + adjustments - chargebacks`.
    pub net: i64,
    /// VAT per rate, signed as each line's amount.
    pub vat: BTreeMap<Decimal, i64>,
    /// Lines counted.
    pub count: u64,
}

impl Totals {
    /// Adds one line; on overflow (a line that cannot be right) fails and
    /// changes nothing.
    pub fn add(&mut self, entry: &SettlementEntry) -> Result<(), AmountError> {
        let add = |slot: i64, amount: i64| slot.checked_add(amount).ok_or(AmountError::Overflow);
        let taken = entry.amount.checked_neg().ok_or(AmountError::Overflow)?;
        let mut next = self.clone_figures();
        match entry.kind {
            EntryKind::Capture => next.captured = add(next.captured, entry.amount)?,
            EntryKind::Refund => next.refunded = add(next.refunded, taken)?,
            EntryKind::Fee => next.fees = add(next.fees, taken)?,
            EntryKind::Adjustment => next.adjustments = add(next.adjustments, entry.amount)?,
            EntryKind::Chargeback => next.chargebacks = add(next.chargebacks, taken)?,
        }
        next.net = next.net_of()?;
        let sign = if entry.amount < 0 { -1 } else { 1 };
        let mut vat: BTreeMap<Decimal, i64> = BTreeMap::new();
        for line in &entry.vat {
            let rate = line.rate.normalize();
            let now = vat
                .get(&rate)
                .or_else(|| self.vat.get(&rate))
                .copied()
                .unwrap_or(0);
            let signed = line.amount.minor().checked_mul(sign);
            vat.insert(rate, add(now, signed.ok_or(AmountError::Overflow)?)?);
        }
        next.vat = std::mem::take(&mut self.vat);
        next.vat.extend(vat);
        next.count = self.count + 1;
        *self = next;
        Ok(())
    }

    /// The figures without the VAT map (moved over by the caller).
    fn clone_figures(&self) -> Totals {
        Totals {
            vat: BTreeMap::new(),
            ..*self
        }
    }

    /// Adds what the partner's header says it kept beside its lines.
    pub fn with_fees(mut self, fees: Amount) -> Result<Totals, AmountError> {
        self.fees = self
            .fees
            .checked_add(fees.minor())
            .ok_or(AmountError::Overflow)?;
        self.net = self.net_of()?;
        Ok(self)
    }

    fn net_of(&self) -> Result<i64, AmountError> {
        self.captured
            .checked_sub(self.refunded)
            .and_then(|net| net.checked_sub(self.fees))
            .and_then(|net| net.checked_add(self.adjustments))
            .and_then(|net| net.checked_sub(self.chargebacks))
            .ok_or(AmountError::Overflow)
    }
}

/// What a partner's report header says its lines add up to; `None` where
/// it says nothing. Compared with every readable line in the settlement's
/// currency, duplicates included: the header describes the partner's lines,
/// not our reading of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Control {
    /// Sum of its purchase lines, minor units, signed.
    pub captured: Option<i64>,
    /// Sum of its return lines, minor units, positive.
    pub refunded: Option<i64>,
    /// How many lines it has.
    pub count: Option<u64>,
}

/// The partner's lines as read, for comparing with its [`Control`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LineSums {
    pub captured: i64,
    pub refunded: i64,
    /// Every line read, unreadable ones included.
    pub count: u64,
}

impl LineSums {
    /// Adds a readable line in the settlement's currency (count it with
    /// [`LineSums::count_line`] too).
    pub fn add(&mut self, entry: &SettlementEntry) {
        match entry.kind {
            EntryKind::Capture => self.captured = self.captured.saturating_add(entry.amount),
            EntryKind::Refund => self.refunded = self.refunded.saturating_sub(entry.amount),
            _ => {}
        }
    }

    pub fn count_line(&mut self) {
        self.count += 1;
    }
}

impl Control {
    /// The header figures the lines contradict, in words (none: they agree).
    pub fn differences(&self, read: &LineSums) -> Vec<String> {
        let mut differences = Vec::new();
        if let Some(captured) = self.captured
            && captured != read.captured
        {
            differences.push(format!(
                "captured: the header says {captured}, the lines add up to {}",
                read.captured
            ));
        }
        if let Some(refunded) = self.refunded
            && refunded != read.refunded
        {
            differences.push(format!(
                "refunded: the header says {refunded}, the lines add up to {}",
                read.refunded
            ));
        }
        if let Some(count) = self.count
            && count != read.count
        {
            differences.push(format!(
                "lines: the header says {count}, {} were read",
                read.count
            ));
        }
        differences
    }
}

/// A settlement as a partner's report lists it (its header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementReport {
    pub reference: String,
    pub payout_reference: String,
    pub date: Day,
    pub currency: Currency,
    /// What the partner kept beside its lines, if its header says.
    pub fees: Amount,
    /// What its header says the lines add up to.
    pub control: Control,
}

/// A settlement whose import failed: kept (outside the look-back) with its
/// error and retried by every import until it is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedSettlement {
    pub report: SettlementReport,
    pub error: String,
    pub attempts: u64,
    pub first_failed_at: SystemTime,
    pub last_failed_at: SystemTime,
}

impl FailedSettlement {
    /// By settlement date, then reference: the order they are retried in.
    pub fn oldest_first(a: &FailedSettlement, b: &FailedSettlement) -> std::cmp::Ordering {
        (a.report.date, &a.report.reference).cmp(&(b.report.date, &b.report.reference))
    }
}

/// Which line settled one of our partner transactions: the first line that
/// claimed it. Claiming again with the same pair (an import that starts
/// over) is the same claim; another line is a duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SettledBy {
    pub settlement: Uuid,
    pub line: u64,
}

impl SettledBy {
    /// 16 bytes of settlement id, then the line as 8 big-endian bytes.
    pub fn to_bytes(self) -> [u8; 24] {
        let mut bytes = [0; 24];
        bytes[..16].copy_from_slice(self.settlement.as_bytes());
        bytes[16..].copy_from_slice(&self.line.to_be_bytes());
        bytes
    }

    /// Reads [`SettledBy::to_bytes`]; a 16-byte marker of an earlier
    /// release names the settlement alone (its line reads as `u64::MAX`,
    /// and any line of that settlement is taken to be the one).
    pub fn from_bytes(bytes: &[u8]) -> Option<SettledBy> {
        let settlement = Uuid::from_slice(bytes.get(..16)?).ok()?;
        let line = match bytes.get(16..) {
            Some([]) => u64::MAX,
            Some(rest) => u64::from_be_bytes(rest.try_into().ok()?),
            None => return None,
        };
        Some(SettledBy { settlement, line })
    }

    /// Whether `other` is this same claim.
    pub fn is(self, other: SettledBy) -> bool {
        self.settlement == other.settlement
            && (self.line == other.line || self.line == u64::MAX || other.line == u64::MAX)
    }
}

/// A partner's settlement (one payout), as imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// Derived from the partner and its reference ([`Settlement::id_for`]).
    pub id: Uuid,
    pub partner: String,
    /// The partner's id of the settlement.
    pub reference: String,
    /// What the bank transfer carries.
    pub payout_reference: String,
    /// The day it settles (the partner's settlement date).
    pub date: Day,
    pub currency: Currency,
    pub totals: Totals,
    /// Every line it has, counted or not (its lines are `0..lines`).
    pub lines: u64,
    /// How many of its lines are not [`Match::Matched`].
    pub issues: u64,
    /// Whose it is: the one merchant its matched lines belong to; `None`
    /// (operators only) when they belong to several, or to none.
    pub merchant: Option<String>,
    pub imported_at: SystemTime,
}

/// Namespace of settlement and reconciliation ids.
const NAMESPACE: Uuid = Uuid::from_u128(0x8c1f_52d4_0b7e_4a39_9e61_d2f7_3b08_c45a);

impl Settlement {
    /// The id of a partner's settlement: the same on every replica and every
    /// import, so a settlement is stored once.
    pub fn id_for(partner: &str, reference: &str) -> Uuid {
        Uuid::new_v5(
            &NAMESPACE,
            format!("settlement:{partner}:{reference}").as_bytes(),
        )
    }
}

/// A difference between a partner's settlements and our books.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconciliationIssue {
    /// Derived from what it is about, so finding it twice records it once.
    pub id: Uuid,
    pub kind: Match,
    pub partner: String,
    /// The merchant whose transaction it concerns; `None` for a line unknown
    /// to us.
    pub merchant: Option<String>,
    pub settlement_id: Option<Uuid>,
    /// The line's index in its settlement.
    pub line: Option<u64>,
    pub payment_id: Option<Uuid>,
    pub operation_id: Option<Uuid>,
    pub partner_transaction_id: Option<Uuid>,
    /// The partner's reference (the settlement line's action reference, or
    /// the one we sent).
    pub reference: String,
    pub currency: Currency,
    /// What we hold (zero when unknown to us).
    pub expected: Amount,
    /// What the partner settled (zero when missing from its settlements).
    pub settled: Amount,
    pub description: String,
    pub created_at: SystemTime,
    /// When it was resolved; `None` while open.
    pub resolved_at: Option<SystemTime>,
    /// How it was resolved (a person's note, or what the service saw).
    pub resolution: String,
}

impl ReconciliationIssue {
    /// The id of an issue on a settlement line.
    pub fn id_for_line(settlement: Uuid, line: u64) -> Uuid {
        Uuid::new_v5(&NAMESPACE, format!("issue:{settlement}:{line}").as_bytes())
    }

    /// The id of a settlement's totals disagreeing with its header.
    pub fn id_for_totals(settlement: Uuid) -> Uuid {
        Uuid::new_v5(&NAMESPACE, format!("totals:{settlement}").as_bytes())
    }

    pub fn is_open(&self) -> bool {
        self.resolved_at.is_none()
    }

    /// The id of a transaction of ours missing from every settlement.
    pub fn id_for_missing(partner_transaction: Uuid) -> Uuid {
        Uuid::new_v5(
            &NAMESPACE,
            format!("missing:{partner_transaction}").as_bytes(),
        )
    }
}

#[cfg(test)]
mod tests;
