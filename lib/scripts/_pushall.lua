-- RPUSH/LPUSH a whole array, 1000 at a time (Lua's unpack has a limit).
local function pushall(cmd, key, vals)
  for s = 1, #vals, 1000 do
    redis.call(cmd, key, unpack(vals, s, math.min(#vals, s + 999)))
  end
end
