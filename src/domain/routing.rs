//! Allocation of an operation's amount across legs, walking them in priority
//! order and taking `min(remaining, leg's available amount)` from each.
//!
//! The same walk serves the first allocation and the fallback: when a leg is
//! declined, its unfilled amount is re-offered to the legs after it.

use super::money::Amount;

/// The part of an operation's amount routed to one leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub leg: usize,
    pub amount: Amount,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error("requested {requested} exceeds the available {available}")]
    ExceedsAvailable {
        requested: Amount,
        available: Amount,
    },
    #[error("nothing is available")]
    NothingAvailable,
}

/// Allocates `requested` (or everything available when `None`) over the legs
/// in `order`. `available[leg]` is what each leg can still take. Fails, and
/// allocates nothing, when the legs cannot cover the request.
pub fn allocate(
    order: &[usize],
    available: &[Amount],
    requested: Option<Amount>,
) -> Result<Vec<Allocation>, AllocationError> {
    let total = order
        .iter()
        .map(|&leg| available[leg])
        .try_fold(Amount::ZERO, |sum, amount| sum.checked_add(amount))
        // Per-leg availabilities are bounded by the leg amounts, whose sum fits.
        .unwrap_or(Amount::ZERO);
    let requested = match requested {
        Some(requested) if requested > total => {
            return Err(AllocationError::ExceedsAvailable {
                requested,
                available: total,
            });
        }
        Some(requested) => requested,
        None if total.is_zero() => return Err(AllocationError::NothingAvailable),
        None => total,
    };
    let (allocations, unfilled) = fill(order, available, requested);
    debug_assert!(unfilled.is_zero());
    Ok(allocations)
}

/// Walks `order`, taking from each leg what it has until `amount` is covered.
/// Returns the non-empty allocations and what could not be placed.
pub fn fill(order: &[usize], available: &[Amount], amount: Amount) -> (Vec<Allocation>, Amount) {
    let mut remaining = amount;
    let mut allocations = Vec::new();
    for &leg in order {
        if remaining.is_zero() {
            break;
        }
        let take = remaining.min(available[leg]);
        if !take.is_zero() {
            allocations.push(Allocation { leg, amount: take });
            remaining = remaining.saturating_sub(take);
        }
    }
    (allocations, remaining)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn amounts(values: &[i64]) -> Vec<Amount> {
        values
            .iter()
            .map(|&v| Amount::from_minor(v).unwrap())
            .collect()
    }

    #[test]
    fn walks_the_order_taking_what_each_leg_has() {
        let available = amounts(&[10000, 2000]);
        let result = allocate(&[1, 0], &available, Some(Amount::from_minor(5000).unwrap()));
        assert_eq!(
            result.unwrap(),
            vec![
                Allocation {
                    leg: 1,
                    amount: Amount::from_minor(2000).unwrap()
                },
                Allocation {
                    leg: 0,
                    amount: Amount::from_minor(3000).unwrap()
                },
            ]
        );
    }

    #[test]
    fn more_than_available_allocates_nothing() {
        let available = amounts(&[100, 20]);
        assert_eq!(
            allocate(&[0, 1], &available, Some(Amount::from_minor(121).unwrap())),
            Err(AllocationError::ExceedsAvailable {
                requested: Amount::from_minor(121).unwrap(),
                available: Amount::from_minor(120).unwrap(),
            })
        );
        assert_eq!(
            allocate(&[0, 1], &amounts(&[0, 0]), None),
            Err(AllocationError::NothingAvailable)
        );
    }

    proptest! {
        #[test]
        fn allocations_respect_availability_order_and_sum(
            available in prop::collection::vec(0i64..10_000, 1..6),
            requested in prop::option::of(1i64..60_000),
            seed in any::<u64>(),
        ) {
            let available = amounts(&available);
            let mut order: Vec<usize> = (0..available.len()).collect();
            // A deterministic shuffle from the seed.
            let len = order.len();
            for i in 0..len {
                order.swap(i, (seed as usize).wrapping_add(i * 7) % len);
            }
            let total: i64 = available.iter().map(|a| a.minor()).sum();
            let requested_amount = requested.map(|r| Amount::from_minor(r).unwrap());
            match allocate(&order, &available, requested_amount) {
                Ok(allocations) => {
                    let sum: i64 = allocations.iter().map(|a| a.amount.minor()).sum();
                    prop_assert_eq!(sum, requested.unwrap_or(total));
                    for a in &allocations {
                        prop_assert!(a.amount <= available[a.leg]);
                        prop_assert!(!a.amount.is_zero());
                    }
                    // Priority: a leg is only used when every leg before it
                    // in the order was used up.
                    let used: Vec<usize> = allocations.iter().map(|a| a.leg).collect();
                    for a in &allocations {
                        let rank = order.iter().position(|&l| l == a.leg).unwrap();
                        for &earlier in &order[..rank] {
                            let taken = allocations.iter().find(|x| x.leg == earlier)
                                .map_or(Amount::ZERO, |x| x.amount);
                            prop_assert_eq!(taken, available[earlier],
                                "leg {} used before {} was exhausted ({:?})", a.leg, earlier, used);
                        }
                    }
                }
                Err(AllocationError::ExceedsAvailable { available: a, .. }) => {
                    prop_assert!(requested.unwrap() > total);
                    prop_assert_eq!(a.minor(), total);
                }
                Err(AllocationError::NothingAvailable) => {
                    prop_assert!(requested.is_none() && total == 0);
                }
            }
        }
    }
}
