-- dead: move a job into the capped dead set, keeping its reason and last error.
-- KEYS[1] in-flight hash (pj:inflight:WORKER:NAME)
-- KEYS[2] dead zset (pj:dead)
-- KEYS[3] dead counter (pj:stat:dead)
-- KEYS[4] unique key to release (pj:unique:JOB:DIGEST) or the dead zset again when none
-- KEYS[5] status hash (pj:status:ID), only for a tracked job
-- ARGV[1] job id
-- ARGV[2] payload with "dead_reason" and "error" set
-- ARGV[3] most jobs to keep in the dead set
-- ARGV[4] oldest dead job to keep, in ms of age
-- ARGV[5] "1" when the job need not be in flight (at-most-once, or already removed)
-- ARGV[6] "1" when KEYS[4] is a unique key
-- ARGV[7] status fields as a JSON object of strings (with KEYS[5])
-- ARGV[8] status TTL in seconds (with KEYS[5])
-- Returns: 1 when the job is now dead, 0 when it was not in flight.
--! include clock
--! include status
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 and ARGV[5] ~= '1' then
  return 0
end
local now = now_ms()
redis.call('ZADD', KEYS[2], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[4]))
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[3]) - 1)
redis.call('INCR', KEYS[3])
if ARGV[6] == '1' and redis.call('GET', KEYS[4]) == ARGV[1] then
  redis.call('DEL', KEYS[4])
end
if #KEYS >= 5 then
  write_status(KEYS[5], {'updated_ms', now, 'finished_ms', now}, ARGV[7],
    {'payload', 'worker', 'run_at_ms'}, ARGV[8])
end
return 1
