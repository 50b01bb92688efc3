//! Pages of indexes: a merchant's payments by creation time, settlements by
//! date, reconciliation issues by creation time. Index members sort as
//! strings, so bounds and cursors are plain string bounds.

use std::{
    ops::Bound,
    time::{SystemTime, UNIX_EPOCH},
};

use uuid::Uuid;

use super::{DueItem, Versioned};

use crate::domain::{
    operation::Operation,
    payment::Payment,
    session::Session,
    settlement::{Day, Match, ReconciliationIssue, Settlement},
};

// ---- listing ----

/// One page of the creation-ordered index of a merchant's payments. The
/// index holds [`listing_member`] strings, which sort by creation time then
/// id: time bounds and page cursors are plain string bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub merchant: String,
    pub order_reference: Option<String>,
    /// Inclusive.
    pub created_after: Option<SystemTime>,
    /// Exclusive.
    pub created_before: Option<SystemTime>,
    /// Continue after this member (exclusive), in the direction of `newest_first`.
    pub cursor: Option<String>,
    pub newest_first: bool,
    pub limit: usize,
}

/// A payment as stored: its header and every operation, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPayment {
    pub header: Versioned<Payment>,
    pub operations: Vec<Operation>,
}

impl StoredPayment {
    /// Every item the payment may have on the due-queue.
    pub fn due_items(&self) -> Vec<DueItem> {
        let payment = self.header.value.id;
        let per_operation = self.operations.iter().flat_map(|op| {
            let operation = op.id;
            [
                DueItem::Operation { payment, operation },
                DueItem::SettlementCheck { payment, operation },
                DueItem::DisputeWatch { payment, operation },
            ]
        });
        [
            DueItem::AuthorizationExpiry { payment },
            DueItem::Retention { payment },
        ]
        .into_iter()
        .chain(per_operation)
        .collect()
    }

    /// The idempotency records that may name what the payment is made of
    /// (records are named by the id of what their request creates): its
    /// own and its operations' (its session's goes with the session).
    pub fn record_ids(&self) -> Vec<Uuid> {
        std::iter::once(self.header.value.id)
            .chain(self.operations.iter().map(|op| op.id))
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct ListedSession {
    pub cursor: String,
    /// `None` if the index outlived its session (retention).
    pub session: Option<Versioned<Session>>,
}

#[derive(Debug, Clone)]
pub struct ListedPayment {
    pub cursor: String,
    /// `None` if the index outlived (or came before) its payment.
    pub payment: Option<StoredPayment>,
}

/// The index member of a payment: zero-padded creation millis, then the id.
pub fn listing_member(created_at: SystemTime, id: Uuid) -> String {
    format!("{:015}:{id}", unix_millis(created_at))
}

/// The id a member of a listing or an index names: its last part.
pub fn member_id(member: &str) -> Option<Uuid> {
    member
        .rsplit_once(':')
        .and_then(|(_, id)| Uuid::try_parse(id).ok())
}

pub fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl ListQuery {
    /// The members admitted, as bounds on the member strings (low, high).
    pub fn bounds(&self) -> (Bound<String>, Bound<String>) {
        let mut low = self.created_after.map_or(Bound::Unbounded, |t| {
            Bound::Included(format!("{:015}:", unix_millis(t)))
        });
        let mut high = self.created_before.map_or(Bound::Unbounded, |t| {
            Bound::Excluded(format!("{:015}:", unix_millis(t)))
        });
        if let Some(cursor) = &self.cursor {
            if self.newest_first {
                high = Bound::Excluded(cursor.clone());
            } else {
                low = Bound::Excluded(cursor.clone());
            }
        }
        (low, high)
    }
}

// ---- settlements ----

/// A page of settlements, by settlement date then id (a cursor is the last
/// member seen), oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SettlementQuery {
    pub partner: Option<String>,
    /// Only settlements of this merchant; `None`: every settlement.
    pub merchant: Option<String>,
    /// Inclusive.
    pub from: Option<Day>,
    /// Inclusive.
    pub to: Option<Day>,
    pub cursor: Option<String>,
    pub limit: usize,
}

/// A page of reconciliation issues, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IssueQuery {
    pub partner: Option<String>,
    pub kind: Option<Match>,
    /// Only issues of this merchant; `None`: every issue.
    pub merchant: Option<String>,
    /// Inclusive.
    pub created_after: Option<SystemTime>,
    /// Exclusive.
    pub created_before: Option<SystemTime>,
    /// Only issues not resolved yet.
    pub open_only: bool,
    pub cursor: Option<String>,
    pub limit: usize,
}

impl SettlementQuery {
    /// Whether a settlement in the range is one the query asks for.
    pub fn admits(&self, settlement: &Settlement) -> bool {
        self.partner
            .as_ref()
            .is_none_or(|p| *p == settlement.partner)
            && self
                .merchant
                .as_ref()
                .is_none_or(|m| settlement.merchant.as_ref() == Some(m))
            && self.from.is_none_or(|from| settlement.date >= from)
            && self.to.is_none_or(|to| settlement.date <= to)
    }

    /// The lowest member to read from (exclusive of the cursor).
    pub fn low(&self) -> Bound<String> {
        match (&self.cursor, self.from) {
            (Some(cursor), _) => Bound::Excluded(cursor.clone()),
            (None, Some(from)) => Bound::Included(format!("{from}:")),
            (None, None) => Bound::Unbounded,
        }
    }
}

impl IssueQuery {
    pub fn admits(&self, issue: &ReconciliationIssue) -> bool {
        self.partner.as_ref().is_none_or(|p| *p == issue.partner)
            && self.kind.is_none_or(|k| k == issue.kind)
            && self
                .merchant
                .as_ref()
                .is_none_or(|m| issue.merchant.as_ref() == Some(m))
            && self.created_after.is_none_or(|t| issue.created_at >= t)
            && self.created_before.is_none_or(|t| issue.created_at < t)
            && (!self.open_only || issue.is_open())
    }

    pub fn low(&self) -> Bound<String> {
        match (&self.cursor, self.created_after) {
            (Some(cursor), _) => Bound::Excluded(cursor.clone()),
            (None, Some(after)) => Bound::Included(format!("{:015}:", unix_millis(after))),
            (None, None) => Bound::Unbounded,
        }
    }
}

/// The index member of a settlement: its date, then its id.
pub fn settlement_member(settlement: &Settlement) -> String {
    format!("{}:{}", settlement.date, settlement.id)
}

/// The index member of an issue: zero-padded creation millis, then its id.
pub fn issue_member(issue: &ReconciliationIssue) -> String {
    listing_member(issue.created_at, issue.id)
}
