-- Shared by the instrument scripts: `@now` in a claim's attempts (its third
-- field) becomes Redis's time in ms; the merchant's name (the last field) is
-- never touched.
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local function stamp(v)
  local _, last = string.find(v, '^[^|]*|[^|]*|[^|]*|')
  if not last then return v end
  return (string.gsub(string.sub(v, 1, last), '@now', '@' .. now)) .. string.sub(v, last + 1)
end
