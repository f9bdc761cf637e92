-- take: remove given payloads from a queue list or a sorted set (after they
-- were copied elsewhere, e.g. to the pod a tenant moves to).
-- KEYS[1] queue list (pj:q:NAME) or sorted set (pj:sched:NAME, pj:retry:NAME)
-- ARGV[1] "list" or "zset"
-- ARGV[2..] payloads as stored
-- Returns: number removed.
local n = 0
for i = 2, #ARGV do
  if ARGV[1] == 'list' then
    n = n + redis.call('LREM', KEYS[1], 1, ARGV[i])
  else
    n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return n
