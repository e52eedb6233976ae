#!lua flags=allow-oom
-- SETFORMAT (admin): set a queue's format. KEYS: Q, meta; ARGV[1]:
-- "plain" | "frames".
-- frames -> plain only while Q is empty: nothing would parse the frames
-- still in it, and they would be delivered header and all. (plain ->
-- frames is always allowed: a plain value on a frames queue is delivered
-- whole.) Checked and set in one step, so no producer's PUSH can come
-- between. Returns {1, 0} changed, {0, 0} already so, {-1, ready length}
-- refused.
--@include _format.lua
--@include _lists_only.lua N=1
local fr = is_frames(KEYS[2])
if ARGV[1] == 'frames' then
  if fr then return {0, 0} end
  redis.call('HSET', KEYS[2], FORMAT_FIELD, 'frames')
  return {1, 0}
end
if not fr then return {0, 0} end
local n = redis.call('LLEN', KEYS[1])
if n > 0 then return {-1, n} end
redis.call('HDEL', KEYS[2], FORMAT_FIELD)
return {1, 0}
