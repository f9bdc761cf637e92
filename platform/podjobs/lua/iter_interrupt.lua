-- iter_interrupt: a running job stops at an item boundary (worker shutdown, max runtime,
-- throttle) and is about to be put back on its queue with its cursor: checkpoint and mark it.
-- A pause requested meanwhile makes it `paused` (iter_start parks it); a cancel, `cancelling`.
-- KEYS[1] job hash (pj:iter:ID)
-- ARGV[1] run token
-- ARGV[2] cursor as JSON
-- ARGV[3] items processed since the last checkpoint
-- ARGV[4] total items ("" when unknown)
-- ARGV[5] why it stopped (shutdown | max_runtime | throttled | ...)
-- Returns: the new state, or "lost" when another run has started since (nothing written).
--! include clock
--! include iter_run
local h = KEYS[1]
if not is_current_run(h, ARGV[1]) then return 'lost' end
local now = now_ms()
add_elapsed(h, now)
redis.call('HINCRBY', h, 'done', ARGV[3])
redis.call('HINCRBY', h, 'interrupted', 1)
if ARGV[4] ~= '' then redis.call('HSET', h, 'total', ARGV[4]) end
local control = redis.call('HGET', h, 'control') or ''
local st = 'interrupted'
if control == 'pause' then
  st = 'paused'
  redis.call('HSET', h, 'prev', 'interrupted')
elseif control == 'cancel' then
  st = 'cancelling'
end
redis.call('HSET', h, 'state', st, 'cursor', ARGV[2], 'reason', ARGV[5], 'tick_ms', now,
  'updated_ms', now)
return st
