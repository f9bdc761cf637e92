-- reenqueue: put an in-flight job back, not as a failure: an interrupted
-- iteration job resuming from its checkpoint, a throttled job waiting a while.
-- The attempt count is the caller's (unchanged for a resume).
-- KEYS[1] in-flight hash (pj:inflight:WORKER:NAME)
-- KEYS[2] queue list (pj:q:NAME)
-- KEYS[3] wake list (pj:wake:NAME)
-- KEYS[4] scheduled zset (pj:sched:NAME)
-- KEYS[5] status hash (pj:status:ID), only for a tracked job
-- ARGV[1] job id
-- ARGV[2] delay in ms on Redis' clock (0 = at the back of the queue now)
-- ARGV[3] the payload to put back
-- ARGV[4] "1" when the job need not be in flight (at-most-once)
-- ARGV[5] status fields as a JSON object of strings (with KEYS[5])
-- ARGV[6] status TTL in seconds (with KEYS[5])
-- Returns: 1 when put back, 0 when the job was no longer in flight.
--! include clock
--! include status
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 and ARGV[4] ~= '1' then
  return 0
end
local delay = tonumber(ARGV[2])
local now = now_ms()
if delay > 0 then
  redis.call('ZADD', KEYS[4], now + delay, ARGV[3])
else
  redis.call('LPUSH', KEYS[2], ARGV[3])
  if redis.call('LLEN', KEYS[3]) == 0 then redis.call('LPUSH', KEYS[3], '1') end
end
if #KEYS >= 5 then
  write_status(KEYS[5], {'updated_ms', now, 'run_at_ms', now + delay, 'payload', ARGV[3]},
    ARGV[5], {'worker'}, tonumber(ARGV[6]) + math.ceil(delay / 1000))
end
return 1
