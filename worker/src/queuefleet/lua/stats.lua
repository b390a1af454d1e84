-- Everything the exporter and the dashboard show, in one read-only call.
-- ARGV: prefix, minutes (how many recent per-minute counters to return), queue1, ...
-- (queues to report even when nothing was pushed to them yet).
-- Returns {now_ms, queues, sizes, oldest, jobs, durations, workers, minutes}:
-- sizes a flat (ready, delayed, reserved) per queue; oldest per queue when the job that runs
-- next became ready (Unix seconds on the Redis clock, as text), '' when none is ready; jobs and
-- durations the counter hashes (flat); workers a list of flat heartbeat hashes of
-- live workers; minutes a flat list of (unix minute, flat counter hash), oldest first.
local p, n_minutes = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local known = {}
local workers, served = live_workers(p, false)
for q in pairs(served) do known[q] = true end
for i = 3, #ARGV do known[ARGV[i]] = true end
for _, q in ipairs(redis.call('SMEMBERS', K.queues(p))) do known[q] = true end
local queues = {}
for q in pairs(known) do queues[#queues + 1] = q end
table.sort(queues)
local sizes, oldest = {}, {}
for _, q in ipairs(queues) do
  sizes[#sizes + 1] = redis.call('LLEN', K.ready(p, q))
  sizes[#sizes + 1] = redis.call('ZCARD', K.delayed(p, q))
  sizes[#sizes + 1] = redis.call('ZCARD', K.reserved(p, q))
  local since = ''
  local head = redis.call('LINDEX', K.ready(p, q), -1)
  if head then
    local ready_at = tonumber(redis.call('HGET', K.ready_at(p), head))
    if ready_at then
      since = string.format('%.3f', ready_at / 1000)
    else  -- stored by an earlier release, which kept no ready_at: the producer's clock is all there is
      local ok, doc = pcall(cjson.decode, redis.call('HGET', K.payloads(p), head) or '')
      if ok and type(doc) == 'table' and type(doc.pushed_at) == 'number' then since = string.format('%.3f', doc.pushed_at) end
    end
  end
  oldest[#oldest + 1] = since
end
local minutes = {}
local this_minute = math.floor(now / 60000)
for m = this_minute - n_minutes + 1, this_minute do
  if n_minutes > 0 then
    minutes[#minutes + 1] = m
    minutes[#minutes + 1] = redis.call('HGETALL', K.stats_minute(p, m))
  end
end
return {now, queues, sizes, oldest, redis.call('HGETALL', K.stats_jobs(p)), redis.call('HGETALL', K.stats_durations(p)),
        workers, minutes}
