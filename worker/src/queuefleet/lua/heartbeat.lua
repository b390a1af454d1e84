-- A worker's heartbeat: its status hash (with a short expiry), its membership of
-- the workers set, and its entry in the registry of its host's process namespace.
-- Also drops a few workers-set members whose heartbeat has expired, so the set
-- never grows with workers that died long ago.
-- It also keeps the worker's running-job marker and reservation index alive (see common.lua).
-- ARGV: prefix, worker_id, ttl_s, registry_ns, registry_ttl_s, registry_value, token_base,
--       running_ttl_ms, field1, value1, ...
-- Returns the registry of the namespace as a flat list (worker id, value, ...),
-- so the worker can check which of its neighbours are still alive.
local p, id, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ns, registry_ttl, value = ARGV[4], tonumber(ARGV[5]), ARGV[6]
local key = K.worker(p, id)
-- HSET first: a Redis out of memory refuses it, so the heartbeat fails as fetches do.
redis.call('HSET', key, unpack(ARGV, 9, #ARGV))
clock_keep()
redis.call('PEXPIRE', K.running(p, ARGV[7]), ARGV[8])
redis.call('PEXPIRE', K.holder(p, ARGV[7]), ARGV[8])
redis.call('EXPIRE', key, ttl)
redis.call('SADD', K.workers(p), id)
for _, member in ipairs(redis.call('SRANDMEMBER', K.workers(p), 3)) do
  if redis.call('EXISTS', K.worker(p, member)) == 0 then redis.call('SREM', K.workers(p), member) end
end
if ns ~= '' then
  local registry = K.registry(p, ns)
  redis.call('HSET', registry, id, value)
  redis.call('EXPIRE', registry, registry_ttl)
  return redis.call('HGETALL', registry)
end
return {}
