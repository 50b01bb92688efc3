//! Disputes: a shopper's bank taking back (or threatening to take back) what
//! a leg captured. A partner reports them — a chargeback line in its
//! settlement, a checkout whose state says `charged back` — and the payment
//! keeps them: disputed money is not refundable, so a refund after a
//! chargeback never pays the shopper twice.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{amounts::Amounts, money::Amount};

/// Where a dispute stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DisputeStatus {
    /// The money is, or may be, taken back.
    Open,
    /// Closed in the merchant's favour.
    Won,
    /// Closed against the merchant: the money was taken back.
    Lost,
}

/// A dispute of one leg.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dispute {
    /// Derived ([`Dispute::id_for`]): seeing it again is seeing the same one.
    pub id: Uuid,
    pub partner: String,
    /// The leg it disputes.
    pub leg: usize,
    /// The partner's reference of what is disputed.
    pub partner_reference: String,
    pub amount: Amount,
    pub reason: String,
    pub status: DisputeStatus,
    pub opened_at: SystemTime,
    pub closed_at: Option<SystemTime>,
}

/// Namespace of dispute ids.
const NAMESPACE: Uuid = Uuid::from_u128(0x5d0e_7a41_92c3_4b8e_a1f6_0c2d_9e73_b815);

impl Dispute {
    pub fn id_for(payment: Uuid, partner: &str, reference: &str) -> Uuid {
        Uuid::new_v5(
            &NAMESPACE,
            format!("dispute:{payment}:{partner}:{reference}").as_bytes(),
        )
    }

    /// Whether it holds money back from refunds (open, or lost).
    pub fn holds(&self) -> bool {
        matches!(self.status, DisputeStatus::Open | DisputeStatus::Lost)
    }

    pub fn is_open(&self) -> bool {
        self.status == DisputeStatus::Open
    }
}

/// What the disputes hold back from refunds (open or lost), of one leg or
/// (`None`) of every leg.
pub fn held(disputes: &[Dispute], leg: Option<usize>) -> Amount {
    // Saturating: disputes beyond any amount still hold everything back.
    Amount::saturating_sum(
        disputes
            .iter()
            .filter(|d| d.holds() && leg.is_none_or(|leg| d.leg == leg))
            .map(|d| d.amount),
    )
}

/// What disputes keep from being refunded, leg by leg: on each leg what
/// its disputes hold, up to what the leg could refund otherwise.
pub fn kept_from_refunds(disputes: &[Dispute], ledger: &[Amounts]) -> Amount {
    let per_leg = ledger.iter().enumerate().map(|(leg, held)| {
        let disputed = self::held(disputes, Some(leg));
        disputed.min(held.available_to_refund())
    });
    Amount::saturating_sum(per_leg)
}

/// What a partner says of a leg it was asked about, or reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DisputeSeen {
    /// Disputed: `amount` is at stake.
    Disputed {
        reference: String,
        amount: Amount,
        reason: String,
    },
    /// Not disputed (any more): an open dispute of this reference was won.
    Clear { reference: String },
}

/// What seeing a dispute changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeChange {
    Opened,
    Closed,
}

/// Applies what a partner says of `leg` to `disputes`: a new dispute is
/// opened; an open one the partner no longer reports is closed (won). The
/// change, with the dispute as it is now; `None` when nothing changed.
pub fn see(
    disputes: &mut Vec<Dispute>,
    payment: Uuid,
    partner: &str,
    leg: usize,
    seen: DisputeSeen,
    now: SystemTime,
) -> Option<(DisputeChange, Dispute)> {
    match seen {
        DisputeSeen::Disputed {
            reference,
            amount,
            reason,
        } => {
            let id = Dispute::id_for(payment, partner, &reference);
            if disputes.iter().any(|d| d.id == id) {
                return None;
            }
            let dispute = Dispute {
                id,
                partner: partner.to_owned(),
                leg,
                partner_reference: reference,
                amount,
                reason,
                status: DisputeStatus::Open,
                opened_at: now,
                closed_at: None,
            };
            disputes.push(dispute.clone());
            Some((DisputeChange::Opened, dispute))
        }
        DisputeSeen::Clear { reference } => {
            let id = Dispute::id_for(payment, partner, &reference);
            let dispute = disputes.iter_mut().find(|d| d.id == id && d.is_open())?;
            dispute.status = DisputeStatus::Won;
            dispute.closed_at = Some(now);
            Some((DisputeChange::Closed, dispute.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dispute_opens_once_and_closes_when_the_partner_clears_it() {
        let payment = Uuid::now_v7();
        let now = SystemTime::UNIX_EPOCH;
        let mut disputes = Vec::new();
        let disputed = || DisputeSeen::Disputed {
            reference: "1001".into(),
            amount: Amount::from_minor(500).unwrap(),
            reason: "charged back".into(),
        };
        let (change, opened) = see(&mut disputes, payment, "wepay", 1, disputed(), now).unwrap();
        assert_eq!(
            (change, opened.status, opened.leg),
            (DisputeChange::Opened, DisputeStatus::Open, 1)
        );
        assert!(opened.holds());
        assert_eq!(
            see(&mut disputes, payment, "wepay", 1, disputed(), now),
            None
        );
        let clear = || DisputeSeen::Clear {
            reference: "1001".into(),
        };
        let (change, closed) = see(&mut disputes, payment, "wepay", 1, clear(), now).unwrap();
        assert_eq!(
            (change, closed.status),
            (DisputeChange::Closed, DisputeStatus::Won)
        );
        assert!(!closed.holds());
        assert_eq!(see(&mut disputes, payment, "wepay", 1, clear(), now), None);
        // Seen again after it was won: the same dispute, not a new one.
        assert_eq!(
            see(&mut disputes, payment, "wepay", 1, disputed(), now),
            None
        );
        assert_eq!(disputes.len(), 1);
    }

    #[test]
    fn disputes_beyond_any_amount_still_hold_everything_back() {
        let payment = Uuid::now_v7();
        let now = SystemTime::UNIX_EPOCH;
        let mut disputes = Vec::new();
        for reference in ["1", "2"] {
            let huge = DisputeSeen::Disputed {
                reference: reference.into(),
                amount: Amount::from_minor(i64::MAX / 2 + 1).unwrap(),
                reason: "charged back".into(),
            };
            see(&mut disputes, payment, "walley", 0, huge, now).unwrap();
        }
        assert_eq!(held(&disputes, Some(0)).minor(), i64::MAX);
        let ledger = [Amounts {
            captured: Amount::from_minor(1000).unwrap(),
            ..Amounts::ZERO
        }];
        assert_eq!(kept_from_refunds(&disputes, &ledger).minor(), 1000);
    }
}
