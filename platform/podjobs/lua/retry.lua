-- retry: move a failed in-flight job into the retry set, due after a delay.
-- KEYS[1] in-flight hash (pj:inflight:WORKER:NAME)
-- KEYS[2] retry zset (pj:retry:NAME)
-- KEYS[3] failed counter (pj:stat:failed)
-- KEYS[4] status hash (pj:status:ID), only for a tracked job
-- ARGV[1] job id
-- ARGV[2] delay in ms, counted on Redis' clock
-- ARGV[3] the payload for the next attempt (attempt count and error updated)
-- ARGV[4] "1" when the job was already acked (at-most-once) and need not be in flight
-- ARGV[5] status fields as a JSON object of strings (with KEYS[4])
-- ARGV[6] status TTL in seconds (with KEYS[4])
-- Returns: 1 when scheduled, 0 when the job was not in flight (nothing changed).
--! include clock
--! include status
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 and ARGV[4] ~= '1' then
  return 0
end
local now = now_ms()
local due = now + tonumber(ARGV[2])
redis.call('ZADD', KEYS[2], due, ARGV[3])
redis.call('INCR', KEYS[3])
if #KEYS >= 4 then
  write_status(KEYS[4], {'updated_ms', now, 'run_at_ms', due, 'payload', ARGV[3]}, ARGV[5],
    {'worker'}, tonumber(ARGV[6]) + math.ceil(tonumber(ARGV[2]) / 1000))
end
return 1
