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

/// A session's checkouts: `<partner>` → the checkout, `<partner>#id` → its
/// id (what a reopening compares).
pub(super) fn checkouts_key(session: Uuid) -> String {
    format!("po:{{{}}}:hc:{session}", Shard::of(session).index())
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

/// What a merchant listing lists.
#[derive(Debug, Clone, Copy)]
pub(super) enum Listed {
    Payments,
    Sessions,
}

impl Listed {
    fn name(self) -> &'static str {
        match self {
            Listed::Payments => "payments",
            Listed::Sessions => "sessions",
        }
    }
}

/// How many keys (each its own slot) one merchant's listing is spread over,
/// so that a large merchant's checkouts spread over a cluster's nodes.
pub(super) const LISTING_BUCKETS: u128 = 16;

/// Where a payment or session `id` is listed: its merchant's bucket, and
/// the listing of its order reference (a slot of its own too). The tags
/// (`mb:`, `mo:`) differ from the merchant's own (`m:`), so no merchant's
/// name makes one of them another merchant's key; the bucket (or order)
/// comes first in the tag, so a `}` in a merchant's name cannot fold the
/// buckets into one slot.
pub(super) fn listings_of(
    listed: Listed,
    merchant: &str,
    order_reference: &str,
    id: Uuid,
) -> [String; 2] {
    let name = listed.name();
    [
        format!(
            "po:{{mb:{}:{merchant}}}:{name}",
            id.as_u128() % LISTING_BUCKETS
        ),
        format!("po:{{mo:{}:{merchant}}}:{name}", digest(order_reference)),
    ]
}

/// The keys a listing query reads and merges: every bucket of the merchant
/// (or its order's listing), and the one key earlier releases wrote it to.
pub(super) fn listing_reads(
    listed: Listed,
    merchant: &str,
    order_reference: Option<&str>,
) -> Vec<String> {
    let name = listed.name();
    match order_reference {
        None => (0..LISTING_BUCKETS)
            .map(|bucket| format!("po:{{mb:{bucket}:{merchant}}}:{name}"))
            .chain([format!("po:{{m:{merchant}}}:{name}")])
            .collect(),
        Some(reference) => {
            let reference = digest(reference);
            vec![
                format!("po:{{mo:{reference}:{merchant}}}:{name}"),
                format!("po:{{m:{merchant}}}:{name}:order:{reference}"),
            ]
        }
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

pub(super) fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Redis Cluster hashes: the text between the first `{` and the
    /// first `}` after it.
    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').expect("a tag");
        let close = key[open + 1..].find('}').expect("a closed tag");
        &key[open + 1..open + 1 + close]
    }

    #[test]
    fn a_merchants_buckets_are_sixteen_slots_whatever_its_name() {
        for merchant in ["demo", "a}b", "a:b{c"] {
            let keys = listing_reads(Listed::Payments, merchant, None);
            let tags: std::collections::BTreeSet<&str> = keys
                .iter()
                .take(LISTING_BUCKETS as usize)
                .map(|key| hash_tag(key))
                .collect();
            assert_eq!(tags.len(), 16, "{merchant}: {tags:?}");
        }
        // Where a payment is listed is among what a listing reads.
        let id = Uuid::from_u128(0x2a);
        let [bucket, order] = listings_of(Listed::Payments, "a}b", "order-1", id);
        assert!(listing_reads(Listed::Payments, "a}b", None).contains(&bucket));
        assert!(listing_reads(Listed::Payments, "a}b", Some("order-1")).contains(&order));
    }
}
