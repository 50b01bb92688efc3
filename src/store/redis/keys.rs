//! Key names: every key of a shard carries its hash tag; the listing
//! indexes, partner event ids, settlements, issues, leases and instrument
//! claims live in slots of their own.

use super::*;

pub(super) fn in_shard(shard: Shard, rest: &str) -> String {
    format!("po:{{{}}}:{rest}", shard.index())
}

pub(super) fn session_key(id: Uuid) -> String {
    format!("po:{{{}}}:s:{id}", Shard::of(id).index())
}

pub(super) fn payment_key(id: Uuid) -> String {
    format!("po:{{{}}}:p:{id}", Shard::of(id).index())
}

pub(super) fn operation_index_key(shard: Shard) -> String {
    in_shard(shard, "ops")
}

pub(super) fn record_key(id: Uuid) -> String {
    format!("po:{{{}}}:k:{id}", Shard::of(id).index())
}

/// The send claim of one leg of an operation (in the operation's shard).
pub(super) fn claim_key(operation: Uuid, leg: usize) -> String {
    format!(
        "po:{{{}}}:c:{operation}:{leg}",
        Shard::of(operation).index()
    )
}

pub(super) fn due_key(shard: Shard) -> String {
    lane_key(shard, Lane::Resolution)
}

/// The sorted set of a lane's items in a shard, by due time (ms).
pub(super) fn lane_key(shard: Shard, lane: Lane) -> String {
    in_shard(
        shard,
        match lane {
            Lane::Resolution => "due",
            Lane::Delivery => "hooks",
            Lane::Failed => "hooks-failed",
        },
    )
}

pub(super) fn delivery_key(id: Uuid) -> String {
    format!("po:{{{}}}:w:{id}", Shard::of(id).index())
}

pub(super) fn event_key(partner: &str, event_id: &str) -> String {
    format!("po:{{e:{partner}}}:event:{}", digest(event_id))
}

pub(super) fn listing_key(merchant: &str, order_reference: Option<&str>) -> String {
    match order_reference {
        None => format!("po:{{m:{merchant}}}:payments"),
        Some(reference) => format!("po:{{m:{merchant}}}:payments:order:{}", digest(reference)),
    }
}

pub(super) fn settlement_key(id: Uuid) -> String {
    format!("po:{{stl:{id}}}:settlement")
}

pub(super) fn settlement_lines_key(id: Uuid) -> String {
    format!("po:{{stl:{id}}}:lines")
}

pub(super) const SETTLEMENT_INDEX: &str = "po:{stl}:index";
pub(super) const ISSUE_INDEX: &str = "po:{rec}:index";

/// A merchant's issues (members as in the global index): a merchant's
/// listing reads only these.
pub(super) fn merchant_issue_index(merchant: &str) -> String {
    format!("po:{{m:{merchant}}}:issues")
}

/// Set once every issue of the global index is in its merchant's index.
pub(super) const ISSUE_INDEX_MIGRATED: &str = "po:{rec}:merchant-indexes";

/// A merchant's settlements (members as in the global index).
pub(super) fn merchant_settlement_index(merchant: &str) -> String {
    format!("po:{{m:{merchant}}}:settlements")
}

/// Set once every settlement of the global index is in its merchant's.
pub(super) const SETTLEMENT_INDEX_MIGRATED: &str = "po:{stl}:merchant-indexes";

/// A partner's settlements whose import failed: reference → record.
pub(super) fn failed_settlements_key(partner: &str) -> String {
    format!("po:{{stl}}:failed:{partner}")
}

pub(super) fn issue_key(id: Uuid) -> String {
    format!("po:{{rec}}:issue:{id}")
}

/// Which settlement showed a partner transaction (in the transaction's
/// shard: written and read one key at a time).
pub(super) fn settled_key(transaction: Uuid) -> String {
    format!(
        "po:{{{}}}:settled:{transaction}",
        Shard::of(transaction).index()
    )
}

/// An instrument's claim: a key in a slot of its own.
pub(super) fn instrument_key(instrument: &str) -> String {
    format!("po:{{tok:{instrument}}}")
}

pub(super) fn lease_key(name: &str) -> String {
    format!("po:{{lease:{name}}}")
}

pub(super) fn session_listing_key(merchant: &str, order_reference: Option<&str>) -> String {
    match order_reference {
        None => format!("po:{{m:{merchant}}}:sessions"),
        Some(reference) => format!("po:{{m:{merchant}}}:sessions:order:{}", digest(reference)),
    }
}

pub(super) fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}
