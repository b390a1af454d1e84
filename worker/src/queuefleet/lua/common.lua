-- Shared definitions, prepended to every queuefleet script. This file is the one
-- definition of the Redis key layout: Python code passes only the prefix, queue
-- names and ids, and never builds a key itself.
--
-- Per queue q:   P:queue:q           list, ready ids (LPUSH = back, RPUSH = front, RPOP takes)
--                P:queue:q:delayed   zset, id -> due time (ms, Redis clock)
--                P:queue:q:reserved  zset, id -> lease deadline (ms)
--                P:queue:q:notify    list, wake-ups idle workers block on
-- Per job id:    P:payloads P:attempts P:tokens P:lost   hashes keyed by id; tokens holds the
--                                  lease token while the job is reserved, or the word
--                                  'suspect' while it waits after an unexplained death
--                P:ready_at          hash, id -> when the job last became ready (ms, Redis clock): its
--                                  push, the moment a delayed or retried job came due, a requeue
--                                  (what the oldest job's age counts from)
--                P:pushed            zset, producer-given id -> forget-at (ms): pushed recently
--                P:uniques           hash, id -> unique key, for jobs pushed with one
-- Per unique key: P:unique:<key>     string, id of the queued or running job that holds the
--                                  key (expires after the push's unique_for)
-- Per worker:    P:holder:<base>   hash, id -> queue of every job the worker with lease tokens
--                                  <base>:<n> holds (the index that reclaim and reap read, so
--                                  neither scans the reserved sets); kept alive by the heartbeat
--                P:running:<base>  "<token> <id>" of the suspect job the worker with lease
--                                  tokens <base>:<n> runs now (set before such a job starts,
--                                  kept alive by the heartbeat, so it outlives the worker by a
--                                  lease). Every job is also noted in a file on the worker's
--                                  own host, which its neighbours read when it dies.
-- Counters:      P:stats:jobs (hash, "<queue> <job> <outcome>" -> jobs), P:stats:durations (hash,
--                                  "<queue> <job> <bucket index>" -> runs, "<queue> <job> sum_us" ->
--                                  microseconds), P:stats:series (set, the "<queue> <job>" pairs they
--                                  count: at most STATS_SERIES, further jobs count as '(other)'; the
--                                  three expire 30 days after their last write),
--                                  P:stats:minute:<unix minute> (hash, "<queue> <outcome>" -> jobs in
--                                  that minute; expires after 3 h). Bumped by the call that settles the
--                                  job (see job_counters.py for the wire form).
-- Scheduler:     P:schedule:last (hash, entry name -> last tick handled, ms),
--                P:schedule:entries (hash, entry name -> what a scheduler announced, JSON)
-- Fleet:         P:queues (set), P:seq (counter), P:restart and P:restart:host:<h> (hashes),
--                P:workers (set), P:worker:<id> (heartbeat hash),
--                P:registry:<ns> (hash, worker id -> "pid starttime instance queues")
--
-- Keys are derived inside scripts, so the scripts assume a single (non-cluster)
-- Redis, which is what a job queue runs on.

local K = {}
function K.ready(p, q) return p .. ':queue:' .. q end
function K.delayed(p, q) return p .. ':queue:' .. q .. ':delayed' end
function K.reserved(p, q) return p .. ':queue:' .. q .. ':reserved' end
function K.notify(p, q) return p .. ':queue:' .. q .. ':notify' end
function K.payloads(p) return p .. ':payloads' end
function K.attempts(p) return p .. ':attempts' end
function K.tokens(p) return p .. ':tokens' end
function K.lost(p) return p .. ':lost' end
function K.pushed(p) return p .. ':pushed' end
function K.schedule_last(p) return p .. ':schedule:last' end
function K.schedule_entries(p) return p .. ':schedule:entries' end
function K.uniques(p) return p .. ':uniques' end
function K.unique(p, key) return p .. ':unique:' .. key end
function K.queues(p) return p .. ':queues' end
function K.seq(p) return p .. ':seq' end
function K.restart(p) return p .. ':restart' end
function K.host_restart(p, host) return p .. ':restart:host:' .. host end
function K.workers(p) return p .. ':workers' end
function K.worker(p, id) return p .. ':worker:' .. id end
function K.registry(p, ns) return p .. ':registry:' .. ns end
function K.running(p, base) return p .. ':running:' .. base end
function K.holder(p, base) return p .. ':holder:' .. base end
function K.stats_jobs(p) return p .. ':stats:jobs' end
function K.stats_durations(p) return p .. ':stats:durations' end
function K.stats_series(p) return p .. ':stats:series' end
function K.ready_at(p) return p .. ':ready_at' end
function K.stats_minute(p, minute) return p .. ':stats:minute:' .. minute end

-- A lease token is '<worker base>:<n>'.
local function token_base(token) return string.match(token, '^(.*):[^:]*$') or token end

-- The fleet clock (ms): what every lease deadline, due time and ready_at is stamped with. It is
-- the server's TIME plus an offset kept in P:clock (a hash: server = run_id of the server that
-- stamped last, last = the fleet time stamped last, offset/since/decay = the offset and when it
-- was set). Replicas copy P:clock; a server that finds another run_id there took over (a
-- failover, or a restart) and its own clock may differ from its predecessor's by any skew. It
-- resumes the fleet clock at max(last, TIME - CLOCK_MAX_FREEZE_MS): never before the last stamp
-- (a slow clock neither extends leases nor delays jobs by its skew), and a fast clock counts
-- at most CLOCK_MAX_FREEZE_MS of the time since the last stamp (leases stamped by its
-- predecessor do not run out early unless it is further ahead than that). The offset then
-- fades linearly to 0, the fleet clock running at most 1% fast or slow, so it never drifts
-- far from the servers' clocks. The last stamp is written by the workers' calls (fetch,
-- extend, heartbeat): at most a heartbeat interval old while workers run.
-- Test hook: a field 'skew:<run_id>' (ms) is added to that server's TIME, to simulate its
-- clock being off (tests cannot set a server's clock). Nothing else writes it.
local CLOCK_MAX_FREEZE_MS = 30000
local CLOCK_MIN_DECAY_MS = 3000000
local clock_now = nil
local function now_ms()
  if clock_now then return clock_now end
  local key = ARGV[1] .. ':clock'
  -- An ACL user without INFO gets '?': the server's own clock, as without this.
  local info = redis.pcall('INFO', 'server')
  local run_id = type(info) == 'string' and string.match(info, 'run_id:(%x+)') or '?'
  local t = redis.call('TIME')
  local raw = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local c = redis.call('HMGET', key, 'server', 'last', 'offset', 'since', 'decay', 'skew:' .. run_id)
  raw = raw + (tonumber(c[6]) or 0)
  local offset, since, decay = tonumber(c[3]) or 0, tonumber(c[4]) or raw, tonumber(c[5]) or CLOCK_MIN_DECAY_MS
  if c[1] ~= run_id then
    local last = tonumber(c[2])
    offset = last and (math.max(last, raw - CLOCK_MAX_FREEZE_MS) - raw) or 0
    since, decay = raw, math.max(CLOCK_MIN_DECAY_MS, 100 * math.abs(offset))
    redis.pcall('HSET', key, 'server', run_id, 'offset', offset, 'since', since, 'decay', decay, 'last', raw + offset)
  end
  clock_now = raw + math.floor(offset * math.max(0, 1 - (raw - since) / decay))
  return clock_now
end

-- Record the fleet time as the last stamp (see now_ms); returns it. A Redis out of memory may
-- refuse the write (pcall): the call itself goes on, so acks still free memory.
local function clock_keep()
  local now = now_ms()
  redis.pcall('HSET', ARGV[1] .. ':clock', 'last', now)
  return now
end

-- {generation, release, id} of a restart signal hash (fleet-wide or one host's).
local function restart_of(key)
  local r = redis.call('HMGET', key, 'generation', 'release', 'id')
  return {r[1] or '0', r[2] or '', r[3] or ''}
end

-- Wake idle workers of `queue` (at most `cap` pending wake-ups).
local function notify(p, queue, count, cap)
  local key = K.notify(p, queue)
  local add = math.min(count, cap - redis.call('LLEN', key))
  for _ = 1, add do redis.call('LPUSH', key, '1') end
end

-- Producer-given ids (push with remember_ms > 0): an id that is stored (queued, delayed or
-- running) is not pushed again, nor one pushed within the last remember_ms.
local function forget_old_pushes(p, now)
  redis.call('ZREMRANGEBYSCORE', K.pushed(p), '-inf', now)
end

-- Store `payload` under `id` unless that id is stored or (remember > 0) was pushed within
-- the remember window, which then starts again. True when stored.
local function store_new(p, id, payload, now, remember)
  if remember > 0 and redis.call('ZSCORE', K.pushed(p), id) then return false end
  if redis.call('HSETNX', K.payloads(p), id, payload) == 0 then return false end
  if remember > 0 then redis.call('ZADD', K.pushed(p), now + remember, id) end
  return true
end

-- Put one stored job on `queue`: delayed until `due` (ms), or ready now (due 0), waking a worker.
local function enqueue_one(p, queue, id, due, cap)
  redis.call('SADD', K.queues(p), queue)
  if due > 0 then
    redis.call('ZADD', K.delayed(p, queue), due, id)
  else
    redis.call('HSET', K.ready_at(p), id, now_ms())
    redis.call('LPUSH', K.ready(p, queue), id)
    notify(p, queue, 1, cap)
  end
end

-- Counters of settled jobs: gathered over a call (one HINCRBY per distinct field), then written.
-- Their job label comes from payloads, which anyone who can write to Redis can write: the
-- counters keep at most STATS_SERIES (queue, job) pairs (listed in P:stats:series) and count
-- any further job under OTHER_JOB; and every counter key expires STATS_TTL seconds after its
-- last write, so nothing stays for good.
local STATS_SERIES = 500
local STATS_TTL = 30 * 86400
local OTHER_JOB = '(other)'

local function new_tally() return {series = {}, minute = {}, any = false} end

local function bump(t, field, n) t[field] = (t[field] or 0) + n end

-- Add one settled attempt of `queue`, given in its wire form 'job outcome bucket microseconds'
-- (bucket and microseconds empty when it did not run). '' adds nothing.
local function tally_add(t, queue, wire)
  if wire == nil or wire == '' then return end
  local job, outcome, bucket, micros = string.match(wire, '^(%S+) (%a+) (%d*) (%d*)$')
  if not job then return end
  local qj = queue .. ' ' .. job
  local s = t.series[qj]
  if not s then
    s = {queue = queue, jobs = {}, durations = {}}
    t.series[qj] = s
  end
  bump(s.jobs, outcome, 1)
  bump(t.minute, queue .. ' ' .. outcome, 1)
  if bucket ~= '' and micros ~= '' then
    bump(s.durations, bucket, 1)
    bump(s.durations, 'sum_us', tonumber(micros))
  end
  t.any = true
end

local function tally_write(p, t, now)
  if not t.any then return end
  local series = K.stats_series(p)
  for qj, s in pairs(t.series) do
    if redis.call('SISMEMBER', series, qj) == 0 then
      if redis.call('SCARD', series) < STATS_SERIES then
        redis.call('SADD', series, qj)
      else
        qj = s.queue .. ' ' .. OTHER_JOB
      end
    end
    for outcome, n in pairs(s.jobs) do redis.call('HINCRBY', K.stats_jobs(p), qj .. ' ' .. outcome, n) end
    for bucket, n in pairs(s.durations) do redis.call('HINCRBY', K.stats_durations(p), qj .. ' ' .. bucket, n) end
  end
  for _, key in ipairs({series, K.stats_jobs(p), K.stats_durations(p)}) do redis.call('EXPIRE', key, STATS_TTL) end
  local minute = K.stats_minute(p, math.floor(now / 60000))
  for field, n in pairs(t.minute) do redis.call('HINCRBY', minute, field, n) end
  redis.call('EXPIRE', minute, 10800)
end

-- The job name in a stored payload, or '-' when it has none (a payload that is not a job).
local function job_name_of(payload)
  if not payload then return '-' end
  local ok, doc = pcall(cjson.decode, payload)
  if ok and type(doc) == 'table' and type(doc.job) == 'string' and not string.find(doc.job, '%s') then return doc.job end
  return '-'
end

-- Live workers' heartbeats (each a flat hash) and the set of queues they serve. With `prune`,
-- members of the workers set whose heartbeat has expired are dropped from it.
local function live_workers(p, prune)
  local workers, served = {}, {}
  for _, id in ipairs(redis.call('SMEMBERS', K.workers(p))) do
    local beat = redis.call('HGETALL', K.worker(p, id))
    if #beat == 0 then
      if prune then redis.call('SREM', K.workers(p), id) end
    else
      workers[#workers + 1] = beat
      for i = 1, #beat, 2 do
        if beat[i] == 'queues' then
          for q in string.gmatch(beat[i + 1], '[^,]+') do served[q] = true end
        end
      end
    end
  end
  return workers, served
end

-- Run `command key member...` over a list of members, at most 1000 per call
-- (scripts may not unpack arbitrarily long lists).
local function each_chunk(command, key, list)
  for s = 1, #list, 1000 do
    redis.call(command, key, unpack(list, s, math.min(s + 999, #list)))
  end
end

-- Forget everything stored about jobs that are finished (done or stored as failed).
local function forget(p, ids)
  for _, key in ipairs({K.payloads(p), K.attempts(p), K.tokens(p), K.lost(p), K.ready_at(p)}) do each_chunk('HDEL', key, ids) end
  -- Unique jobs let go of their key (only if it is still theirs: it may have expired and been taken).
  if #ids > 0 and redis.call('HLEN', K.uniques(p)) > 0 then
    for s = 1, #ids, 1000 do
      local chunk = {unpack(ids, s, math.min(s + 999, #ids))}
      local keys = redis.call('HMGET', K.uniques(p), unpack(chunk))
      for i, key in ipairs(keys) do
        if key and redis.call('GET', K.unique(p, key)) == chunk[i] then redis.call('DEL', K.unique(p, key)) end
      end
      redis.call('HDEL', K.uniques(p), unpack(chunk))
    end
  end
end

-- Drop ids[i], held under tokens[i], from their holders' indexes (one HDEL per holder).
local function unhold(p, ids, tokens)
  local by_holder = {}
  for i, id in ipairs(ids) do
    local base = token_base(tokens[i])
    by_holder[base] = by_holder[base] or {}
    table.insert(by_holder[base], id)
  end
  for base, list in pairs(by_holder) do each_chunk('HDEL', K.holder(p, base), list) end
end

-- The reservations of the worker with lease tokens base:<n>, from its index: {id, queue, token}
-- for each job that is still reserved under such a token (index entries that are not, left by a
-- job taken over or gone, are dropped).
local function held_by(p, base)
  local key, mine = K.holder(p, base), base .. ':'
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return {} end
  local ids, tokens = {}, {}
  for i = 1, #flat, 2 do ids[#ids + 1] = flat[i] end
  for s = 1, #ids, 1000 do
    for _, t in ipairs(redis.call('HMGET', K.tokens(p), unpack(ids, s, math.min(s + 999, #ids)))) do tokens[#tokens + 1] = t end
  end
  local held, stale = {}, {}
  for i, id in ipairs(ids) do
    local token, queue = tokens[i], flat[2 * i]
    if token and string.sub(token, 1, #mine) == mine and redis.call('ZSCORE', K.reserved(p, queue), id) then
      held[#held + 1] = {id, queue, token}
    else
      stale[#stale + 1] = id
    end
  end
  if #stale > 0 then each_chunk('HDEL', key, stale) end
  return held
end

-- Ack (queue, id, token, tally) entries from ARGV[first ..] (tally: see tally_add). Fenced: only the holder of
-- the current lease token deletes the job. Returns the ids whose lease the caller
-- no longer held and that are still stored (another worker may run them again);
-- an id that is simply gone (acked before, e.g. an ack sent twice across a
-- reconnect) is not reported. Works on the whole list at once: a few calls, not
-- a few per job.
local function ack_entries(p, first, n)
  if n == 0 then return {} end
  local ids = {}
  for i = 0, n - 1 do ids[#ids + 1] = ARGV[first + 4 * i + 1] end
  local tokens = {}
  for s = 1, #ids, 1000 do
    for _, t in ipairs(redis.call('HMGET', K.tokens(p), unpack(ids, s, math.min(s + 999, #ids)))) do tokens[#tokens + 1] = t end
  end
  local done, tokens_of_done, by_queue, other, t = {}, {}, {}, {}, new_tally()
  for i = 0, n - 1 do
    local queue, id = ARGV[first + 4 * i], ids[i + 1]
    if tokens[i + 1] == ARGV[first + 4 * i + 2] then
      done[#done + 1] = id
      tokens_of_done[#tokens_of_done + 1] = tokens[i + 1]
      tally_add(t, queue, ARGV[first + 4 * i + 3])
      by_queue[queue] = by_queue[queue] or {}
      table.insert(by_queue[queue], id)
    else
      other[#other + 1] = id
    end
  end
  for queue, list in pairs(by_queue) do each_chunk('ZREM', K.reserved(p, queue), list) end
  unhold(p, done, tokens_of_done)
  forget(p, done)
  if t.any then tally_write(p, t, now_ms()) end
  local lost = {}
  for _, id in ipairs(other) do
    if redis.call('HEXISTS', K.payloads(p), id) == 1 then lost[#lost + 1] = id end
  end
  return lost
end

-- A reservation whose holder is gone (its lease ran out, or it was seen dead on
-- its own host). `known` is what the holder noted on its host as the job it ran
-- ("<token> <id>"), when a neighbour could read it; nil or '' when not.
-- The job it was running is blamed: its attempt is given back and counted as
-- "lost" instead, and it goes to the back of its queue. A job it held but was not
-- running (reserved ahead, or finished with the ack not sent yet) is not blamed:
-- back to the front. When nobody can tell whether it was running, it is not
-- blamed either but marked suspect: the next worker names it in Redis before it
-- runs it, so that a second death is blamed precisely.
-- Returns true when the job was blamed.
local function requeue_orphan(p, queue, id, known)
  local token = redis.call('HGET', K.tokens(p), id)
  local blamed, suspect = false, false
  if token then
    local held = token .. ' ' .. id
    if known and known ~= '' then
      blamed = known == held
    else
      blamed = redis.call('GET', K.running(p, token_base(token))) == held
      suspect = not blamed
    end
  end
  redis.call('ZREM', K.reserved(p, queue), id)
  if token then redis.call('HDEL', K.holder(p, token_base(token)), id) end
  if suspect then redis.call('HSET', K.tokens(p), id, 'suspect') else redis.call('HDEL', K.tokens(p), id) end
  redis.call('HINCRBY', K.attempts(p), id, -1)
  redis.call('HSET', K.ready_at(p), id, now_ms())
  if blamed then
    local t = new_tally()
    tally_add(t, queue, job_name_of(redis.call('HGET', K.payloads(p), id)) .. ' lost  ')
    tally_write(p, t, now_ms())
    redis.call('HINCRBY', K.lost(p), id, 1)
    redis.call('LPUSH', K.ready(p, queue), id)
  else
    redis.call('RPUSH', K.ready(p, queue), id)
  end
  return blamed
end
