//! Due work: what the due-queue holds (operations to resolve, expiries,
//! webhook deliveries, settlement checks), its lanes, and the deliveries
//! the outbox keeps.

use std::{collections::BTreeMap, time::SystemTime};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Shard;
use crate::domain::session::HeaderValue;

// ---- the due-queue ----

/// Work that becomes due at a time. Each item lives in the shard of its
/// payment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DueItem {
    /// A non-final operation to resolve (or a running one whose lease ran out).
    Operation { payment: Uuid, operation: Uuid },
    /// An authorization whose lifetime ends: release what was not captured.
    AuthorizationExpiry { payment: Uuid },
    /// A webhook to (re)deliver.
    Webhook { delivery: Uuid },
    /// A webhook whose delivery was given up, kept for an operator to see
    /// and re-send (its time is when it was given up; never claimed).
    FailedWebhook { delivery: Uuid },
    /// A capture or refund that succeeded: by now a settlement should have
    /// shown it.
    SettlementCheck { payment: Uuid, operation: Uuid },
    /// A capture at a partner whose chargebacks only a lookup shows: read
    /// its legs again for disputes (until the partner's window ends).
    DisputeWatch { payment: Uuid, operation: Uuid },
    /// A payment whose retention may have ended (`--payment-retention`):
    /// forgotten if nothing of it is open, else looked at again later.
    Retention { payment: Uuid },
}

impl DueItem {
    pub fn shard(&self) -> Shard {
        match self {
            DueItem::Operation { payment, .. }
            | DueItem::AuthorizationExpiry { payment }
            | DueItem::SettlementCheck { payment, .. }
            | DueItem::DisputeWatch { payment, .. }
            | DueItem::Retention { payment } => Shard::of(*payment),
            DueItem::Webhook { delivery } | DueItem::FailedWebhook { delivery } => {
                Shard::of(*delivery)
            }
        }
    }

    /// The queue the item waits in.
    pub fn lane(&self) -> Lane {
        match self {
            DueItem::Webhook { .. } => Lane::Delivery,
            DueItem::FailedWebhook { .. } => Lane::Failed,
            _ => Lane::Resolution,
        }
    }

    /// A compact, parseable form (a Redis sorted-set member).
    pub fn encode(&self) -> String {
        match self {
            DueItem::Operation { payment, operation } => format!("o:{payment}:{operation}"),
            DueItem::AuthorizationExpiry { payment } => format!("x:{payment}"),
            DueItem::Webhook { delivery } => format!("w:{delivery}"),
            DueItem::FailedWebhook { delivery } => format!("f:{delivery}"),
            DueItem::SettlementCheck { payment, operation } => format!("c:{payment}:{operation}"),
            DueItem::DisputeWatch { payment, operation } => format!("d:{payment}:{operation}"),
            DueItem::Retention { payment } => format!("r:{payment}"),
        }
    }

    pub fn decode(text: &str) -> Option<DueItem> {
        let (kind, rest) = text.split_once(':')?;
        Some(match kind {
            "o" => {
                let (payment, operation) = rest.split_once(':')?;
                DueItem::Operation {
                    payment: Uuid::try_parse(payment).ok()?,
                    operation: Uuid::try_parse(operation).ok()?,
                }
            }
            "x" => DueItem::AuthorizationExpiry {
                payment: Uuid::try_parse(rest).ok()?,
            },
            "r" => DueItem::Retention {
                payment: Uuid::try_parse(rest).ok()?,
            },
            "w" => DueItem::Webhook {
                delivery: Uuid::try_parse(rest).ok()?,
            },
            "f" => DueItem::FailedWebhook {
                delivery: Uuid::try_parse(rest).ok()?,
            },
            "c" => {
                let (payment, operation) = rest.split_once(':')?;
                DueItem::SettlementCheck {
                    payment: Uuid::try_parse(payment).ok()?,
                    operation: Uuid::try_parse(operation).ok()?,
                }
            }
            "d" => {
                let (payment, operation) = rest.split_once(':')?;
                DueItem::DisputeWatch {
                    payment: Uuid::try_parse(payment).ok()?,
                    operation: Uuid::try_parse(operation).ok()?,
                }
            }
            _ => return None,
        })
    }
}

/// The queues of due work, each claimed by its own worker: the resolver
/// never waits on a merchant's webhook endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// Operations, authorization expiries, settlement checks: the resolver.
    Resolution,
    /// Webhook deliveries: the delivery worker.
    Delivery,
    /// Deliveries given up: listed and re-sent by an operator, never claimed.
    Failed,
}

impl Lane {
    pub const ALL: [Lane; 3] = [Lane::Resolution, Lane::Delivery, Lane::Failed];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// How many items are queued and when the earliest is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DueSummary {
    pub depth: usize,
    pub earliest: Option<SystemTime>,
}

// ---- the webhook outbox ----

/// A merchant notification waiting to be delivered (at least once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    /// The event id (receivers deduplicate by it), in its payment's shard.
    pub id: Uuid,
    pub merchant: String,
    pub url: String,
    pub headers: BTreeMap<String, HeaderValue>,
    /// The JSON body, exactly as signed and sent.
    pub body: String,
    pub attempts: u32,
    pub created_at: SystemTime,
    /// Why the last attempt failed (no secret material: a status code or
    /// a connection error's kind).
    pub last_error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_items_round_trip_and_know_their_shard() {
        let payment = Shard::of(Uuid::from_u128(5)).stamp(Uuid::now_v7());
        let items = [
            DueItem::Operation {
                payment,
                operation: Uuid::now_v7(),
            },
            DueItem::AuthorizationExpiry { payment },
            DueItem::Webhook {
                delivery: Shard::of(payment).stamp(Uuid::now_v7()),
            },
            DueItem::SettlementCheck {
                payment,
                operation: Uuid::now_v7(),
            },
            DueItem::DisputeWatch {
                payment,
                operation: Uuid::now_v7(),
            },
            DueItem::Retention { payment },
        ];
        for item in items {
            assert_eq!(DueItem::decode(&item.encode()), Some(item.clone()));
            assert_eq!(item.shard(), Shard::of(payment));
        }
    }
}
