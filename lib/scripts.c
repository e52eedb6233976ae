/*
 * The Lua scripts of at-least-once delivery, run by Redis with EVALSHA.
 *
 * Every multi-key step that must not be seen half-done is one script, so
 * it is atomic on the server: moving a batch into a processing list, acking
 * a batch, retrying or dead-lettering a message, promoting due delayed
 * messages, and returning a dead consumer's messages.
 *
 * Keys are always derived from the queue name Q by appending a suffix
 * (docs/DESIGN.md, "Key layout"), so that a name with a Redis Cluster hash
 * tag ("{orders}") keeps every key of the queue in one slot. Scripts that
 * build such names from Q get Q in KEYS.
 *
 * Times come from the server's clock (TIME), never the client's: a delayed
 * message's due time and the check that it is due use the same clock, so
 * client clock skew cannot deliver it early.
 */
#include <string.h>

#include "redq_private.h"

/* Server time in milliseconds, shared by the scripts that need it. */
#define LUA_NOW                                                                \
    "local t = redis.call('TIME')\n"                                           \
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

/*
 * TAKE: move up to ARGV[1] messages from ready lists to processing lists,
 * queues in priority order. KEYS: q1, proc1, q2, proc2, ...
 * Returns one group per queue that had messages: {index (1-based),
 * {message, ...}}, oldest first.
 * Per queue it is one LMPOP (Redis >= 7; LRANGE + LTRIM before) and one
 * LPUSH for the whole batch instead of one RPOPLPUSH per message, and it
 * leaves both lists exactly as those RPOPLPUSHes would: pushed oldest
 * first, so the oldest is deepest. The popped array is pushed as it is:
 * no per-message work in Lua.
 */
static const char take_src[] =
    "local n = tonumber(ARGV[1])\n"
    "local out = {}\n"
    "local got = 0\n"
    "for i = 1, #KEYS, 2 do\n"
    "  if got >= n then break end\n"
    "  local vals\n"
    "  local ok, r = pcall(redis.call, 'LMPOP', 1, KEYS[i], 'RIGHT', "
    "'COUNT', n - got)\n"
    "  if ok then\n"
    "    vals = r and r[2] or {}\n"
    "  elseif type(r) == 'table' and r.err and "
    "string.find(r.err, 'WRONGTYPE', 1, true) then\n"
    "    return r\n"
    "  else\n"
    "    local t = redis.call('LRANGE', KEYS[i], -(n - got), -1)\n"
    "    if #t > 0 then redis.call('LTRIM', KEYS[i], 0, -(#t + 1)) end\n"
    "    vals = {}\n"
    "    for j = #t, 1, -1 do vals[#vals + 1] = t[j] end\n"
    "  end\n"
    "  local k = #vals\n"
    "  if k > 0 then\n"
    "    for j = 1, k, 1000 do\n"
    "      redis.call('LPUSH', KEYS[i + 1], unpack(vals, j, math.min(k, j + 999)))\n"
    "    end\n"
    "    out[#out + 1] = {(i + 1) / 2, vals}\n"
    "    got = got + k\n"
    "  end\n"
    "end\n"
    "return out\n";

/*
 * ACK: remove acknowledged messages from a processing list.
 * KEYS[1]: the processing list; ARGV: the messages, as stored, in ack order.
 * When they are exactly its oldest ones (acks in delivery order, the usual
 * case), one LRANGE to check and one LTRIM remove them all; otherwise each
 * is removed with LREM -1, searching from the tail where the oldest are.
 */
static const char ack_src[] =
    "local k = #ARGV\n"
    "local tail = redis.call('LRANGE', KEYS[1], -k, -1)\n"
    "local same = #tail == k\n"
    "for i = 1, k do\n"
    "  if not same then break end\n"
    "  same = tail[k + 1 - i] == ARGV[i]\n"
    "end\n"
    "if same then\n"
    "  redis.call('LTRIM', KEYS[1], 0, -(k + 1))\n"
    "  return k\n"
    "end\n"
    "local n = 0\n"
    "for i = 1, k do\n"
    "  n = n + redis.call('LREM', KEYS[1], -1, ARGV[i])\n"
    "end\n"
    "return n\n";

/*
 * ACKFAST: the same when the client knows the acked messages are exactly
 * the k oldest of the processing list (acks in delivery order): it sends k
 * and the first and last of them instead of all. Both ends are checked;
 * if they do not match (the list changed under the client), nothing is
 * done and -1 tells the client to send the full ACK.
 * KEYS[1]: the processing list; ARGV: k, oldest, newest.
 */
static const char ackfast_src[] =
    "local k = tonumber(ARGV[1])\n"
    "if redis.call('LLEN', KEYS[1]) >= k and\n"
    "   redis.call('LINDEX', KEYS[1], -1) == ARGV[2] and\n"
    "   redis.call('LINDEX', KEYS[1], -k) == ARGV[3] then\n"
    "  redis.call('LTRIM', KEYS[1], 0, -(k + 1))\n"
    "  return k\n"
    "end\n"
    "return -1\n";

/*
 * SETTLE: a message failed (nack, visibility timeout, unparseable).
 * KEYS[1]: processing list ("" when the message is in none: fast mode);
 * KEYS[2]: the delayed zset (retry) or the dead list (dead).
 * ARGV[1]: "retry" | "dead"; ARGV[2]: the message as stored;
 * ARGV[3]: the new envelope; ARGV[4]: delay in ms (retry).
 * If the message is no longer in the processing list, someone else has
 * already requeued it (this consumer was taken for dead): do nothing, so
 * that it is not duplicated. Returns 1 if settled, 0 if not found.
 */
static const char settle_src[] =
    "if KEYS[1] ~= '' and redis.call('LREM', KEYS[1], -1, ARGV[2]) == 0 then\n"
    "  return 0\n"
    "end\n"
    "if ARGV[1] == 'retry' then\n" LUA_NOW
    "  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[3])\n"
    "else\n"
    "  redis.call('LPUSH', KEYS[2], ARGV[3])\n"
    "end\n"
    "return 1\n";

/*
 * DELAY: schedule messages. KEYS[1]: the delayed zset;
 * ARGV: delay_ms, envelope, delay_ms, envelope, ... (envelopes carry unique
 * ids, so equal payloads stay distinct members). Returns how many.
 */
static const char delay_src[] = LUA_NOW
    "for i = 1, #ARGV, 2 do\n"
    "  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[i]), ARGV[i + 1])\n"
    "end\n"
    "return #ARGV / 2\n";

/*
 * PROMOTE: move due messages of the delayed zset to the ready list, at the
 * end of the line (LPUSH). KEYS[1]: delayed zset; KEYS[2]: ready list;
 * ARGV[1]: at most this many. Returns {promoted, ms until the next is due
 * (-1: none)}, so the caller can sleep exactly that long.
 */
static const char promote_src[] = LUA_NOW
    "local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', "
    "0, tonumber(ARGV[1]))\n"
    "for i = 1, #due do\n"
    "  redis.call('ZREM', KEYS[1], due[i])\n"
    "  redis.call('LPUSH', KEYS[2], due[i])\n"
    "end\n"
    "local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')\n"
    "local wait = -1\n"
    "if nxt[2] then\n"
    "  wait = math.max(0, math.floor(tonumber(nxt[2]) - now))\n"
    "end\n"
    "return {#due, wait}\n";

/*
 * REAP: return the messages of consumers that stopped heartbeating.
 * KEYS[1]: ready list Q; KEYS[2]: Q:consumers; KEYS[3]: Q:dead;
 * KEYS[4]: Q:reaper (the lock); ARGV[1]: my id; ARGV[2]: lock ms;
 * ARGV[3]: max attempts.
 * Only the holder of the lock scans (one live consumer per period). Each
 * message of a dead consumer counts as one delivery attempt: its envelope's
 * "attempts" goes up by one (a raw message is wrapped, base64, to carry
 * it); at max attempts it is dead-lettered, else it goes back to the end of
 * the ready list that is popped next (RPUSH), oldest nearest, so the queue
 * order is kept. Returns how many messages moved (-1: lock held).
 */
static const char reap_src[] =
    "if not redis.call('SET', KEYS[4], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
    "  return -1\n"
    "end\n" LUA_NOW
    "local max = tonumber(ARGV[3])\n"
    "local b64c = "
    "'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'\n"
    "local function b64(s)\n"
    "  local out = {}\n"
    "  for i = 1, #s, 3 do\n"
    "    local a, b, c = string.byte(s, i, i + 2)\n"
    "    local n = a * 65536 + (b or 0) * 256 + (c or 0)\n"
    "    local q = {}\n"
    "    for k = 3, 0, -1 do\n"
    "      local x = math.floor(n / 64 ^ k) % 64\n"
    "      q[#q + 1] = string.sub(b64c, x + 1, x + 1)\n"
    "    end\n"
    "    if not b then q[3] = '=' end\n"
    "    if not c then q[4] = '=' end\n"
    "    out[#out + 1] = table.concat(q)\n"
    "  end\n"
    "  return table.concat(out)\n"
    "end\n"
    "local moved = 0\n"
    "for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do\n"
    "  if id ~= ARGV[1] and redis.call('EXISTS', KEYS[1] .. ':hb:' .. id) "
    "== 0 then\n"
    "    local proc = KEYS[1] .. ':proc:' .. id\n"
    "    while true do\n"
    "      local v = redis.call('LPOP', proc)\n"
    "      if not v then break end\n"
    "      local ok, e = pcall(cjson.decode, v)\n"
    "      if not (ok and type(e) == 'table' and\n"
    "              (type(e.body) == 'string' or type(e.body_b64) == "
    "'string')) then\n"
    "        e = {id = redis.sha1hex(v .. now .. moved), ts = now, "
    "body_b64 = b64(v)}\n"
    "      end\n"
    "      e.attempts = (tonumber(e.attempts) or 0) + 1\n"
    "      if e.attempts >= max then\n"
    "        e.dead_reason = 'consumer ' .. id .. ' stopped heartbeating ' ..\n"
    "          'holding it (attempt ' .. e.attempts .. ' of ' .. max .. ')'\n"
    "        e.dead_ts = now\n"
    "        e.queue = KEYS[1]\n"
    "        redis.call('LPUSH', KEYS[3], cjson.encode(e))\n"
    "      else\n"
    "        redis.call('RPUSH', KEYS[1], cjson.encode(e))\n"
    "      end\n"
    "      moved = moved + 1\n"
    "    end\n"
    "    redis.call('SREM', KEYS[2], id)\n"
    "  end\n"
    "end\n"
    "return moved\n";

static const char *const sources[REDQ__SCRIPT_COUNT] = {
    take_src, ack_src, settle_src, delay_src, promote_src, reap_src,
    ackfast_src,
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
