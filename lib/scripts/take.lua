#!lua flags=allow-oom
-- TAKE: move up to ARGV[1] messages into this holder's processing lists,
-- queues in priority order, each queue's due frames before its ready list.
-- KEYS, 6 per queue: due, Q, fproc:<holder>, proc:<holder>, consumers,
-- meta. ARGV: count, holder.
-- A paused queue (meta's field paused is "1", set by redq_admin_pause())
-- is skipped: the client learns pauses only every promote tick, so the
-- server has the last word (type checks still come first).
-- Returns {-1, i} when queue i's key holds a non-list (nothing moved), else
-- one group per source that had messages: {queue (1-based), kind (0: frames
-- from due, 1: from Q of a plain queue, 2: from Q of a frames queue, read
-- here with the pop so a format switch never comes between), {message,
-- ...} oldest first}.
-- A holder that is not registered takes nothing: a TAKE the server runs
-- late (its connection dropped while the server stalled) after the holder
-- gave everything back and left must not fill lists nobody watches.
-- Per source one LMPOP and one LPUSH of the same array: both lists end as
-- that many RPOPLPUSHes would leave them, with no per-message Lua work.
-- Counts what it took in meta's "taken".
--@include _pushall.lua
--@include _count.lua
--@include _format.lua
for i = 1, #KEYS do
  if i % 6 ~= 5 and i % 6 ~= 0 then
    local t = redis.call('TYPE', KEYS[i])['ok']
    if t ~= 'list' and t ~= 'none' then
      return {-1, math.floor((i - 1) / 6) + 1}
    end
  end
end
local n = tonumber(ARGV[1])
local out = {}
local got = 0
for i = 1, #KEYS, 6 do
  if redis.call('SISMEMBER', KEYS[i + 4], ARGV[2]) == 1 and
     not (redis.call('TYPE', KEYS[i + 5])['ok'] == 'hash' and
          redis.call('HGET', KEYS[i + 5], 'paused') == '1') then
    for j = 0, 1 do
      if got >= n then return out end
      local r = redis.call('LMPOP', 1, KEYS[i + j], 'RIGHT', 'COUNT', n - got)
      if r then
        pushall('LPUSH', KEYS[i + 2 + j], r[2])
        count(KEYS[i + 5], 'taken', #r[2])
        local kind = j
        if j == 1 and is_frames(KEYS[i + 5]) then kind = 2 end
        out[#out + 1] = {(i + 5) / 6, kind, r[2]}
        got = got + #r[2]
      end
    end
  end
end
return out
