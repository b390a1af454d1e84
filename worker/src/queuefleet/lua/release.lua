-- Put reserved jobs back (fenced by lease token).
-- ARGV: prefix, notify_cap, n, then n entries of
--   (queue, id, token, delay_ms, count_attempt, front, payload, tally)
-- count_attempt '0' gives the attempt back (not the job's failure); front '1' puts
-- the job at the head of its queue; an empty payload keeps the stored one; tally
-- (see tally_add in common.lua) is counted for a job released, '' counts nothing.
-- Returns the ids that were not released (lease lost).
local p, cap, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local kept, t = {}, new_tally()
for i = 0, n - 1 do
  local b = 4 + 8 * i
  local queue, id, token = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local delay, count, front, payload = tonumber(ARGV[b + 3]), ARGV[b + 4], ARGV[b + 5], ARGV[b + 6]
  if redis.call('HGET', K.tokens(p), id) == token then
    redis.call('ZREM', K.reserved(p, queue), id)
    redis.call('HDEL', K.tokens(p), id)
    redis.call('HDEL', K.holder(p, token_base(token)), id)
    tally_add(t, queue, ARGV[b + 7])
    if payload ~= '' then redis.call('HSET', K.payloads(p), id, payload) end
    if count == '0' then redis.call('HINCRBY', K.attempts(p), id, -1) end
    if delay > 0 then
      redis.call('ZADD', K.delayed(p, queue), now + delay, id)
    else
      if front == '1' then
        redis.call('RPUSH', K.ready(p, queue), id)
      else
        redis.call('LPUSH', K.ready(p, queue), id)
      end
      if front == '1' and count == '0' then
        redis.call('HSETNX', K.ready_at(p), id, now)  -- handed back unstarted: still ready since it was
      else
        redis.call('HSET', K.ready_at(p), id, now)
      end
      notify(p, queue, 1, cap)
    end
  else
    kept[#kept + 1] = id
  end
end
tally_write(p, t, now)
return kept
