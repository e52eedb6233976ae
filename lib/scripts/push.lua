#!lua
-- PUSH: a producer's batch for a frames queue. KEYS: Q, meta; ARGV: the
-- frames ("RQ1 id=.. ts=..\n<payload>"), in produce order.
-- The format is checked here, where no switch can come between the check
-- and the push: a queue switched to plain meanwhile gets nothing, and -1
-- tells the producer to learn the format again and resend the same batch
-- as plain payloads (nothing lost, order kept). Otherwise one LPUSH per
-- 1000 frames, as one LPUSH of them all would leave the list, and the
-- list's new length, as LPUSH answers. No allow-oom: it adds messages, and
-- is refused whole at maxmemory like an LPUSH.
--@include _format.lua
--@include _pushall.lua
if not is_frames(KEYS[2]) then return -1 end
pushall('LPUSH', KEYS[1], ARGV)
return redis.call('LLEN', KEYS[1])
