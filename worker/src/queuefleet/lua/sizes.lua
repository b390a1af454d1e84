-- Ready, delayed and reserved counts of the given queues.
-- ARGV: prefix, queue1, ... Returns a flat list (ready, delayed, reserved) per queue.
local p = ARGV[1]
local out = {}
for i = 2, #ARGV do
  out[#out + 1] = redis.call('LLEN', K.ready(p, ARGV[i]))
  out[#out + 1] = redis.call('ZCARD', K.delayed(p, ARGV[i]))
  out[#out + 1] = redis.call('ZCARD', K.reserved(p, ARGV[i]))
end
return out
