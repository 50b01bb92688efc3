//! Order lines and their tax, computed exactly with `rust_decimal`.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use super::money::{Amount, AmountError};

/// One order line as the merchant sent it, with net and tax computed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemLine {
    pub sku_reference: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Amount,
    /// Percent, 0..=100.
    pub tax_rate: Decimal,
    pub discount_amount: Amount,
    pub net_amount: Amount,
    pub tax_amount: Amount,
}

/// Why a line's amounts cannot be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ItemLineError {
    #[error("quantity must be at least 1")]
    Quantity,
    #[error("tax rate must be between 0 and 100 percent")]
    TaxRate,
    #[error("discount is larger than quantity times unit price")]
    DiscountTooLarge,
    #[error(transparent)]
    Amount(#[from] AmountError),
}

/// The parts of a line the merchant gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemLineInput {
    pub sku_reference: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: Amount,
    pub tax_rate: Decimal,
    pub discount_amount: Amount,
}

impl ItemLine {
    /// Computes `net = quantity * unit_price - discount` and
    /// `tax = net * rate / 100`, rounded half away from zero to the minor unit.
    pub fn compute(input: ItemLineInput) -> Result<ItemLine, ItemLineError> {
        if input.quantity < 1 {
            return Err(ItemLineError::Quantity);
        }
        if input.tax_rate < Decimal::ZERO || input.tax_rate > Decimal::ONE_HUNDRED {
            return Err(ItemLineError::TaxRate);
        }
        let gross = input
            .unit_price
            .minor()
            .checked_mul(input.quantity)
            .ok_or(AmountError::Overflow)?;
        let net = Amount::from_minor(gross)?
            .checked_sub(input.discount_amount)
            .map_err(|_| ItemLineError::DiscountTooLarge)?;
        let tax = (Decimal::from(net.minor()) * input.tax_rate / Decimal::ONE_HUNDRED)
            .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
        let tax = i64::try_from(tax).map_err(|_| AmountError::Overflow)?;
        Ok(ItemLine {
            sku_reference: input.sku_reference,
            name: input.name,
            quantity: input.quantity,
            unit_price: input.unit_price,
            tax_rate: input.tax_rate,
            discount_amount: input.discount_amount,
            net_amount: net,
            tax_amount: Amount::from_minor(tax)?,
        })
    }
}

mod per_leg;

pub use per_leg::per_leg;

/// What the lines add up to: the sum of their net and tax amounts.
pub fn total(lines: &[ItemLine]) -> Result<Amount, AmountError> {
    lines.iter().try_fold(Amount::ZERO, |sum, line| {
        sum.checked_add(line.net_amount)?
            .checked_add(line.tax_amount)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn input(quantity: i64, unit_price: i64, rate: &str, discount: i64) -> ItemLineInput {
        ItemLineInput {
            sku_reference: "sku-1".into(),
            name: "Socks".into(),
            quantity,
            unit_price: Amount::from_minor(unit_price).unwrap(),
            tax_rate: Decimal::from_str(rate).unwrap(),
            discount_amount: Amount::from_minor(discount).unwrap(),
        }
    }

    #[test]
    fn tax_is_computed_on_the_discounted_net_and_rounded_half_away_from_zero() {
        let line = ItemLine::compute(input(3, 1000, "25.0", 500)).unwrap();
        assert_eq!(line.net_amount.minor(), 2500);
        assert_eq!(line.tax_amount.minor(), 625);
        // 1 * 10 * 7.5% = 0.75 → 1
        let line = ItemLine::compute(input(1, 10, "7.5", 0)).unwrap();
        assert_eq!(line.tax_amount.minor(), 1);
    }

    #[test]
    fn out_of_range_rates_and_quantities_are_refused() {
        for (quantity, unit_price, rate, discount, refused) in [
            (1, 10, "100.1", 0, ItemLineError::TaxRate),
            (1, 10, "-1", 0, ItemLineError::TaxRate),
            (0, 10, "0", 0, ItemLineError::Quantity),
            (1, 10, "0", 11, ItemLineError::DiscountTooLarge),
            (
                2,
                i64::MAX,
                "0",
                0,
                ItemLineError::Amount(AmountError::Overflow),
            ),
        ] {
            assert_eq!(
                ItemLine::compute(input(quantity, unit_price, rate, discount)),
                Err(refused),
                "{quantity} at {unit_price}, rate {rate}, discount {discount}"
            );
        }
    }
}
