-- include pending: the exact pending count of tenants with a pending cap (podjobs.quota).
-- A job enqueued under a cap is recorded (pj:pending: id -> tenant, pj:pendingn: tenant ->
-- count) and forgotten once: when first reserved, cancelled, deleted or carried away.
local function job_id(p)
  local _, e = string.find(p, '^{"id":"%w+"')
  if e == 34 then return string.sub(p, 8, 33) end
  return nil
end
local function unpend(pend, count, id)
  local t = redis.call('HGET', pend, id)
  if t then
    redis.call('HDEL', pend, id)
    if redis.call('HINCRBY', count, t, -1) <= 0 then redis.call('HDEL', count, t) end
  end
end
