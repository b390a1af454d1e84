-- Push one job that holds a unique key: while a job holding the key is queued, delayed
-- or running, no other job with that key is pushed. The key is let go when its job is
-- finished (done, or stored as failed: see forget) or after lock_ms, whichever is first.
-- ARGV: prefix, queue, delay_ms, notify_cap, remember_ms, key, lock_ms, id, payload
-- (remember_ms as in push.lua). Returns {1, id} when pushed, {0, id of the job that holds
-- the key} when another job holds it, {0, id} when this id was pushed before.
local p, queue = ARGV[1], ARGV[2]
local delay, cap, remember = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local key, lock, id, payload = ARGV[6], tonumber(ARGV[7]), ARGV[8], ARGV[9]
local now = now_ms()
local holder = redis.call('GET', K.unique(p, key))
if holder and redis.call('HEXISTS', K.payloads(p), holder) == 1 then return {0, holder} end
if remember > 0 then
  redis.call('ZREMRANGEBYSCORE', K.pushed(p), '-inf', now)
  if redis.call('ZSCORE', K.pushed(p), id) then return {0, id} end
end
if redis.call('HSETNX', K.payloads(p), id, payload) == 0 then return {0, id} end
if remember > 0 then redis.call('ZADD', K.pushed(p), now + remember, id) end
redis.call('SADD', K.queues(p), queue)
if delay > 0 then
  redis.call('ZADD', K.delayed(p, queue), now + delay, id)
else
  redis.call('LPUSH', K.ready(p, queue), id)
  notify(p, queue, 1, cap)
end
redis.call('SET', K.unique(p, key), id, 'PX', lock)
redis.call('HSET', K.uniques(p), id, key)
return {1, id}
