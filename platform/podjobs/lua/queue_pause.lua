-- queue_pause: workers stop taking jobs from a queue (reserve.lua passes it over); jobs
-- keep arriving (enqueue, the poller) and wait in it.
-- KEYS[1] paused queues (pj:paused: a set of queue list keys)
-- KEYS[2] the queue's list (pj:q:NAME)
-- Returns 1 when it was running, 0 when it was paused already.
return redis.call('SADD', KEYS[1], KEYS[2])
