-- include iter_run: the run fence and running time of an iteration job's hash (pj:iter:ID).
-- is_current_run(h, token): true while `token` is the hash's current run (iter_start gave
-- it); a write of an older run is refused ("lost") before it changes anything.
-- add_elapsed(h, now): add the time since the last tick (tick_ms) to elapsed_ms.
local function is_current_run(h, token)
  return redis.call('HGET', h, 'run') == token
end
local function add_elapsed(h, now)
  local tick = tonumber(redis.call('HGET', h, 'tick_ms') or now)
  redis.call('HINCRBY', h, 'elapsed_ms', math.max(0, now - tick))
end
