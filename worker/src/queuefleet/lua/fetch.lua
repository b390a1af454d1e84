-- Ack finished jobs, move due delayed jobs and expired leases back to ready, then
-- reserve jobs in strict priority order: up to max_n from the first queue, or,
-- when it is empty, one job from the first lower queue that has one. (Only the top
-- queue is reserved ahead: nothing can outrank it, so holding its jobs never keeps
-- a higher-priority job waiting.)
-- ARGV: prefix, token_base, host, lease_ms, max_n, migrate_limit, n_acks, n_keep,
--       (queue, id, token, tally) * n_acks, id * n_keep, queue1, queue2, ...
-- n_keep >= 0 asks to take back, first, every reservation of this worker (tokens
-- token_base:*, found by its index) other than the n_keep ids it knows it holds: what an earlier fetch
-- reserved when its reply was lost (the worker never saw those jobs, so they go
-- back to the front, attempt not counted). n_keep = -1: no such check.
-- Returns {restart, host_restart, next_due_ms, now_ms, lost_ids, token, jobs, wait_keys, running_key,
-- reclaimed}:
-- restart and host_restart are {generation, release, id} of the global and this
-- host's restart signals; jobs is a flat list of (queue, id, attempts, lost, suspect, payload)
-- where an empty payload means the id had none stored (a malformed entry), and
-- wait_keys (only when nothing was reserved) are the lists to block on for a push,
-- and running_key is where this worker names a suspect job before it starts it
-- (a plain SET, sent ahead without waiting: see reservations.py).
local p, token_base, host = ARGV[1], ARGV[2], ARGV[3]
local lease, max_n, limit = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local n_acks, n_keep = tonumber(ARGV[7]), tonumber(ARGV[8])
local lost_acks = ack_entries(p, 9, n_acks)
local first_keep = 9 + 4 * n_acks
local first_queue = first_keep + math.max(n_keep, 0)
local now = clock_keep()

-- Reclaim reads this worker's own index (P:holder:<base>), never the reserved sets: after an
-- outage every worker of a fleet may ask at once.
local reclaimed = 0
if n_keep >= 0 then
  local keep = {}
  for i = first_keep, first_queue - 1 do keep[ARGV[i]] = true end
  for _, held in ipairs(held_by(p, token_base)) do
    local id, queue = held[1], held[2]
    if not keep[id] then
      redis.call('ZREM', K.reserved(p, queue), id)
      redis.call('HDEL', K.tokens(p), id)
      redis.call('HDEL', K.holder(p, token_base), id)
      redis.call('HINCRBY', K.attempts(p), id, -1)
      redis.call('RPUSH', K.ready(p, queue), id)
      reclaimed = reclaimed + 1
    end
  end
end

for qi = first_queue, #ARGV do
  local queue = ARGV[qi]
  local delayed = K.delayed(p, queue)
  local due = redis.call('ZRANGE', delayed, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit, 'WITHSCORES')
  if #due > 0 then
    local ids, ready_at = {}, {}
    for i = 1, #due, 2 do
      ids[#ids + 1] = due[i]
      ready_at[#ready_at + 1] = due[i]
      ready_at[#ready_at + 1] = due[i + 1]  -- it became ready when it came due
    end
    redis.call('ZREM', delayed, unpack(ids))
    redis.call('LPUSH', K.ready(p, queue), unpack(ids))
    redis.call('HSET', K.ready_at(p), unpack(ready_at))
  end
  local expired = redis.call('ZRANGE', K.reserved(p, queue), '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  for _, id in ipairs(expired) do requeue_orphan(p, queue, id) end
end

local jobs = {}
local token = ''
-- Reserve up to `count` ready jobs of `queue`, a few calls for the whole batch.
-- A ready id that is already reserved (an extra copy, as a push retried by old
-- code could leave) is dropped: the reserved copy runs. So is an id without a
-- payload that was pushed recently under a producer-given id (it finished).
local function reserve(queue, count)
  local popped = redis.call('RPOP', K.ready(p, queue), count)
  if not popped then return 0 end
  local reserved = K.reserved(p, queue)
  local scores = redis.call('ZMSCORE', reserved, unpack(popped))
  local payloads = redis.call('HMGET', K.payloads(p), unpack(popped))
  local ids, bodies, seen = {}, {}, {}
  for i, id in ipairs(popped) do
    local extra = scores[i] or seen[id] or (not payloads[i] and redis.call('ZSCORE', K.pushed(p), id))
    if not extra then
      seen[id] = true
      ids[#ids + 1] = id
      bodies[#bodies + 1] = payloads[i] or ''
    end
  end
  if #ids > 0 then
    local tokens = redis.call('HMGET', K.tokens(p), unpack(ids))
    local attempts = redis.call('HMGET', K.attempts(p), unpack(ids))
    local lost = redis.call('HMGET', K.lost(p), unpack(ids))
    local zadd, hset_tokens, hset_attempts, hset_holder = {}, {}, {}, {}
    for i, id in ipairs(ids) do
      local n = (tonumber(attempts[i]) or 0) + 1
      zadd[#zadd + 1] = now + lease
      zadd[#zadd + 1] = id
      hset_tokens[#hset_tokens + 1] = id
      hset_tokens[#hset_tokens + 1] = token
      hset_holder[#hset_holder + 1] = id
      hset_holder[#hset_holder + 1] = queue
      hset_attempts[#hset_attempts + 1] = id
      hset_attempts[#hset_attempts + 1] = n
      jobs[#jobs + 1] = queue
      jobs[#jobs + 1] = id
      jobs[#jobs + 1] = n
      jobs[#jobs + 1] = lost[i] or '0'
      jobs[#jobs + 1] = tokens[i] == 'suspect' and 1 or 0  -- the mark of an orphan nobody could explain
      jobs[#jobs + 1] = bodies[i]
    end
    redis.call('ZADD', reserved, unpack(zadd))
    redis.call('HSET', K.tokens(p), unpack(hset_tokens))
    redis.call('HSET', K.attempts(p), unpack(hset_attempts))
    redis.call('HSET', K.holder(p, token_base), unpack(hset_holder))
  end
  -- More work is waiting: make sure another idle worker wakes up for it.
  if redis.call('LLEN', K.ready(p, queue)) > 0 then notify(p, queue, 1, 1) end
  return #ids
end

if max_n > 0 then
  token = token_base .. ':' .. redis.call('INCR', K.seq(p))
  if reserve(ARGV[first_queue], max_n) == 0 then
    for qi = first_queue + 1, #ARGV do
      if reserve(ARGV[qi], 1) > 0 then break end
    end
  end
end

local next_due = -1
local wait_keys = {}
if #jobs == 0 then
  for qi = first_queue, #ARGV do
    wait_keys[#wait_keys + 1] = K.notify(p, ARGV[qi])
    for _, key in ipairs({K.delayed(p, ARGV[qi]), K.reserved(p, ARGV[qi])}) do
      local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if #first > 0 then
        local score = tonumber(first[2])
        if next_due < 0 or score < next_due then next_due = score end
      end
    end
  end
end

return {restart_of(K.restart(p)), restart_of(K.host_restart(p, host)), next_due, now, lost_acks, token, jobs, wait_keys,
        K.running(p, token_base), reclaimed}
