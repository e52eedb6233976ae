#!lua flags=no-writes
-- PEEK (admin, read only): the next ARGV[1] values to be taken. KEYS:
-- due, Q, meta. Returns {values of due, values of Q, 1 if the queue's
-- format is frames}, each as LRANGE gives them (the next to be taken
-- last: both are taken from the right).
--@include _lists_only.lua N=2
--@include _format.lua
local n = tonumber(ARGV[1])
local d = redis.call('LRANGE', KEYS[1], -n, -1)
local q = {}
if #d < n then q = redis.call('LRANGE', KEYS[2], -(n - #d), -1) end
local fr = 0
if is_frames(KEYS[3]) then fr = 1 end
return {d, q, fr}
