-- outbox_claim: a tenant move takes outbox rows of its tenant off the source pod's relay.
-- Each job's sent marker (the one outbox_push sets) is set to the move's id unless it
-- exists: the job is then the move's to carry (it holds it on the destination), and a relay
-- that read the row before and pushes it later writes nothing. A marker the relay set first
-- means the job was already pushed onto this pod's queue (in the same script as its marker),
-- where the move's carry (or the pod's workers' tenant check) takes it.
-- KEYS[1..] one sent marker per job (pj:obx:ID)
-- ARGV[1] milliseconds a marker is kept
-- ARGV[2] the move's id (the owner written into the markers)
-- Returns one flag per key: 1 = the move's (set now, or by this move before: a resumed
-- move), 0 = pushed by a relay.
local out = {}
for k = 1, #KEYS do
  if redis.call('SET', KEYS[k], ARGV[2], 'NX', 'PX', ARGV[1]) then
    out[k] = 1
  elseif redis.call('GET', KEYS[k]) == ARGV[2] then
    out[k] = 1
  else
    out[k] = 0
  end
end
return out
