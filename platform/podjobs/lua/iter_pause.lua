-- iter_pause: ask an iteration job to pause. A running job stops at its next item boundary
-- and is parked (iter_park); a job waiting in a queue, schedule or retry set is marked
-- `paused` at once and parked when a worker takes it (iter_start).
-- KEYS[1] job hash (pj:iter:ID)
-- Returns: the job's state afterwards ("" when the job is unknown); a finished, cancelling
--          or already paused job is left as it is.
local h = KEYS[1]
local st = redis.call('HGET', h, 'state')
if not st then return '' end
if st == 'succeeded' or st == 'cancelled' or st == 'cancelling' or st == 'paused' then
  return st
end
redis.call('HSET', h, 'control', 'pause')
if st ~= 'running' then
  redis.call('HSET', h, 'prev', st, 'state', 'paused')
  return 'paused'
end
return st
