-- end_hold: finish holding for a tenant once nothing is held any more.
-- KEYS[1] held hash of the tenant (pj:held:TENANT)
-- KEYS[2] move marker on this pod (pj:moving:TENANT)
-- KEYS[3] held-due hash of the tenant (pj:helddue:TENANT)
-- Returns: 0 when the marker is gone (later holds enqueue directly), else the
-- number of jobs still held (release them, then call again).
local n = redis.call('HLEN', KEYS[1])
if n == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('DEL', KEYS[3])
end
return n
