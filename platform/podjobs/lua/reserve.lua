-- reserve: take up to N ready jobs from a priority-ordered queue list.
-- The first queue is drained first; later queues fill the rest of the batch only
-- while every earlier queue is empty. Each job moves into the worker's in-flight
-- hash (field = job id) in the same step, so a crash never loses it.
-- A reservation is recorded under its request id: the same request sent again (its reply
-- was lost on a dropped connection or a timeout) gets the same jobs back, still in flight,
-- and takes nothing more, so a lost reply never strands jobs in a live worker.
-- Within a queue, tenants' jobs are taken in turn (fair share, include/fair.lua); across
-- queues the priority stays strict.
-- KEYS: quadruples in priority order: in-flight hash, queue list, wake list, ring
--       (pj:inflight:WORKER:NAME, pj:q:NAME, pj:wake:NAME, pj:ring:NAME)
-- KEYS[#KEYS - 4] paused queues (pj:paused: a set of queue list keys); a paused queue is
--                passed over (its jobs stay; later queues are served as if it were empty)
-- KEYS[#KEYS - 3] workers set (pj:workers)
-- KEYS[#KEYS - 2] the worker's last reservation (pj:rsv:WORKER): "request id|#i,id,id,#j,id,..."
--            (#i: the 1-based queue index of the ids after it)
-- KEYS[#KEYS - 1], KEYS[#KEYS] pending jobs and counts of tenants with a pending cap
--            (pj:pending, pj:pendingn; podjobs.quota): a job taken is no longer pending
--            (one HLEN when no tenant of the pod has a cap)
-- ARGV[1] max number of jobs
-- ARGV[2] worker id; a worker that is not in the workers set (it was reaped) gets nothing
-- ARGV[3] request id (fresh per reservation; the same when asking again after a lost reply)
-- Returns: flat list of (queue index, payload) pairs; index is 1-based into the quadruples;
-- {-1} when the worker was reaped.
--! include pending
--! include fair
local nk = #KEYS - 5
if redis.call('SISMEMBER', KEYS[nk + 2], ARGV[2]) == 0 then
  return {-1}
end
local out = {}
local last = redis.call('GET', KEYS[nk + 3])
if last and string.sub(last, 1, #ARGV[3] + 1) == ARGV[3] .. '|' then
  local idx = 1
  for item in string.gmatch(string.sub(last, #ARGV[3] + 2), '[^,]+') do
    if string.sub(item, 1, 1) == '#' then
      idx = tonumber(string.sub(item, 2))
    else
      local p = redis.call('HGET', KEYS[(idx - 1) * 4 + 1], item)
      if p then
        out[#out + 1] = idx
        out[#out + 1] = p
      end
    end
  end
  return out
end
local want = tonumber(ARGV[1])
local taken = {}
local any_paused = redis.call('SCARD', KEYS[nk + 1]) > 0
local capped = redis.call('HLEN', KEYS[nk + 5]) > 0
for i = 1, nk, 4 do
  if want <= 0 then break end
  local items = false
  if not (any_paused and redis.call('SISMEMBER', KEYS[nk + 1], KEYS[i + 1]) == 1) then
    items = fair_take(KEYS[i + 1], KEYS[i + 3], want)
  end
  if items and #items > 0 then
    local args = {}
    local idx = (i + 3) / 4
    taken[#taken + 1] = '#' .. idx
    for _, p in ipairs(items) do
      local id
      -- the id: 26 ASCII letters or digits right after '{"id":"' (as podjobs writes it)
      local _, e = string.find(p, '^{"id":"%w+"')
      if e == 34 then
        id = string.sub(p, 8, 33)
      else
        id = 'bad:' .. redis.sha1hex(p)
      end
      if capped then unpend(KEYS[nk + 4], KEYS[nk + 5], id) end
      args[#args + 1] = id
      args[#args + 1] = p
      out[#out + 1] = idx
      out[#out + 1] = p
      taken[#taken + 1] = id
    end
    redis.call('HSET', KEYS[i], unpack(args))
    want = want - #items
    -- more work left here: make sure another idle worker wakes up for it
    if fair_left(KEYS[i + 1], KEYS[i + 3]) and redis.call('LLEN', KEYS[i + 2]) == 0 then
      redis.call('LPUSH', KEYS[i + 2], '1')
    end
  end
end
if #out > 0 then
  taken[1] = ARGV[3] .. '|' .. taken[1]
  redis.call('SET', KEYS[nk + 3], table.concat(taken, ','))
end
return out
