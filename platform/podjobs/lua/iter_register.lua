-- iter_register: record an iteration job as enqueued; nothing when it is already known
-- (a worker may have started it first).
-- KEYS[1] job hash  (pj:iter:ID)
-- KEYS[2] index zset (pj:iters)
-- ARGV[1] job id
-- ARGV[2] job name
-- ARGV[3] queue name
-- ARGV[4] tenant ("" for none)
-- Returns: 1 when recorded, 0 when the job was already known.
--! include clock
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local now = now_ms()
redis.call('HSET', KEYS[1], 'state', 'enqueued', 'job', ARGV[2], 'queue', ARGV[3],
  'tenant', ARGV[4], 'created_ms', now, 'done', 0)
redis.call('ZADD', KEYS[2], now, ARGV[1])
return 1
