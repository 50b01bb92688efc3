//! Allocation of an operation's amount across legs, walking them in priority
//! order and taking `min(remaining, leg's available amount)` from each.
//!
//! The same walk serves the first allocation and the fallback: when a leg is
//! declined, its unfilled amount is re-offered to the legs after it.

use super::{
    capabilities::{Limit, Unsupported},
    money::Amount,
};

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
    /// Enough is available, but not in amounts the legs can take.
    #[error("leg {leg} cannot take its part: {because:?}")]
    NotRoutable { leg: usize, because: Unsupported },
}

/// Allocates `requested` (or everything the legs can take when `None`) over
/// the legs in `order`. `available[leg]` is what each leg has; `limits[leg]`
/// how it may take part (a missing limit is [`Limit::Any`]). Fails, and
/// allocates nothing, when the legs cannot cover the request.
pub fn allocate(
    order: &[usize],
    available: &[Amount],
    limits: &[Limit],
    requested: Option<Amount>,
) -> Result<Vec<Allocation>, AllocationError> {
    let total = order
        .iter()
        .map(|&leg| available[leg])
        .try_fold(Amount::ZERO, |sum, amount| sum.checked_add(amount))
        // Per-leg availabilities are bounded by the leg amounts, whose sum fits.
        .unwrap_or(Amount::ZERO);
    let wanted = match requested {
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
    let filled = fill(order, available, limits, wanted);
    // "Everything" is what the legs can take; an amount must be placed whole.
    let placed = filled.left.is_zero() || (requested.is_none() && !filled.allocations.is_empty());
    match (placed, filled.refused) {
        (true, _) => Ok(filled.allocations),
        (false, Some((leg, because))) => Err(AllocationError::NotRoutable { leg, because }),
        (false, None) => Err(AllocationError::NothingAvailable),
    }
}

/// What a walk over the legs placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filled {
    pub allocations: Vec<Allocation>,
    /// What could not be placed.
    pub left: Amount,
    /// The first leg that had money but could not take its part, and why.
    pub refused: Option<(usize, Unsupported)>,
}

/// Walks `order`, taking from each leg what it has and may take until
/// `amount` is covered: any part of its availability, or — for a leg that
/// takes all or nothing — all of it when the remainder covers it.
pub fn fill(order: &[usize], available: &[Amount], limits: &[Limit], amount: Amount) -> Filled {
    let mut filled = Filled {
        allocations: Vec::new(),
        left: amount,
        refused: None,
    };
    for &leg in order {
        let has = available[leg];
        if filled.left.is_zero() {
            break;
        }
        if has.is_zero() {
            continue;
        }
        let take = match limits.get(leg).copied().unwrap_or(Limit::Any) {
            Limit::Any => filled.left.min(has),
            Limit::WholeOnly(_) if filled.left >= has => has,
            Limit::WholeOnly(because) | Limit::Blocked(because) => {
                filled.refused.get_or_insert((leg, because));
                continue;
            }
        };
        filled.allocations.push(Allocation { leg, amount: take });
        filled.left = filled.left.saturating_sub(take);
    }
    filled
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
        let result = allocate(
            &[1, 0],
            &available,
            &[],
            Some(Amount::from_minor(5000).unwrap()),
        );
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
            allocate(
                &[0, 1],
                &available,
                &[],
                Some(Amount::from_minor(121).unwrap())
            ),
            Err(AllocationError::ExceedsAvailable {
                requested: Amount::from_minor(121).unwrap(),
                available: Amount::from_minor(120).unwrap(),
            })
        );
        assert_eq!(
            allocate(&[0, 1], &amounts(&[0, 0]), &[], None),
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
            match allocate(&order, &available, &[], requested_amount) {
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
                Err(AllocationError::NotRoutable { .. }) => {
                    prop_assert!(false, "no leg is limited here");
                }
            }
        }

        /// A leg that takes all or nothing gets all or nothing; a blocked
        /// leg nothing; and an allocation never exceeds what was asked.
        #[test]
        fn limited_legs_take_all_or_nothing(
            legs in prop::collection::vec((0i64..5_000, 0u8..3), 1..6),
            requested in prop::option::of(1i64..20_000),
        ) {
            let available = amounts(&legs.iter().map(|l| l.0).collect::<Vec<_>>());
            let limits: Vec<Limit> = legs.iter().map(|l| match l.1 {
                0 => Limit::Any,
                1 => Limit::WholeOnly(Unsupported::PartialCapture),
                _ => Limit::Blocked(Unsupported::MultipleCaptures),
            }).collect();
            let order: Vec<usize> = (0..legs.len()).collect();
            let requested_amount = requested.map(|r| Amount::from_minor(r).unwrap());
            if let Ok(allocations) = allocate(&order, &available, &limits, requested_amount) {
                let sum: i64 = allocations.iter().map(|a| a.amount.minor()).sum();
                if let Some(r) = requested {
                    prop_assert_eq!(sum, r);
                }
                for a in &allocations {
                    match limits[a.leg] {
                        Limit::WholeOnly(_) => prop_assert_eq!(a.amount, available[a.leg]),
                        Limit::Blocked(_) => prop_assert!(false, "a blocked leg was used"),
                        Limit::Any => prop_assert!(a.amount <= available[a.leg]),
                    }
                }
            }
        }
    }

    #[test]
    fn a_partial_amount_skips_a_whole_only_leg_for_the_next() {
        let available = amounts(&[10000, 2000]);
        let limits = [Limit::WholeOnly(Unsupported::PartialCapture), Limit::Any];
        // 1 500 cannot be taken from the first leg (all 10 000 or nothing).
        assert_eq!(
            allocate(
                &[0, 1],
                &available,
                &limits,
                Some(Amount::from_minor(1500).unwrap())
            ),
            Ok(vec![Allocation {
                leg: 1,
                amount: Amount::from_minor(1500).unwrap()
            }])
        );
        // 11 000 can: all of the first, 1 000 of the second.
        assert_eq!(
            allocate(
                &[0, 1],
                &available,
                &limits,
                Some(Amount::from_minor(11000).unwrap())
            )
            .unwrap()
            .len(),
            2
        );
        // 3 000 cannot be placed at all, and the refusal names why.
        assert_eq!(
            allocate(
                &[0, 1],
                &available,
                &limits,
                Some(Amount::from_minor(3000).unwrap())
            ),
            Err(AllocationError::NotRoutable {
                leg: 0,
                because: Unsupported::PartialCapture
            })
        );
    }
}
