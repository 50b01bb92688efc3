//! The `Amounts` of a payment and its `Overview`.
//!
//! Pending amounts include UNCERTAIN operations: an uncertain amount is
//! reserved as if it might have succeeded, so no combination of outcomes can
//! capture more than was authorized or refund more than was captured.

use serde::{Deserialize, Serialize};

use super::money::Amount;

/// Totals of one leg, or of the whole payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amounts {
    pub authorized: Amount,
    pub captured: Amount,
    pub refunded: Amount,
    pub voided: Amount,
    pub authorize_pending: Amount,
    pub capture_pending: Amount,
    pub refund_pending: Amount,
    pub void_pending: Amount,
}

impl Amounts {
    pub const ZERO: Amounts = Amounts {
        authorized: Amount::ZERO,
        captured: Amount::ZERO,
        refunded: Amount::ZERO,
        voided: Amount::ZERO,
        authorize_pending: Amount::ZERO,
        capture_pending: Amount::ZERO,
        refund_pending: Amount::ZERO,
        void_pending: Amount::ZERO,
    };

    /// `authorized - captured - capture_pending - voided - void_pending`.
    pub fn available_to_capture(&self) -> Amount {
        self.authorized
            .saturating_sub(self.captured)
            .saturating_sub(self.capture_pending)
            .saturating_sub(self.voided)
            .saturating_sub(self.void_pending)
    }

    pub fn available_to_void(&self) -> Amount {
        self.available_to_capture()
    }

    /// `captured - refunded - refund_pending`.
    pub fn available_to_refund(&self) -> Amount {
        self.captured
            .saturating_sub(self.refunded)
            .saturating_sub(self.refund_pending)
    }

    /// Field-by-field sum. Every field is bounded by the payment amount, so
    /// the sums fit; they saturate rather than wrap all the same.
    pub fn plus(&self, other: &Amounts) -> Amounts {
        let add = |a: Amount, b: Amount| a.checked_add(b).unwrap_or(a.max(b));
        Amounts {
            authorized: add(self.authorized, other.authorized),
            captured: add(self.captured, other.captured),
            refunded: add(self.refunded, other.refunded),
            voided: add(self.voided, other.voided),
            authorize_pending: add(self.authorize_pending, other.authorize_pending),
            capture_pending: add(self.capture_pending, other.capture_pending),
            refund_pending: add(self.refund_pending, other.refund_pending),
            void_pending: add(self.void_pending, other.void_pending),
        }
    }

    /// Field-by-field difference, used to take an operation's old
    /// contribution off a ledger before adding its new one. A ledger always
    /// holds at least what each of its operations contributes, so nothing
    /// saturates unless the books were already wrong.
    pub fn minus(&self, other: &Amounts) -> Amounts {
        let sub = |a: Amount, b: Amount| {
            debug_assert!(b <= a, "the ledger holds less than an operation booked");
            a.saturating_sub(b)
        };
        Amounts {
            authorized: sub(self.authorized, other.authorized),
            captured: sub(self.captured, other.captured),
            refunded: sub(self.refunded, other.refunded),
            voided: sub(self.voided, other.voided),
            authorize_pending: sub(self.authorize_pending, other.authorize_pending),
            capture_pending: sub(self.capture_pending, other.capture_pending),
            refund_pending: sub(self.refund_pending, other.refund_pending),
            void_pending: sub(self.void_pending, other.void_pending),
        }
    }

    /// No capture, refund or void is pending or uncertain. Every open
    /// transaction reserves a positive amount, so this is the same as "every
    /// operation after the authorization is final".
    pub fn nothing_pending(&self) -> bool {
        self.capture_pending.is_zero()
            && self.refund_pending.is_zero()
            && self.void_pending.is_zero()
    }

    pub fn overview(&self) -> Overview {
        let consumed = self
            .captured
            .checked_add(self.voided)
            .unwrap_or(self.authorized);
        Overview {
            consumed: Coverage::of(consumed, self.authorized),
            captured: Coverage::of(self.captured, self.authorized),
            voided: Coverage::of(self.voided, self.authorized),
            refunded: Coverage::of(self.refunded, self.captured),
        }
    }
}

/// How much of a whole a part covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Coverage {
    Not,
    Partially,
    Totally,
}

impl Coverage {
    /// 0 → NOT, equal → TOTALLY, else PARTIALLY.
    pub fn of(part: Amount, whole: Amount) -> Coverage {
        if part.is_zero() {
            Coverage::Not
        } else if part == whole {
            Coverage::Totally
        } else {
            Coverage::Partially
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overview {
    pub consumed: Coverage,
    pub captured: Coverage,
    pub voided: Coverage,
    pub refunded: Coverage,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::amount;

    #[test]
    fn availability_subtracts_pending_reservations() {
        let amounts = Amounts {
            authorized: amount(12000),
            captured: amount(5000),
            capture_pending: amount(1000),
            voided: amount(2000),
            refunded: amount(500),
            refund_pending: amount(500),
            ..Amounts::ZERO
        };
        assert_eq!(amounts.available_to_capture(), amount(4000));
        assert_eq!(amounts.available_to_void(), amount(4000));
        assert_eq!(amounts.available_to_refund(), amount(4000));
    }

    #[test]
    fn overview_compares_totals() {
        let amounts = Amounts {
            authorized: amount(12000),
            captured: amount(5000),
            voided: amount(7000),
            refunded: amount(1000),
            ..Amounts::ZERO
        };
        assert_eq!(
            amounts.overview(),
            Overview {
                consumed: Coverage::Totally,
                captured: Coverage::Partially,
                voided: Coverage::Partially,
                refunded: Coverage::Partially,
            }
        );
        assert_eq!(Amounts::ZERO.overview().captured, Coverage::Not);
    }
}
