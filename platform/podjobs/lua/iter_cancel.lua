-- iter_cancel: cancel an iteration job. A running job becomes `cancelling` and stops at its
-- next item boundary; any other unfinished job is `cancelled` at once (a parked payload is
-- dropped; a copy waiting in a queue is dropped when a worker takes it, by iter_start).
-- KEYS[1] job hash (pj:iter:ID)
-- ARGV[1] seconds a finished job's hash is kept
-- Returns: the job's state afterwards ("" when the job is unknown).
--! include clock
local h = KEYS[1]
local st = redis.call('HGET', h, 'state')
if not st then return '' end
if st == 'succeeded' or st == 'cancelled' or st == 'cancelling' then return st end
if st == 'running' then
  redis.call('HSET', h, 'control', 'cancel', 'state', 'cancelling')
  return 'cancelling'
end
local now = now_ms()
redis.call('HDEL', h, 'parked', 'run')
redis.call('HSET', h, 'state', 'cancelled', 'control', '', 'finished_ms', now, 'updated_ms', now)
redis.call('EXPIRE', h, ARGV[1])
return 'cancelled'
