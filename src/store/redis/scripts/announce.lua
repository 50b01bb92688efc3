-- Announces an operation final. `s<id>`: on its shard's own channel,
-- `po:{<shard>}:finals` (sharded pub/sub: only the node serving the shard,
-- and its replicas, relay it; a cluster); an id alone: on `po:finals`
-- (classic pub/sub; one server). `key` is any key of the script's shard.
local function announce(id, key)
  if id == '' then return end
  if string.sub(id, 1, 1) == 's' then
    redis.call('SPUBLISH', string.match(key, '^po:{[^}]*}') .. ':finals', string.sub(id, 2))
  else
    redis.call('PUBLISH', 'po:finals', id)
  end
end
