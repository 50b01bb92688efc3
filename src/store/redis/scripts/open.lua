local record = redis.call('GET', KEYS[1])
if record then return claimed(record, ARGV[1]) end
if redis.call('HGET', KEYS[2], 'v') ~= ARGV[4] then return {'conflict'} end
if redis.call('HSETNX', KEYS[3], ARGV[11], ARGV[8]) == 0 then return {'exists'} end
redis.call('SET', KEYS[1], 'i' .. ARGV[1] .. until_ms(ARGV[2]), 'PX', ARGV[3])
redis.call('HSET', KEYS[2], 'v', ARGV[12], 'h', ARGV[5], ARGV[6], ARGV[7])
redis.call('ZADD', KEYS[4], ARGV[10], ARGV[9])
if ARGV[13] ~= '' then redis.call('SET', KEYS[5], ARGV[13], 'PX', ARGV[14]) end
return {'ok', ARGV[12], false, false}
