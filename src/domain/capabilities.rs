//! What a partner can do with a leg's money, and what that means for
//! routing: an amount a leg cannot take is offered to the next leg in the
//! priority order, and refused (naming why) when no leg can take it.

use serde::{Deserialize, Serialize};

use super::{amounts::Amounts, operation::OperationKind};

/// What a partner supports. The default supports everything (the sandbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capabilities {
    /// Capture less than what is left of the authorization.
    pub partial_capture: bool,
    /// Capture a leg more than once.
    pub multiple_captures: bool,
    /// Refund less than what is left of the captured amount.
    pub partial_refund: bool,
    /// Refund a leg more than once.
    pub multiple_refunds: bool,
    /// Release less than what is left of the authorization.
    pub partial_void: bool,
    /// More than one refund of a leg in flight at once. A partner without an
    /// idempotency key for refunds needs one at a time: whether a refund
    /// happened is then read from its refunded total.
    pub concurrent_refunds: bool,
}

impl Capabilities {
    /// Everything supported.
    pub const ALL: Capabilities = Capabilities {
        partial_capture: true,
        multiple_captures: true,
        partial_refund: true,
        multiple_refunds: true,
        partial_void: true,
        concurrent_refunds: true,
    };
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities::ALL
    }
}

/// A capability a leg lacks, as a refusal names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Unsupported {
    PartialCapture,
    MultipleCaptures,
    PartialRefund,
    MultipleRefunds,
    ConcurrentRefunds,
    PartialVoid,
    CaptureInProgress,
}

impl Unsupported {
    /// The ErrorInfo reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Unsupported::PartialCapture => "PARTIAL_CAPTURE_NOT_SUPPORTED",
            Unsupported::MultipleCaptures => "MULTIPLE_CAPTURES_NOT_SUPPORTED",
            Unsupported::PartialRefund => "PARTIAL_REFUND_NOT_SUPPORTED",
            Unsupported::MultipleRefunds => "MULTIPLE_REFUNDS_NOT_SUPPORTED",
            Unsupported::ConcurrentRefunds => "REFUND_IN_PROGRESS",
            Unsupported::PartialVoid => "PARTIAL_VOID_NOT_SUPPORTED",
            Unsupported::CaptureInProgress => "CAPTURE_IN_PROGRESS",
        }
    }
}

/// How a leg may take part in an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// Any amount up to what it has available.
    Any,
    /// All it has available, or nothing.
    WholeOnly(Unsupported),
    /// Nothing.
    Blocked(Unsupported),
}

impl Capabilities {
    /// How a leg holding `held` may take part in an operation of `kind`.
    pub fn limit(&self, kind: OperationKind, held: &Amounts) -> Limit {
        let (partial, again, busy) = match kind {
            OperationKind::Authorization => return Limit::Any,
            OperationKind::Capture => (
                (self.partial_capture, Unsupported::PartialCapture),
                (
                    self.multiple_captures
                        || (held.captured.is_zero() && held.capture_pending.is_zero()),
                    Unsupported::MultipleCaptures,
                ),
                (true, Unsupported::MultipleCaptures),
            ),
            OperationKind::Refund => (
                (self.partial_refund, Unsupported::PartialRefund),
                (
                    self.multiple_refunds
                        || (held.refunded.is_zero() && held.refund_pending.is_zero()),
                    Unsupported::MultipleRefunds,
                ),
                (
                    self.concurrent_refunds || held.refund_pending.is_zero(),
                    Unsupported::ConcurrentRefunds,
                ),
            ),
            // A void that cannot name its amount releases everything not
            // captured, a capture still in flight included: it waits for
            // the capture's answer.
            OperationKind::Void => (
                (self.partial_void, Unsupported::PartialVoid),
                (true, Unsupported::PartialVoid),
                (
                    self.partial_void || held.capture_pending.is_zero(),
                    Unsupported::CaptureInProgress,
                ),
            ),
        };
        if !again.0 {
            return Limit::Blocked(again.1);
        }
        if !busy.0 {
            return Limit::Blocked(busy.1);
        }
        if !partial.0 {
            return Limit::WholeOnly(partial.1);
        }
        Limit::Any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::amount;

    #[test]
    fn a_full_only_partner_takes_all_or_nothing_once() {
        let wepay = Capabilities {
            partial_capture: false,
            multiple_captures: false,
            ..Capabilities::default()
        };
        let fresh = Amounts {
            authorized: amount(100),
            ..Amounts::ZERO
        };
        assert_eq!(
            wepay.limit(OperationKind::Capture, &fresh),
            Limit::WholeOnly(Unsupported::PartialCapture)
        );
        let captured = Amounts {
            captured: amount(100),
            ..fresh
        };
        assert_eq!(
            wepay.limit(OperationKind::Capture, &captured),
            Limit::Blocked(Unsupported::MultipleCaptures)
        );
        assert_eq!(
            Capabilities::default().limit(OperationKind::Capture, &captured),
            Limit::Any
        );
    }

    #[test]
    fn refunds_without_idempotency_go_one_at_a_time() {
        let one_at_a_time = Capabilities {
            concurrent_refunds: false,
            ..Capabilities::default()
        };
        let refunding = Amounts {
            captured: amount(100),
            refund_pending: amount(10),
            ..Amounts::ZERO
        };
        assert_eq!(
            one_at_a_time.limit(OperationKind::Refund, &refunding),
            Limit::Blocked(Unsupported::ConcurrentRefunds)
        );
    }
}
