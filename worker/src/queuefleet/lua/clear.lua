-- Delete every ready and delayed job of one queue (reserved ones finish normally).
-- ARGV: prefix, queue. Returns the number of jobs deleted.
local p, queue = ARGV[1], ARGV[2]
local ids = redis.call('LRANGE', K.ready(p, queue), 0, -1)
for _, id in ipairs(redis.call('ZRANGE', K.delayed(p, queue), 0, -1)) do ids[#ids + 1] = id end
redis.call('DEL', K.ready(p, queue), K.delayed(p, queue), K.notify(p, queue))
for i = 1, #ids, 1000 do
  local chunk = {unpack(ids, i, math.min(i + 999, #ids))}
  for _, key in ipairs({K.payloads(p), K.attempts(p), K.lost(p), K.tokens(p)}) do
    redis.call('HDEL', key, unpack(chunk))
  end
end
return #ids
