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

use std::sync::LazyLock;

use redis::Script;

/// The shared part: the store's own time (ms), which judges every lease
/// and claim (never a replica's clock); and what an existing record says to
/// a claim (`ARGV[fp]` is the claimant's fingerprint).
macro_rules! claimed {
    ($fp:literal) => {
        concat!(
            "local function clock()\n",
            "  local t = redis.call('TIME')\n",
            "  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n",
            "end\n",
            "local function claimed(record)\n",
            "  if string.sub(record, 2, 17) ~= ARGV[", $fp, "] then return {'mismatch'} end\n",
            "  if string.sub(record, 1, 1) == 'd' then return {'done', string.sub(record, 18)} end\n",
            "  if tonumber(string.sub(record, 18)) > clock() then return {'inflight'} end\n",
            "  return {'expired'}\n",
            "end\n",
            "local function until_ms(lease)\n",
            "  return string.format('%.0f', clock() + tonumber(lease))\n",
            "end\n"
        )
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
/// 13 header, 14 payment id (16 bytes);
/// 15 N, then N × (operation id, `i`nsert | `u`pdate, operation, operation
/// id as 16 bytes);
/// then D, D × (`+` | `-`, member, due ms);
/// then W, W × (`p`ut if absent | `u`pdate | `d`elete, delivery);
/// then the id of an operation to announce final (`` = none), published on
/// `po:finals`;
/// then C, C × (`t`ake | `r`elease, fence, ttl ms) of the claim keys.
///
/// Returns `{'ok', payment version|nil, session version|nil, first answer|nil}`,
/// or `{'conflict'}`, `{'exists'}`, `{'busy'}`, `{'mismatch'}`,
/// `{'done', outcome}`, `{'inflight'}`, `{'expired'}` (in flight, lease
/// over) with nothing written.
pub static STEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        claimed!("3"),
        r"
        local keymode = ARGV[2]
        local record = nil
        if keymode ~= '' then
          record = redis.call('GET', KEYS[1])
          if (keymode == 'claim' or keymode == 'answer') and record then return claimed(record) end
        end
        local smode = ARGV[7]
        if smode == 'insert' then
          if redis.call('EXISTS', KEYS[2]) == 1 then return {'exists'} end
        elseif smode ~= '' then
          if redis.call('HGET', KEYS[2], 'v') ~= ARGV[8] then return {'conflict'} end
        end
        local pmode = ARGV[11]
        if pmode == 'insert' then
          if redis.call('EXISTS', KEYS[3]) == 1 then return {'exists'} end
        elseif pmode ~= '' then
          if redis.call('HGET', KEYS[3], 'v') ~= ARGV[12] then return {'conflict'} end
        end
        local n = tonumber(ARGV[15])
        local i = 16
        for _ = 1, n do
          if ARGV[i + 1] == 'i' and redis.call('HEXISTS', KEYS[4], ARGV[i + 3]) == 1 then
            return {'exists'}
          end
          i = i + 4
        end
        local d = tonumber(ARGV[i])
        local w = tonumber(ARGV[i + 1 + 3 * d])
        local c_at = i + 3 + 3 * d + 2 * w
        local c = tonumber(ARGV[c_at])
        for j = 1, c do
          if ARGV[c_at + 3 * j - 2] == 't' and redis.call('EXISTS', KEYS[7 + w + j]) == 1 then
            return {'busy'}
          end
        end

        local answered = false
        if keymode == 'claim' then
          redis.call('SET', KEYS[1], 'i' .. ARGV[3] .. until_ms(ARGV[4]), 'PX', ARGV[5])
        elseif keymode == 'answer' then
          redis.call('SET', KEYS[1], 'd' .. ARGV[3] .. ARGV[6], 'PX', ARGV[5])
        elseif keymode == 'abandon' and record then
          if string.sub(record, 1, 1) == 'i' then
            redis.call('SET', KEYS[1], string.sub(record, 1, 17) .. '0', 'KEEPTTL')
          end
        elseif keymode == 'complete' and record then
          if string.sub(record, 1, 1) == 'i' then
            redis.call('SET', KEYS[1], 'd' .. string.sub(record, 2, 17) .. ARGV[6], 'KEEPTTL')
          else
            answered = string.sub(record, 18)
          end
        end
        local sversion = false
        if smode == 'insert' or smode == 'update' then
          sversion = 1
          if smode == 'update' then sversion = tonumber(ARGV[8]) + 1 end
          redis.call('HSET', KEYS[2], 'v', sversion, 'd', ARGV[9])
          redis.call('PEXPIRE', KEYS[2], ARGV[10])
        end
        local pversion = false
        if pmode == 'insert' or pmode == 'update' then
          pversion = 1
          if pmode == 'update' then pversion = tonumber(ARGV[12]) + 1 end
          redis.call('HSET', KEYS[3], 'v', pversion, 'h', ARGV[13])
        end
        i = 16
        for _ = 1, n do
          redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 2])
          if ARGV[i + 1] == 'i' then redis.call('HSET', KEYS[4], ARGV[i + 3], ARGV[14]) end
          i = i + 4
        end
        i = i + 1
        for _ = 1, d do
          local lane = KEYS[5]
          local kind = string.sub(ARGV[i + 1], 1, 2)
          if kind == 'w:' then lane = KEYS[6] elseif kind == 'f:' then lane = KEYS[7] end
          if ARGV[i] == '+' then
            redis.call('ZADD', lane, ARGV[i + 2], ARGV[i + 1])
          else
            redis.call('ZREM', lane, ARGV[i + 1])
          end
          i = i + 3
        end
        i = i + 1
        for j = 1, w do
          local key = KEYS[7 + j]
          if ARGV[i] == 'p' then
            redis.call('SET', key, ARGV[i + 1], 'NX')
          elseif ARGV[i] == 'u' then
            redis.call('SET', key, ARGV[i + 1])
          else
            redis.call('DEL', key)
          end
          i = i + 2
        end
        if ARGV[i] ~= '' then redis.call('PUBLISH', 'po:finals', ARGV[i]) end
        for j = 1, c do
          local key = KEYS[7 + w + j]
          local at = c_at + 3 * j - 2
          if ARGV[at] == 't' then
            redis.call('SET', key, ARGV[at + 1], 'PX', ARGV[at + 2])
          elseif redis.call('GET', key) == ARGV[at + 1] then
            redis.call('DEL', key)
          end
        end
        return {'ok', pversion, sversion, answered}
        "
    ))
});

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
pub static OPEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        claimed!("1"),
        r"
        local record = redis.call('GET', KEYS[1])
        if record then return claimed(record) end
        if redis.call('HGET', KEYS[2], 'v') ~= ARGV[4] then return {'conflict'} end
        if redis.call('HSETNX', KEYS[3], ARGV[11], ARGV[8]) == 0 then return {'exists'} end
        redis.call('SET', KEYS[1], 'i' .. ARGV[1] .. until_ms(ARGV[2]), 'PX', ARGV[3])
        redis.call('HSET', KEYS[2], 'v', ARGV[12], 'h', ARGV[5], ARGV[6], ARGV[7])
        redis.call('ZADD', KEYS[4], ARGV[10], ARGV[9])
        if ARGV[13] ~= '' then redis.call('SET', KEYS[5], ARGV[13], 'PX', ARGV[14]) end
        return {'ok', ARGV[12], false, false}
        "
    ))
});

/// Concludes (or records progress on) an operation: compare-and-set the
/// header, write the operation, store the answer under the key if its
/// request is still in flight, move the operation on the due-queue, give up
/// or take send claims.
///
/// KEYS: 1 idempotency record (or any key of the shard), 2 payment,
/// 3 due-queue, 4.. send claims.
/// ARGV: 1 expected version, 2 header, 3 operation id, 4 operation,
/// 5 outcome (`` = no key part), 6 the new version, 7 the operation id to
/// announce final on `po:finals` (`` = none), 8 D, then D × (`+` | `-`,
/// member, due ms), then C × (`t`ake | `r`elease, fence, ttl ms).
/// Returns like [`STEP`].
pub static CONCLUDE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('HGET', KEYS[2], 'v') ~= ARGV[1] then return {'conflict'} end
        local c_at = 9 + 3 * tonumber(ARGV[8])
        for j = 4, #KEYS do
          if ARGV[c_at + 3 * (j - 4)] == 't' and redis.call('EXISTS', KEYS[j]) == 1 then
            return {'busy'}
          end
        end
        local answered = false
        if ARGV[5] ~= '' then
          local record = redis.call('GET', KEYS[1])
          if record then
            if string.sub(record, 1, 1) == 'i' then
              redis.call('SET', KEYS[1], 'd' .. string.sub(record, 2, 17) .. ARGV[5], 'KEEPTTL')
            else
              answered = string.sub(record, 18)
            end
          end
        end
        redis.call('HSET', KEYS[2], 'v', ARGV[6], 'h', ARGV[2], ARGV[3], ARGV[4])
        if ARGV[7] ~= '' then redis.call('PUBLISH', 'po:finals', ARGV[7]) end
        for i = 9, c_at - 1, 3 do
          if ARGV[i] == '+' then
            redis.call('ZADD', KEYS[3], ARGV[i + 2], ARGV[i + 1])
          else
            redis.call('ZREM', KEYS[3], ARGV[i + 1])
          end
        end
        for j = 4, #KEYS do
          local at = c_at + 3 * (j - 4)
          if ARGV[at] == 't' then
            redis.call('SET', KEYS[j], ARGV[at + 1], 'PX', ARGV[at + 2])
          elseif redis.call('GET', KEYS[j]) == ARGV[at + 1] then
            redis.call('DEL', KEYS[j])
          end
        end
        return {'ok', ARGV[6], false, answered}
        ",
    )
});

/// Takes the due items of one shard and moves them to the end of their lease.
/// KEYS[1] due-queue; ARGV: now ms, lease end ms, limit.
pub static CLAIM_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
        for _, item in ipairs(items) do
          redis.call('ZADD', KEYS[1], ARGV[2], item)
        end
        return items
        ",
    )
});
