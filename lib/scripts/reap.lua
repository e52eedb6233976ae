#!lua flags=allow-oom
-- REAP: return up to ARGV[3] messages of a dead holder. KEYS: due, dead,
-- consumers, proc:<h>, fproc:<h>, hb:<h>, meta (counts "retried" and
-- "dead_lettered"); ARGV: holder, max attempts,
-- limit, id prefix for new frames, queue (percent-encoded, for dead
-- letters).
-- Each message counts the delivery it was in the middle of: raw ones
-- become frames with attempts 1 (a frames queue's producer frames, taken
-- from Q, keep their id and time: they get one more attempt like frames
-- from due), frames get one more. At max attempts it
-- is dead-lettered, else it goes to the end of due that is taken next,
-- oldest nearest (LPOP newest first, RPUSH each). The holder leaves the
-- consumers set once both lists are empty. A holder that beats again is
-- left alone. Returns {moved, dead-lettered, 1 if more remain}.
--@include _now.lua
--@include _frame.lua
--@include _count.lua
--@include _format.lua
if redis.call('EXISTS', KEYS[6]) == 1 then return {0, 0, 0} end
local max = tonumber(ARGV[2])
local lim = tonumber(ARGV[3])
local moved, died = 0, 0
local reason = 'holder%20' .. ARGV[1] .. '%20stopped%20heartbeating'
local fr = is_frames(KEYS[7])
for _, k in ipairs({5, 4}) do
  while moved < lim do
    local v = redis.call('LPOP', KEYS[k])
    if not v then break end
    local a, f
    if k == 5 or (fr and is_frame(v)) then
      a, f = bump(v)
    else
      a, f = 1, frame_raw(v, ARGV[4] .. now .. '.' .. moved, now)
    end
    if a >= max then
      redis.call('LPUSH', KEYS[2], dead(f, reason, now, ARGV[5]))
      died = died + 1
    else
      redis.call('RPUSH', KEYS[1], f)
    end
    moved = moved + 1
  end
end
count(KEYS[7], 'retried', moved - died)
count(KEYS[7], 'dead_lettered', died)
if redis.call('LLEN', KEYS[4]) + redis.call('LLEN', KEYS[5]) > 0 then
  return {moved, died, 1}
end
redis.call('SREM', KEYS[3], ARGV[1])
return {moved, died, 0}
