/*
 * The Lua scripts of at-least-once delivery, run by Redis with EVALSHA.
 *
 * Every multi-key step that must not be seen half done is one script, so it
 * is atomic on the server: taking a batch into a processing list, acking,
 * retrying or dead-lettering a message, promoting due delayed messages,
 * returning what a consumer holds, recovering a dead consumer's messages.
 *
 * Rules every script here keeps:
 * - Every key it touches comes in KEYS (lib/keys.c builds them; all of one
 *   queue's keys share its cluster slot). No script builds a key name.
 * - Payload bytes are never re-encoded: ready lists and processing lists
 *   hold them as sent; frames (lib/frame.c) get a header line in front and
 *   the payload after it untouched. Lua only reads and rewrites the header.
 * - Each checks what it needs before its first write, so an error never
 *   leaves a half-moved batch (TAKE checks every key's type first).
 * - "#!lua flags=allow-oom" (all but DELAY, which adds messages and is
 *   refused whole at maxmemory, like an LPUSH): moving messages adds no memory,
 *   and a server at maxmemory is exactly when a queue must be drained.
 *   Without the flag Redis 7 refuses a write command mid-script, after
 *   earlier ones ran (an LMPOP done, its LPUSH refused: messages gone).
 *   Flags need Redis >= 7.0, which at-least-once delivery therefore needs.
 * - Work per call is bounded (batches, limits in ARGV): a script blocks
 *   the whole server while it runs.
 *
 * Times come from the server's clock (TIME), never the client's.
 */
#include <string.h>

#include "redq_private.h"

#define SHEBANG "#!lua flags=allow-oom\n"
/* Scripts that add data (DELAY schedules new messages) carry no flag: at
 * maxmemory Redis refuses them before they start, as it refuses LPUSH. */
#define SHEBANG_ADDS "#!lua\n"

/* Server time in milliseconds. */
#define LUA_NOW                                                                \
    "local t = redis.call('TIME')\n"                                           \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

/*
 * count(meta, field, n): add n to a counter of messages moved (redq.h,
 * redq_queue_info.pushed ...) in the queue's meta hash, in the same script
 * as the move it counts. redis.pcall: a counter must never fail the move
 * it counts, after its writes. A meta key of another type (made by hand)
 * or a least-privilege user whose ACL lacks HINCRBY just goes uncounted.
 * HINCRBY of a field that exists adds no memory, so it fits allow-oom.
 */
#define LUA_COUNT                                                              \
    "local function count(meta, field, n)\n"                                   \
    "  if n > 0 then redis.pcall('HINCRBY', meta, field, n) end\n"             \
    "end\n"

/* RPUSH/LPUSH a whole array, 1000 at a time (Lua's unpack has a limit). */
#define LUA_PUSHALL                                                            \
    "local function pushall(cmd, key, vals)\n"                                 \
    "  for s = 1, #vals, 1000 do\n"                                            \
    "    redis.call(cmd, key, unpack(vals, s, math.min(#vals, s + 999)))\n"    \
    "  end\n"                                                                  \
    "end\n"

/*
 * Frame header helpers, the Lua half of lib/frame.c's format:
 *   "RQ1" 1*(SP name=value) LF payload
 * bump(v): one more delivery attempt in frame v; returns (attempts, frame).
 * frame_raw(v, id, now): a raw payload wrapped with attempts 1.
 * dead(v, reason, now, q): frame v with the dead-letter fields added
 * (reason and q already percent-encoded).
 */
#define LUA_FRAME                                                              \
    "local function bump(v)\n"                                                 \
    "  local nl = string.find(v, '\\n', 1, true)\n"                            \
    "  if not nl or string.sub(v, 1, 3) ~= '" REDQ__FRAME_MAGIC "' then\n"     \
    "    return 1, '" REDQ__FRAME_MAGIC " a=1\\n' .. v\n"                     \
    "  end\n"                                                                  \
    "  local h = string.sub(v, 1, nl - 1)\n"                                   \
    "  local a = tonumber(string.match(h, ' a=(%d+)')) or 0\n"                 \
    "  a = a + 1\n"                                                            \
    "  local h2, n = string.gsub(h, ' a=%d+', ' a=' .. a, 1)\n"               \
    "  if n == 0 then h2 = h .. ' a=' .. a end\n"                             \
    "  return a, h2 .. string.sub(v, nl)\n"                                    \
    "end\n"                                                                    \
    "local function frame_raw(v, id, now)\n"                                   \
    "  return '" REDQ__FRAME_MAGIC " id=' .. id .. ' a=1 ts=' .. now .. "      \
    "'\\n' .. v\n"                                                             \
    "end\n"                                                                    \
    "local function dead(v, reason, now, q)\n"                                 \
    "  local nl = string.find(v, '\\n', 1, true)\n"                            \
    "  return string.sub(v, 1, nl - 1) .. ' dr=' .. reason .. ' dts=' .. "     \
    "now .. ' q=' .. q .. string.sub(v, nl)\n"                                 \
    "end\n"

/*
 * TAKE: move up to ARGV[1] messages into this holder's processing lists,
 * queues in priority order, each queue's due frames before its ready list.
 * KEYS, 6 per queue: due, Q, fproc:<holder>, proc:<holder>, consumers,
 * meta. ARGV: count, holder.
 * A paused queue (meta's field paused is "1", set by redq_admin_pause())
 * is skipped: the client learns pauses only every promote tick, so the
 * server has the last word (type checks still come first).
 * Returns {-1, i} when queue i's key holds a non-list (nothing moved), else
 * one group per source that had messages: {queue (1-based), kind (0: frames
 * from due, 1: raw from Q), {message, ...} oldest first}.
 * A holder that is not registered takes nothing: a TAKE the server runs
 * late (its connection dropped while the server stalled) after the holder
 * gave everything back and left must not fill lists nobody watches.
 * Per source one LMPOP and one LPUSH of the same array: both lists end as
 * that many RPOPLPUSHes would leave them, with no per-message Lua work.
 * Counts what it took in meta's "taken".
 */
static const char take_src[] =
    SHEBANG LUA_PUSHALL LUA_COUNT
    "for i = 1, #KEYS do\n"
    "  if i % 6 ~= 5 and i % 6 ~= 0 then\n"
    "    local t = redis.call('TYPE', KEYS[i])['ok']\n"
    "    if t ~= 'list' and t ~= 'none' then\n"
    "      return {-1, math.floor((i - 1) / 6) + 1}\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local n = tonumber(ARGV[1])\n"
    "local out = {}\n"
    "local got = 0\n"
    "for i = 1, #KEYS, 6 do\n"
    "  if redis.call('SISMEMBER', KEYS[i + 4], ARGV[2]) == 1 and\n"
    "     not (redis.call('TYPE', KEYS[i + 5])['ok'] == 'hash' and\n"
    "          redis.call('HGET', KEYS[i + 5], 'paused') == '1') then\n"
    "    for j = 0, 1 do\n"
    "      if got >= n then return out end\n"
    "      local r = redis.call('LMPOP', 1, KEYS[i + j], 'RIGHT', 'COUNT', "
    "n - got)\n"
    "      if r then\n"
    "        pushall('LPUSH', KEYS[i + 2 + j], r[2])\n"
    "        count(KEYS[i + 5], 'taken', #r[2])\n"
    "        out[#out + 1] = {(i + 5) / 6, j, r[2]}\n"
    "        got = got + #r[2]\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return out\n";

/*
 * ACK: remove acknowledged messages from one processing list.
 * KEYS[1]: the list, KEYS[2]: the queue's meta hash (counts "acked");
 * ARGV: the messages as stored, in ack order.
 * When they are exactly its oldest (acks in delivery order), one LRANGE to
 * check and one LTRIM; otherwise LREM -1 each, from the tail where the
 * oldest are. Equal values are interchangeable, so either finds "the" one.
 */
static const char ack_src[] =
    SHEBANG LUA_COUNT
    "local k = #ARGV\n"
    "local tail = redis.call('LRANGE', KEYS[1], -k, -1)\n"
    "local same = #tail == k\n"
    "for i = 1, k do\n"
    "  if not same then break end\n"
    "  same = tail[k + 1 - i] == ARGV[i]\n"
    "end\n"
    "if same then\n"
    "  redis.call('LTRIM', KEYS[1], 0, -(k + 1))\n"
    "  count(KEYS[2], 'acked', k)\n"
    "  return k\n"
    "end\n"
    "local n = 0\n"
    "for i = 1, k do\n"
    "  n = n + redis.call('LREM', KEYS[1], -1, ARGV[i])\n"
    "end\n"
    "count(KEYS[2], 'acked', n)\n"
    "return n\n";

/*
 * ACKFAST: the client knows the acked messages are exactly the k oldest of
 * the list (one connection's pops, acked in delivery order), so it sends k
 * and both ends. If the ends do not match (the list changed under the
 * client: a reaper got there first), nothing is done and -1 asks for ACK.
 * KEYS[1]: the list, KEYS[2]: meta (counts "acked"); ARGV: k, oldest,
 * newest.
 */
static const char ackfast_src[] =
    SHEBANG LUA_COUNT
    "local k = tonumber(ARGV[1])\n"
    "if redis.call('LLEN', KEYS[1]) >= k and\n"
    "   redis.call('LINDEX', KEYS[1], -1) == ARGV[2] and\n"
    "   redis.call('LINDEX', KEYS[1], -k) == ARGV[3] then\n"
    "  redis.call('LTRIM', KEYS[1], 0, -(k + 1))\n"
    "  count(KEYS[2], 'acked', k)\n"
    "  return k\n"
    "end\n"
    "return -1\n";

/*
 * SETTLE: a message failed (nack, visibility timeout, malformed frame).
 * KEYS[1]: the processing list it is in (with ARGV[5] == "1"); KEYS[2]: the
 * delayed zset (retry) or the dead list (dead); KEYS[3]: meta (counts
 * "retried" or "dead_lettered").
 * ARGV: "retry" | "dead", the message as stored, its new frame (built by
 * the client: the payload verbatim), delay ms, "1" to take it out of
 * KEYS[1] first ("0": at-most-once, it is in no list).
 * A message no longer in the processing list was already returned by
 * someone else (a reaper): nothing is done, so it is never duplicated.
 * Returns 1 if settled, 0 if not found.
 */
static const char settle_src[] =
    SHEBANG LUA_COUNT
    "if ARGV[5] == '1' and redis.call('LREM', KEYS[1], -1, ARGV[2]) == 0 "
    "then\n"
    "  return 0\n"
    "end\n"
    "if ARGV[1] == 'retry' then\n" LUA_NOW
    "  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])\n"
    "  count(KEYS[3], 'retried', 1)\n"
    "else\n"
    "  redis.call('LPUSH', KEYS[2], ARGV[3])\n"
    "  count(KEYS[3], 'dead_lettered', 1)\n"
    "end\n"
    "return 1\n";

/*
 * DELAY: schedule frames. KEYS[1]: the delayed zset; ARGV: delay_ms,
 * frame, delay_ms, frame, ... (frames carry unique ids, so equal payloads
 * stay distinct members). Returns how many.
 */
static const char delay_src[] =
    SHEBANG_ADDS LUA_NOW
    "for i = 1, #ARGV, 2 do\n"
    "  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[i]), ARGV[i + 1])\n"
    "end\n"
    "return #ARGV / 2\n";

/*
 * PROMOTE: move due frames of the delayed zset to the back of the due
 * list. KEYS: delayed, due, meta; ARGV[1]: at most this many.
 * Returns {promoted, ms until the next is due (-1: none), due's length,
 * 1 if the queue is paused}, so the caller can sleep exactly that long,
 * wake its blocked pops, and learn every tick whether to take from the
 * queue at all (redq_admin_pause()).
 */
static const char promote_src[] =
    SHEBANG LUA_NOW LUA_PUSHALL
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', "
    "0, tonumber(ARGV[1]))\n"
    "if #due > 0 then\n"
    "  for s = 1, #due, 1000 do\n"
    "    redis.call('ZREM', KEYS[1], unpack(due, s, math.min(#due, s + 999)))\n"
    "  end\n"
    "  pushall('LPUSH', KEYS[2], due)\n"
    "end\n"
    "local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
    "local wait = -1\n"
    "if nxt[2] then\n"
    "  wait = math.max(0, math.floor(tonumber(nxt[2]) - now))\n"
    "end\n"
    "local paused = 0\n"
    "if redis.call('TYPE', KEYS[3])['ok'] == 'hash' and\n"
    "   redis.call('HGET', KEYS[3], 'paused') == '1' then paused = 1 end\n"
    "return {#due, wait, redis.call('LLEN', KEYS[2]), paused}\n";

/*
 * REAPSCAN: which holders of a queue stopped heartbeating. KEYS: consumers,
 * reaper (lock), then hb:<h> for each candidate; ARGV: my consumer id, lock
 * ms, then the candidates h (same order). Only one live consumer scans per
 * period (the lock), so a fleet does not repeat the work. Returns the dead
 * holders (still registered, no heartbeat), or -1 when another holds the
 * lock.
 */
static const char reapscan_src[] =
    SHEBANG
    "local l = redis.call('GET', KEYS[2])\n"
    "if l and l ~= ARGV[1] then return -1 end\n"
    "redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])\n"
    "local out = {}\n"
    "for i = 3, #KEYS do\n"
    "  local h = ARGV[i]\n"
    "  if redis.call('SISMEMBER', KEYS[1], h) == 1 and\n"
    "     redis.call('EXISTS', KEYS[i]) == 0 then\n"
    "    out[#out + 1] = h\n"
    "  end\n"
    "end\n"
    "return out\n";

/*
 * REAP: return up to ARGV[3] messages of a dead holder. KEYS: due, dead,
 * consumers, proc:<h>, fproc:<h>, hb:<h>, meta (counts "retried" and
 * "dead_lettered"); ARGV: holder, max attempts,
 * limit, id prefix for new frames, queue (percent-encoded, for dead
 * letters).
 * Each message counts the delivery it was in the middle of: raw ones
 * become frames with attempts 1, frames get one more. At max attempts it
 * is dead-lettered, else it goes to the end of due that is taken next,
 * oldest nearest (LPOP newest first, RPUSH each). The holder leaves the
 * consumers set once both lists are empty. A holder that beats again is
 * left alone. Returns {moved, dead-lettered, 1 if more remain}.
 */
static const char reap_src[] =
    SHEBANG LUA_NOW LUA_FRAME LUA_COUNT
    "if redis.call('EXISTS', KEYS[6]) == 1 then return {0, 0, 0} end\n"
    "local max = tonumber(ARGV[2])\n"
    "local lim = tonumber(ARGV[3])\n"
    "local moved, died = 0, 0\n"
    "local reason = 'holder%20' .. ARGV[1] .. '%20stopped%20heartbeating'\n"
    "for _, k in ipairs({5, 4}) do\n"
    "  while moved < lim do\n"
    "    local v = redis.call('LPOP', KEYS[k])\n"
    "    if not v then break end\n"
    "    local a, f\n"
    "    if k == 5 then\n"
    "      a, f = bump(v)\n"
    "    else\n"
    "      a, f = 1, frame_raw(v, ARGV[4] .. now .. '.' .. moved, now)\n"
    "    end\n"
    "    if a >= max then\n"
    "      redis.call('LPUSH', KEYS[2], dead(f, reason, now, ARGV[5]))\n"
    "      died = died + 1\n"
    "    else\n"
    "      redis.call('RPUSH', KEYS[1], f)\n"
    "    end\n"
    "    moved = moved + 1\n"
    "  end\n"
    "end\n"
    "count(KEYS[7], 'retried', moved - died)\n"
    "count(KEYS[7], 'dead_lettered', died)\n"
    "if redis.call('LLEN', KEYS[4]) + redis.call('LLEN', KEYS[5]) > 0 then\n"
    "  return {moved, died, 1}\n"
    "end\n"
    "redis.call('SREM', KEYS[3], ARGV[1])\n"
    "return {moved, died, 0}\n";

/*
 * RETURN: give back what a live holder has in its processing lists beyond
 * what it tracks. KEYS: Q, due, proc:<h>, fproc:<h>, consumers, hb:<h>;
 * ARGV: "stop" | "sync", raw kept, frames kept, holder.
 * "sync" after a pop whose reply was lost: the client sends how many it
 * tracks in each list (after every ack and settle it sent before, which
 * Redis applied first); anything beyond that is at the head (newest) and
 * was never delivered, so it goes back to the end of its source that is
 * taken next, unchanged, attempts not counted. "stop": keeps are 0, and
 * the holder also leaves the consumers set and drops its heartbeat, all at
 * once. Returns {raw returned, frames returned}.
 */
static const char return_src[] =
    SHEBANG LUA_PUSHALL
    "local function back(src, dst, keep)\n"
    "  local n = redis.call('LLEN', src) - keep\n"
    "  if n <= 0 then return 0 end\n"
    "  local vals = redis.call('LRANGE', src, 0, n - 1)\n"
    "  redis.call('LTRIM', src, n, -1)\n"
    "  pushall('RPUSH', dst, vals)\n"
    "  return n\n"
    "end\n"
    "local r = back(KEYS[3], KEYS[1], tonumber(ARGV[2]))\n"
    "local f = back(KEYS[4], KEYS[2], tonumber(ARGV[3]))\n"
    "if ARGV[1] == 'stop' then\n"
    "  redis.call('SREM', KEYS[5], ARGV[4])\n"
    "  redis.call('DEL', KEYS[6])\n"
    "end\n"
    "return {r, f}\n";

/*
 * HEARTBEAT: the holders of one queue are alive. KEYS: consumers, then
 * hb:<h> for each; ARGV: ttl ms, then each h. Registration is the first
 * beat: a holder pops only after it is in the set, so a crash never leaves
 * a processing list no reaper would look at.
 */
static const char heartbeat_src[] =
    SHEBANG
    "for i = 2, #KEYS do\n"
    "  redis.call('SET', KEYS[i], '1', 'PX', ARGV[1])\n"
    "  redis.call('SADD', KEYS[1], ARGV[i])\n"
    "end\n"
    "return #KEYS - 1\n";

/*
 * DEADREQUEUE: move up to ARGV[1] dead letters, oldest first, to the back
 * of due. KEYS: dead, due. Each frame keeps its id, its ts and any field
 * redq does not know, loses the dead-letter fields, and starts again at
 * attempts 0; the payload is untouched. A value that is not a frame (put
 * there by hand) becomes the payload of a new one. Both keys' types are
 * checked before anything moves. Returns {moved, left}.
 */
/*
 * revive(v): dead letter v as a frame to take again: it keeps its id, its
 * ts and any field redq does not know, loses the dead-letter fields, and
 * starts again at attempts 0; the payload is untouched. A value that is
 * not a frame (put there by hand) becomes the payload of a new one.
 */
#define LUA_REVIVE                                                             \
    "local function revive(v)\n"                                               \
    "  local nl = string.find(v, '\\n', 1, true)\n"                            \
    "  if nl and string.sub(v, 1, 3) == '" REDQ__FRAME_MAGIC "' then\n"        \
    "    local parts = {'" REDQ__FRAME_MAGIC "'}\n"                            \
    "    for fld in string.gmatch(string.sub(v, 4, nl - 1), '[^ ]+') do\n"     \
    "      local name = string.match(fld, '^([^=]*)=')\n"                      \
    "      if name ~= 'a' and name ~= 'dr' and name ~= 'dts' and "             \
    "name ~= 'q' then\n"                                                       \
    "        parts[#parts + 1] = fld\n"                                        \
    "      end\n"                                                              \
    "    end\n"                                                                \
    "    parts[#parts + 1] = 'a=0'\n"                                          \
    "    return table.concat(parts, ' ') .. string.sub(v, nl)\n"               \
    "  end\n"                                                                  \
    "  return '" REDQ__FRAME_MAGIC " a=0\\n' .. v\n"                           \
    "end\n"

/* Refuse (before any write) keys KEYS[1..n] that hold something other
 * than a list. */
#define LUA_LISTS_ONLY(n)                                                      \
    "for i = 1, " #n " do\n"                                                   \
    "  local t = redis.call('TYPE', KEYS[i])['ok']\n"                          \
    "  if t ~= 'list' and t ~= 'none' then\n"                                  \
    "    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. "  \
    "t)\n"                                                                     \
    "  end\n"                                                                  \
    "end\n"

/*
 * DEADREQUEUE: move up to ARGV[1] dead letters, oldest first, to the back
 * of due, each revive()d. KEYS: dead, due. Both keys' types are checked
 * before anything moves. Returns {moved, left}.
 */
static const char deadrequeue_src[] =
    SHEBANG LUA_REVIVE LUA_LISTS_ONLY(2)
    "local moved = 0\n"
    "while moved < tonumber(ARGV[1]) do\n"
    "  local v = redis.call('RPOP', KEYS[1])\n"
    "  if not v then break end\n"
    "  redis.call('LPUSH', KEYS[2], revive(v))\n"
    "  moved = moved + 1\n"
    "end\n"
    "return {moved, redis.call('LLEN', KEYS[1])}\n";

/*
 * DEADONE (admin): requeue or delete the one dead letter whose frame has
 * id ARGV[2] (percent-encoded as frames store it). KEYS: dead, due; ARGV:
 * "requeue" | "delete", id, first index to look at, most values to look
 * at in this call (bounded: a script blocks the server). The list is read
 * in pages of 100 from the head; the value found is removed with LREM
 * count 1 of its exact bytes (equal values are interchangeable).
 * Returns {1, -1} when done, {0, -1} when the list ended without it, and
 * {0, next index} when the bound was reached first (call again from
 * there).
 */
static const char deadone_src[] =
    SHEBANG LUA_REVIVE LUA_LISTS_ONLY(2)
    "local from = tonumber(ARGV[3])\n"
    "local lim = tonumber(ARGV[4])\n"
    "local want = 'id=' .. ARGV[2]\n"
    "local seen = 0\n"
    "while seen < lim do\n"
    "  local vals = redis.call('LRANGE', KEYS[1], from, from + 99)\n"
    "  if #vals == 0 then return {0, -1} end\n"
    "  for _, v in ipairs(vals) do\n"
    "    local nl = string.find(v, '\\n', 1, true)\n"
    "    if nl and string.sub(v, 1, 3) == '" REDQ__FRAME_MAGIC "' then\n"
    "      for fld in string.gmatch(string.sub(v, 4, nl - 1), '[^ ]+') do\n"
    "        if fld == want and redis.call('LREM', KEYS[1], 1, v) == 1 then\n"
    "          if ARGV[1] == 'requeue' then\n"
    "            redis.call('LPUSH', KEYS[2], revive(v))\n"
    "          end\n"
    "          return {1, -1}\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  from = from + #vals\n"
    "  seen = seen + #vals\n"
    "end\n"
    "return {0, from}\n";

/*
 * PURGE (admin): delete the dead list. KEYS[1]: dead. Returns how many
 * values it held (LLEN and UNLINK in one step, so the count is exact).
 */
static const char purge_src[] =
    SHEBANG LUA_LISTS_ONLY(1)
    "local n = redis.call('LLEN', KEYS[1])\n"
    "redis.call('UNLINK', KEYS[1])\n"
    "return n\n";

/*
 * SNAPSHOT (admin, read only): one queue's numbers at one instant.
 * KEYS: Q, due, delayed, dead, consumers, meta, then hb, proc, fproc of
 * each holder in ARGV (the members of consumers, read just before). A key
 * of an unexpected type counts 0 (a snapshot never fails on one queue).
 * Returns {ready, due, delayed, dead, registered, live, processing,
 * paused, ts of the oldest due frame (-1 unknown: the ready list holds
 * raw payloads, so only when it is empty), server time ms, then meta's
 * counters pushed, taken, acked, retried, dead_lettered (0 when absent)}.
 */
static const char snapshot_src[] =
    "#!lua flags=no-writes\n" LUA_NOW
    "local function len(k)\n"
    "  local t = redis.call('TYPE', k)['ok']\n"
    "  if t == 'list' then return redis.call('LLEN', k) end\n"
    "  if t == 'zset' then return redis.call('ZCARD', k) end\n"
    "  if t == 'set' then return redis.call('SCARD', k) end\n"
    "  return 0\n"
    "end\n"
    "local isset = redis.call('TYPE', KEYS[5])['ok'] == 'set'\n"
    "local live, proc = 0, 0\n"
    "for i = 7, #KEYS, 3 do\n"
    "  local h = ARGV[(i - 7) / 3 + 1]\n"
    "  if isset and redis.call('SISMEMBER', KEYS[5], h) == 1 then\n"
    "    if redis.call('EXISTS', KEYS[i]) == 1 then live = live + 1 end\n"
    "    proc = proc + len(KEYS[i + 1]) + len(KEYS[i + 2])\n"
    "  end\n"
    "end\n"
    "local paused = 0\n"
    "if redis.call('TYPE', KEYS[6])['ok'] == 'hash' and\n"
    "   redis.call('HGET', KEYS[6], 'paused') == '1' then paused = 1 end\n"
    "local ready, due = len(KEYS[1]), len(KEYS[2])\n"
    "local oldest = -1\n"
    "if ready == 0 and due > 0 and "
    "redis.call('TYPE', KEYS[2])['ok'] == 'list' then\n"
    "  local v = redis.call('LINDEX', KEYS[2], -1)\n"
    "  local nl = string.find(v, '\\n', 1, true)\n"
    "  if nl and string.sub(v, 1, 3) == '" REDQ__FRAME_MAGIC "' then\n"
    "    oldest = tonumber(string.match(string.sub(v, 1, nl - 1), "
    "' ts=(%d+)')) or -1\n"
    "  end\n"
    "end\n"
    "local c = {0, 0, 0, 0, 0}\n"
    "if redis.call('TYPE', KEYS[6])['ok'] == 'hash' then\n"
    "  local v = redis.call('HMGET', KEYS[6], 'pushed', 'taken', 'acked', "
    "'retried', 'dead_lettered')\n"
    "  for i = 1, 5 do c[i] = tonumber(v[i]) or 0 end\n"
    "end\n"
    "return {ready, due, len(KEYS[3]), len(KEYS[4]), len(KEYS[5]), live, "
    "proc, paused, oldest, now, c[1], c[2], c[3], c[4], c[5]}\n";

/*
 * PEEK (admin, read only): the next ARGV[1] values to be taken. KEYS:
 * due, Q. Returns {values of due, values of Q}, each as LRANGE gives them
 * (the next to be taken last: both are taken from the right).
 */
static const char peek_src[] =
    "#!lua flags=no-writes\n" LUA_LISTS_ONLY(2)
    "local n = tonumber(ARGV[1])\n"
    "local d = redis.call('LRANGE', KEYS[1], -n, -1)\n"
    "local q = {}\n"
    "if #d < n then q = redis.call('LRANGE', KEYS[2], -(n - #d), -1) end\n"
    "return {d, q}\n";

static const char *const sources[REDQ__SCRIPT_COUNT] = {
    [REDQ__SCRIPT_TAKE] = take_src,
    [REDQ__SCRIPT_ACK] = ack_src,
    [REDQ__SCRIPT_SETTLE] = settle_src,
    [REDQ__SCRIPT_DELAY] = delay_src,
    [REDQ__SCRIPT_PROMOTE] = promote_src,
    [REDQ__SCRIPT_REAPSCAN] = reapscan_src,
    [REDQ__SCRIPT_REAP] = reap_src,
    [REDQ__SCRIPT_RETURN] = return_src,
    [REDQ__SCRIPT_HEARTBEAT] = heartbeat_src,
    [REDQ__SCRIPT_DEADREQUEUE] = deadrequeue_src,
    [REDQ__SCRIPT_ACKFAST] = ackfast_src,
    [REDQ__SCRIPT_DEADONE] = deadone_src,
    [REDQ__SCRIPT_PURGE] = purge_src,
    [REDQ__SCRIPT_SNAPSHOT] = snapshot_src,
    [REDQ__SCRIPT_PEEK] = peek_src,
};

const char *redq__script_source(int which)
{
    return which >= 0 && which < REDQ__SCRIPT_COUNT ? sources[which] : NULL;
}

void redq__scripts_init(redq__scripts *s)
{
    int i;
    for (i = 0; i < REDQ__SCRIPT_COUNT; i++)
        redq__sha1_hex(sources[i], strlen(sources[i]), s->sha[i]);
}
