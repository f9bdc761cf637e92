-- dead_retry: move one job from the dead set (or a retry/scheduled set) to its queue now.
-- KEYS[1] the set holding the job (pj:dead, pj:retry:NAME or pj:sched:NAME)
-- KEYS[2] queue list (pj:q:NAME)
-- KEYS[3] wake list (pj:wake:NAME)
-- KEYS[4] queues set (pj:queues)
-- KEYS[5] status hash (pj:status:ID), only for a tracked job
-- ARGV[1] the member as stored
-- ARGV[2] the payload to enqueue (attempt count reset)
-- ARGV[3] queue name
-- ARGV[4] status fields as a JSON object of strings (with KEYS[5])
-- ARGV[5] status TTL in seconds (with KEYS[5])
-- Returns: 1 when moved, 0 when the member was not there (already retried or deleted).
--! include clock
--! include status
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('SADD', KEYS[4], ARGV[3])
redis.call('LPUSH', KEYS[2], ARGV[2])
if redis.call('LLEN', KEYS[3]) == 0 then
  redis.call('LPUSH', KEYS[3], '1')
end
if #KEYS >= 5 then
  local now = now_ms()
  write_status(KEYS[5], {'updated_ms', now, 'run_at_ms', now, 'payload', ARGV[2]}, ARGV[4], {},
    ARGV[5])
end
return 1
