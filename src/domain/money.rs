//! Money: checked minor-unit amounts and ISO 4217 currencies.
//!
//! An [`Amount`] is a non-negative integer in the currency's minor unit
//! (`4299` EUR = 42.99 EUR). It has no `Default`, no `Add` and no float
//! conversions: every arithmetic step is checked and says what went wrong.

use std::fmt;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A non-negative amount in a currency's minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Amount(i64);

/// Why an amount could not be made or computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount must not be negative")]
    Negative,
    #[error("amount overflows a 64-bit integer")]
    Overflow,
}

impl Amount {
    pub const ZERO: Amount = Amount(0);

    /// Accepts any non-negative minor-unit value.
    pub fn from_minor(minor: i64) -> Result<Self, AmountError> {
        if minor < 0 {
            Err(AmountError::Negative)
        } else {
            Ok(Amount(minor))
        }
    }

    pub fn minor(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_add(self, other: Amount) -> Result<Amount, AmountError> {
        self.0
            .checked_add(other.0)
            .map(Amount)
            .ok_or(AmountError::Overflow)
    }

    /// `self - other`, refusing to go below zero.
    pub fn checked_sub(self, other: Amount) -> Result<Amount, AmountError> {
        Amount::from_minor(self.0 - other.0)
    }

    /// `self - other`, or zero if `other` is larger.
    pub fn saturating_sub(self, other: Amount) -> Amount {
        Amount((self.0 - other.0).max(0))
    }

    /// Sums amounts, failing on overflow.
    pub fn sum<I: IntoIterator<Item = Amount>>(amounts: I) -> Result<Amount, AmountError> {
        amounts
            .into_iter()
            .try_fold(Amount::ZERO, |total, amount| total.checked_add(amount))
    }

    /// Sums amounts, the largest amount standing for any sum beyond it
    /// (where a total only bounds what may be done, failing closed).
    pub fn saturating_sum<I: IntoIterator<Item = Amount>>(amounts: I) -> Amount {
        amounts.into_iter().fold(Amount::ZERO, |total, amount| {
            Amount(total.0.saturating_add(amount.0))
        })
    }

    /// The amount in major units (`4299` EUR → `42.99`), exact.
    pub fn to_major(self, currency: Currency) -> Decimal {
        Decimal::new(self.0, currency.exponent())
    }

    /// Converts a major-unit decimal to minor units; refuses values that do
    /// not fit the currency's exponent exactly or are negative.
    pub fn from_major(major: Decimal, currency: Currency) -> Result<Amount, MajorUnitError> {
        let scaled = major
            .checked_mul(Decimal::from(10_i64.pow(currency.exponent())))
            .ok_or(MajorUnitError::Overflow)?;
        if scaled.fract() != Decimal::ZERO {
            return Err(MajorUnitError::TooPrecise);
        }
        let minor = i64::try_from(scaled).map_err(|_| MajorUnitError::Overflow)?;
        Amount::from_minor(minor).map_err(|_| MajorUnitError::Negative)
    }
}

impl From<Amount> for i64 {
    fn from(amount: Amount) -> i64 {
        amount.0
    }
}

impl TryFrom<i64> for Amount {
    type Error = AmountError;
    fn try_from(minor: i64) -> Result<Self, Self::Error> {
        Amount::from_minor(minor)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MajorUnitError {
    #[error("more decimals than the currency's minor unit")]
    TooPrecise,
    #[error("amount is too large")]
    Overflow,
    #[error("amount must not be negative")]
    Negative,
}

/// An ISO 4217 currency with a minor unit (from the `iso_currency` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(iso_currency::Currency);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an ISO 4217 currency with a minor unit: {0:?}")]
pub struct UnknownCurrency(pub String);

impl Currency {
    /// Parses an alphabetic code such as `"EUR"` (upper case only).
    /// Funds and metals without a minor unit (XAU, XDR, ...) are refused.
    pub fn parse(code: &str) -> Result<Self, UnknownCurrency> {
        iso_currency::Currency::from_code(code)
            .filter(|currency| currency.exponent().is_some())
            .map(Currency)
            .ok_or_else(|| UnknownCurrency(code.to_owned()))
    }

    pub fn code(self) -> &'static str {
        self.0.code()
    }

    /// Number of decimals of the minor unit (2 for EUR, 0 for JPY, 3 for KWD).
    pub fn exponent(self) -> u32 {
        self.0.exponent().map_or(0, u32::from)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl From<Currency> for String {
    fn from(currency: Currency) -> String {
        currency.code().to_owned()
    }
}

impl TryFrom<String> for Currency {
    type Error = UnknownCurrency;
    fn try_from(code: String) -> Result<Self, Self::Error> {
        Currency::parse(&code)
    }
}

/// An amount of `minor` units, for tests.
#[cfg(test)]
pub(crate) fn amount(minor: i64) -> Amount {
    Amount::from_minor(minor).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    #[test]
    fn negative_amounts_are_refused() {
        assert_eq!(Amount::from_minor(-1), Err(AmountError::Negative));
        assert_eq!(Amount::from_minor(0), Ok(Amount::ZERO));
    }

    #[test]
    fn addition_overflow_is_an_error() {
        let max = Amount::from_minor(i64::MAX).unwrap();
        assert_eq!(
            max.checked_add(Amount::from_minor(1).unwrap()),
            Err(AmountError::Overflow)
        );
    }

    #[test]
    fn subtraction_below_zero_is_an_error() {
        let one = Amount::from_minor(1).unwrap();
        assert_eq!(Amount::ZERO.checked_sub(one), Err(AmountError::Negative));
    }

    #[test]
    fn currencies_come_from_the_iso_table() {
        assert_eq!(eur().exponent(), 2);
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().exponent(), 3);
        assert!(Currency::parse("EURO").is_err());
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("XAU").is_err());
    }

    #[test]
    fn major_unit_conversions_are_exact_or_refused() {
        let amount = Amount::from_minor(99900).unwrap();
        assert_eq!(amount.to_major(eur()).to_string(), "999.00");
        assert_eq!(
            Amount::from_major(Decimal::from_str("999.00").unwrap(), eur()),
            Ok(amount)
        );
        assert_eq!(
            Amount::from_major(Decimal::from_str("1.005").unwrap(), eur()),
            Err(MajorUnitError::TooPrecise)
        );
    }
}
