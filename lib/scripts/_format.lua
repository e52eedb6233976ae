-- is_frames(meta): the queue's format (redq.h REDQ_FORMAT_*) is frames.
-- The format is the field "format" of the queue's meta hash (C names the
-- field REDQ__META_FORMAT, lib/redq_private.h; this is the Lua side's one
-- definition): "frames", or plain when absent, anything else, or when the
-- meta key holds another type.
local FORMAT_FIELD = 'format'
local function is_frames(meta)
  return redis.call('TYPE', meta)['ok'] == 'hash' and
         redis.call('HGET', meta, FORMAT_FIELD) == 'frames'
end
