-- requeue: give jobs a worker reserved but did not start back to the front of
-- their queue (graceful shutdown, or a job refused by this worker).
-- KEYS[1] in-flight hash (pj:inflight:WORKER:NAME)
-- KEYS[2] queue list (pj:q:NAME)
-- KEYS[3] wake list (pj:wake:NAME)
-- ARGV    pairs: job id, payload
-- Returns: number of jobs given back (those still in flight).
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[i + 1])
    n = n + 1
  end
end
if n > 0 and redis.call('LLEN', KEYS[3]) == 0 then
  redis.call('LPUSH', KEYS[3], '1')
end
return n
