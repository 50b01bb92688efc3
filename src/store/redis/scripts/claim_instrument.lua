local held = redis.call('GET', KEYS[1])
if not held then
  held = stamp(ARGV[1])
  redis.call('SET', KEYS[1], held)
end
return {held, now}
