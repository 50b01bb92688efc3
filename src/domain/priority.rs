//! Priority rules: in which order an operation walks a payment's legs.
//!
//! A rule is `{partner, method}` where `"*"` matches anything. A leg takes the
//! position of the **first rule with at least one concrete field** that
//! matches it; `{*, *}` is the position of every leg no such rule matches;
//! legs matched by nothing come last. Ties keep split order.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::operation::OperationKind;

/// One field of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Pattern {
    Any,
    Exactly(String),
}

impl Pattern {
    /// `"*"` is [`Pattern::Any`]; anything else must be matched exactly.
    pub fn parse(text: &str) -> Pattern {
        if text == "*" {
            Pattern::Any
        } else {
            Pattern::Exactly(text.to_owned())
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exactly(expected) => expected == value,
        }
    }

    fn is_concrete(&self) -> bool {
        matches!(self, Pattern::Exactly(_))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Any => f.write_str("*"),
            Pattern::Exactly(value) => f.write_str(value),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PriorityRule {
    pub partner: Pattern,
    pub method: Pattern,
}

impl PriorityRule {
    pub fn new(partner: Pattern, method: Pattern) -> Self {
        PriorityRule { partner, method }
    }

    /// Parses `"partner:method"` (used by configuration), e.g. `"*:giftcard"`.
    pub fn parse(text: &str) -> Option<Self> {
        let (partner, method) = text.split_once(':')?;
        if partner.is_empty() || method.is_empty() {
            return None;
        }
        Some(PriorityRule::new(
            Pattern::parse(partner),
            Pattern::parse(method),
        ))
    }

    fn matches(&self, partner: &str, method: &str) -> bool {
        self.partner.matches(partner) && self.method.matches(method)
    }

    fn is_catch_all(&self) -> bool {
        !self.partner.is_concrete() && !self.method.is_concrete()
    }
}

impl fmt::Display for PriorityRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.partner, self.method)
    }
}

/// Where an operation's priority order came from: recorded in its history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderSource {
    /// The request named its own rules.
    Request,
    /// The merchant's configured order for the kind.
    Merchant,
    /// The service's default for the kind.
    Default,
    /// The service's own operation (an expiry void, a compensation).
    System,
}

impl fmt::Display for OrderSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OrderSource::Request => "the request's priority",
            OrderSource::Merchant => "the merchant's priority",
            OrderSource::Default => "the default priority",
            OrderSource::System => "the service",
        })
    }
}

/// The standard priorities, as configuration text (`partner:method` rules,
/// comma separated): the one source of the defaults. Capture takes gift cards
/// first; refund and void release card money first (closed-loop value is
/// consumed rather than handed back).
pub const STANDARD_CAPTURE: &str = "*:giftcard,*:*";
pub const STANDARD_REFUND: &str = "*:creditcard,*:*";
pub const STANDARD_VOID: &str = "*:creditcard,*:*";

/// The priority lists used when a request carries none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultPriorities {
    pub capture: Vec<PriorityRule>,
    pub refund: Vec<PriorityRule>,
    pub void: Vec<PriorityRule>,
}

/// Parses a comma-separated rule list such as [`STANDARD_CAPTURE`].
pub fn parse_rules(text: &str) -> Option<Vec<PriorityRule>> {
    text.split(',').map(PriorityRule::parse).collect()
}

impl DefaultPriorities {
    /// [`STANDARD_CAPTURE`], [`STANDARD_REFUND`] and [`STANDARD_VOID`].
    pub fn standard() -> Self {
        let rules = |text| parse_rules(text).unwrap_or_default();
        DefaultPriorities {
            capture: rules(STANDARD_CAPTURE),
            refund: rules(STANDARD_REFUND),
            void: rules(STANDARD_VOID),
        }
    }

    /// Replaces the list of one kind (authorizations walk the split order
    /// and have none).
    pub fn set(&mut self, kind: OperationKind, rules: Vec<PriorityRule>) {
        match kind {
            OperationKind::Capture => self.capture = rules,
            OperationKind::Refund => self.refund = rules,
            OperationKind::Void => self.void = rules,
            OperationKind::Authorization => {}
        }
    }

    pub fn for_kind(&self, kind: OperationKind) -> &[PriorityRule] {
        match kind {
            OperationKind::Capture => &self.capture,
            OperationKind::Refund => &self.refund,
            // Authorization walks the split in its own order.
            OperationKind::Void | OperationKind::Authorization => &self.void,
        }
    }
}

/// Returns the indexes of `legs` (`(partner, method)` pairs) in priority order.
pub fn order<'a>(
    rules: &[PriorityRule],
    legs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<usize> {
    let catch_all = rules.iter().position(PriorityRule::is_catch_all);
    let mut positions: Vec<(usize, usize)> = legs
        .into_iter()
        .enumerate()
        .map(|(index, (partner, method))| {
            let position = rules
                .iter()
                .position(|rule| !rule.is_catch_all() && rule.matches(partner, method))
                .or(catch_all)
                .unwrap_or(rules.len());
            (position, index)
        })
        .collect();
    // Stable: ties keep split order.
    positions.sort_by_key(|&(position, _)| position);
    positions.into_iter().map(|(_, index)| index).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules(spec: &[&str]) -> Vec<PriorityRule> {
        spec.iter()
            .map(|rule| PriorityRule::parse(rule).unwrap())
            .collect()
    }

    const LEGS: [(&str, &str); 3] = [
        ("illicado", "giftcard"),
        ("ingenico", "creditcard"),
        ("adyen", "creditcard"),
    ];

    #[test]
    fn the_standard_text_parses() {
        let standard = DefaultPriorities::standard();
        assert_eq!(standard.capture.len(), 2);
        assert_eq!(standard.capture[0].to_string(), "*:giftcard");
        assert_eq!(standard.refund[0].to_string(), "*:creditcard");
    }

    #[test]
    fn gift_cards_come_first_for_captures() {
        let defaults = DefaultPriorities::standard();
        let legs = [("ingenico", "creditcard"), ("illicado", "giftcard")];
        assert_eq!(order(&defaults.capture, legs), vec![1, 0]);
        assert_eq!(order(&defaults.refund, legs), vec![0, 1]);
    }

    #[test]
    fn catch_all_in_the_middle_puts_specific_later_rules_last() {
        // [{*,creditcard},{*,*},{illicado,*}]: illicado is matched by its own
        // concrete rule (position 2), after everything the catch-all takes.
        let order = order(&rules(&["*:creditcard", "*:*", "illicado:*"]), LEGS);
        assert_eq!(order, vec![1, 2, 0]);
    }

    #[test]
    fn legs_matched_by_nothing_come_last_in_split_order() {
        let order = order(&rules(&["adyen:*"]), LEGS);
        assert_eq!(order, vec![2, 0, 1]);
    }

    #[test]
    fn first_concrete_match_wins() {
        let order = order(&rules(&["*:creditcard", "adyen:creditcard"]), LEGS);
        assert_eq!(order, vec![1, 2, 0]);
    }

    fn pattern() -> impl Strategy<Value = Pattern> {
        prop_oneof![Just(Pattern::Any), "[ab]".prop_map(Pattern::Exactly),]
    }

    proptest! {
        #[test]
        fn order_is_a_permutation_that_respects_rule_positions(
            rules in prop::collection::vec((pattern(), pattern()), 0..5),
            legs in prop::collection::vec(("[ab]", "[ab]"), 1..6),
        ) {
            let rules: Vec<PriorityRule> =
                rules.into_iter().map(|(p, m)| PriorityRule::new(p, m)).collect();
            let result = order(&rules, legs.iter().map(|(p, m)| (p.as_str(), m.as_str())));
            let mut sorted = result.clone();
            sorted.sort();
            prop_assert_eq!(sorted, (0..legs.len()).collect::<Vec<_>>());
            // The position of every leg is non-decreasing along the result,
            // and equal positions keep split order.
            let position = |i: usize| {
                let (p, m) = (&legs[i].0, &legs[i].1);
                rules.iter()
                    .position(|r| !r.is_catch_all() && r.matches(p, m))
                    .or(rules.iter().position(PriorityRule::is_catch_all))
                    .unwrap_or(rules.len())
            };
            for pair in result.windows(2) {
                let (a, b) = (position(pair[0]), position(pair[1]));
                prop_assert!(a < b || (a == b && pair[0] < pair[1]));
            }
        }
    }
}
