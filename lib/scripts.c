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
 *
 * The scripts live in lib/scripts/NAME.lua, each documented there, with the
 * helpers they share (_now.lua, _frame.lua, ...) included by a directive.
 * lib/scripts/gen.py embeds them at build time into scripts_lua.h, with
 * the SHA-1 Redis names each one by, computed by the generator over the
 * exact bytes sent with SCRIPT LOAD: the library carries no SHA-1 code,
 * and a SHA cannot disagree with its script.
 */
#include <string.h>

#include "redq_private.h"
#include "scripts_lua.h" /* generated: redq__lua_<name>, REDQ__LUA_<NAME>_SHA */

static const char *const sources[REDQ__SCRIPT_COUNT] = {
    [REDQ__SCRIPT_TAKE] = redq__lua_take,
    [REDQ__SCRIPT_ACK] = redq__lua_ack,
    [REDQ__SCRIPT_SETTLE] = redq__lua_settle,
    [REDQ__SCRIPT_DELAY] = redq__lua_delay,
    [REDQ__SCRIPT_PROMOTE] = redq__lua_promote,
    [REDQ__SCRIPT_REAPSCAN] = redq__lua_reapscan,
    [REDQ__SCRIPT_REAP] = redq__lua_reap,
    [REDQ__SCRIPT_RETURN] = redq__lua_return,
    [REDQ__SCRIPT_HEARTBEAT] = redq__lua_heartbeat,
    [REDQ__SCRIPT_DEADREQUEUE] = redq__lua_deadrequeue,
    [REDQ__SCRIPT_ACKFAST] = redq__lua_ackfast,
    [REDQ__SCRIPT_DEADONE] = redq__lua_deadone,
    [REDQ__SCRIPT_PURGE] = redq__lua_purge,
    [REDQ__SCRIPT_SNAPSHOT] = redq__lua_snapshot,
    [REDQ__SCRIPT_PEEK] = redq__lua_peek,
    [REDQ__SCRIPT_PUSH] = redq__lua_push,
    [REDQ__SCRIPT_SETFORMAT] = redq__lua_setformat,
};

static const char *const shas[REDQ__SCRIPT_COUNT] = {
    [REDQ__SCRIPT_TAKE] = REDQ__LUA_TAKE_SHA,
    [REDQ__SCRIPT_ACK] = REDQ__LUA_ACK_SHA,
    [REDQ__SCRIPT_SETTLE] = REDQ__LUA_SETTLE_SHA,
    [REDQ__SCRIPT_DELAY] = REDQ__LUA_DELAY_SHA,
    [REDQ__SCRIPT_PROMOTE] = REDQ__LUA_PROMOTE_SHA,
    [REDQ__SCRIPT_REAPSCAN] = REDQ__LUA_REAPSCAN_SHA,
    [REDQ__SCRIPT_REAP] = REDQ__LUA_REAP_SHA,
    [REDQ__SCRIPT_RETURN] = REDQ__LUA_RETURN_SHA,
    [REDQ__SCRIPT_HEARTBEAT] = REDQ__LUA_HEARTBEAT_SHA,
    [REDQ__SCRIPT_DEADREQUEUE] = REDQ__LUA_DEADREQUEUE_SHA,
    [REDQ__SCRIPT_ACKFAST] = REDQ__LUA_ACKFAST_SHA,
    [REDQ__SCRIPT_DEADONE] = REDQ__LUA_DEADONE_SHA,
    [REDQ__SCRIPT_PURGE] = REDQ__LUA_PURGE_SHA,
    [REDQ__SCRIPT_SNAPSHOT] = REDQ__LUA_SNAPSHOT_SHA,
    [REDQ__SCRIPT_PEEK] = REDQ__LUA_PEEK_SHA,
    [REDQ__SCRIPT_PUSH] = REDQ__LUA_PUSH_SHA,
    [REDQ__SCRIPT_SETFORMAT] = REDQ__LUA_SETFORMAT_SHA,
};

const char *redq__script_source(int which)
{
    return which >= 0 && which < REDQ__SCRIPT_COUNT ? sources[which] : NULL;
}

void redq__scripts_init(redq__scripts *s)
{
    int i;
    for (i = 0; i < REDQ__SCRIPT_COUNT; i++)
        memcpy(s->sha[i], shas[i], 41);
}
