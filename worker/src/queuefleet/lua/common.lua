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
--                P:pushed            zset, producer-given id -> forget-at (ms): pushed recently
-- Per worker:    P:running:<base>  "<token> <id>" of the suspect job the worker with lease
--                                  tokens <base>:<n> runs now (set before such a job starts,
--                                  kept alive by the heartbeat, so it outlives the worker by a
--                                  lease). Every job is also noted in a file on the worker's
--                                  own host, which its neighbours read when it dies.
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
function K.queues(p) return p .. ':queues' end
function K.seq(p) return p .. ':seq' end
function K.restart(p) return p .. ':restart' end
function K.host_restart(p, host) return p .. ':restart:host:' .. host end
function K.workers(p) return p .. ':workers' end
function K.worker(p, id) return p .. ':worker:' .. id end
function K.registry(p, ns) return p .. ':registry:' .. ns end
function K.running(p, base) return p .. ':running:' .. base end

-- A lease token is '<worker base>:<n>'.
local function token_base(token) return string.match(token, '^(.*):[^:]*$') or token end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Wake idle workers of `queue` (at most `cap` pending wake-ups).
local function notify(p, queue, count, cap)
  local key = K.notify(p, queue)
  local add = math.min(count, cap - redis.call('LLEN', key))
  for _ = 1, add do redis.call('LPUSH', key, '1') end
end

-- Forget everything stored about a job that is finished (done or stored as failed).
local function forget(p, id)
  redis.call('HDEL', K.payloads(p), id)
  redis.call('HDEL', K.attempts(p), id)
  redis.call('HDEL', K.tokens(p), id)
  redis.call('HDEL', K.lost(p), id)
end

-- Ack (queue, id, token) triples from ARGV[first ..]. Fenced: only the holder of
-- the current lease token deletes the job. Returns the ids whose lease the caller
-- no longer held and that are still stored (another worker may run them again);
-- an id that is simply gone (acked before, e.g. an ack sent twice across a
-- reconnect) is not reported.
local function ack_entries(p, first, n)
  local lost = {}
  for i = 0, n - 1 do
    local queue, id, token = ARGV[first + 3 * i], ARGV[first + 3 * i + 1], ARGV[first + 3 * i + 2]
    if redis.call('HGET', K.tokens(p), id) == token then
      redis.call('ZREM', K.reserved(p, queue), id)
      forget(p, id)
    elseif redis.call('HEXISTS', K.payloads(p), id) == 1 then
      lost[#lost + 1] = id
    end
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
  if suspect then redis.call('HSET', K.tokens(p), id, 'suspect') else redis.call('HDEL', K.tokens(p), id) end
  redis.call('HINCRBY', K.attempts(p), id, -1)
  if blamed then
    redis.call('HINCRBY', K.lost(p), id, 1)
    redis.call('LPUSH', K.ready(p, queue), id)
  else
    redis.call('RPUSH', K.ready(p, queue), id)
  end
  return blamed
end
