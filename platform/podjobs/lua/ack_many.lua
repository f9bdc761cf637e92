-- ack_many: mark jobs of one queue done by removing them from the in-flight hash.
-- An ack for a job that is no longer in flight (its worker was reaped and the
-- job handed to another) changes nothing.
-- KEYS[1] in-flight hash (pj:inflight:WORKER:NAME)
-- KEYS[2] processed counter (pj:stat:processed)
-- ARGV    job ids
-- Returns: number of jobs that were in flight and are now acked.
local n = 0
for i = 1, #ARGV, 1000 do
  n = n + redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
if n > 0 then redis.call('INCRBY', KEYS[2], n) end
return n
