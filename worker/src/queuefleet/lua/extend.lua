-- Extend the leases a live worker holds (fenced by lease token).
-- ARGV: prefix, lease_ms, n, (queue, id, token) * n. Returns the ids no longer held.
local p, lease, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local deadline = clock_keep() + lease
local lost = {}
for i = 0, n - 1 do
  local queue, id, token = ARGV[4 + 3 * i], ARGV[5 + 3 * i], ARGV[6 + 3 * i]
  if redis.call('HGET', K.tokens(p), id) == token then
    redis.call('ZADD', K.reserved(p, queue), 'XX', deadline, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
