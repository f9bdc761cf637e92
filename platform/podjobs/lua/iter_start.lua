-- iter_start: a worker starts (or resumes) an iteration job: decide whether it runs.
-- A cancelled or finished job does not run again (a duplicate delivery is dropped); a job
-- with a pending pause is parked here with its payload; otherwise it becomes `running`
-- under a fresh run token that fences off checkpoints of any older run.
-- KEYS[1] job hash  (pj:iter:ID)
-- KEYS[2] index zset (pj:iters)
-- ARGV[1] job id
-- ARGV[2] job name
-- ARGV[3] queue name
-- ARGV[4] tenant ("" for none)
-- ARGV[5] run token
-- ARGV[6] worker id
-- ARGV[7] the payload the job runs with (parked when a pause is pending)
-- ARGV[8] the payload's cursor as JSON ("" for none); used only when the hash has none
-- ARGV[9] seconds a finished job's hash is kept
-- Returns: {decision, cursor JSON or "", items done, 1 on the first run else 0}
--          decision: "run" | "paused" | "cancelled" | "succeeded"
--! include clock
local now = now_ms()
local h = KEYS[1]
local st = redis.call('HGET', h, 'state')
if not st then
  redis.call('HSET', h, 'state', 'enqueued', 'job', ARGV[2], 'queue', ARGV[3],
    'tenant', ARGV[4], 'created_ms', now, 'done', 0)
  if ARGV[8] ~= '' then redis.call('HSET', h, 'cursor', ARGV[8]) end
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  st = 'enqueued'
end
if st == 'succeeded' or st == 'cancelled' then return {st, '', 0, 0} end
local control = redis.call('HGET', h, 'control') or ''
if control == 'cancel' then
  redis.call('HSET', h, 'state', 'cancelled', 'control', '', 'finished_ms', now, 'updated_ms', now)
  redis.call('EXPIRE', h, ARGV[9])
  return {'cancelled', '', 0, 0}
end
if st == 'paused' and redis.call('HEXISTS', h, 'parked') == 1 then
  return {'paused', '', 0, 0}  -- a duplicate delivery of a parked job: the parked copy stays
end
if control == 'pause' then
  redis.call('HSET', h, 'state', 'paused', 'control', '', 'parked', ARGV[7], 'updated_ms', now)
  return {'paused', '', 0, 0}
end
local first = redis.call('HEXISTS', h, 'started_ms') == 0
redis.call('HSET', h, 'state', 'running', 'run', ARGV[5], 'worker', ARGV[6], 'tick_ms', now,
  'updated_ms', now, 'error', '')
if first then redis.call('HSET', h, 'started_ms', now) end
redis.call('HINCRBY', h, 'runs', 1)
local cursor = redis.call('HGET', h, 'cursor') or ''
local done = redis.call('HGET', h, 'done') or '0'
return {'run', cursor, tonumber(done), first and 1 or 0}
