-- Record a restart generation, for every worker (no hosts given) or for the
-- workers of the given hosts only (a rolling deploy signals the hosts it has
-- switched). With a release id, a key that already records that release is
-- left alone, so many signals for one release cause one restart.
-- ARGV: prefix, release, host1, host2, ...
-- Returns {signalled, skipped}: how many keys were bumped / already on release.
local prefix, release = ARGV[1], ARGV[2]
local keys = {}
if #ARGV == 2 then
  keys[1] = prefix .. ':restart'
else
  for i = 3, #ARGV do keys[#keys + 1] = prefix .. ':restart:host:' .. ARGV[i] end
end
local signalled, skipped = 0, 0
local now = now_ms()
for _, key in ipairs(keys) do
  if release ~= '' and redis.call('HGET', key, 'release') == release then
    skipped = skipped + 1
  else
    redis.call('HINCRBY', key, 'generation', 1)
    redis.call('HSET', key, 'release', release, 'at', now)
    signalled = signalled + 1
  end
end
return {signalled, skipped}
