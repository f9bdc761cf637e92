-- dead_clear: empty the dead set (an operator's 'podjobs dead clear').
-- KEYS[1] dead zset (pj:dead)
-- Returns: the number of dead jobs removed.
local n = redis.call('ZCARD', KEYS[1])
redis.call('DEL', KEYS[1])
return n
