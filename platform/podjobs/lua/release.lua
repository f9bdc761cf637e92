-- release: put held jobs of a moved tenant onto one queue, in the given order.
-- KEYS[1] held hash of the tenant (pj:held:TENANT)
-- KEYS[2] queue list (pj:q:NAME)
-- KEYS[3] wake list (pj:wake:NAME)
-- KEYS[4] queues set (pj:queues)
-- ARGV[1] queue name
-- ARGV[2..] job ids, oldest first
-- Returns: number of jobs released (ids no longer held are skipped).
local n = 0
for i = 2, #ARGV do
  local p = redis.call('HGET', KEYS[1], ARGV[i])
  if p then
    redis.call('LPUSH', KEYS[2], p)
    redis.call('HDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
if n > 0 then
  redis.call('SADD', KEYS[4], ARGV[1])
  if redis.call('LLEN', KEYS[3]) == 0 then redis.call('LPUSH', KEYS[3], '1') end
end
return n
