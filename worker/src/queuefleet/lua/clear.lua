-- Delete every ready and delayed job of one queue (reserved ones finish normally).
-- ARGV: prefix, queue. Returns the number of jobs deleted.
local p, queue = ARGV[1], ARGV[2]
local ids = redis.call('LRANGE', K.ready(p, queue), 0, -1)
for _, id in ipairs(redis.call('ZRANGE', K.delayed(p, queue), 0, -1)) do ids[#ids + 1] = id end
redis.call('DEL', K.ready(p, queue), K.delayed(p, queue), K.notify(p, queue))
forget(p, ids)
return #ids
