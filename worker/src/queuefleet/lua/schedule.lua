-- The scheduler's state (see schedule.py): per entry the last tick handled (a watermark
-- that only moves forward) and what schedulers announce for `queue status`.
-- ARGV[1] prefix, ARGV[2] mode:
--   'last', host, name...      -> {the server's time (ms), restart signal, this host's restart
--                                 signal, the watermark (ms) of each name or false}; a scheduler
--                                 exits on a new signal
--   'claim', name, tick_ms, push ('1'/'0'), queue, notify_cap, remember_ms, id, payload
--                              -> 1 when this call moved the watermark to tick_ms (and pushed
--                                 the job, unless push is '0'), 0 when the tick was handled
--   'announce', stale_s, (name, json)...
--                              -> records each entry's description (its JSON has 'seen', Unix
--                                 seconds) and forgets entries no scheduler announced for stale_s
--                                 seconds (removed from every schedule file)
--   'list'                     -> name, json, name, json, ... of every announced entry
local p, mode = ARGV[1], ARGV[2]
if mode == 'last' then
  local lasts = {}
  if #ARGV >= 4 then lasts = redis.call('HMGET', K.schedule_last(p), unpack(ARGV, 4)) end
  return {now_ms(), restart_of(K.restart(p)), restart_of(K.host_restart(p, ARGV[3])), lasts}
elseif mode == 'announce' then
  local t = redis.call('TIME')
  local stale_before = tonumber(t[1]) - tonumber(ARGV[3])
  local known = redis.call('HGETALL', K.schedule_entries(p))
  for i = 1, #known, 2 do
    local ok, doc = pcall(cjson.decode, known[i + 1])
    if not ok or type(doc) ~= 'table' or (tonumber(doc.seen) or 0) < stale_before then
      redis.call('HDEL', K.schedule_entries(p), known[i])
    end
  end
  if #ARGV >= 5 then redis.call('HSET', K.schedule_entries(p), unpack(ARGV, 4)) end
  return 1
elseif mode == 'list' then
  return redis.call('HGETALL', K.schedule_entries(p))
end
-- claim
local name, tick, push, queue = ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local cap, remember, id, payload = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9], ARGV[10]
local last = tonumber(redis.call('HGET', K.schedule_last(p), name) or '-1')
if tick <= last then return 0 end
redis.call('HSET', K.schedule_last(p), name, tick)
if push ~= '1' then return 1 end
local now = now_ms()
forget_old_pushes(p, now)
if store_new(p, id, payload, now, remember) then enqueue_one(p, queue, id, 0, cap) end
return 1
