-- Push jobs onto one queue; idempotent per job id.
-- ARGV: prefix, queue, delay_ms, notify_cap, remember_ms, id1, payload1, id2, payload2, ...
-- remember_ms > 0 marks producer-given ids: an id that is stored (queued, delayed or
-- running) is not pushed again, and an id is remembered that long after its push, so
-- pushing it again in that time does nothing, even once the job has finished.
-- remember_ms = 0: ids made by queuefleet itself (random UUIDs, never pushed twice).
-- Returns the number of jobs actually added.
local p, queue = ARGV[1], ARGV[2]
local delay, cap, remember = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local n = (#ARGV - 5) / 2
local now = now_ms()
local due = delay > 0 and (now + delay) or 0
if remember > 0 then forget_old_pushes(p, now) end
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
-- A job pushed ready is ready from now on (P:ready_at); a delayed one from when it comes due.
local ready_at = {}
local function flush_ready_at()
  if #ready_at > 0 then redis.call('HSET', K.ready_at(p), unpack(ready_at)) end
  ready_at = {}
end
if remember == 0 then
  -- Ids made by queuefleet (random UUIDs) are new by construction: store them in bulk.
  for s = 0, n - 1, 1000 do
    local e = math.min(s + 1000, n) - 1
    redis.call('HSET', K.payloads(p), unpack(ARGV, 6 + 2 * s, 7 + 2 * e))
    for i = s, e do
      if due > 0 then
        args[#args + 1] = due
      else
        ready_at[#ready_at + 1] = ARGV[6 + 2 * i]
        ready_at[#ready_at + 1] = now
      end
      args[#args + 1] = ARGV[6 + 2 * i]
    end
    flush()
    flush_ready_at()
  end
  added = n
else
  for i = 0, n - 1 do
    local id, payload = ARGV[6 + 2 * i], ARGV[7 + 2 * i]
    if store_new(p, id, payload, now, remember) then
      if due > 0 then
        args[#args + 1] = due
      else
        ready_at[#ready_at + 1] = id
        ready_at[#ready_at + 1] = now
      end
      args[#args + 1] = id
      added = added + 1
      if #args >= 1000 then flush() flush_ready_at() end
    end
  end
end
flush()
flush_ready_at()
if due == 0 and added > 0 then notify(p, queue, added, cap) end
return added
