#!lua flags=allow-oom
-- ACKFAST: the client knows the acked messages are exactly the k oldest of
-- the list (one connection's pops, acked in delivery order), so it sends k
-- and both ends. If the ends do not match (the list changed under the
-- client: a reaper got there first), nothing is done and -1 asks for ACK.
-- KEYS[1]: the list, KEYS[2]: meta (counts "acked"); ARGV: k, oldest,
-- newest.
--@include _count.lua
local k = tonumber(ARGV[1])
if redis.call('LLEN', KEYS[1]) >= k and
   redis.call('LINDEX', KEYS[1], -1) == ARGV[2] and
   redis.call('LINDEX', KEYS[1], -k) == ARGV[3] then
  redis.call('LTRIM', KEYS[1], 0, -(k + 1))
  count(KEYS[2], 'acked', k)
  return k
end
return -1
