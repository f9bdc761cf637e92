-- iter_finish: a run ends for good (enumerator exhausted: succeeded; or cancelled). For a
-- part of a parallel group that succeeded, count it, and when it is the group's last part
-- enqueue the group's completion callback (once, whatever the duplicates).
-- KEYS[1] job hash (pj:iter:ID)
-- KEYS[2] group hash (pj:itergroup:GID)        } only for a part of a group
-- KEYS[3] group done set (pj:itergroup:GID:done) }
-- KEYS[4] callback queue list (pj:q:NAME)       }
-- KEYS[5] callback wake list (pj:wake:NAME)     }
-- KEYS[6] queues set (pj:queues)                }
-- ARGV[1] run token
-- ARGV[2] cursor as JSON
-- ARGV[3] items processed since the last checkpoint
-- ARGV[4] total items ("" when unknown)
-- ARGV[5] final state: "succeeded" | "cancelled"
-- ARGV[6] seconds the finished job's hash is kept
-- ARGV[7] part number ("" when not in a group)
-- ARGV[8] callback queue name ("" when not in a group)
-- Returns: "lost" (another run has started since; nothing written), "done", or "fired"
--          (the group's last part: its callback was enqueued).
--! include clock
--! include iter_run
local h = KEYS[1]
if not is_current_run(h, ARGV[1]) then return 'lost' end
local now = now_ms()
add_elapsed(h, now)
redis.call('HINCRBY', h, 'done', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', h, 'total', ARGV[4]) end
redis.call('HSET', h, 'state', ARGV[5], 'reason', ARGV[5], 'cursor', ARGV[2], 'control', '', 'tick_ms', now,
  'updated_ms', now, 'finished_ms', now)
redis.call('HDEL', h, 'run')
redis.call('EXPIRE', h, ARGV[6])
if #KEYS < 6 or ARGV[5] ~= 'succeeded' then return 'done' end
redis.call('SADD', KEYS[3], ARGV[7])
local parts = tonumber(redis.call('HGET', KEYS[2], 'parts') or '0')
if redis.call('SCARD', KEYS[3]) < parts or redis.call('HSETNX', KEYS[2], 'fired_ms', now) == 0 then
  return 'done'
end
local cb = redis.call('HGET', KEYS[2], 'callback') or ''
if cb ~= '' then
  cb = string.gsub(cb, '"enqueued_at":%d+', '"enqueued_at":' .. now, 1)
  redis.call('SADD', KEYS[6], ARGV[8])
  redis.call('LPUSH', KEYS[4], cb)
  if redis.call('LLEN', KEYS[5]) == 0 then redis.call('LPUSH', KEYS[5], '1') end
end
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('EXPIRE', KEYS[3], ARGV[6])
return 'fired'
