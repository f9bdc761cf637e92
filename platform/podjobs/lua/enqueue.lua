-- enqueue: add one or many payloads to a queue, now or later, optionally unique.
-- KEYS[1] queue list        (pj:q:NAME)
-- KEYS[2] wake list         (pj:wake:NAME)
-- KEYS[3] queues set        (pj:queues)
-- KEYS[4] scheduled zset    (pj:sched:NAME)
-- KEYS[5] unique key        (pj:unique:JOB:DIGEST), only when ARGV[4] > 0
-- KEYS[6] request marker    (pj:req:ID, ID = the first job's id): the answer of this call, kept
--         ARGV[8] ms, so that a re-send of the same call (a reply lost on a dropped
--         connection) writes nothing again and gets the same answer
-- KEYS[7] status hash       (pj:status:ID) when ARGV[6] ~= "" (a tracked job: one payload),
--         else the queue list again
-- KEYS[8], KEYS[9] fair share (include/fair.lua), only for a tenant's jobs: the tenant's
--         list (pj:qt:LEN:NAME:TENANT) and the queue's ring (pj:ring:NAME); jobs due now go
--         to the tenant's list instead of KEYS[1]
-- ARGV[1] queue name
-- ARGV[2] when: "now" | "in" (ARGV[3] = delay ms from Redis' clock) | "at" (ARGV[3] = epoch ms)
-- ARGV[3] milliseconds (see ARGV[2])
-- ARGV[4] unique ttl in ms (0 = not unique)
-- ARGV[5] id of the job that would own the unique key
-- ARGV[6] status fields as a JSON object of strings ("" = untracked)
-- ARGV[7] status TTL in seconds (a job due later keeps its record that much longer)
-- ARGV[8] milliseconds the request marker is kept
-- ARGV[9] the tenant's quota (podjobs.quota): "" = none, else "rate|bucket|pending|tenant"
--         (an empty field = not limited), with three more KEYS after the others:
--         KEYS[#KEYS - 2] the tenant's token bucket (pj:rate:TENANT: t = tokens, ms = when)
--         KEYS[#KEYS - 1] pending jobs (pj:pending: job id -> tenant)
--         KEYS[#KEYS]     pending counts (pj:pendingn: tenant -> count)
-- ARGV[10..] payloads
-- Returns: number of payloads written, or 0 when the unique key is already held (a re-send:
-- the first call's answer); over a quota nothing is written and it returns
-- {'rate', ms until enough tokens (-1: more than the bucket holds)} or
-- {'pending', ms to wait, current count}.
--! include clock
--! include status
--! include fair
local n = #ARGV - 9
-- 7 KEYS, then 2 for fair share, then 3 for a quota
local fair = #KEYS - (ARGV[9] ~= '' and 3 or 0) == 9
local charge = false
if ARGV[9] ~= '' then
  -- a re-send of an accepted call gets its answer without being charged again
  local first = redis.call('GET', KEYS[6])
  if first then return tonumber(first) end
  local rate, bucket, cap, tenant = string.match(ARGV[9], '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
  local nk = #KEYS
  if cap ~= '' then
    local cur = tonumber(redis.call('HGET', KEYS[nk], tenant) or '0')
    if cur + n > tonumber(cap) then return {'pending', 1000, cur} end
  end
  local now = now_ms()
  local tokens
  if rate ~= '' then
    rate = tonumber(rate)
    bucket = tonumber(bucket)
    if n > bucket then return {'rate', -1} end
    local b = redis.call('HMGET', KEYS[nk - 2], 't', 'ms')
    tokens = bucket
    if b[1] then
      tokens = math.min(bucket, tonumber(b[1]) + math.max(0, now - tonumber(b[2])) * rate / 1000)
    end
    if tokens < n then return {'rate', math.ceil((n - tokens) * 1000 / rate)} end
  end
  charge = function()
    if tokens then
      redis.call('HSET', KEYS[nk - 2], 't', string.format('%.17g', tokens - n), 'ms', now)
      redis.call('PEXPIRE', KEYS[nk - 2], math.ceil(bucket * 1000 / rate) + 1000)
    end
    if cap ~= '' then
      local w = 0
      for i = 10, #ARGV do
        local _, e = string.find(ARGV[i], '^{"id":"%w+"')
        if e == 34 then
          w = w + redis.call('HSETNX', KEYS[nk - 1], string.sub(ARGV[i], 8, 33), tenant)
        end
      end
      if w > 0 then redis.call('HINCRBY', KEYS[nk], tenant, w) end
    end
  end
end
-- the marker first (one SET NX): a re-send finds it and gets the first call's answer
if not redis.call('SET', KEYS[6], n, 'NX', 'PX', ARGV[8]) then
  return tonumber(redis.call('GET', KEYS[6]))
end
if tonumber(ARGV[4]) > 0 then
  if not redis.call('SET', KEYS[5], ARGV[5], 'NX', 'PX', ARGV[4]) then
    redis.call('SET', KEYS[6], 0, 'PX', ARGV[8])
    return 0
  end
end
if charge then charge() end
local function track(due, now)
  write_status(KEYS[7], {'updated_ms', now, 'enqueued_ms', now, 'payload', ARGV[10], 'run_at_ms', due},
    ARGV[6], {}, tonumber(ARGV[7]) + math.max(0, math.ceil((due - now) / 1000)))
end
redis.call('SADD', KEYS[3], ARGV[1])
if ARGV[2] == 'now' then
  if fair then
    fair_push(KEYS[8], KEYS[9], 10, #ARGV)
  else
    for i = 10, #ARGV, 1000 do
      redis.call('LPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
    end
  end
  if redis.call('LLEN', KEYS[2]) == 0 then
    redis.call('LPUSH', KEYS[2], '1')
  end
  if ARGV[6] ~= '' then
    local now = now_ms()
    track(now, now)
  end
  return n
end
local now = now_ms()
local due = tonumber(ARGV[3])
if ARGV[2] == 'in' then
  due = now + due
end
for i = 10, #ARGV do
  redis.call('ZADD', KEYS[4], due, ARGV[i])
end
if ARGV[6] ~= '' then track(due, now) end
return n
