-- heartbeat: keep a worker registered and alive; report whether it was reaped.
-- KEYS[1] heartbeat key with TTL (pj:hb:WORKER)
-- KEYS[2] workers set (pj:workers)
-- KEYS[3] worker info hash (pj:worker:WORKER)
-- ARGV[1] heartbeat TTL in ms
-- ARGV[2] worker id
-- ARGV[3] "1" on the first beat (registration), else "0"
-- ARGV[4..] info field, value pairs
-- Returns: 1 when registered and alive; 0 when the worker had been reaped since
-- its last beat (its in-flight jobs went back to the queues). A reaped worker is
-- not registered again here: it drops what it holds locally, then beats with
-- ARGV[3] = "1" to register afresh.
local member = redis.call('SISMEMBER', KEYS[2], ARGV[2])
if member == 0 and ARGV[3] ~= '1' then return 0 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
if #ARGV >= 4 then
  redis.call('HSET', KEYS[3], unpack(ARGV, 4))
end
return 1
