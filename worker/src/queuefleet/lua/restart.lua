-- Record a restart signal, for every worker (no hosts given) or for the workers
-- of the given hosts only (a rolling deploy signals the hosts it has switched).
-- Each signal carries a unique id: a worker restarts when it sees a signal id
-- other than the one it saw at boot, so a signal is never mistaken for an old
-- one, even after Redis lost its data. With a release, a key that already
-- records that release is left alone: many signals for one release, one restart.
-- Host keys expire after host_ttl_s (no key per host ever signalled stays for good).
-- ARGV: prefix, release, signal_id, host_ttl_s, host1, host2, ...
-- Returns {signalled, skipped}.
local p, release, signal_id, host_ttl = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local keys = {}
if #ARGV == 4 then
  keys[1] = K.restart(p)
else
  for i = 5, #ARGV do keys[#keys + 1] = K.host_restart(p, ARGV[i]) end
end
local signalled, skipped = 0, 0
local now = now_ms()
for i, key in ipairs(keys) do
  if release ~= '' and redis.call('HGET', key, 'release') == release then
    skipped = skipped + 1
  else
    redis.call('HINCRBY', key, 'generation', 1)
    redis.call('HSET', key, 'release', release, 'at', now, 'id', signal_id)
    signalled = signalled + 1
  end
  if #ARGV > 4 then redis.call('EXPIRE', key, host_ttl) end
end
return {signalled, skipped}
