-- queue_resume: workers take jobs from the queue again; an idle worker is woken at once
-- when jobs waited in it.
-- KEYS[1] paused queues (pj:paused: a set of queue list keys)
-- KEYS[2] the queue's list (pj:q:NAME)
-- KEYS[3] the queue's wake list (pj:wake:NAME)
-- KEYS[4] the queue's ring (pj:ring:NAME: its tenants' lists with jobs, fair share)
-- Returns 1 when it was paused, 0 when it was not.
local was = redis.call('SREM', KEYS[1], KEYS[2])
if (redis.call('LLEN', KEYS[2]) > 0 or redis.call('LLEN', KEYS[4]) > 0) and redis.call('LLEN', KEYS[3]) == 0 then
  redis.call('LPUSH', KEYS[3], '1')
end
return was
