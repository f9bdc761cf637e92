-- outbox_push: the outbox relay moves committed jobs of one queue to Redis, each at most once.
-- KEYS[1] queue list        (pj:q:NAME)
-- KEYS[2] wake list         (pj:wake:NAME)
-- KEYS[3] queues set        (pj:queues)
-- KEYS[4] scheduled zset    (pj:sched:NAME)
-- KEYS[5..] one sent marker per job (pj:obx:ID): a job whose marker exists was pushed before
--         (a relay killed between this push and deleting the rows pushes them again)
-- ARGV[1] queue name
-- ARGV[2] milliseconds a sent marker is kept
-- ARGV[3..] pairs: due epoch ms (0 = now), payload; in outbox order
-- Returns the number of jobs written (the others were pushed before).
--! include clock
local n = 0
local now = nil
redis.call('SADD', KEYS[3], ARGV[1])
for k = 5, #KEYS do
  local i = 3 + (k - 5) * 2
  if redis.call('SET', KEYS[k], 1, 'NX', 'PX', ARGV[2]) then
    local due = tonumber(ARGV[i])
    if due > 0 then
      now = now or now_ms()
    end
    if due > 0 and due > now then
      redis.call('ZADD', KEYS[4], due, ARGV[i + 1])
    else
      redis.call('LPUSH', KEYS[1], ARGV[i + 1])
    end
    n = n + 1
  end
end
if n > 0 and redis.call('LLEN', KEYS[2]) == 0 then
  redis.call('LPUSH', KEYS[2], '1')
end
return n
