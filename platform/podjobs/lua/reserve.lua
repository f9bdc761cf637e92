-- reserve: take up to N ready jobs from a priority-ordered queue list.
-- The first queue is drained first; later queues fill the rest of the batch only
-- while every earlier queue is empty. Each job moves into the worker's in-flight
-- hash (field = job id) in the same step, so a crash never loses it.
-- KEYS: triples in priority order: in-flight hash, queue list, wake list
--       (pj:inflight:WORKER:NAME, pj:q:NAME, pj:wake:NAME)
-- KEYS[#KEYS] workers set (pj:workers)
-- ARGV[1] max number of jobs
-- ARGV[2] worker id; a worker that is not in the workers set (it was reaped) gets nothing
-- Returns: flat list of (queue index, payload) pairs; index is 1-based into the triples.
if redis.call('SISMEMBER', KEYS[#KEYS], ARGV[2]) == 0 then
  return {-1}
end
local want = tonumber(ARGV[1])
local out = {}
for i = 1, #KEYS - 1, 3 do
  if want <= 0 then break end
  local items = redis.call('RPOP', KEYS[i + 1], want)
  if items then
    local args = {}
    for _, p in ipairs(items) do
      local id
      if string.sub(p, 1, 7) == '{"id":"' and string.sub(p, 34, 34) == '"' then
        id = string.sub(p, 8, 33)
      else
        id = 'bad:' .. redis.sha1hex(p)
      end
      args[#args + 1] = id
      args[#args + 1] = p
      out[#out + 1] = (i + 2) / 3
      out[#out + 1] = p
    end
    redis.call('HSET', KEYS[i], unpack(args))
    want = want - #items
    -- more work left here: make sure another idle worker wakes up for it
    if redis.call('LLEN', KEYS[i + 1]) > 0 and redis.call('LLEN', KEYS[i + 2]) == 0 then
      redis.call('LPUSH', KEYS[i + 2], '1')
    end
  end
end
return out
