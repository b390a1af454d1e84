-- Push jobs onto one queue.
-- ARGV: prefix, queue, delay_ms, notify_cap, id1, payload1, id2, payload2, ...
local prefix, queue = ARGV[1], ARGV[2]
local delay, cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local n = (#ARGV - 4) / 2
local chunk = 1000
redis.call('SADD', prefix .. ':queues', queue)
local due = delay > 0 and (now_ms() + delay) or 0
for s = 0, n - 1, chunk do
  local e = math.min(s + chunk, n) - 1
  redis.call('HSET', prefix .. ':payloads', unpack(ARGV, 5 + 2 * s, 6 + 2 * e))
  local args = {}
  for i = s, e do
    if due > 0 then args[#args + 1] = due end
    args[#args + 1] = ARGV[5 + 2 * i]
  end
  if due > 0 then
    redis.call('ZADD', queue_key(prefix, queue, 'delayed'), unpack(args))
  else
    redis.call('LPUSH', queue_key(prefix, queue), unpack(args))
  end
end
if due == 0 then notify(prefix, queue, n, cap) end
return n
