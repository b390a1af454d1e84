-- Record a restart generation. With a release id, a second signal for the
-- release already recorded is a no-op, so many hosts signalling one release
-- cause one restart.
-- ARGV: prefix, release. Returns {generation, bumped (1|0)}.
local key = ARGV[1] .. ':restart'
local release = ARGV[2]
if release ~= '' and redis.call('HGET', key, 'release') == release then
  return {tonumber(redis.call('HGET', key, 'generation') or '0'), 0}
end
local generation = redis.call('HINCRBY', key, 'generation', 1)
redis.call('HSET', key, 'release', release, 'at', now_ms())
return {generation, 1}
