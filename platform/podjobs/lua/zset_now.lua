-- zset_now: run one scheduled or retrying job now, before the jobs waiting in its queue:
-- the member moves from its sorted set to the taking end of the queue, and an idle worker
-- is woken.
-- KEYS[1] the sorted set (pj:sched:NAME or pj:retry:NAME)
-- KEYS[2] the queue list (pj:q:NAME)
-- KEYS[3] the queue's wake list (pj:wake:NAME)
-- ARGV[1] the member (the payload as stored)
-- Returns 1 when it moved, 0 when it was no longer there (it came due, or was taken).
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('RPUSH', KEYS[2], ARGV[1])
if redis.call('LLEN', KEYS[3]) == 0 then
  redis.call('LPUSH', KEYS[3], '1')
end
return 1
