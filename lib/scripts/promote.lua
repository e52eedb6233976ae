#!lua flags=allow-oom
-- PROMOTE: move due frames of the delayed zset to the back of the due
-- list. KEYS: delayed, due, meta; ARGV[1]: at most this many.
-- Returns {promoted, ms until the next is due (-1: none), due's length,
-- 1 if the queue is paused, 1 if its format is frames}, so the caller can
-- sleep exactly that long, wake its blocked pops, and learn every tick
-- whether to take from the queue at all (redq_admin_pause()) and how to
-- read what pops that do not say (BLMOVE, at-most-once) take from it.
--@include _now.lua
--@include _pushall.lua
--@include _format.lua
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
if #due > 0 then
  for s = 1, #due, 1000 do
    redis.call('ZREM', KEYS[1], unpack(due, s, math.min(#due, s + 999)))
  end
  pushall('LPUSH', KEYS[2], due)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local wait = -1
if nxt[2] then
  wait = math.max(0, math.floor(tonumber(nxt[2]) - now))
end
local paused = 0
if redis.call('TYPE', KEYS[3])['ok'] == 'hash' and
   redis.call('HGET', KEYS[3], 'paused') == '1' then paused = 1 end
local fr = 0
if is_frames(KEYS[3]) then fr = 1 end
return {#due, wait, redis.call('LLEN', KEYS[2]), paused, fr}
