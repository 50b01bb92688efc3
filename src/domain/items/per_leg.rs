//! An operation's item lines shared out between the legs its amount spans,
//! so that each partner receives lines adding up to its own leg's amount.
//!
//! Lines go whole, or split by quantity: a part of `k` units is a line of
//! its own (same article, unit price and rate) whose tax is computed on it,
//! so every part is exact by itself. A line with a discount only goes whole
//! (the discount cannot be shared out truthfully), and a line worth nothing
//! goes whole with the first leg that receives lines. Each leg, in route
//! order, takes the first combination of what is left that adds up to its
//! amount exactly, found by a search that tries at most [`SEARCH_BUDGET`]
//! unit counts; a leg for which none is found goes without lines, and its
//! amount's lines stay for the legs after it.

use rust_decimal::{Decimal, RoundingStrategy};

use super::{ItemLine, ItemLineInput, total};
use crate::domain::money::Amount;

/// How many unit counts one leg's search may try before it gives up.
pub const SEARCH_BUDGET: u32 = 5_000;

/// What is left of one line.
#[derive(Debug, Clone)]
struct Left<'a> {
    line: &'a ItemLine,
    units: i64,
}

impl Left<'_> {
    /// Whether only the whole line can go (a discount, or a part taken).
    fn whole_only(&self) -> bool {
        !self.line.discount_amount.is_zero()
    }

    /// What `units` of it come to, with their own tax; `None` when they
    /// cannot go (a discounted line, other than whole) or do not fit an i64.
    fn gross(&self, units: i64) -> Option<i64> {
        if units == self.line.quantity {
            return total(std::slice::from_ref(self.line))
                .ok()
                .map(Amount::minor);
        }
        if self.whole_only() {
            return None;
        }
        let net = self.line.unit_price.minor().checked_mul(units)?;
        let tax = (Decimal::from(net) * self.line.tax_rate / Decimal::ONE_HUNDRED)
            .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
        net.checked_add(i64::try_from(tax).ok()?)
    }

    /// `units` of it as a line of their own.
    fn part(&self, units: i64) -> Option<ItemLine> {
        if units == self.line.quantity {
            return Some(self.line.clone());
        }
        ItemLine::compute(ItemLineInput {
            sku_reference: self.line.sku_reference.clone(),
            name: self.line.name.clone(),
            quantity: units,
            unit_price: self.line.unit_price,
            tax_rate: self.line.tax_rate,
            discount_amount: Amount::ZERO,
        })
        .ok()
    }

    /// The most units whose gross is at most `target` (gross grows with
    /// the units), by bisection.
    fn most_within(&self, target: i64) -> i64 {
        let (mut low, mut high) = (0, self.units);
        while low < high {
            // The upper middle, without overflow at i64::MAX units.
            let mid = high - (high - low) / 2;
            match self.gross(mid) {
                Some(gross) if gross <= target => low = mid,
                _ => high = mid - 1,
            }
        }
        low
    }
}

/// The lines each of `legs` (amounts, in route order) receives: `None` for
/// a leg no combination of the lines left was found to add up to.
pub fn per_leg(lines: &[ItemLine], legs: &[Amount]) -> Vec<Option<Vec<ItemLine>>> {
    let worthless = |line: &ItemLine| total(std::slice::from_ref(line)) == Ok(Amount::ZERO);
    let mut left: Vec<Left<'_>> = lines
        .iter()
        .filter(|line| !worthless(line))
        .map(|line| Left {
            line,
            units: line.quantity,
        })
        .collect();
    let mut free: Vec<ItemLine> = lines.iter().filter(|l| worthless(l)).cloned().collect();
    legs.iter()
        .map(|amount| {
            let mut budget = SEARCH_BUDGET;
            let picked = pick(&left, 0, amount.minor(), &mut budget)?;
            let mut parts = std::mem::take(&mut free);
            for (index, units) in picked {
                parts.push(left[index].part(units)?);
                left[index].units -= units;
            }
            Some(parts)
        })
        .collect()
}

/// Units of lines `from..` adding up to `target` exactly: `(line, units)`.
/// Every unit count tried costs one of `budget`.
fn pick(
    left: &[Left<'_>],
    from: usize,
    target: i64,
    budget: &mut u32,
) -> Option<Vec<(usize, i64)>> {
    if target == 0 {
        return Some(Vec::new());
    }
    let here = left.get(from)?;
    if here.units == 0 {
        return pick(left, from + 1, target, budget);
    }
    let last = from + 1 == left.len();
    let most = if here.whole_only() {
        if here.units == here.line.quantity && here.gross(here.units)? <= target {
            here.units
        } else {
            0
        }
    } else {
        here.most_within(target)
    };
    let mut units = most;
    loop {
        *budget = budget.checked_sub(1)?;
        let gross = if units == 0 { 0 } else { here.gross(units)? };
        if let Some(mut rest) = pick(left, from + 1, target - gross, budget) {
            if units > 0 {
                rest.insert(0, (from, units));
            }
            return Some(rest);
        }
        units = match units {
            0 => return None,
            // The last line can only finish the target.
            _ if last => return None,
            _ if here.whole_only() => 0,
            _ => units - 1,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    fn line(sku: &str, quantity: i64, unit_price: i64, rate: i64, discount: i64) -> ItemLine {
        ItemLine::compute(ItemLineInput {
            sku_reference: sku.into(),
            name: sku.into(),
            quantity,
            unit_price: Amount::from_minor(unit_price).unwrap(),
            tax_rate: Decimal::from(rate),
            discount_amount: Amount::from_minor(discount).unwrap(),
        })
        .unwrap()
    }

    fn amount(minor: i64) -> Amount {
        Amount::from_minor(minor).unwrap()
    }

    fn gross(lines: &[ItemLine]) -> i64 {
        total(lines).unwrap().minor()
    }

    #[test]
    fn whole_lines_and_units_go_to_the_leg_they_add_up_to() {
        // 3 shirts at 20.00 + 25% (25.00 each) and a 10.00 belt at 0%.
        let lines = [line("shirt", 3, 2000, 25, 0), line("belt", 1, 1000, 0, 0)];
        let shared = per_leg(&lines, &[amount(2500), amount(6000)]);
        let first = shared[0].as_ref().expect("a shirt");
        assert_eq!(
            (first[0].sku_reference.as_str(), first[0].quantity),
            ("shirt", 1)
        );
        assert_eq!(gross(first), 2500);
        let second = shared[1].as_ref().expect("two shirts and the belt");
        assert_eq!(gross(second), 6000);
        assert_eq!(
            second.iter().map(|l| l.quantity).collect::<Vec<_>>(),
            [2, 1]
        );
        // VAT computed on each part: 2 shirts' tax is 10.00, exactly.
        assert_eq!(second[0].tax_amount.minor(), 1000);
    }

    #[test]
    fn a_leg_no_units_add_up_to_goes_without_and_leaves_them_to_the_next() {
        let lines = [line("shirt", 2, 2000, 25, 0)];
        // 20.00 is no number of 25.00 shirts; 30.00 neither.
        let shared = per_leg(&lines, &[amount(2000), amount(3000)]);
        assert_eq!(shared, vec![None, None]);
        // 50.00 after a leg that takes nothing: both shirts.
        let shared = per_leg(&lines, &[amount(1), amount(5000)]);
        assert_eq!(shared[0], None);
        assert_eq!(gross(shared[1].as_ref().unwrap()), 5000);
    }

    #[test]
    fn a_discounted_line_goes_whole_only() {
        let lines = [line("pack", 2, 1000, 0, 500), line("sock", 3, 500, 0, 0)];
        // 10.00 cannot use the 15.00 pack, which is not cut.
        let shared = per_leg(&lines, &[amount(1000), amount(2000)]);
        let first = shared[0].as_ref().unwrap();
        assert_eq!(
            (first[0].sku_reference.as_str(), first[0].quantity),
            ("sock", 2)
        );
        let second = shared[1].as_ref().unwrap();
        assert_eq!(second[0], lines[0]);
        assert_eq!(gross(second), 2000);
    }

    #[test]
    fn hostile_lines_end_quickly_without_a_share() {
        // A free line of a trillion units and amounts no units fit: the
        // search gives up within its budget.
        let lines = [
            line("a", 40_000, 3, 0, 0),
            line("free", 1_000_000_000_000, 0, 0, 0),
            line("b", 1_000_000_000_000, 7, 0, 0),
        ];
        let started = std::time::Instant::now();
        let shared = per_leg(&lines, &[amount(50_002), amount(i64::MAX / 2)]);
        assert_eq!(shared[1], None);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // i64::MAX units bisect without overflow.
        let lines = [line("max", i64::MAX, 1, 0, 0)];
        let shared = per_leg(&lines, &[amount(7), amount(i64::MAX - 7)]);
        assert_eq!(shared[0].as_ref().map(|l| l[0].quantity), Some(7));
        assert_eq!(
            shared[1].as_ref().map(|l| l[0].quantity),
            Some(i64::MAX - 7)
        );
        // A free line goes with the first leg that gets lines.
        let lines = [line("free", 5, 0, 0, 0), line("sock", 2, 500, 0, 0)];
        let shared = per_leg(&lines, &[amount(500), amount(500)]);
        assert_eq!(shared[0].as_ref().map(Vec::len), Some(2));
        assert_eq!(shared[1].as_ref().map(Vec::len), Some(1));
    }

    proptest! {
        /// Whatever is found adds up to its leg exactly, and never uses
        /// more units of a line than it has.
        #[test]
        fn found_lines_add_up_to_their_leg_and_within_the_units(
            specs in prop::collection::vec((1i64..6, 1i64..3000, 0i64..30), 1..5),
            cuts in prop::collection::vec(1i64..10_000, 1..4),
        ) {
            let lines: Vec<ItemLine> = specs.iter().enumerate()
                .map(|(i, &(q, p, r))| line(&format!("sku-{i}"), q, p, r, 0))
                .collect();
            let all = gross(&lines);
            let mut legs: Vec<Amount> = cuts.iter().map(|&c| amount(c.min(all))).collect();
            let placed: i64 = legs.iter().map(|a| a.minor()).sum();
            if placed < all {
                legs.push(amount(all - placed));
            }
            let shared = per_leg(&lines, &legs);
            let mut used = std::collections::BTreeMap::<String, i64>::new();
            for (leg, lines_of_leg) in legs.iter().zip(&shared) {
                if let Some(parts) = lines_of_leg {
                    prop_assert_eq!(gross(parts), leg.minor());
                    for part in parts {
                        *used.entry(part.sku_reference.clone()).or_default() += part.quantity;
                    }
                }
            }
            for line in &lines {
                prop_assert!(used.get(&line.sku_reference).copied().unwrap_or(0) <= line.quantity);
            }
        }
    }
}
