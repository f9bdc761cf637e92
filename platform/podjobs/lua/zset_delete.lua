-- zset_delete: drop one untracked scheduled or retrying job (a tracked one is cancelled by
-- cancel.lua instead, so its record says so).
-- KEYS[1] the sorted set (pj:sched:NAME or pj:retry:NAME)
-- KEYS[2], KEYS[3] pending jobs and counts (pj:pending, pj:pendingn; podjobs.quota)
-- ARGV[1] the member (the payload as stored)
-- Returns 1 when it was deleted, 0 when it was no longer there.
--! include pending
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local id = job_id(ARGV[1])
if id then unpend(KEYS[2], KEYS[3], id) end
return 1
