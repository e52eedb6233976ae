#!lua flags=no-writes
-- SNAPSHOT (admin, read only): one queue's numbers at one instant.
-- KEYS: Q, due, delayed, dead, consumers, meta, then hb, proc, fproc of
-- each holder in ARGV (the members of consumers, read just before). A key
-- of an unexpected type counts 0 (a snapshot never fails on one queue).
-- Returns {ready, due, delayed, dead, registered, live, processing,
-- paused, ts of the oldest message to be taken next (-1 unknown: a plain
-- queue's ready list holds payloads, so only when it is empty; a frames
-- queue's says, unless a plain client pushed the one at its tail), server
-- time ms, then meta's
-- counters pushed, taken, acked, retried, dead_lettered (0 when absent),
-- 1 if the format is frames}.
--@include _now.lua
--@include _format.lua
local function len(k)
  local t = redis.call('TYPE', k)['ok']
  if t == 'list' then return redis.call('LLEN', k) end
  if t == 'zset' then return redis.call('ZCARD', k) end
  if t == 'set' then return redis.call('SCARD', k) end
  return 0
end
local isset = redis.call('TYPE', KEYS[5])['ok'] == 'set'
local live, proc = 0, 0
for i = 7, #KEYS, 3 do
  local h = ARGV[(i - 7) / 3 + 1]
  if isset and redis.call('SISMEMBER', KEYS[5], h) == 1 then
    if redis.call('EXISTS', KEYS[i]) == 1 then live = live + 1 end
    proc = proc + len(KEYS[i + 1]) + len(KEYS[i + 2])
  end
end
local paused = 0
if redis.call('TYPE', KEYS[6])['ok'] == 'hash' and
   redis.call('HGET', KEYS[6], 'paused') == '1' then paused = 1 end
local ready, due = len(KEYS[1]), len(KEYS[2])
local fr = is_frames(KEYS[6])
local function tail_ts(k)
  if redis.call('TYPE', k)['ok'] ~= 'list' then return -1 end
  local v = redis.call('LINDEX', k, -1)
  local nl = v and string.find(v, '\n', 1, true)
  if nl and string.sub(v, 1, 3) == 'RQ1' then
    return tonumber(string.match(string.sub(v, 1, nl - 1), ' ts=(%d+)')) or -1
  end
  return -1
end
-- The oldest of the next to be taken from due and from Q; Q's only on a
-- frames queue (a plain queue's values are payloads: never read).
local oldest = -1
if ready == 0 or fr then
  local d, q = -1, -1
  if due > 0 then d = tail_ts(KEYS[2]) end
  if ready > 0 then q = tail_ts(KEYS[1]) end
  if (due > 0 and d < 0) or (ready > 0 and q < 0) then
    oldest = -1
  elseif d >= 0 and q >= 0 then
    oldest = math.min(d, q)
  else
    oldest = math.max(d, q)
  end
end
local c = {0, 0, 0, 0, 0}
if redis.call('TYPE', KEYS[6])['ok'] == 'hash' then
  local v = redis.call('HMGET', KEYS[6], 'pushed', 'taken', 'acked', 'retried', 'dead_lettered')
  for i = 1, 5 do c[i] = tonumber(v[i]) or 0 end
end
local frn = 0
if fr then frn = 1 end
return {ready, due, len(KEYS[3]), len(KEYS[4]), len(KEYS[5]), live, proc, paused, oldest, now, c[1], c[2], c[3], c[4], c[5], frn}
