-- Ack finished jobs (fenced by lease token).
-- ARGV: prefix, n, (queue, id, token, tally) * n (tally: see tally_add in common.lua). Returns the ids whose lease was lost.
return ack_entries(ARGV[1], 3, tonumber(ARGV[2]))
