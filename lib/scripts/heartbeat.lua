#!lua flags=allow-oom
-- HEARTBEAT: the holders of one queue are alive. KEYS: consumers, then
-- hb:<h> for each; ARGV: ttl ms, then each h. Registration is the first
-- beat: a holder pops only after it is in the set, so a crash never leaves
-- a processing list no reaper would look at.
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], '1', 'PX', ARGV[1])
  redis.call('SADD', KEYS[1], ARGV[i])
end
return #KEYS - 1
