#!lua
-- DELAY: schedule frames. KEYS[1]: the delayed zset; ARGV: delay_ms,
-- frame, delay_ms, frame, ... (frames carry unique ids, so equal payloads
-- stay distinct members). Returns how many.
--@include _now.lua
for i = 1, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[i]), ARGV[i + 1])
end
return #ARGV / 2
