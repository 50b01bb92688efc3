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
announce(ARGV[7], KEYS[1])
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
