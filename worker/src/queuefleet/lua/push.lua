-- Push jobs onto one queue; idempotent per job id.
-- ARGV: prefix, queue, delay_ms, notify_cap, remember_ms, id1, payload1, id2, payload2, ...
-- An id that is already stored (queued, delayed or running) is not pushed again.
-- remember_ms > 0 marks producer-given ids: such an id is remembered that long
-- after its push, and pushing it again in that time does nothing, even once the
-- job has finished.
-- Returns the number of jobs actually added.
local p, queue = ARGV[1], ARGV[2]
local delay, cap, remember = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local n = (#ARGV - 5) / 2
local now = now_ms()
local due = delay > 0 and (now + delay) or 0
if remember > 0 then redis.call('ZREMRANGEBYSCORE', K.pushed(p), '-inf', now) end
redis.call('SADD', K.queues(p), queue)
local args = {}
local added = 0
local function flush()
  if #args == 0 then return end
  if due > 0 then
    redis.call('ZADD', K.delayed(p, queue), unpack(args))
  else
    redis.call('LPUSH', K.ready(p, queue), unpack(args))
  end
  args = {}
end
for i = 0, n - 1 do
  local id, payload = ARGV[6 + 2 * i], ARGV[7 + 2 * i]
  local fresh = remember == 0 or not redis.call('ZSCORE', K.pushed(p), id)
  if fresh and redis.call('HSETNX', K.payloads(p), id, payload) == 1 then
    if remember > 0 then redis.call('ZADD', K.pushed(p), now + remember, id) end
    if due > 0 then args[#args + 1] = due end
    args[#args + 1] = id
    added = added + 1
    if #args >= 1000 then flush() end
  end
end
flush()
if due == 0 and added > 0 then notify(p, queue, added, cap) end
return added
