-- iter_group: create a parallel group and record each of its parts as enqueued.
-- KEYS[1] group hash        (pj:itergroup:GID)
-- KEYS[2] groups index zset (pj:itergroups)
-- KEYS[3] index zset        (pj:iters)
-- KEYS[4..] the parts' job hashes (pj:iter:ID), in part order
-- ARGV[1] group id
-- ARGV[2] job name
-- ARGV[3] queue name
-- ARGV[4] tenant ("" for none)
-- ARGV[5] completion callback payload ("" for none), enqueued when the last part succeeds
-- ARGV[6] the callback's queue name ("" for none)
-- ARGV[7..] the parts' job ids, in part order
-- Returns: the number of parts.
--! include clock
local now = now_ms()
local n = #KEYS - 3
local ids = {}
for i = 1, n do ids[i] = ARGV[6 + i] end
redis.call('HSET', KEYS[1], 'parts', n, 'job', ARGV[2], 'queue', ARGV[3], 'tenant', ARGV[4],
  'callback', ARGV[5], 'cbq', ARGV[6], 'ids', table.concat(ids, ','), 'created_ms', now)
redis.call('ZADD', KEYS[2], now, ARGV[1])
for i = 1, n do
  redis.call('HSET', KEYS[3 + i], 'state', 'enqueued', 'job', ARGV[2], 'queue', ARGV[3],
    'tenant', ARGV[4], 'created_ms', now, 'done', 0, 'group', ARGV[1], 'part', i - 1)
  redis.call('ZADD', KEYS[3], now, ids[i])
end
return n
