-- Take back the reservations of a worker that is known to be dead (its process
-- is gone from the host it ran on): the job it was running is blamed, the jobs
-- it had reserved but not started go back to the front of their queues unblamed.
-- Its reservations are found by its index (P:holder:<base>), not by scanning the
-- reserved sets.
-- ARGV: prefix, registry_ns, worker_id, registry_value, token_base, known
-- where known is what the worker noted on its host ('' if unreadable; see running_notes.py).
-- The registry entry and heartbeat are removed only if the entry still holds
-- registry_value (a live worker may have reused the id).
-- Returns {blamed_ids, given_back_count}.
local p, ns, worker_id, value, base = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local known = ARGV[6]
local blamed, given_back, back = {}, 0, {}
for _, held in ipairs(held_by(p, base)) do
  local id, queue = held[1], held[2]
  if requeue_orphan(p, queue, id, known) then blamed[#blamed + 1] = id else given_back = given_back + 1 end
  back[queue] = (back[queue] or 0) + 1
end
for queue, n in pairs(back) do notify(p, queue, n, 64) end
redis.call('DEL', K.running(p, base), K.holder(p, base))
if redis.call('HGET', K.registry(p, ns), worker_id) == value then
  redis.call('HDEL', K.registry(p, ns), worker_id)
  redis.call('DEL', K.worker(p, worker_id))
  redis.call('SREM', K.workers(p), worker_id)
end
return {blamed, given_back}
