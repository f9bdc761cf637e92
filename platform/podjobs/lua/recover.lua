-- recover: give the in-flight jobs of a worker back to the front of their queues.
-- Used for a worker whose heartbeat key expired (reaped) and by a worker that
-- stops (unregister). A live worker (heartbeat present) is left alone unless
-- ARGV[2] = "1" (the worker unregistering itself). A tracked job given back (its payload
-- has "track" and its status record exists, see podjobs.status) is queued again in its
-- record, with the payload, so it can be cancelled again.
-- KEYS[1] heartbeat key (pj:hb:WORKER)
-- KEYS[2] workers set (pj:workers)
-- KEYS[3] worker info hash (pj:worker:WORKER)
-- KEYS[4] recovered counter (pj:stat:recovered)
-- KEYS[5] the worker's last reservation (pj:rsv:WORKER), deleted with it
-- KEYS[6..] triples: in-flight hash, queue list, wake list
-- ARGV[1] worker id
-- ARGV[2] "1" to recover even though the heartbeat is present (self)
-- ARGV[3] prefix of status records (pj:status:), the job id appended; "" = none
-- ARGV[4] seconds an unfinished job's status record is kept
-- Returns: number of jobs given back, or -1 when the worker is alive.
--! include clock
if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
local prefix = ARGV[3] or ''
local now
local n = 0
for i = 6, #KEYS, 3 do
  local flat = redis.call('HGETALL', KEYS[i])
  if #flat > 0 then
    local jobs = {}
    for j = 2, #flat, 2 do jobs[#jobs + 1] = flat[j] end
    for j = 1, #jobs, 1000 do
      redis.call('RPUSH', KEYS[i + 1], unpack(jobs, j, math.min(j + 999, #jobs)))
    end
    n = n + #jobs
    redis.call('DEL', KEYS[i])
    if redis.call('LLEN', KEYS[i + 2]) == 0 then
      redis.call('LPUSH', KEYS[i + 2], '1')
    end
    if prefix ~= '' then
      for j = 1, #flat, 2 do
        local p = flat[j + 1]
        if string.find(p, '"track":', 1, true) then
          local k = prefix .. flat[j]
          if redis.call('EXISTS', k) == 1 then
            if not now then
              now = now_ms()
            end
            redis.call('HSET', k, 'state', 'queued', 'reason', 'recovered', 'payload', p,
              'run_at_ms', now, 'updated_ms', now)
            redis.call('HDEL', k, 'worker')
            redis.call('EXPIRE', k, ARGV[4])
          end
        end
      end
    end
  end
end
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[3], KEYS[5])
if n > 0 and ARGV[2] ~= '1' then redis.call('INCRBY', KEYS[4], n) end
return n
