#!lua flags=allow-oom
-- DEADREQUEUE: move up to ARGV[1] dead letters, oldest first, to the back
-- of due, each revive()d. KEYS: dead, due. Both keys' types are checked
-- before anything moves. Returns {moved, left}.
--@include _revive.lua
--@include _lists_only.lua N=2
local moved = 0
while moved < tonumber(ARGV[1]) do
  local v = redis.call('RPOP', KEYS[1])
  if not v then break end
  redis.call('LPUSH', KEYS[2], revive(v))
  moved = moved + 1
end
return {moved, redis.call('LLEN', KEYS[1])}
