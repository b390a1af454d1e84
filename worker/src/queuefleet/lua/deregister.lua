-- A worker exiting cleanly removes its heartbeat, registry entry and running-job marker.
-- ARGV: prefix, worker_id, registry_ns, registry_value, token_base
local p, id, ns, value = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
redis.call('DEL', K.worker(p, id), K.running(p, ARGV[5]))
redis.call('SREM', K.workers(p), id)
if ns ~= '' and redis.call('HGET', K.registry(p, ns), id) == value then
  redis.call('HDEL', K.registry(p, ns), id)
end
return 1
