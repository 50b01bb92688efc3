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
//! Dates are UTC calendar days, `YYYY-MM-DD` ([`Day`]).

use std::{collections::BTreeMap, fmt, str::FromStr, time::SystemTime};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    money::{Amount, AmountError, Currency},
    operation::OperationKind,
    status::TransactionStatus,
};

/// A UTC calendar day, counted from 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Day(i64);

impl Day {
    pub fn of(time: SystemTime) -> Day {
        let seconds = match time.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
        };
        Day(seconds.div_euclid(86_400))
    }

    pub fn from_days(days: i64) -> Day {
        Day(days)
    }

    pub fn days(self) -> i64 {
        self.0
    }

    /// The civil date (proleptic Gregorian), after Howard Hinnant's
    /// `civil_from_days`.
    fn civil(self) -> (i64, u32, u32) {
        let z = self.0 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        (
            year,
            u32::try_from(month).unwrap_or(1),
            u32::try_from(day).unwrap_or(1),
        )
    }

    /// `days_from_civil`, the inverse of [`Day::civil`].
    fn from_civil(year: i64, month: u32, day: u32) -> Day {
        let year = if month <= 2 { year - 1 } else { year };
        let era = year.div_euclid(400);
        let yoe = year.rem_euclid(400);
        let month = i64::from(month);
        let mp = if month > 2 { month - 3 } else { month + 9 };
        let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        Day(era * 146_097 + doe - 719_468)
    }
}

/// A date that is not `YYYY-MM-DD` or not in the calendar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a date of the form YYYY-MM-DD")]
pub struct BadDay(pub String);

impl FromStr for Day {
    type Err = BadDay;
    fn from_str(text: &str) -> Result<Day, BadDay> {
        let bad = || BadDay(text.to_owned());
        let parts: Vec<&str> = text.split('-').collect();
        let [year, month, day] = parts.as_slice() else {
            return Err(bad());
        };
        if year.len() != 4 || month.len() != 2 || day.len() != 2 {
            return Err(bad());
        }
        let year: i64 = year.parse().map_err(|_| bad())?;
        let month: u32 = month.parse().map_err(|_| bad())?;
        let day: u32 = day.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || day == 0 {
            return Err(bad());
        }
        let parsed = Day::from_civil(year, month, day);
        // 2023-02-30 would roll over into March: not a calendar date.
        (parsed.civil() == (year, month, day))
            .then_some(parsed)
            .ok_or_else(bad)
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = self.civil();
        write!(f, "{year:04}-{month:02}-{day:02}")
    }
}

impl TryFrom<String> for Day {
    type Error = BadDay;
    fn try_from(text: String) -> Result<Day, BadDay> {
        text.parse()
    }
}

impl From<Day> for String {
    fn from(day: Day) -> String {
        day.to_string()
    }
}

/// What a settlement line moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// Paid out to the merchant.
    Capture,
    /// Taken back from the merchant.
    Refund,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Capture => "capture",
            EntryKind::Refund => "refund",
        }
    }

    /// The kind of our operation a line of this kind settles.
    pub fn operation_kind(self) -> OperationKind {
        match self {
            EntryKind::Capture => OperationKind::Capture,
            EntryKind::Refund => OperationKind::Refund,
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
    pub amount: Amount,
    pub currency: Currency,
    /// The order the line belongs to, as the partner knows it.
    pub order_reference: String,
    /// The partner's own id of the line (its order or transaction id).
    pub partner_reference: String,
    /// The reference the request was sent with: our partner idempotency key.
    pub action_reference: String,
    /// The day the partner booked it.
    pub transaction_date: Day,
    pub vat: Vec<VatAmount>,
}

/// How a settlement line compares with our books.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Match {
    /// Ours, same kind, amount and currency.
    Matched,
    /// Ours, but the amount, the currency or the kind differs (or we hold it
    /// failed).
    AmountMismatch,
    /// No partner transaction of ours carries its reference.
    UnknownToUs,
    /// A successful capture or refund of ours in no settlement in time
    /// (reconciliation issues only; never a settlement line).
    MissingFromSettlement,
}

impl Match {
    pub fn as_str(self) -> &'static str {
        match self {
            Match::Matched => "matched",
            Match::AmountMismatch => "amount_mismatch",
            Match::UnknownToUs => "unknown_to_us",
            Match::MissingFromSettlement => "missing_from_settlement",
        }
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

/// Compares a line with the transaction of ours it names. A transaction not
/// yet final (PENDING, UNCERTAIN) matches: the report is the partner's word
/// that it succeeded, and the caller settles it from there.
pub fn compare(entry: &SettlementEntry, ours: Option<&Ours>) -> Match {
    let Some(ours) = ours else {
        return Match::UnknownToUs;
    };
    let agrees = ours.kind == entry.kind.operation_kind()
        && ours.amount == entry.amount
        && ours.currency == entry.currency
        && ours.status != TransactionStatus::Failure;
    if agrees {
        Match::Matched
    } else {
        Match::AmountMismatch
    }
}

/// A line as imported: the partner's entry, where it sits in its settlement,
/// and what it matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementTransaction {
    /// Its position in the settlement, from 0.
    pub index: u64,
    pub entry: SettlementEntry,
    pub matched: Match,
    /// Our operation and partner transaction, when the reference names one.
    pub operation_id: Option<Uuid>,
    pub partner_transaction_id: Option<Uuid>,
    pub payment_id: Option<Uuid>,
}

/// Settlement totals, computed from its lines. `net` and VAT are signed:
/// refunds take back money and VAT.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Totals {
    pub captured: i64,
    pub refunded: i64,
    /// What the partner kept (from its report header; zero when it says
    /// nothing).
    pub fees: i64,
    /// `captured - refunded - fees`.
    pub net: i64,
    /// Capture VAT minus refund VAT, per rate.
    pub vat: BTreeMap<Decimal, i64>,
    pub count: u64,
}

impl Totals {
    /// Adds one line. Fails on overflow (a report that cannot be right).
    pub fn add(&mut self, entry: &SettlementEntry) -> Result<(), AmountError> {
        let amount = entry.amount.minor();
        let sign = match entry.kind {
            EntryKind::Capture => {
                self.captured = self
                    .captured
                    .checked_add(amount)
                    .ok_or(AmountError::Overflow)?;
                1
            }
            EntryKind::Refund => {
                self.refunded = self
                    .refunded
                    .checked_add(amount)
                    .ok_or(AmountError::Overflow)?;
                -1
            }
        };
        for vat in &entry.vat {
            let slot = self.vat.entry(vat.rate.normalize()).or_insert(0);
            *slot = vat
                .amount
                .minor()
                .checked_mul(sign)
                .and_then(|signed| slot.checked_add(signed))
                .ok_or(AmountError::Overflow)?;
        }
        self.count += 1;
        self.net = self
            .captured
            .checked_sub(self.refunded)
            .and_then(|net| net.checked_sub(self.fees))
            .ok_or(AmountError::Overflow)?;
        Ok(())
    }

    pub fn with_fees(mut self, fees: Amount) -> Result<Totals, AmountError> {
        self.fees = fees.minor();
        self.net = self
            .captured
            .checked_sub(self.refunded)
            .and_then(|net| net.checked_sub(self.fees))
            .ok_or(AmountError::Overflow)?;
        Ok(self)
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
    /// How many of its lines are not [`Match::Matched`].
    pub issues: u64,
    /// Whose it is: the merchant of a partner account that serves one
    /// merchant; `None` (operators only) when the account serves several.
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
}

impl ReconciliationIssue {
    /// The id of an issue on a settlement line.
    pub fn id_for_line(settlement: Uuid, line: u64) -> Uuid {
        Uuid::new_v5(&NAMESPACE, format!("issue:{settlement}:{line}").as_bytes())
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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    fn entry(kind: EntryKind, amount: i64, vat: &[(&str, i64)]) -> SettlementEntry {
        SettlementEntry {
            kind,
            amount: Amount::from_minor(amount).unwrap(),
            currency: eur(),
            order_reference: "order-1".into(),
            partner_reference: "p-1".into(),
            action_reference: "op:0".into(),
            transaction_date: "2026-11-30".parse().unwrap(),
            vat: vat
                .iter()
                .map(|(rate, amount)| VatAmount {
                    rate: rate.parse().unwrap(),
                    amount: Amount::from_minor(*amount).unwrap(),
                })
                .collect(),
        }
    }

    #[test]
    fn days_print_and_parse_as_calendar_dates() {
        assert_eq!(Day::from_days(0).to_string(), "1970-01-01");
        assert_eq!(Day::from_days(20_422).to_string(), "2025-11-30");
        assert_eq!(
            "2024-02-29".parse::<Day>().unwrap().to_string(),
            "2024-02-29"
        );
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "2026-1-01",
            "26-01-01",
            "",
            "2026-01-00",
        ] {
            assert!(bad.parse::<Day>().is_err(), "{bad}");
        }
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(86_400 * 3 - 1);
        assert_eq!(Day::of(at), Day::from_days(2));
    }

    proptest! {
        #[test]
        fn every_day_of_years_1_to_9999_round_trips(days in -719_162i64..2_932_897) {
            let day = Day::from_days(days);
            prop_assert_eq!(day.to_string().parse::<Day>(), Ok(day));
        }
    }

    #[test]
    fn totals_net_captures_against_refunds_and_fees_and_sign_vat() {
        let mut totals = Totals::default();
        totals
            .add(&entry(
                EntryKind::Capture,
                12_500,
                &[("25", 2_000), ("12.0", 500)],
            ))
            .unwrap();
        totals
            .add(&entry(EntryKind::Refund, 2_500, &[("25.00", 500)]))
            .unwrap();
        let totals = totals.with_fees(Amount::from_minor(100).unwrap()).unwrap();
        assert_eq!(
            (totals.captured, totals.refunded, totals.fees),
            (12_500, 2_500, 100)
        );
        assert_eq!(totals.net, 9_900);
        assert_eq!(totals.count, 2);
        let vat: Vec<(String, i64)> = totals
            .vat
            .iter()
            .map(|(rate, amount)| (rate.to_string(), *amount))
            .collect();
        assert_eq!(vat, [("12".to_owned(), 500), ("25".to_owned(), 1_500)]);
    }

    #[test]
    fn a_line_matches_only_what_agrees_in_kind_amount_currency_and_outcome() {
        let line = entry(EntryKind::Capture, 1_000, &[]);
        let ours = |kind, amount, status| Ours {
            kind,
            amount: Amount::from_minor(amount).unwrap(),
            currency: eur(),
            status,
        };
        use OperationKind::{Capture, Refund};
        use TransactionStatus::{Failure, Success, Uncertain};
        assert_eq!(compare(&line, None), Match::UnknownToUs);
        for (kind, amount, status, matched) in [
            (Capture, 1_000, Success, Match::Matched),
            (Capture, 1_000, Uncertain, Match::Matched),
            (Capture, 999, Success, Match::AmountMismatch),
            (Refund, 1_000, Success, Match::AmountMismatch),
            (Capture, 1_000, Failure, Match::AmountMismatch),
        ] {
            assert_eq!(
                compare(&line, Some(&ours(kind, amount, status))),
                matched,
                "{kind:?} of {amount}, {status:?}"
            );
        }
    }
}
