//! The Lua scripts. Each runs on one slot (all its keys share the shard's
//! hash tag) and checks everything before it writes anything, so a script
//! that refuses leaves no trace.
//!
//! An idempotency record is one string: `i` + fingerprint (16 bytes) + lease
//! end (ms) while its request runs, `d` + fingerprint + outcome once it is
//! answered. Every script below reads and writes it the same way.
//!
//! [`STEP`] takes any step. The two steps every operation takes, *open* and
//! *conclude*, have lean scripts of their own ([`OPEN`], [`CONCLUDE`]): a
//! script's cost in Redis is mostly its arguments and its `redis.call`s.
//!
//! Each script is a file in `scripts/`, named after what it does, read in at
//! build time and hashed once; `record.lua`, `stamp.lua` and `announce.lua`
//! are the parts several share.

use std::sync::LazyLock;

use redis::Script;

/// A script made of the files `parts` of `scripts/` (`.lua`), in order,
/// hashed once.
macro_rules! script {
    ($($part:literal),+) => {
        LazyLock::new(|| Script::new(concat!($(include_str!(concat!("scripts/", $part, ".lua"))),+)))
    };
}

/// One atomic step (see `store::Step`), any shape.
///
/// KEYS: 1 idempotency record, 2 session, 3 payment, 4 operation index,
/// 5 due-queue, 6 delivery queue, 7 failed deliveries, 8.. webhook
/// deliveries, then send claims. A due member goes to the queue of its
/// lane: `w:` members to the delivery queue, `f:` members to the failed
/// ones, the rest to the due-queue.
///
/// ARGV: 1 now (ms, the caller's);
/// 2 key part (`` | `claim` | `answer` | `complete` | `abandon`), 3 fingerprint,
/// 4 lease (ms), 5 ttl (ms), 6 outcome;
/// 7 session part (`` | `insert` | `update` | `check`), 8 expected version,
/// 9 session, 10 retention (ms);
/// 11 payment part (`` | `insert` | `update` | `check`), 12 expected version,
/// 13 header, 14 payment id (16 bytes), 15 the header's new version (see
/// `steps::next_version`);
/// 16 N, then N × (operation id, `i`nsert | `u`pdate, operation, operation
/// id as 16 bytes);
/// then D, D × (`+` | `-`, member, due ms);
/// then W, W × (`p`ut if absent | `u`pdate | `d`elete, delivery);
/// then the id of an operation to announce final (`` = none; `s<id>` on the
/// shard's channel `po:{S}:finals` with sharded pub/sub, else on
/// `po:finals`, see `announce.lua`);
/// then C, C × (`t`ake | `r`elease, fence, ttl ms) of the claim keys.
///
/// Returns `{'ok', payment version|nil, session version|nil, first answer|nil}`,
/// or `{'conflict'}`, `{'exists'}`, `{'busy'}`, `{'mismatch'}`,
/// `{'done', outcome}`, `{'inflight'}`, `{'expired'}` (in flight, lease
/// over) with nothing written.
pub static STEP: LazyLock<Script> = script!("record", "announce", "step");

/// Opens an operation: claim the key, compare-and-set the header, write the
/// operation and its index entry, put it on the due-queue, and take the send
/// claim of its first leg (a new operation: no claim can exist).
///
/// KEYS: 1 idempotency record, 2 payment, 3 operation index, 4 due-queue,
/// 5 the first leg's send claim.
/// ARGV: 1 fingerprint, 2 lease (ms), 3 ttl, 4 expected version,
/// 5 header, 6 operation id, 7 operation, 8 payment id (16 bytes), 9 due
/// member, 10 due ms, 11 operation id (16 bytes), 12 the new version,
/// 13 the claim's fence (`` = none), 14 the claim's ttl (ms).
/// Returns like [`STEP`].
pub static OPEN: LazyLock<Script> = script!("record", "open");

/// Concludes (or records progress on) an operation: compare-and-set the
/// header, write the operation, store the answer under the key if its
/// request is still in flight, move the operation on the due-queue, give up
/// or take send claims.
///
/// KEYS: 1 idempotency record (or any key of the shard), 2 payment,
/// 3 due-queue, 4.. send claims.
/// ARGV: 1 expected version, 2 header, 3 operation id, 4 operation,
/// 5 outcome (`` = no key part), 6 the new version, 7 the operation id to
/// announce final (as in [`STEP`]), 8 D, then D × (`+` | `-`,
/// member, due ms), then C × (`t`ake | `r`elease, fence, ttl ms).
/// Returns like [`STEP`].
pub static CONCLUDE: LazyLock<Script> = script!("announce", "conclude");

/// Takes the due items of one shard and moves them to the end of their lease.
/// KEYS[1] due-queue; ARGV: now ms, lease end ms, limit.
pub static CLAIM_DUE: LazyLock<Script> = script!("claim_due");

/// Takes (or renews) a lease for its holder. KEYS[1] the lease; ARGV: holder,
/// lease (ms). Answers 1 if the holder has it now.
pub static TAKE_LEASE: LazyLock<Script> = script!("take_lease");

/// Gives a lease up if its holder (ARGV[1]) has it.
pub static RELEASE_LEASE: LazyLock<Script> = script!("release_lease");

/// Claims an instrument unless claimed (KEYS[1] its claim, ARGV[1] the
/// claim with `@now` for Redis's time); answers the claim that holds it and
/// Redis's time.
pub static CLAIM_INSTRUMENT: LazyLock<Script> = script!("stamp", "claim_instrument");

/// Keeps a session's hosted checkout at one partner unless another is kept
/// there (or the kept one is the one it replaces); answers the one kept.
pub static KEEP_CHECKOUT: LazyLock<Script> = script!("keep_checkout");

/// Replaces the claim ARGV[1] (as read) by ARGV[2] (`` removes it); 0 if it
/// changed since.
pub static REPLACE_INSTRUMENT: LazyLock<Script> = script!("stamp", "replace_instrument");

/// A claim (or ``) with Redis's time.
pub static READ_INSTRUMENT: LazyLock<Script> = script!("read_instrument");

/// Forgets a payment whose retention ended, if its header is still at the
/// version read: the payment hash, its session and hosted checkouts, the
/// idempotency records named by its parts, its operations' index entries
/// and its due members (see `forget.lua` for the arguments). Answers 1 if
/// forgotten, 0 if the payment moved (nothing deleted).
pub static FORGET: LazyLock<Script> = script!("forget");

/// Replaces a value that is still the one read, keeping its expiry.
///
/// KEYS: 1 the value. ARGV: 1 what was read, 2 the replacement.
/// Returns 1 if replaced, 0 if it changed meanwhile (or is gone).
pub static REPLACE_KEEPING_TTL: LazyLock<Script> = script!("replace_keeping_ttl");
