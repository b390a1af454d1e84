-- Ack finished jobs, move due delayed jobs and expired leases back to ready,
-- then reserve up to max_n jobs from the queues in strict priority order.
-- ARGV: prefix, token_base, host, lease_ms, max_n, migrate_limit, n_acks,
--       (queue, id, token) * n_acks, queue1, queue2, ...
-- Returns {restart, host_restart, next_due_ms, now_ms, stale_ids, token, jobs}
-- where restart and host_restart are {generation, release} of the global and
-- this host's restart signals
-- where jobs is a flat list of (queue, id, attempts, lost, payload) and an
-- empty payload means the id had no payload stored (a malformed entry).
local prefix, token_base, host = ARGV[1], ARGV[2], ARGV[3]
local lease, max_n, limit = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local n_acks = tonumber(ARGV[7])
local stale = ack_entries(prefix, 8, n_acks)
local first_queue = 8 + 3 * n_acks
local now = now_ms()

local payloads, attempts = prefix .. ':payloads', prefix .. ':attempts'
local tokens, lost_key = prefix .. ':tokens', prefix .. ':lost'
local next_due = -1
for qi = first_queue, #ARGV do
  local queue = ARGV[qi]
  local ready = queue_key(prefix, queue)
  local delayed = queue_key(prefix, queue, 'delayed')
  local reserved = queue_key(prefix, queue, 'reserved')
  local due = redis.call('ZRANGE', delayed, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  if #due > 0 then
    redis.call('ZREM', delayed, unpack(due))
    redis.call('LPUSH', ready, unpack(due))
  end
  local expired = redis.call('ZRANGE', reserved, '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
  if #expired > 0 then
    redis.call('ZREM', reserved, unpack(expired))
    for _, id in ipairs(expired) do
      -- The holder died (or stalled) mid-run: that is not the job's failure,
      -- so the attempt is given back and counted as "lost" instead.
      redis.call('HDEL', tokens, id)
      redis.call('HINCRBY', attempts, id, -1)
      redis.call('HINCRBY', lost_key, id, 1)
    end
    redis.call('LPUSH', ready, unpack(expired))
  end
end

local jobs = {}
local token = ''
local taken = 0
if max_n > 0 then
  token = token_base .. ':' .. redis.call('INCR', prefix .. ':seq')
  for qi = first_queue, #ARGV do
    if taken >= max_n then break end
    local queue = ARGV[qi]
    local ready = queue_key(prefix, queue)
    local ids = redis.call('RPOP', ready, max_n - taken)
    if ids then
      local reserved = queue_key(prefix, queue, 'reserved')
      for _, id in ipairs(ids) do
        redis.call('ZADD', reserved, now + lease, id)
        redis.call('HSET', tokens, id, token)
        local n = redis.call('HINCRBY', attempts, id, 1)
        local payload = redis.call('HGET', payloads, id) or ''
        local lost = redis.call('HGET', lost_key, id) or '0'
        jobs[#jobs + 1] = queue
        jobs[#jobs + 1] = id
        jobs[#jobs + 1] = n
        jobs[#jobs + 1] = lost
        jobs[#jobs + 1] = payload
      end
      taken = taken + #ids
      -- More work is waiting: make sure another idle worker wakes up for it.
      if redis.call('LLEN', ready) > 0 then notify(prefix, queue, 1, 1) end
    end
  end
end

if taken == 0 then
  for qi = first_queue, #ARGV do
    for _, suffix in ipairs({'delayed', 'reserved'}) do
      local first = redis.call('ZRANGE', queue_key(prefix, ARGV[qi], suffix), 0, 0, 'WITHSCORES')
      if #first > 0 then
        local score = tonumber(first[2])
        if next_due < 0 or score < next_due then next_due = score end
      end
    end
  end
end

local function restart_of(key)
  local r = redis.call('HMGET', key, 'generation', 'release')
  return {r[1] or '0', r[2] or ''}
end
return {restart_of(prefix .. ':restart'), restart_of(prefix .. ':restart:host:' .. host),
        next_due, now, stale, token, jobs}
