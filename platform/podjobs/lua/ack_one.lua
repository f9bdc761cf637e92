-- ack_one: finish one job that has follow-ups, a unique key or a status record: release
-- its unique key, enqueue its chained children and mark its status succeeded, only if the
-- job was still in flight.
-- KEYS[1] in-flight hash (pj:inflight:WORKER:NAME)
-- KEYS[2] processed counter (pj:stat:processed)
-- KEYS[3] unique key (pj:unique:JOB:DIGEST) or the in-flight hash again when none
-- KEYS[4] queues set (pj:queues)
-- KEYS[5] status hash (pj:status:ID) or the in-flight hash again when untracked
-- KEYS[6..] pairs per child: queue list, wake list
-- ARGV[1] job id
-- ARGV[2] "1" when KEYS[3] is a unique key to release
-- ARGV[3] "1" when the job need not be in flight (at-most-once: acked before it ran)
-- ARGV[4] status fields as a JSON object of strings ("" = untracked)
-- ARGV[5] status TTL in seconds
-- ARGV[6] worker id: write the status only while the record says running on that worker
--         ("" = always)
-- ARGV[7..] per child: queue name, payload
-- Returns: 1 when acked now, 0 when the job was not in flight.
--! include clock
--! include status
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 and ARGV[3] ~= '1' then
  return 0
end
redis.call('INCR', KEYS[2])
if ARGV[2] == '1' and redis.call('GET', KEYS[3]) == ARGV[1] then
  redis.call('DEL', KEYS[3])
end
local k = 6
for i = 7, #ARGV, 2 do
  redis.call('SADD', KEYS[4], ARGV[i])
  redis.call('LPUSH', KEYS[k], ARGV[i + 1])
  if redis.call('LLEN', KEYS[k + 1]) == 0 then
    redis.call('LPUSH', KEYS[k + 1], '1')
  end
  k = k + 2
end
if ARGV[4] ~= '' and (ARGV[6] == '' or (redis.call('HGET', KEYS[5], 'state') == 'running'
    and redis.call('HGET', KEYS[5], 'worker') == ARGV[6])) then
  local now = now_ms()
  write_status(KEYS[5], {'updated_ms', now, 'finished_ms', now}, ARGV[4],
    {'payload', 'worker', 'run_at_ms'}, ARGV[5])
end
return 1
