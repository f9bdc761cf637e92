-- ack_move: a worker of the source pod confirms it runs none of a moving tenant's jobs,
-- having seen the directory entry at a version (pods/tenantcheck.py; the mover counts acks
-- at or after the move's first version).
-- KEYS[1] move acks hash (pj:moveack:TENANT)
-- ARGV[1] worker id
-- ARGV[2] the directory entry's version the worker saw
-- Returns: 1 when the worker had not acked before, else 0.
return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
