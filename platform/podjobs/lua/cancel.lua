-- cancel: cancel a tracked job that has not started: remove it from its queue, its
-- scheduled or retry set, or the held hash of its moving tenant, only if it is still
-- there (a worker may have taken it), and mark its record cancelled.
-- KEYS[1] status hash (pj:status:ID)
-- KEYS[2] queue list (pj:q:NAME, the record's queue)
-- KEYS[3] scheduled zset (pj:sched:NAME)
-- KEYS[4] retry zset (pj:retry:NAME)
-- KEYS[5] held hash of the record's tenant (pj:held:TENANT) or the status hash again
-- KEYS[6] the job's unique key (pj:unique:JOB:DIGEST) or the status hash again
-- KEYS[7], KEYS[8] pending jobs and counts (pj:pending, pj:pendingn; podjobs.quota)
-- KEYS[9] the tenant's ready list in that queue (pj:qt:LEN:NAME:TENANT, fair share) or the
--         queue list again (an emptied list leaves the ring at the next reserve)
-- ARGV[1] job id
-- ARGV[2] the queue name KEYS[2..4] were built for
-- ARGV[3] seconds the cancelled record is kept
-- ARGV[4] "1" when KEYS[5] is a held hash
-- ARGV[5] "1" when KEYS[6] is a unique key
-- Returns: {outcome, state}: outcome "cancelled"; "already" (it was cancelled before);
--          "unknown" (no record); "stale" (the record names another queue now: read it
--          again); "refused" (it runs, ran, or a worker has just taken it); state is the
--          record's state afterwards.
--! include clock
--! include pending
local s = KEYS[1]
local st = redis.call('HGET', s, 'state')
if not st then return {'unknown', ''} end
if st == 'cancelled' then return {'already', st} end
if st ~= 'queued' and st ~= 'retrying' then return {'refused', st} end
if redis.call('HGET', s, 'queue') ~= ARGV[2] then return {'stale', st} end
local p = redis.call('HGET', s, 'payload')
if not p then return {'refused', st} end
local n = redis.call('LREM', KEYS[2], 1, p)
if n == 0 and KEYS[9] ~= KEYS[2] then n = redis.call('LREM', KEYS[9], 1, p) end
if n == 0 then n = redis.call('ZREM', KEYS[3], p) end
if n == 0 then n = redis.call('ZREM', KEYS[4], p) end
if n == 0 and ARGV[4] == '1' then n = redis.call('HDEL', KEYS[5], ARGV[1]) end
if n == 0 then return {'refused', st} end
unpend(KEYS[7], KEYS[8], ARGV[1])
if ARGV[5] == '1' and redis.call('GET', KEYS[6]) == ARGV[1] then
  redis.call('DEL', KEYS[6])
end
local now = now_ms()
redis.call('HSET', s, 'state', 'cancelled', 'reason', 'cancelled', 'updated_ms', now,
  'finished_ms', now)
redis.call('HDEL', s, 'payload', 'run_at_ms', 'worker')
redis.call('EXPIRE', s, ARGV[3])
return {'cancelled', 'cancelled'}
