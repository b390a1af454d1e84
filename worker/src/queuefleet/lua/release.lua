-- Put reserved jobs back (fenced by lease token).
-- ARGV: prefix, notify_cap, n, then n entries of
--   (queue, id, token, delay_ms, count_attempt, front, payload)
-- count_attempt '0' gives the attempt back (a drain, not a failure); front '1'
-- puts the job at the head of its queue; an empty payload keeps the stored one.
-- Returns the ids whose lease was lost (those are left alone).
local prefix, cap, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local stale = {}
for i = 0, n - 1 do
  local b = 4 + 7 * i
  local queue, id, token = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local delay, count, front, payload = tonumber(ARGV[b + 3]), ARGV[b + 4], ARGV[b + 5], ARGV[b + 6]
  if redis.call('HGET', prefix .. ':tokens', id) == token then
    redis.call('ZREM', queue_key(prefix, queue, 'reserved'), id)
    redis.call('HDEL', prefix .. ':tokens', id)
    if payload ~= '' then redis.call('HSET', prefix .. ':payloads', id, payload) end
    if count == '0' then redis.call('HINCRBY', prefix .. ':attempts', id, -1) end
    if delay > 0 then
      redis.call('ZADD', queue_key(prefix, queue, 'delayed'), now + delay, id)
    else
      if front == '1' then
        redis.call('RPUSH', queue_key(prefix, queue), id)
      else
        redis.call('LPUSH', queue_key(prefix, queue), id)
      end
      notify(prefix, queue, 1, cap)
    end
  else
    stale[#stale + 1] = id
  end
end
return stale
