-- The partition fields of a queue's meta hash (C names them
-- REDQ__META_PARTITIONS and REDQ__META_PTAGS, lib/redq_private.h; this is
-- the Lua side's one definition; docs/DESIGN.md, "Partitioned queues"):
-- "partitions" the active count P (absent = 1), "ptags" the tags of
-- partitions 1.. ever made, space-separated decimal strings (partition i
-- is the queue "{" tag_i "}" Q "~" i; those at i >= P are retired).
local PARTITIONS_FIELD = 'partitions'
local PTAGS_FIELD = 'ptags'
local MAX_PARTITIONS = 256
