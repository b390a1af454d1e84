-- Everything `queue status` shows, in one read: queue sizes, live workers, the
-- global restart signal. Mode 'all': every queue pushed to or served by a live
-- worker, and queues that are empty and served by no live worker are forgotten;
-- mode 'given': the queues named. Dead workers (heartbeat expired) are dropped from the workers set.
-- ARGV: prefix, mode, queue1, ...
-- Returns {queues, sizes, workers, restart}: sizes a flat (ready, delayed, reserved)
-- per queue, workers a list of flat heartbeat hashes, restart a flat hash.
local p = ARGV[1]
local workers, served = live_workers(p, true)
local all = ARGV[2] == 'all'
local queues = {}
if not all then
  for i = 3, #ARGV do queues[#queues + 1] = ARGV[i] end
else
  local known = {}
  for _, q in ipairs(redis.call('SMEMBERS', K.queues(p))) do known[q] = true end
  for q in pairs(served) do known[q] = true end
  for q in pairs(known) do queues[#queues + 1] = q end
  table.sort(queues)
end
local names, sizes = {}, {}
for _, q in ipairs(queues) do
  local ready = redis.call('LLEN', K.ready(p, q))
  local delayed = redis.call('ZCARD', K.delayed(p, q))
  local reserved = redis.call('ZCARD', K.reserved(p, q))
  if all and ready + delayed + reserved == 0 and not served[q] then
    redis.call('SREM', K.queues(p), q)
  else
    names[#names + 1] = q
    sizes[#sizes + 1] = ready
    sizes[#sizes + 1] = delayed
    sizes[#sizes + 1] = reserved
  end
end
return {names, sizes, workers, redis.call('HGETALL', K.restart(p))}
