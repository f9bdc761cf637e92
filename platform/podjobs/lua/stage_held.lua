-- stage_held: a rollback takes held jobs of the tenant off this (the destination) pod into
-- its staging hash, atomically per job, before they are written back to the source pod.
-- KEYS[1] held hash of the tenant (pj:held:TENANT)
-- KEYS[2] held-due hash of the tenant (pj:helddue:TENANT)
-- KEYS[3] staging hash on this pod (pj:carry:TENANT), value = [kind, queue, score, payload]
-- ARGV job ids
-- Returns: number of jobs staged (ids no longer held are skipped).
local n = 0
for i = 1, #ARGV do
  local p = redis.call('HGET', KEYS[1], ARGV[i])
  if p then
    local kind, score = 'queue', '0'
    local d = redis.call('HGET', KEYS[2], ARGV[i])
    if d then
      local due = cjson.decode(d)
      kind, score = due[1], due[2]
    end
    local ok, job = pcall(cjson.decode, p)
    local queue = 'default'
    if ok and type(job) == 'table' and type(job['queue']) == 'string' then queue = job['queue'] end
    redis.call('HSET', KEYS[3], ARGV[i], cjson.encode({kind, queue, score, p}))
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('HDEL', KEYS[2], ARGV[i])
    n = n + 1
  end
end
return n
