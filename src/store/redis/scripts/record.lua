-- Shared by the scripts that read idempotency records: the store's own
-- time (ms), which judges every lease and claim (never a replica's clock);
-- what an existing record says to a claim with fingerprint `fp`; and the
-- end of a lease of `lease` ms from now.
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function claimed(record, fp)
  if string.sub(record, 2, 17) ~= fp then return {'mismatch'} end
  if string.sub(record, 1, 1) == 'd' then return {'done', string.sub(record, 18)} end
  if tonumber(string.sub(record, 18)) > clock() then return {'inflight'} end
  return {'expired'}
end
local function until_ms(lease)
  return string.format('%.0f', clock() + tonumber(lease))
end
