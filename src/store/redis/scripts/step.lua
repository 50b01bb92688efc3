local keymode = ARGV[2]
local record = nil
if keymode ~= '' then
  record = redis.call('GET', KEYS[1])
  if (keymode == 'claim' or keymode == 'answer') and record then return claimed(record, ARGV[3]) end
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
local n = tonumber(ARGV[16])
local i = 17
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
  pversion = ARGV[15]
  redis.call('HSET', KEYS[3], 'v', pversion, 'h', ARGV[13])
end
i = 17
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
announce(ARGV[i], KEYS[1])
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
