-- include status: write a tracked job's status record (pj:status:ID, see podjobs.status).
-- write_status(k, a, fields, drop, ttl): HSET on hash k the pairs in table a (the
-- script's own: updated_ms, ...) followed by the fields of the JSON object `fields`
-- (the caller's: state, reason, ...), then HDEL the field names in table `drop` (none
-- when empty), then EXPIRE k after `ttl` seconds.
local function write_status(k, a, fields, drop, ttl)
  for f, v in pairs(cjson.decode(fields)) do a[#a + 1] = f; a[#a + 1] = v end
  redis.call('HSET', k, unpack(a))
  if #drop > 0 then redis.call('HDEL', k, unpack(drop)) end
  redis.call('EXPIRE', k, ttl)
end
