-- accept: write jobs carried from another pod into this pod's held hash of the tenant,
-- keyed by job id, so writing the same jobs twice (a mover killed after this call and
-- run again) holds each once. A scheduled or retrying job keeps its set and due time
-- in the held-due hash; `release` puts it back there. Nothing here can run until released.
-- KEYS[1] held hash of the tenant (pj:held:TENANT), field = job id, value = payload
-- KEYS[2] held-due hash of the tenant (pj:helddue:TENANT), field = job id, value = [kind, score]
-- ARGV quadruples: job id, kind ("queue", "sched" or "retry"), score (due ms; "0" for a queue), payload
-- Returns: number of jobs written.
local n = 0
for i = 1, #ARGV, 4 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 3])
  if ARGV[i + 1] == 'queue' then
    redis.call('HDEL', KEYS[2], ARGV[i])
  else
    redis.call('HSET', KEYS[2], ARGV[i], cjson.encode({ARGV[i + 1], ARGV[i + 2]}))
  end
  n = n + 1
end
return n
