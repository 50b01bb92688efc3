//! The Lua scripts. Each runs on one slot (all its keys share the shard's
//! hash tag) and checks everything before it writes anything, so a script
//! that refuses leaves no trace.

use std::sync::LazyLock;

use redis::Script;

/// One atomic step (see `store::Step`).
///
/// KEYS: 1 idempotency record, 2 session, 3 payment, 4 operation index,
/// 5 due-queue, 6.. webhook deliveries.
///
/// ARGV: 1 now (ms);
/// 2 key part (`` | `claim` | `answer` | `complete`), 3 fingerprint,
/// 4 lease until (ms), 5 ttl (ms), 6 outcome;
/// 7 session part (`` | `insert` | `update` | `check`), 8 expected version,
/// 9 session, 10 retention (ms);
/// 11 payment part (`` | `insert` | `update` | `check`), 12 expected version,
/// 13 header, 14 payment id;
/// 15 N, then N × (operation id, `i`nsert | `u`pdate, operation);
/// then D, D × (`+` | `-`, member, due ms);
/// then W, W × (`p`ut if absent | `u`pdate | `d`elete, delivery).
///
/// Returns `{'ok', payment version|nil, session version|nil, first answer|nil}`,
/// or `{'conflict'}`, `{'exists'}`, `{'mismatch'}`, `{'done', outcome}`,
/// `{'inflight'}`, `{'expired'}` (in flight, lease over) with nothing written.
pub static STEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local now = tonumber(ARGV[1])
        local keymode = ARGV[2]
        local record = nil
        if keymode ~= '' then
          record = redis.call('HMGET', KEYS[1], 'f', 's', 'l', 'o')
          if keymode ~= 'complete' and record[1] then
            if record[1] ~= ARGV[3] then return {'mismatch'} end
            if record[2] == 'd' then return {'done', record[4]} end
            if tonumber(record[3]) > now then return {'inflight'} end
            return {'expired'}
          end
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
          if ARGV[i + 1] == 'i' and redis.call('HEXISTS', KEYS[4], ARGV[i]) == 1 then
            return {'exists'}
          end
          i = i + 3
        end

        local answered = false
        if keymode == 'claim' then
          redis.call('HSET', KEYS[1], 'f', ARGV[3], 's', 'i', 'l', ARGV[4])
          redis.call('PEXPIRE', KEYS[1], ARGV[5])
        elseif keymode == 'answer' then
          redis.call('HSET', KEYS[1], 'f', ARGV[3], 's', 'd', 'o', ARGV[6])
          redis.call('PEXPIRE', KEYS[1], ARGV[5])
        elseif keymode == 'complete' then
          if record[2] == 'i' then
            redis.call('HSET', KEYS[1], 's', 'd', 'o', ARGV[6])
          elseif record[2] == 'd' then
            answered = record[4]
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
          if ARGV[i + 1] == 'i' then redis.call('HSET', KEYS[4], ARGV[i], ARGV[14]) end
          i = i + 3
        end
        local d = tonumber(ARGV[i])
        i = i + 1
        for _ = 1, d do
          if ARGV[i] == '+' then
            redis.call('ZADD', KEYS[5], ARGV[i + 2], ARGV[i + 1])
          else
            redis.call('ZREM', KEYS[5], ARGV[i + 1])
          end
          i = i + 3
        end
        local w = tonumber(ARGV[i])
        i = i + 1
        for j = 1, w do
          local key = KEYS[5 + j]
          if ARGV[i] == 'p' then
            redis.call('SET', key, ARGV[i + 1], 'NX')
          elseif ARGV[i] == 'u' then
            redis.call('SET', key, ARGV[i + 1])
          else
            redis.call('DEL', key)
          end
          i = i + 2
        end
        return {'ok', pversion, sversion, answered}
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

/// One shard's due-queue at a glance: `{depth, items due at ARGV[1], earliest ms}`.
/// KEYS[1] due-queue.
pub static DUE_SUMMARY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
        return {redis.call('ZCARD', KEYS[1]), redis.call('ZCOUNT', KEYS[1], '-inf', ARGV[1]), first[2] or false}
        ",
    )
});
