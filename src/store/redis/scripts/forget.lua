-- Forgets a payment if its header is still at the version read.
-- KEYS: 1 payment, 2 operation index, 3 due-queue, 4.. keys deleted whole
-- (session, hosted checkouts, idempotency records).
-- ARGV: 1 version, 2 N, 3..2+N operation ids (16 bytes), then due members.
if redis.call('HGET', KEYS[1], 'v') ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1], unpack(KEYS, 4))
local n = tonumber(ARGV[2])
if n > 0 then
  redis.call('HDEL', KEYS[2], unpack(ARGV, 3, 2 + n))
end
if #ARGV > 2 + n then
  redis.call('ZREM', KEYS[3], unpack(ARGV, 3 + n))
end
return 1
