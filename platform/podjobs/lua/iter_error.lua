-- iter_error: an item (or a hook) raised; the job is retried with backoff from its last
-- checkpoint. Marks it `errored` with the error, keeping the cursor unless a new one is given.
-- KEYS[1] job hash (pj:iter:ID)
-- ARGV[1] run token
-- ARGV[2] cursor as JSON ("" keeps the last checkpoint)
-- ARGV[3] items processed since the last checkpoint (counted only with a cursor)
-- ARGV[4] the error, "Class: message"
-- Returns: "errored", or "lost" when another run has started since (nothing written).
--! include clock
--! include iter_run
local h = KEYS[1]
if not is_current_run(h, ARGV[1]) then return 'lost' end
local now = now_ms()
add_elapsed(h, now)
if ARGV[2] ~= '' then
  redis.call('HINCRBY', h, 'done', ARGV[3])
  redis.call('HSET', h, 'cursor', ARGV[2])
end
redis.call('HSET', h, 'state', 'errored', 'error', ARGV[4], 'reason', 'error', 'tick_ms', now,
  'updated_ms', now)
return 'errored'
