-- carry: take a moving tenant's jobs out of this (the source) pod into a staging
-- hash, atomically, before they are written to the destination pod. A job a
-- worker reserved meanwhile is simply not there any more (LREM/ZREM find
-- nothing): that worker sends it to the destination itself.
-- KEYS[1] the list or sorted set holding the jobs (pj:q:NAME, pj:sched:NAME, pj:retry:NAME)
-- KEYS[2] staging hash on this pod (pj:carry:TENANT)
-- KEYS[3], KEYS[4] pending jobs and counts (pj:pending, pj:pendingn; podjobs.quota): a
--         carried job is no longer pending here
-- ARGV[1] "queue", "sched" or "retry"
-- ARGV[2] queue name
-- ARGV[3..] triples: job id, payload as stored, score ("0" for a list)
-- Returns: number of jobs staged.
--! include pending
local n = 0
for i = 3, #ARGV, 3 do
  local removed
  if ARGV[1] == 'queue' then
    removed = redis.call('LREM', KEYS[1], 1, ARGV[i + 1])
  else
    removed = redis.call('ZREM', KEYS[1], ARGV[i + 1])
  end
  if removed > 0 then
    redis.call('HSET', KEYS[2], ARGV[i], cjson.encode({ARGV[1], ARGV[2], ARGV[i + 2], ARGV[i + 1]}))
    unpend(KEYS[3], KEYS[4], ARGV[i])
    n = n + 1
  end
end
return n
