-- Forgets a payment if its header is still at the version read, and its
-- session with it if that too is still at the version read.
-- KEYS: 1 payment, 2 operation index, 3 due-queue, 4 session, 5 the
-- session's hosted checkouts, 6 the session's idempotency record, 7.. the
-- idempotency records of the payment and its operations.
-- ARGV: 1 payment version, 2 session version (`` = keep the session),
-- 3 the session's record as read (compared too: a session version lost to a
-- failover may be written again with other content), 4 the caller's clock
-- less the lead it may have over Redis's (ms; a replica whose clock jumped
-- ahead would forget early), 5 N, 6..5+N operation ids (16 bytes), then due
-- members.
-- Answers 0 (moved, or a caller too far ahead: nothing deleted), 1 (the
-- payment), 2 (and the session).
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then
  return 0
end
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) < tonumber(ARGV[4]) then
  return 0
end
-- `command` (`key`, when given) with `values[from..to]`, in chunks: Lua's
-- stack holds a few thousand values.
local function chunked(command, key, values, from, to)
  while from <= to do
    local last = math.min(from + 499, to)
    if key then
      redis.call(command, key, unpack(values, from, last))
    else
      redis.call(command, unpack(values, from, last))
    end
    from = last + 1
  end
end
redis.call('DEL', KEYS[1])
chunked('DEL', nil, KEYS, 7, #KEYS)
local n = tonumber(ARGV[5])
chunked('HDEL', KEYS[2], ARGV, 6, 5 + n)
chunked('ZREM', KEYS[3], ARGV, 6 + n, #ARGV)
if ARGV[2] ~= '' and redis.call('HGET', KEYS[4], 'v') == ARGV[2]
  and redis.call('HGET', KEYS[4], 'd') == ARGV[3] then
  redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
  return 2
end
return 1
