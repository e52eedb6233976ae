#!lua flags=allow-oom
-- SETTLE: a message failed (nack, visibility timeout, malformed frame).
-- KEYS[1]: the processing list it is in (with ARGV[5] == "1"); KEYS[2]: the
-- delayed zset (retry) or the dead list (dead); KEYS[3]: meta (counts
-- "retried" or "dead_lettered").
-- ARGV: "retry" | "dead", the message as stored, its new frame (built by
-- the client: the payload verbatim), delay ms, "1" to take it out of
-- KEYS[1] first ("0": at-most-once, it is in no list).
-- A message no longer in the processing list was already returned by
-- someone else (a reaper): nothing is done, so it is never duplicated.
-- Returns 1 if settled, 0 if not found.
--@include _count.lua
if ARGV[5] == '1' and redis.call('LREM', KEYS[1], -1, ARGV[2]) == 0 then
  return 0
end
if ARGV[1] == 'retry' then
--@include _now.lua
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])
  count(KEYS[3], 'retried', 1)
else
  redis.call('LPUSH', KEYS[2], ARGV[3])
  count(KEYS[3], 'dead_lettered', 1)
end
return 1
