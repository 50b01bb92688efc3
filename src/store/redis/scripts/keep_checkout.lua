-- KEYS[1] the session's checkouts (a hash: partner → checkout, partner#id
-- → its id); ARGV[1] partner, ARGV[2] id, ARGV[3] checkout, ARGV[4] the id
-- it replaces (`` none), ARGV[5] when the hash expires (ms since the epoch:
-- the checkout's end plus the session retention).
local held = redis.call('HGET', KEYS[1], ARGV[1] .. '#id')
if held and held ~= ARGV[4] then
  return redis.call('HGET', KEYS[1], ARGV[1])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3], ARGV[1] .. '#id', ARGV[2])
-- Only ever later: another partner's checkout may need the hash longer
-- (no expiry yet reads -1).
if redis.call('PEXPIRETIME', KEYS[1]) < tonumber(ARGV[5]) then
  redis.call('PEXPIREAT', KEYS[1], ARGV[5])
end
return ARGV[3]
