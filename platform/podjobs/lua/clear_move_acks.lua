-- clear_move_acks: forget which workers of this (the source) pod acked a tenant's move,
-- when a move starts, finishes or is rolled back (see pods/moves.py).
-- KEYS[1] move acks hash (pj:moveack:TENANT)
-- Returns: 1 when there were acks, 0 otherwise.
return redis.call('DEL', KEYS[1])
