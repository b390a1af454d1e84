-- Shared helpers, prepended to every queuefleet script.
-- Keys are derived from a prefix and queue names passed in ARGV, so the scripts
-- assume a single (non-cluster) Redis, which is what a job queue runs on.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function queue_key(prefix, queue, suffix)
  if suffix then return prefix .. ':queue:' .. queue .. ':' .. suffix end
  return prefix .. ':queue:' .. queue
end

-- Wake one blocked worker of `queue` unless a wake-up is already pending.
local function notify(prefix, queue, count, cap)
  local key = queue_key(prefix, queue, 'notify')
  local pending = redis.call('LLEN', key)
  local add = math.min(count, cap - pending)
  for _ = 1, add do redis.call('LPUSH', key, '1') end
end

-- Forget everything stored about a finished job.
local function forget(prefix, id)
  redis.call('HDEL', prefix .. ':payloads', id)
  redis.call('HDEL', prefix .. ':attempts', id)
  redis.call('HDEL', prefix .. ':tokens', id)
  redis.call('HDEL', prefix .. ':lost', id)
end

-- Ack entries ARGV[first .. first + 3*n - 1] as (queue, id, token) triples.
-- Fenced: only the current lease holder's token deletes the job.
-- Returns the ids whose lease this caller no longer holds.
local function ack_entries(prefix, first, n)
  local stale = {}
  for i = 0, n - 1 do
    local queue, id, token = ARGV[first + 3 * i], ARGV[first + 3 * i + 1], ARGV[first + 3 * i + 2]
    if redis.call('HGET', prefix .. ':tokens', id) == token then
      redis.call('ZREM', queue_key(prefix, queue, 'reserved'), id)
      forget(prefix, id)
    else
      stale[#stale + 1] = id
    end
  end
  return stale
end
