-- count(meta, field, n): add n to a counter of messages moved (redq.h,
-- redq_queue_info.pushed ...) in the queue's meta hash, in the same script
-- as the move it counts. redis.pcall: a counter must never fail the move
-- it counts, after its writes. A meta key of another type (made by hand)
-- or a least-privilege user whose ACL lacks HINCRBY just goes uncounted.
-- HINCRBY of a field that exists adds no memory, so it fits allow-oom.
local function count(meta, field, n)
  if n > 0 then redis.pcall('HINCRBY', meta, field, n) end
end
