-- start: a worker starts a tracked job (the only extra round trip tracking costs a worker).
-- KEYS[1] status hash (pj:status:ID)
-- ARGV[1] status fields as a JSON object of strings (state running, worker, attempts, ...)
-- ARGV[2] status TTL in seconds
-- Returns: 1.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSETNX', KEYS[1], 'started_ms', now)
local a = {'updated_ms', now}
for f, v in pairs(cjson.decode(ARGV[1])) do a[#a + 1] = f; a[#a + 1] = v end
redis.call('HSET', KEYS[1], unpack(a))
redis.call('HDEL', KEYS[1], 'payload', 'run_at_ms')
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
