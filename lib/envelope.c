/*
 * Message envelopes: the JSON wrapper that carries a delivery-attempt count
 * (and id, timestamp, dead-letter reason) with a message, so that the count
 * survives the message leaving a consumer. See the contract in
 * redq_private.h. This is the only file of lib/ that includes jansson.
 *
 * Raw messages (anything not starting with '{') never reach jansson: plain
 * clients that push text or binary pay nothing for envelopes existing.
 */
#include <assert.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redq_private.h"

#define ID_MAX 64 /* sizeof(((redq__envelope *)0)->id) - 1 */

/* ---- small helpers ---------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    REDQ__PRINTF(3, 4);

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* JSON's whitespace (RFC 8259 section 2); what jansson skips too. */
static int is_json_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/*
 * Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF; what jansson accepts), or 0 when the
 * bytes there are not one. n > 0 bytes are available.
 */
static size_t utf8_seq_len(const unsigned char *p, size_t n)
{
    uint32_t cp;
    size_t need, i;

    if (p[0] < 0x80)
        return 1;
    if (p[0] < 0xc2) /* a continuation byte, or an overlong 2-byte lead */
        return 0;
    if (p[0] < 0xe0) {
        need = 2;
        cp = p[0] & 0x1fu;
    } else if (p[0] < 0xf0) {
        need = 3;
        cp = p[0] & 0x0fu;
    } else if (p[0] < 0xf5) {
        need = 4;
        cp = p[0] & 0x07u;
    } else {
        return 0;
    }
    if (n < need)
        return 0;
    for (i = 1; i < need; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3fu);
    }
    if ((need == 3 && cp < 0x800) || (need == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return need;
}

/*
 * An integral JSON number in [min, max]. Lua cjson decodes every number to a
 * double and writes integral ones back without a fraction in practice, but
 * a real with a zero fraction ("3.0", "3e0") is the same number, so accept
 * it. Returns 1 and *out, or 0.
 */
static int json_integral(const json_t *v, long long min, long long max,
                         long long *out)
{
    long long i;

    if (json_is_integer(v)) {
        i = (long long)json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);

        /* Converting a double outside long long's range is undefined, so
         * check the range first: [-2^63, 2^63) is exactly representable. */
        if (!(d >= -0x1p63 && d < 0x1p63))
            return 0;
        i = (long long)d;
        if ((double)i != d) /* a fraction */
            return 0;
    } else {
        return 0;
    }
    if (i < min || i > max)
        return 0;
    *out = i;
    return 1;
}

/* ---- base64 (RFC 4648 section 4) -------------------------------------- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t redq__b64_encode(const void *in, size_t len, char *out)
{
    const unsigned char *p = in;
    size_t i, o = 0;

    for (i = 0; i + 3 <= len; i += 3) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) |
                     p[i + 2];

        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = b64_alphabet[(v >> 6) & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;

        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (len - i == 2) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8);

        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = b64_alphabet[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

/* The 6-bit value of a base64 character, or -1. A switch on ranges rather
 * than a 256-entry table: no table to get wrong, and it is not hot. */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long redq__b64_decode(const char *in, size_t len, void *out)
{
    const unsigned char *p = (const unsigned char *)in;
    unsigned char *o = out;
    size_t i, n = 0;

    if (len % 4 != 0 || len / 4 * 3 > (size_t)LONG_MAX)
        return -1;
    for (i = 0; i < len; i += 4) {
        int a = b64_value(p[i]), b = b64_value(p[i + 1]);
        int c = b64_value(p[i + 2]), d = b64_value(p[i + 3]);
        int last = i + 4 == len;

        if (a < 0 || b < 0)
            return -1;
        if (c < 0) {
            /* "xx==": one byte; padding only at the very end. */
            if (!last || p[i + 2] != '=' || p[i + 3] != '=')
                return -1;
            o[n++] = (unsigned char)((a << 2) | (b >> 4));
        } else if (d < 0) {
            /* "xxx=": two bytes. */
            if (!last || p[i + 3] != '=')
                return -1;
            o[n++] = (unsigned char)((a << 2) | (b >> 4));
            o[n++] = (unsigned char)(((b & 15) << 4) | (c >> 2));
        } else {
            o[n++] = (unsigned char)((a << 2) | (b >> 4));
            o[n++] = (unsigned char)(((b & 15) << 4) | (c >> 2));
            o[n++] = (unsigned char)(((c & 3) << 6) | d);
        }
    }
    return (long)n;
}

/* ---- parse ------------------------------------------------------------ */

/* Copy a JSON string into env->id: at most ID_MAX bytes, and never half a
 * UTF-8 sequence, so that an id cut here can be written back as JSON. */
static void copy_id(char *dst, const json_t *s)
{
    const unsigned char *p = (const unsigned char *)json_string_value(s);
    size_t n = json_string_length(s), pos = 0;

    while (pos < n) {
        size_t l = utf8_seq_len(p + pos, n - pos);

        if (l == 0)
            l = 1; /* cannot happen: jansson only holds valid UTF-8 */
        if (pos + l > ID_MAX)
            break;
        pos += l;
    }
    memcpy(dst, p, pos);
    dst[pos] = '\0';
}

/* Does the text contain "body" (with its quotes, so also "body_b64")? */
static int mentions_body(const char *msg, size_t len)
{
    size_t i;
    for (i = 0; i + 6 <= len; i++)
        if (msg[i] == '"' && memcmp(msg + i, "\"body", 5) == 0 &&
            (msg[i + 5] == '"' || msg[i + 5] == '_'))
            return 1;
    return 0;
}

int redq__envelope_parse(const char *msg, size_t len, redq__envelope *env,
                         char *body_out, char *err, size_t errlen)
{
    json_t *root, *body, *b64, *id, *v;
    json_error_t jerr;
    long long attempts = 0, ts = -1, n;
    size_t i = 0;
    int rc = REDQ_EPROTOCOL;

    /* Until proven otherwise it is raw; this is also what a caller gets on
     * failure, to dead-letter the message as it is. */
    memset(env, 0, sizeof *env);
    env->body = msg;
    env->body_len = len;
    env->ts_ms = -1;
    set_err(err, errlen, "%s", "");

    while (i < len && is_json_ws((unsigned char)msg[i]))
        i++;
    if (i == len || msg[i] != '{')
        return 0;

    /* No JSON_DISABLE_EOF_CHECK: '{"body":"a"} junk' is not an envelope.
     * JSON_ALLOW_NUL: "\u0000" in a body is binary data, not an error. */
    root = json_loadb(msg, len, JSON_ALLOW_NUL, &jerr);
    if (root == NULL) {
        /* Out of memory is not the message's fault: do not have it
         * dead-lettered. jansson says so with json_error_out_of_memory, or
         * (when its lexer cannot get its first buffer) by returning with
         * the error still as initialised: no text. */
        int oom = jerr.text[0] == '\0';
#if JANSSON_VERSION_HEX >= 0x020b00
        oom = oom || json_error_code(&jerr) == json_error_out_of_memory;
#endif
        if (oom) {
            set_err(err, errlen, "envelope: out of memory parsing JSON");
            return REDQ_ENOMEM;
        }
        /* A payload may start with '{' by chance (binary data, a
         * timestamp byte): only text that names an envelope field is
         * taken for a broken envelope; anything else is the caller's own
         * bytes and is delivered as they are. */
        if (!mentions_body(msg, len))
            return 0;
        set_err(err, errlen, "malformed envelope: %s (line %d, column %d)",
                jerr.text, jerr.line, jerr.column);
        return REDQ_EPROTOCOL;
    }
    if (!json_is_object(root)) { /* cannot happen after '{'; stay safe */
        rc = 0;
        goto out;
    }

    body = json_object_get(root, "body");
    b64 = json_object_get(root, "body_b64");
    if (body == NULL && b64 == NULL) { /* someone else's JSON: raw */
        rc = 0;
        goto out;
    }
    if (body != NULL && b64 == NULL && !json_is_string(body)) {
        /* {"body": {...}}: the caller's own JSON format, not an envelope
         * (ours always carry a string). Delivered whole. */
        rc = 0;
        goto out;
    }
    if (body != NULL && b64 != NULL) {
        set_err(err, errlen, "envelope: has both body and body_b64");
        goto out;
    }
    if ((v = json_object_get(root, "attempts")) != NULL &&
        !json_integral(v, 0, REDQ__MAX_ATTEMPTS, &attempts)) {
        set_err(err, errlen, "envelope: attempts must be an integer in 0..%d",
                REDQ__MAX_ATTEMPTS);
        goto out;
    }
    if ((v = json_object_get(root, "ts")) != NULL &&
        !json_integral(v, LLONG_MIN, LLONG_MAX, &ts)) {
        set_err(err, errlen, "envelope: ts must be an integer (milliseconds)");
        goto out;
    }
    id = json_object_get(root, "id");
    if (id != NULL && !json_is_string(id)) {
        set_err(err, errlen, "envelope: id must be a string");
        goto out;
    }

    assert(body_out != NULL);
    if (body != NULL) {
        if (!json_is_string(body)) {
            set_err(err, errlen, "envelope: body must be a string");
            goto out;
        }
        n = (long long)json_string_length(body);
        /* Escapes only ever shrink when decoded, so this holds; checked
         * anyway because body_out is sized from it. */
        if ((size_t)n > len) {
            set_err(err, errlen, "envelope: body longer than its message");
            goto out;
        }
        memcpy(body_out, json_string_value(body), (size_t)n);
    } else {
        size_t slen;

        if (!json_is_string(b64)) {
            set_err(err, errlen, "envelope: body_b64 must be a string");
            goto out;
        }
        slen = json_string_length(b64);
        if (slen > len) {
            set_err(err, errlen, "envelope: body_b64 longer than its message");
            goto out;
        }
        n = redq__b64_decode(json_string_value(b64), slen, body_out);
        if (n < 0) {
            set_err(err, errlen, "envelope: body_b64 is not valid base64");
            goto out;
        }
    }
    body_out[n] = '\0';

    env->is_envelope = 1;
    env->body = body_out;
    env->body_len = (size_t)n;
    env->attempts = (int)attempts;
    env->ts_ms = ts;
    if (id != NULL)
        copy_id(env->id, id);
    rc = 0;

out:
    json_decref(root);
    return rc;
}

/* ---- build ------------------------------------------------------------ */

/* A copy of s with every byte that is not part of well-formed UTF-8
 * replaced by U+FFFD, or NULL on out of memory. */
static char *utf8_sanitize(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), i = 0, o = 0;
    char *out;

    if (n > (SIZE_MAX - 1) / 3)
        return NULL;
    out = malloc(3 * n + 1);
    if (out == NULL)
        return NULL;
    while (i < n) {
        size_t l = utf8_seq_len(p + i, n - i);

        if (l == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, p + i, l);
            o += l;
            i += l;
        }
    }
    out[o] = '\0';
    return out;
}

/* obj[key] = s as a JSON string, made valid UTF-8 if it is not.
 * Returns 0 or -1 (out of memory). */
static int set_text(json_t *obj, const char *key, const char *s)
{
    json_t *v = json_string(s);

    if (v == NULL) {
        /* Not UTF-8 (or out of memory, which the retry will meet again):
         * a queue name or nack reason can be any bytes, and returning NULL
         * here would be reported as out of memory. */
        char *clean = utf8_sanitize(s);

        if (clean == NULL)
            return -1;
        v = json_string(clean);
        free(clean);
    }
    /* json_object_set_new takes v, and returns -1 for a NULL v. */
    return json_object_set_new(obj, key, v);
}

/*
 * json_dumps would do, but for two things. jansson's do_dump ignores the
 * result of writing an object's key, so when its buffer fails to grow at
 * that moment the key is silently left out and later, smaller writes still
 * fit: out of memory gives corrupt JSON reported as success (seen with
 * jansson 2.14). And its result comes from jansson's allocator, which an
 * application we are embedded in may have replaced (json_set_alloc_funcs is
 * process-wide) while our callers free() it. So dump into our own malloc'd
 * buffer whose failure is sticky: after one failed write every later write
 * fails too, and the whole dump is dropped.
 */
typedef struct dump_sink {
    char *buf;
    size_t len, cap;
    int failed;
} dump_sink;

static int sink_write(const char *data, size_t n, void *arg)
{
    dump_sink *s = arg;

    if (s->failed)
        return -1;
    if (n >= s->cap - s->len) { /* keep a byte for the NUL */
        size_t cap = s->cap;
        char *grown;

        while (n >= cap - s->len) {
            if (cap > SIZE_MAX / 2) {
                s->failed = 1;
                return -1;
            }
            cap *= 2;
        }
        grown = realloc(s->buf, cap);
        if (grown == NULL) {
            s->failed = 1;
            return -1;
        }
        s->buf = grown;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, n);
    s->len += n;
    return 0;
}

/* Compact JSON of root, keys in insertion order, as a malloc'd string
 * (length in *out_len), or NULL on out of memory. body_len sizes the first
 * buffer so that a typical envelope needs no realloc. */
static char *dump_json(const json_t *root, size_t body_len, size_t *out_len)
{
    dump_sink s;

    s.len = 0;
    s.failed = 0;
    s.cap = body_len < SIZE_MAX / 2 - 256 ? body_len + body_len / 3 + 256
                                          : SIZE_MAX / 2;
    s.buf = malloc(s.cap);
    if (s.buf == NULL)
        return NULL;
    /* Since jansson 2.8 objects keep insertion order anyway;
     * JSON_PRESERVE_ORDER says that we rely on it. */
    if (json_dump_callback(root, sink_write, &s,
                           JSON_COMPACT | JSON_PRESERVE_ORDER) != 0 ||
        s.failed) {
        free(s.buf);
        return NULL;
    }
    s.buf[s.len] = '\0';
    *out_len = s.len;
    return s.buf;
}

char *redq__envelope_build(const void *body, size_t body_len, const char *id,
                           long long ts_ms, int attempts, const char *reason,
                           long long dead_ts_ms, const char *queue,
                           size_t *out_len)
{
    json_t *root, *v;
    char *out = NULL;

    assert(body != NULL || body_len == 0);
    assert(out_len != NULL);
    if (body == NULL)
        body = "";
    if (attempts < 0)
        attempts = 0;
    if (attempts > REDQ__MAX_ATTEMPTS)
        attempts = REDQ__MAX_ATTEMPTS;

    root = json_object();
    if (root == NULL)
        return NULL;
    if (id != NULL && set_text(root, "id", id) < 0)
        goto out;
    if (ts_ms >= 0 &&
        json_object_set_new(root, "ts", json_integer((json_int_t)ts_ms)) < 0)
        goto out;
    if (json_object_set_new(root, "attempts", json_integer(attempts)) < 0)
        goto out;

    /* json_stringn validates UTF-8 and returns NULL when it is not: then
     * the body goes as base64. (NULL also means out of memory; the base64
     * path then fails too, or succeeds and is equally correct.) */
    v = json_stringn(body, body_len);
    if (v != NULL) {
        if (json_object_set_new(root, "body", v) < 0)
            goto out;
    } else {
        char *enc;

        if (body_len > (SIZE_MAX - 1) / 4 * 3 - 3)
            goto out;
        enc = malloc(4 * ((body_len + 2) / 3) + 1);
        if (enc == NULL)
            goto out;
        v = json_stringn(enc, redq__b64_encode(body, body_len, enc));
        free(enc);
        if (json_object_set_new(root, "body_b64", v) < 0)
            goto out;
    }

    if (reason != NULL) {
        if (set_text(root, "dead_reason", reason) < 0 ||
            json_object_set_new(root, "dead_ts",
                                json_integer((json_int_t)dead_ts_ms)) < 0 ||
            (queue != NULL && set_text(root, "queue", queue) < 0))
            goto out;
    }

    out = dump_json(root, body_len, out_len);

out:
    json_decref(root);
    return out;
}
