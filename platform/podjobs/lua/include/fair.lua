-- include fair: fair share inside a queue (README "Fair share"). A job enqueued with a
-- tenant (and fair share on) waits in its tenant's own list (pj:qt:LEN:QUEUE:TENANT); the
-- ring (pj:ring:QUEUE) holds the lists with jobs, and reserve takes one job from each in
-- turn. Every other way back to ready (retry, recover, requeue, promote, release, ...)
-- pushes to the queue's own list (pj:q:QUEUE), which joins the ring as one more member
-- while it has jobs. Invariant: a tenant list with jobs is in the ring (only reserve takes
-- a member out of the ring: when it takes the list's last job, or finds it empty); a member
-- whose list was emptied otherwise (cancel, a move's carry) stays until a reserve finds it
-- empty, and keeps a new job of its tenant from adding it twice (LPOS). A reserve goes on
-- through such empty members until it has its jobs or the ring is empty (each one it meets
-- leaves), so they can neither hide a waiting job nor let a lower queue go first.

-- push payloads ARGV[from..to] onto a tenant list and make sure it is in the ring
local function fair_push(list, ring, from, to)
  local len = 0
  for i = from, to, 1000 do
    len = redis.call('LPUSH', list, unpack(ARGV, i, math.min(i + 999, to)))
  end
  if len == to - from + 1 and not redis.call('LPOS', ring, list) then
    -- at the tail: a list that had nothing waiting is served next
    redis.call('RPUSH', ring, list)
  end
end

-- take up to `want` payloads from a queue: its own list alone while the ring is empty
-- (as without fair share), else one job per ring member in turn, from the ring's tail: a
-- pass serves the last m members (m = min(want, members)) and moves those with jobs left
-- to the head, in three calls plus an RPOP and an LLEN per job; a member found empty, or
-- emptied by its take, leaves the ring then. A single member is taken in one batch.
local function fair_take(plain, ring, want)
  local size = redis.call('LLEN', ring)
  if size == 0 then
    return redis.call('RPOP', plain, want) or {}
  end
  if redis.call('LLEN', plain) > 0 and not redis.call('LPOS', ring, plain) then
    redis.call('RPUSH', ring, plain)
    size = size + 1
  end
  local out = {}
  -- each pass takes a job or drops a member: at most want + size passes
  while want > 0 and size > 0 do
    if size == 1 then
      local k = redis.call('LINDEX', ring, 0)
      local got = redis.call('RPOP', k, want)
      if got then
        for _, p in ipairs(got) do out[#out + 1] = p end
        want = want - #got
      end
      if not got or want > 0 or redis.call('LLEN', k) == 0 then redis.call('LREM', ring, 0, k) end
      break
    end
    local m = math.min(want, size)
    local window = redis.call('LRANGE', ring, -m, -1)
    local back = {}
    for j = #window, 1, -1 do
      local k = window[j]
      local got = redis.call('RPOP', k)
      if got then
        out[#out + 1] = got
        want = want - 1
        if redis.call('LLEN', k) > 0 then back[#back + 1] = k end
      end
    end
    redis.call('LTRIM', ring, 0, -(m + 1))
    if #back > 0 then redis.call('LPUSH', ring, unpack(back)) end
    size = size - m + #back
  end
  if want > 0 then
    -- the ring ran dry: the queue's own list may hold jobs it had not joined with
    local rest = redis.call('RPOP', plain, want)
    if rest then for _, p in ipairs(rest) do out[#out + 1] = p end end
  end
  return out
end

-- whether the queue has ready jobs left (its own list or a ring member)
local function fair_left(plain, ring)
  return redis.call('LLEN', plain) > 0 or redis.call('LLEN', ring) > 0
end
