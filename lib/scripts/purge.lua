#!lua flags=allow-oom
-- PURGE (admin): delete the dead list. KEYS[1]: dead. Returns how many
-- values it held (LLEN and UNLINK in one step, so the count is exact).
--@include _lists_only.lua N=1
local n = redis.call('LLEN', KEYS[1])
redis.call('UNLINK', KEYS[1])
return n
