-- zset_delete: drop one untracked scheduled or retrying job (a tracked one is cancelled by
-- cancel.lua instead, so its record says so).
-- KEYS[1] the sorted set (pj:sched:NAME or pj:retry:NAME)
-- ARGV[1] the member (the payload as stored)
-- Returns 1 when it was deleted, 0 when it was no longer there.
return redis.call('ZREM', KEYS[1], ARGV[1])
