-- iter_park: a running job with a pending pause stops at an item boundary and is parked
-- here with its payload until `resume` puts it back on its queue.
-- KEYS[1] job hash (pj:iter:ID)
-- ARGV[1] run token
-- ARGV[2] cursor as JSON
-- ARGV[3] items processed since the last checkpoint
-- ARGV[4] total items ("" when unknown)
-- ARGV[5] the payload to park (with the cursor in it)
-- Returns: "parked"; "lost" when another run has started since; otherwise the pending
--          request ("" when the pause was withdrawn, "cancel") and nothing was written.
--! include clock
--! include iter_run
local h = KEYS[1]
if not is_current_run(h, ARGV[1]) then return 'lost' end
local control = redis.call('HGET', h, 'control') or ''
if control ~= 'pause' then return control end
local now = now_ms()
add_elapsed(h, now)
redis.call('HINCRBY', h, 'done', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', h, 'total', ARGV[4]) end
redis.call('HSET', h, 'state', 'paused', 'control', '', 'parked', ARGV[5], 'cursor', ARGV[2],
  'reason', 'paused', 'tick_ms', now, 'updated_ms', now)
return 'parked'
