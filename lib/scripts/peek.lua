#!lua flags=no-writes
-- PEEK (admin, read only): the next ARGV[1] values to be taken. KEYS:
-- due, Q. Returns {values of due, values of Q}, each as LRANGE gives them
-- (the next to be taken last: both are taken from the right).
--@include _lists_only.lua N=2
local n = tonumber(ARGV[1])
local d = redis.call('LRANGE', KEYS[1], -n, -1)
local q = {}
if #d < n then q = redis.call('LRANGE', KEYS[2], -(n - #d), -1) end
return {d, q}
