-- hold: keep jobs of a tenant that is being moved to this pod until the move
-- releases them. Once the move has finished (its marker is gone) the jobs go
-- straight onto their queue instead, so a late holder never strands a job.
-- KEYS[1] held hash of the tenant (pj:held:TENANT), field = job id
-- KEYS[2] move marker on this pod (pj:moving:TENANT)
-- KEYS[3] queue list (pj:q:NAME)
-- KEYS[4] wake list (pj:wake:NAME)
-- KEYS[5] queues set (pj:queues)
-- KEYS[6] status hash (pj:status:ID), only when ARGV[2] ~= "" (a tracked job: one pair)
-- ARGV[1] queue name
-- ARGV[2] status fields as a JSON object of strings ("" = untracked)
-- ARGV[3] status TTL in seconds
-- ARGV[4..] pairs: job id, payload
-- Returns: 1 when held, 0 when enqueued because the move had finished.
--! include clock
--! include status
if ARGV[2] ~= '' then
  local now = now_ms()
  write_status(KEYS[6], {'updated_ms', now, 'enqueued_ms', now, 'payload', ARGV[5], 'run_at_ms', now},
    ARGV[2], {}, ARGV[3])
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  for i = 4, #ARGV, 1000 do
    redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
  end
  return 1
end
for i = 5, #ARGV, 2 do
  redis.call('LPUSH', KEYS[3], ARGV[i])
end
redis.call('SADD', KEYS[5], ARGV[1])
if redis.call('LLEN', KEYS[4]) == 0 then redis.call('LPUSH', KEYS[4], '1') end
return 0
