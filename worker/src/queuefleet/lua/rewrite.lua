-- Replace the stored payload of a job this worker holds (fenced by lease token): the
-- durable note that a job failed for good and its failure callbacks are being called.
-- ARGV: prefix, id, token, payload. Returns 1, or 0 when the lease was lost.
local p, id, token, payload = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('HGET', K.tokens(p), id) ~= token then return 0 end
redis.call('HSET', K.payloads(p), id, payload)
return 1
