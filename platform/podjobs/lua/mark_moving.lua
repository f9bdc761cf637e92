-- mark_moving: start holding a tenant's new jobs on this (the destination) pod: set the
-- move marker that hold.lua checks (see pods/moves.py, step start).
-- KEYS[1] move marker on this pod (pj:moving:TENANT)
-- ARGV[1] the move's id
-- Returns: 1.
redis.call('SET', KEYS[1], ARGV[1])
return 1
