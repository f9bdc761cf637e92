-- release: put held jobs of a moved tenant back into one queue's structures, in the given
-- order: a job held with a due time (held-due hash) into its scheduled or retry set at
-- that time, any other onto the queue. Atomic per call: a job is held or released.
-- KEYS[1] held hash of the tenant (pj:held:TENANT)
-- KEYS[2] queue list (pj:q:NAME)
-- KEYS[3] wake list (pj:wake:NAME)
-- KEYS[4] queues set (pj:queues)
-- KEYS[5] held-due hash of the tenant (pj:helddue:TENANT)
-- KEYS[6] scheduled zset (pj:sched:NAME)
-- KEYS[7] retry zset (pj:retry:NAME)
-- ARGV[1] queue name
-- ARGV[2..] job ids, oldest first
-- Returns: number of jobs released (ids no longer held are skipped).
local n, pushed = 0, 0
for i = 2, #ARGV do
  local p = redis.call('HGET', KEYS[1], ARGV[i])
  if p then
    local d = redis.call('HGET', KEYS[5], ARGV[i])
    if d then
      local due = cjson.decode(d)
      redis.call('ZADD', due[1] == 'retry' and KEYS[7] or KEYS[6], tonumber(due[2]), p)
      redis.call('HDEL', KEYS[5], ARGV[i])
    else
      redis.call('LPUSH', KEYS[2], p)
      pushed = pushed + 1
    end
    redis.call('HDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
if n > 0 then
  redis.call('SADD', KEYS[4], ARGV[1])
  if pushed > 0 and redis.call('LLEN', KEYS[3]) == 0 then redis.call('LPUSH', KEYS[3], '1') end
end
return n
