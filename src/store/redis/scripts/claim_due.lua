local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, item in ipairs(items) do
  redis.call('ZADD', KEYS[1], ARGV[2], item)
end
return items
