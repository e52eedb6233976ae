#!lua flags=allow-oom
-- DEADONE (admin): requeue or delete the one dead letter whose frame has
-- id ARGV[2] (percent-encoded as frames store it). KEYS: dead, due; ARGV:
-- "requeue" | "delete", id, first index to look at, most values to look
-- at in this call (bounded: a script blocks the server). The list is read
-- in pages of 100 from the head; the value found is removed with LREM
-- count 1 of its exact bytes (equal values are interchangeable).
-- Returns {1, -1} when done, {0, -1} when the list ended without it, and
-- {0, next index} when the bound was reached first (call again from
-- there).
--@include _revive.lua
--@include _lists_only.lua N=2
local from = tonumber(ARGV[3])
local lim = tonumber(ARGV[4])
local want = 'id=' .. ARGV[2]
local seen = 0
while seen < lim do
  local vals = redis.call('LRANGE', KEYS[1], from, from + 99)
  if #vals == 0 then return {0, -1} end
  for _, v in ipairs(vals) do
    local nl = string.find(v, '\n', 1, true)
    if nl and string.sub(v, 1, 3) == 'RQ1' then
      for fld in string.gmatch(string.sub(v, 4, nl - 1), '[^ ]+') do
        if fld == want and redis.call('LREM', KEYS[1], 1, v) == 1 then
          if ARGV[1] == 'requeue' then
            redis.call('LPUSH', KEYS[2], revive(v))
          end
          return {1, -1}
        end
      end
    end
  end
  from = from + #vals
  seen = seen + #vals
end
return {0, from}
