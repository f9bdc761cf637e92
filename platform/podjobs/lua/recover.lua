-- recover: give the in-flight jobs of a worker back to the front of their queues.
-- Used for a worker whose heartbeat key expired (reaped) and by a worker that
-- stops (unregister). A live worker (heartbeat present) is left alone unless
-- ARGV[2] = "1" (the worker unregistering itself).
-- KEYS[1] heartbeat key (pj:hb:WORKER)
-- KEYS[2] workers set (pj:workers)
-- KEYS[3] worker info hash (pj:worker:WORKER)
-- KEYS[4] recovered counter (pj:stat:recovered)
-- KEYS[5..] triples: in-flight hash, queue list, wake list
-- ARGV[1] worker id
-- ARGV[2] "1" to recover even though the heartbeat is present (self)
-- Returns: number of jobs given back, or -1 when the worker is alive.
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
local n = 0
for i = 5, #KEYS, 3 do
  local jobs = redis.call('HVALS', KEYS[i])
  if #jobs > 0 then
    for j = 1, #jobs, 1000 do
      redis.call('RPUSH', KEYS[i + 1], unpack(jobs, j, math.min(j + 999, #jobs)))
    end
    n = n + #jobs
    redis.call('DEL', KEYS[i])
    if redis.call('LLEN', KEYS[i + 2]) == 0 then
      redis.call('LPUSH', KEYS[i + 2], '1')
    end
  end
end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[3])
if n > 0 and ARGV[2] ~= '1' then redis.call('INCRBY', KEYS[4], n) end
return n
