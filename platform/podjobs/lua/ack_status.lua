-- ack_status: the acker's batch for tracked jobs (see podjobs.status): mark the jobs that
-- started running, then ack the tracked jobs of one queue that succeeded and mark them
-- succeeded, in this order, so a job's start never lands after its end. A job no longer in
-- flight (its worker was reaped and the job handed to another) is not acked or marked.
-- A start is written only while the job is in this worker's in-flight hash (an at-most-once
-- job, acked before it ran: only while its record is queued or retrying, or missing) and its
-- record is not final: a start sent late (again after a lost reply, or by a reaped worker)
-- never overwrites `retrying`, `queued` or an end, nor drops a waiting job's payload.
-- KEYS[1] in-flight hash (pj:inflight:WORKER:NAME); any key when there are no acks
-- KEYS[2] processed counter (pj:stat:processed)
-- KEYS[3 .. 2+2s] per started job: its status hash (pj:status:ID), its in-flight hash
-- KEYS[3+2s ..] status hashes of the acked jobs
-- ARGV[1] s, the number of started jobs
-- ARGV then four values per started job: job id; "1" when it need not be in flight
--      (at-most-once); its status fields (a JSON object of strings: state running, worker,
--      attempts, ...); its status TTL in seconds
-- ARGV then four values per acked job: job id; "1" when it need not be in flight
--      (at-most-once: acked before it ran); its status fields; its status TTL in seconds
-- Returns: number of jobs acked now.
--! include clock
--! include status
local now = now_ms()
local s = tonumber(ARGV[1])
local final = {succeeded = true, failed = true, dead = true, cancelled = true}
local waiting = {[''] = true, queued = true, retrying = true}
for i = 1, s do
  local k = KEYS[1 + 2 * i]
  local j = 2 + 4 * (i - 1)
  local st = redis.call('HGET', k, 'state') or ''
  local ok
  if ARGV[j + 1] == '1' then
    ok = waiting[st]
  else
    ok = not final[st] and redis.call('HEXISTS', KEYS[2 + 2 * i], ARGV[j]) == 1
  end
  if ok then
    redis.call('HSETNX', k, 'started_ms', now)
    write_status(k, {'updated_ms', now}, ARGV[j + 2], {'payload', 'run_at_ms'}, ARGV[j + 3])
  end
end
local n = 0
local base = 4 * s + 2
for i = 1, #KEYS - 2 - 2 * s do
  local j = base + 4 * (i - 1)
  if redis.call('HDEL', KEYS[1], ARGV[j]) == 1 or ARGV[j + 1] == '1' then
    n = n + 1
    local k = KEYS[2 + 2 * s + i]
    write_status(k, {'updated_ms', now, 'finished_ms', now}, ARGV[j + 2],
      {'payload', 'worker', 'run_at_ms'}, ARGV[j + 3])
  end
end
if n > 0 then redis.call('INCRBY', KEYS[2], n) end
return n
