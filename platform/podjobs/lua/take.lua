-- take: remove given payloads from a queue list or a sorted set (after they
-- were copied elsewhere, e.g. to the pod a tenant moves to).
-- KEYS[1] queue list (pj:q:NAME), sorted set (pj:sched:NAME, pj:retry:NAME)
--         or held hash (pj:held:TENANT)
-- ARGV[1] "list", "zset" or "hash"
-- ARGV[2..] payloads as stored (job ids for "hash")
-- Returns: number removed.
local n = 0
for i = 2, #ARGV do
  if ARGV[1] == 'list' then
    n = n + redis.call('LREM', KEYS[1], 1, ARGV[i])
  elseif ARGV[1] == 'hash' then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  else
    n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return n
