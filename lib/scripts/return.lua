#!lua flags=allow-oom
-- RETURN: give back what a live holder has in its processing lists beyond
-- what it tracks. KEYS: Q, due, proc:<h>, fproc:<h>, consumers, hb:<h>;
-- ARGV: "stop" | "sync", raw kept, frames kept, holder.
-- "sync" after a pop whose reply was lost: the client sends how many it
-- tracks in each list (after every ack and settle it sent before, which
-- Redis applied first); anything beyond that is at the head (newest) and
-- was never delivered, so it goes back to the end of its source that is
-- taken next, unchanged, attempts not counted. "stop": keeps are 0, and
-- the holder also leaves the consumers set and drops its heartbeat, all at
-- once. Returns {raw returned, frames returned}.
--@include _pushall.lua
local function back(src, dst, keep)
  local n = redis.call('LLEN', src) - keep
  if n <= 0 then return 0 end
  local vals = redis.call('LRANGE', src, 0, n - 1)
  redis.call('LTRIM', src, n, -1)
  pushall('RPUSH', dst, vals)
  return n
end
local r = back(KEYS[3], KEYS[1], tonumber(ARGV[2]))
local f = back(KEYS[4], KEYS[2], tonumber(ARGV[3]))
if ARGV[1] == 'stop' then
  redis.call('SREM', KEYS[5], ARGV[4])
  redis.call('DEL', KEYS[6])
end
return {r, f}
