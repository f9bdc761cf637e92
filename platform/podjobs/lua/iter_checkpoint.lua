-- iter_checkpoint: save a running job's cursor and progress after an item (or batch).
-- KEYS[1] job hash (pj:iter:ID)
-- ARGV[1] run token (from iter_start)
-- ARGV[2] cursor as JSON (the position after the last item processed)
-- ARGV[3] items processed since the last checkpoint
-- ARGV[4] total items ("" when unknown)
-- Returns: the pending request ("" | "pause" | "cancel"), or "lost" when another run of
--          the job has started since (nothing written: this run must stop).
--! include clock
--! include iter_run
local h = KEYS[1]
if not is_current_run(h, ARGV[1]) then return 'lost' end
local now = now_ms()
add_elapsed(h, now)
redis.call('HINCRBY', h, 'done', ARGV[3])
redis.call('HSET', h, 'cursor', ARGV[2], 'tick_ms', now, 'updated_ms', now)
if ARGV[4] ~= '' then redis.call('HSET', h, 'total', ARGV[4]) end
return redis.call('HGET', h, 'control') or ''
