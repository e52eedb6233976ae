#!lua flags=allow-oom
-- ACK: remove acknowledged messages from one processing list.
-- KEYS[1]: the list, KEYS[2]: the queue's meta hash (counts "acked");
-- ARGV: the messages as stored, in ack order.
-- When they are exactly its oldest (acks in delivery order), one LRANGE to
-- check and one LTRIM; otherwise LREM -1 each, from the tail where the
-- oldest are. Equal values are interchangeable, so either finds "the" one.
--@include _count.lua
local k = #ARGV
local tail = redis.call('LRANGE', KEYS[1], -k, -1)
local same = #tail == k
for i = 1, k do
  if not same then break end
  same = tail[k + 1 - i] == ARGV[i]
end
if same then
  redis.call('LTRIM', KEYS[1], 0, -(k + 1))
  count(KEYS[2], 'acked', k)
  return k
end
local n = 0
for i = 1, k do
  n = n + redis.call('LREM', KEYS[1], -1, ARGV[i])
end
count(KEYS[2], 'acked', n)
return n
