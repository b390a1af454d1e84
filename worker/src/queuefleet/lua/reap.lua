-- Take back the reservations of a worker that is known to be dead (its process
-- is gone from the host it ran on): the job it was running is blamed, the jobs
-- it had reserved but not started go back to the front of their queues unblamed.
-- ARGV: prefix, registry_ns, worker_id, registry_value, token_base, known, queue1, ...
-- where known is the job the worker noted on its host as running ('' if unreadable).
-- The registry entry and heartbeat are removed only if the entry still holds
-- registry_value (a live worker may have reused the id).
-- Returns {blamed_ids, given_back_count}.
local p, ns, worker_id, value, base = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local token_prefix = base .. ':'
local known = ARGV[6]
local blamed, given_back = {}, 0
for qi = 7, #ARGV do
  local queue = ARGV[qi]
  local ids = redis.call('ZRANGE', K.reserved(p, queue), 0, -1)
  local back = 0
  for _, id in ipairs(ids) do
    local token = redis.call('HGET', K.tokens(p), id)
    if token and string.sub(token, 1, #token_prefix) == token_prefix then
      if requeue_orphan(p, queue, id, known) then blamed[#blamed + 1] = id else given_back = given_back + 1 end
      back = back + 1
    end
  end
  if back > 0 then notify(p, queue, back, 64) end
end
redis.call('DEL', K.running(p, base))
if redis.call('HGET', K.registry(p, ns), worker_id) == value then
  redis.call('HDEL', K.registry(p, ns), worker_id)
  redis.call('DEL', K.worker(p, worker_id))
  redis.call('SREM', K.workers(p), worker_id)
end
return {blamed, given_back}
