-- promote: move due jobs from scheduled and retry sets into their queues.
-- Due means score <= now on Redis' clock.
-- KEYS: groups of four per queue: scheduled zset, retry zset, queue list, wake list
--       (pj:sched:NAME, pj:retry:NAME, pj:q:NAME, pj:wake:NAME)
-- ARGV[1] most jobs to move per set in one call
-- Returns: number of jobs moved.
--! include clock
local now = now_ms()
local limit = tonumber(ARGV[1])
local moved = 0
for i = 1, #KEYS, 4 do
  local before = moved
  for j = 0, 1 do
    local due = redis.call('ZRANGEBYSCORE', KEYS[i + j], '-inf', now, 'LIMIT', 0, limit)
    if #due > 0 then
      redis.call('ZREM', KEYS[i + j], unpack(due))
      redis.call('LPUSH', KEYS[i + 2], unpack(due))
      moved = moved + #due
    end
  end
  if moved > before and redis.call('LLEN', KEYS[i + 3]) == 0 then
    redis.call('LPUSH', KEYS[i + 3], '1')
  end
end
return moved
