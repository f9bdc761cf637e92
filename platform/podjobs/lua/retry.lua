-- retry: move a failed in-flight job into the retry set, due after a delay.
-- KEYS[1] in-flight hash (pj:inflight:WORKER:NAME)
-- KEYS[2] retry zset (pj:retry:NAME)
-- KEYS[3] failed counter (pj:stat:failed)
-- ARGV[1] job id
-- ARGV[2] delay in ms, counted on Redis' clock
-- ARGV[3] the payload for the next attempt (attempt count and error updated)
-- ARGV[4] "1" when the job was already acked (at-most-once) and need not be in flight
-- Returns: 1 when scheduled, 0 when the job was not in flight (nothing changed).
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 and ARGV[4] ~= '1' then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
redis.call('INCR', KEYS[3])
return 1
