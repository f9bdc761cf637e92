-- iter_resume: undo a pause. A parked job goes back on its queue (at the back, with its
-- cursor) as `enqueued`, and its status record, when it has one (a tracked job, see
-- podjobs.status), says queued with that payload (so a cancel can take it off the queue);
-- a pause not yet carried out is withdrawn.
-- KEYS[1] job hash    (pj:iter:ID)
-- KEYS[2] queue list  (pj:q:NAME, the job's queue)
-- KEYS[3] wake list   (pj:wake:NAME)
-- KEYS[4] queues set  (pj:queues)
-- KEYS[5] status hash (pj:status:ID)
-- ARGV[1] queue name
-- ARGV[2] seconds an unfinished job's status record is kept
-- Returns: the job's state afterwards ("" when the job is unknown).
--! include clock
local h = KEYS[1]
local st = redis.call('HGET', h, 'state')
if not st then return '' end
local parked = redis.call('HGET', h, 'parked')
if parked then
  local now = now_ms()
  redis.call('SADD', KEYS[4], ARGV[1])
  redis.call('LPUSH', KEYS[2], parked)
  if redis.call('LLEN', KEYS[3]) == 0 then redis.call('LPUSH', KEYS[3], '1') end
  redis.call('HDEL', h, 'parked')
  redis.call('HSET', h, 'state', 'enqueued', 'control', '', 'updated_ms', now)
  if redis.call('EXISTS', KEYS[5]) == 1 then
    redis.call('HSET', KEYS[5], 'state', 'queued', 'reason', 'resumed', 'payload', parked,
      'queue', ARGV[1], 'run_at_ms', now, 'updated_ms', now)
    redis.call('HDEL', KEYS[5], 'finished_ms', 'worker')
    redis.call('EXPIRE', KEYS[5], ARGV[2])
  end
  return 'enqueued'
end
if (redis.call('HGET', h, 'control') or '') ~= 'pause' then return st end
redis.call('HSET', h, 'control', '')
if st == 'paused' then
  st = redis.call('HGET', h, 'prev') or 'enqueued'
  redis.call('HSET', h, 'state', st)
end
return st
