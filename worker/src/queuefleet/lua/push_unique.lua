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
if remember > 0 then forget_old_pushes(p, now) end
if not store_new(p, id, payload, now, remember) then return {0, id} end
enqueue_one(p, queue, id, delay > 0 and (now + delay) or 0, cap)
redis.call('SET', K.unique(p, key), id, 'PX', lock)
redis.call('HSET', K.uniques(p), id, key)
return {1, id}
