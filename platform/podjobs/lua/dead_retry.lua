-- dead_retry: move one job from the dead set (or a retry/scheduled set) to its queue now.
-- KEYS[1] the set holding the job (pj:dead, pj:retry:NAME or pj:sched:NAME)
-- KEYS[2] queue list (pj:q:NAME)
-- KEYS[3] wake list (pj:wake:NAME)
-- KEYS[4] queues set (pj:queues)
-- ARGV[1] the member as stored
-- ARGV[2] the payload to enqueue (attempt count reset)
-- ARGV[3] queue name
-- Returns: 1 when moved, 0 when the member was not there (already retried or deleted).
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('SADD', KEYS[4], ARGV[3])
redis.call('LPUSH', KEYS[2], ARGV[2])
if redis.call('LLEN', KEYS[3]) == 0 then
  redis.call('LPUSH', KEYS[3], '1')
end
return 1
