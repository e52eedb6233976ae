#!lua flags=allow-oom
-- REAPSCAN: which holders of a queue stopped heartbeating. KEYS: consumers,
-- reaper (lock), then hb:<h> for each candidate; ARGV: my consumer id, lock
-- ms, then the candidates h (same order). Only one live consumer scans per
-- period (the lock), so a fleet does not repeat the work. Returns the dead
-- holders (still registered, no heartbeat), or -1 when another holds the
-- lock.
local l = redis.call('GET', KEYS[2])
if l and l ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
local out = {}
for i = 3, #KEYS do
  local h = ARGV[i]
  if redis.call('SISMEMBER', KEYS[1], h) == 1 and
     redis.call('EXISTS', KEYS[i]) == 0 then
    out[#out + 1] = h
  end
end
return out
