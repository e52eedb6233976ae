/*
 * redq serve: Prometheus metrics, a JSON API and a dashboard page over one
 * admin handle (redq.h, "Admin"), served by libevent's evhttp on the same
 * event_base. Every request that needs Redis is one asynchronous admin
 * call; its callback writes the reply, so the loop never waits.
 *
 *   GET  /metrics                          redq_admin_metrics(), as is
 *   GET  /, /app.js, /style.css            the dashboard (serve_assets.h)
 *   GET  /api/queues                       every registered queue, with
 *                                          its counters of messages moved
 *                                          (the page's rates: differences
 *                                          between its refreshes)
 *   GET  /api/queues/Q                     one queue
 *   GET  /api/queues/Q/dead?offset=&count= dead letters, newest first
 *   GET  /api/queues/Q/peek?count=         the next messages to be taken
 *   POST /api/queues/Q/pause|resume|requeue|purge|recover
 *   POST /api/queues/Q/dead/ID/requeue|delete
 *
 * Q and ID are percent-encoded path segments (a queue name may hold '/').
 *
 * Who may do what, and why:
 * - It listens on a loopback address unless --token is set: the API can
 *   purge dead letters, so an open port without a secret is refused.
 * - With a token, everything but the page and its files needs
 *   "Authorization: Bearer TOKEN" (compared in constant time); the page
 *   asks for the token and sends it.
 * - On loopback, a Host header that is not this server's (127.0.0.1:PORT,
 *   localhost:PORT, [::1]:PORT) is refused: a web page whose name was made
 *   to resolve to 127.0.0.1 (DNS rebinding) must not read the API.
 * - Only POST changes anything. A POST must carry either
 *   "Content-Type: application/json" or "X-Redq-Request: 1", which a
 *   cross-origin page cannot send without a CORS preflight that this
 *   server never grants; and a POST whose Origin (or Sec-Fetch-Site) shows
 *   another origin is refused outright.
 * - Message bytes go out as JSON strings (or base64) and the page puts them
 *   in the DOM as text; every response says nosniff, and the page's CSP
 *   allows scripts from this server only.
 * - The Redis URL's password is never sent: the page shows the URL
 *   without its user info, and error texts are scrubbed of the password.
 */
#include "cli.h"
#include "serve_assets.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>

#define DEFAULT_LISTEN "127.0.0.1:9090"
#define DEFAULT_REFRESH_MS 2000
#define MAX_BODY 65536       /* bytes of a request body */
#define MAX_HEADERS 16384    /* bytes of a request's headers */
#define HTTP_TIMEOUT_S 30    /* an idle or slow client is dropped */
#define MAX_LIST 1000        /* messages per dead/peek request */
#define MAX_PAYLOAD_SHOWN 65536 /* bytes of each payload in the API */
/* An admin call waits for a connection while Redis is unreachable; the
 * HTTP client should hear why sooner than its own timeout. */
#define ANSWER_TIMEOUT_S 5

typedef struct serve {
    const cli_options *o;
    struct event_base *base;
    redq_admin *admin;
    struct evhttp *http;
    struct event *sigint, *sigterm;
    const char *token; /* NULL: none */
    size_t token_len;
    int loopback;
    char hosts[4][300]; /* Host values that name this server (loopback) */
    size_t nhosts;
    char redis_shown[512]; /* the URL without user info */
    char secret[256];      /* the password, to scrub from texts; "" none */
    char last_err[512];    /* the last connection error logged (scrubbed) */
    int signal;
    int closed;
} serve;

/* One request waiting for the admin handle. */
typedef struct serve_req {
    serve *s;
    struct evhttp_request *req; /* NULL once answered by the deadline */
    struct event *deadline;
    const char *action; /* for the POST replies */
    char *queue;        /* decoded; NULL for /api/queues */
    size_t max_shown;
} serve_req;

/* ------------------------------------------------------------------------ */
/* JSON                                                                      */
/* ------------------------------------------------------------------------ */

/* [s, s+n) as a JSON string. Besides what JSON requires (" \ and control
 * characters), < > & and U+2028/9 are escaped too, so that the text stays
 * inert wherever it lands (an HTML page, a <script>). Bytes that are not
 * UTF-8 become U+FFFD, so the output is always valid JSON; payloads that
 * are not UTF-8 go as base64 instead (put_payload). */
static void put_str(struct evbuffer *b, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    int utf8 = redq_utf8_valid(s, n);
    size_t i;

    evbuffer_add(b, "\"", 1);
    for (i = 0; i < n; i++) {
        unsigned char c = p[i];

        if (c == '"' || c == '\\')
            evbuffer_add_printf(b, "\\%c", c);
        else if (c < 0x20 || c == 0x7f || c == '<' || c == '>' || c == '&')
            evbuffer_add_printf(b, "\\u%04x", c);
        else if (c >= 0x80 && !utf8)
            evbuffer_add(b, "\\ufffd", 6);
        else if (c == 0xe2 && i + 2 < n && p[i + 1] == 0x80 &&
                 (p[i + 2] == 0xa8 || p[i + 2] == 0xa9)) {
            evbuffer_add_printf(b, "\\u%04x", 0x2000 + (p[i + 2] - 0x80));
            i += 2;
        } else
            evbuffer_add(b, p + i, 1);
    }
    evbuffer_add(b, "\"", 1);
}

static void put_cstr(struct evbuffer *b, const char *s)
{
    put_str(b, s ? s : "", s ? strlen(s) : 0);
}

/* [p, p+n) as a JSON string of its base64 (the library's encoder), in
 * chunks of a multiple of 3 bytes: their encodings concatenate to the
 * whole's, with no allocation. */
static void put_b64(struct evbuffer *b, const unsigned char *p, size_t n)
{
    char out[4 * 256 + 1];
    size_t i, k;

    evbuffer_add(b, "\"", 1);
    for (i = 0; i < n; i += k) {
        k = n - i < 3 * 256 ? n - i : 3 * 256;
        evbuffer_add(b, out, redq_base64_encode(p + i, k, out));
    }
    evbuffer_add(b, "\"", 1);
}

/* "len", then "body" when the shown bytes are UTF-8, else "body_b64";
 * "truncated": true when only the first `max` bytes (cut back to a
 * character boundary if that keeps them UTF-8) are shown. */
static void put_payload(struct evbuffer *b, const void *data, size_t len,
                        size_t max)
{
    const char *p = data ? data : "";
    size_t n = len < max ? len : max;
    size_t k;
    int utf8 = redq_utf8_valid(p, n);

    /* A cut may split a character: try ending up to 3 bytes earlier. */
    for (k = 1; !utf8 && n < len && k <= 3 && k <= n; k++)
        if (redq_utf8_valid(p, n - k)) {
            n -= k;
            utf8 = 1;
        }
    evbuffer_add_printf(b, "\"len\":%zu,", len);
    if (n < len)
        evbuffer_add_printf(b, "\"truncated\":true,");
    evbuffer_add_printf(b, utf8 ? "\"body\":" : "\"body_b64\":");
    if (utf8)
        put_str(b, p, n);
    else
        put_b64(b, (const unsigned char *)p, n);
}

static void put_queue(struct evbuffer *b, const redq_queue_info *q)
{
    evbuffer_add_printf(b, "{\"name\":");
    put_cstr(b, q->name);
    evbuffer_add_printf(
        b,
        ",\"ready\":%llu,\"due\":%llu,\"processing\":%llu,\"delayed\":%llu,"
        "\"dead\":%llu,\"consumers\":%llu,\"registered\":%llu,"
        "\"oldest_age_ms\":%lld,\"paused\":%s,\"last_seen_ms\":%lld,"
        "\"pushed\":%llu,\"taken\":%llu,\"acked\":%llu,\"retried\":%llu,"
        "\"dead_lettered\":%llu,\"format\":\"%s\",\"partitions\":%d}",
        (unsigned long long)q->ready, (unsigned long long)q->due,
        (unsigned long long)q->processing, (unsigned long long)q->delayed,
        (unsigned long long)q->dead, (unsigned long long)q->consumers,
        (unsigned long long)q->registered, q->oldest_age_ms,
        q->paused ? "true" : "false", q->last_seen_ms,
        (unsigned long long)q->pushed, (unsigned long long)q->taken,
        (unsigned long long)q->acked, (unsigned long long)q->retried,
        (unsigned long long)q->dead_lettered,
        q->format == REDQ_FORMAT_FRAMES ? "frames" : "plain", q->partitions);
}

static void put_msg(struct evbuffer *b, const redq_admin_msg *m, size_t max)
{
    evbuffer_add_printf(b, "{\"index\":%zu,\"id\":", m->index);
    put_cstr(b, m->id);
    evbuffer_add_printf(b, ",\"attempts\":%d,\"ts_ms\":%lld,", m->attempts,
                        m->ts_ms);
    if (m->reason) {
        evbuffer_add_printf(b, "\"reason\":");
        put_cstr(b, m->reason);
        evbuffer_add_printf(b, ",\"dead_ts_ms\":%lld,", m->dead_ts_ms);
    }
    put_payload(b, m->data, m->len, max);
    evbuffer_add(b, "}", 1);
}

/* ------------------------------------------------------------------------ */
/* Replies                                                                   */
/* ------------------------------------------------------------------------ */

/* Headers every response carries: no sniffing a JSON body as HTML, no
 * framing, no referrer, scripts and connections to this server only. */
static void common_headers(struct evhttp_request *req, const char *type)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);

    evhttp_add_header(h, "Content-Type", type);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "X-Frame-Options", "DENY");
    evhttp_add_header(h, "Referrer-Policy", "no-referrer");
    evhttp_add_header(h, "Content-Security-Policy",
                      "default-src 'none'; script-src 'self'; "
                      "style-src 'self'; img-src 'self' data:; "
                      "connect-src 'self'; base-uri 'none'; "
                      "form-action 'none'; frame-ancestors 'none'");
}

static const char *status_reason(int code)
{
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 415: return "Unsupported Media Type";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

static void reply(struct evhttp_request *req, int code, const char *type,
                  struct evbuffer *body)
{
    common_headers(req, type);
    if (strncmp(type, "application/json", 16) == 0 ||
        strncmp(type, "text/plain", 10) == 0)
        evhttp_add_header(evhttp_request_get_output_headers(req),
                          "Cache-Control", "no-store");
    evhttp_send_reply(req, code, status_reason(code), body);
}

/* Mask every occurrence of the Redis password in `text` with '*'. */
static void scrub(const serve *s, char *text)
{
    size_t n = strlen(s->secret);
    char *p;

    if (n == 0)
        return;
    while ((p = strstr(text, s->secret)) != NULL)
        memset(p, '*', n);
}

/* {"error": TEXT, "code": NAME} with HTTP status `code`. */
static void reply_error(serve *s, struct evhttp_request *req, int code,
                        const char *name, const char *fmt, ...)
    CLI_PRINTF_LIKE(5, 6);

static void reply_error(serve *s, struct evhttp_request *req, int code,
                        const char *name, const char *fmt, ...)
{
    struct evbuffer *b = evbuffer_new();
    char text[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    scrub(s, text);
    if (!b) {
        evhttp_send_error(req, 500, NULL);
        return;
    }
    evbuffer_add_printf(b, "{\"error\":");
    put_cstr(b, text);
    evbuffer_add_printf(b, ",\"code\":");
    put_cstr(b, name);
    evbuffer_add_printf(b, "}\n");
    if (code == 401)
        evhttp_add_header(evhttp_request_get_output_headers(req),
                          "WWW-Authenticate", "Bearer realm=\"redq\"");
    reply(req, code, "application/json", b);
    evbuffer_free(b);
}

/* An admin call's failure as an HTTP status: the caller's mistake (400),
 * a key of the wrong type (409), Redis not reachable now (503), the rest
 * (502: Redis answered something wrong). */
static int http_status_for(int rc)
{
    switch (rc) {
    case REDQ_EINVAL: return 400;
    case REDQ_EWRONGTYPE: return 409;
    case REDQ_ECLOSED: case REDQ_ECONNECT: case REDQ_ERESOLVE:
    case REDQ_ETIMEDOUT: case REDQ_EDISCONNECTED: case REDQ_EAUTH:
    case REDQ_ENOPERM: case REDQ_ESELECT:
        return 503;
    case REDQ_ENOMEM: return 500;
    default: return 502;
    }
}

static void reply_admin_error(serve_req *r, int rc, const char *errstr)
{
    reply_error(r->s, r->req, http_status_for(rc), redq_err_name(rc), "%s",
                errstr && *errstr ? errstr : redq_strerror(rc));
}

static void reply_json(serve_req *r, struct evbuffer *b)
{
    reply(r->req, 200, "application/json", b);
    evbuffer_free(b);
}

static void req_free(serve_req *r)
{
    if (r->deadline)
        event_free(r->deadline);
    free(r->queue);
    free(r);
}

/* The admin call's answer came after the deadline had replied: drop it. */
static int req_gone(serve_req *r)
{
    if (r->req)
        return 0;
    req_free(r);
    return 1;
}

static void on_deadline(evutil_socket_t fd, short what, void *user)
{
    serve_req *r = user;

    (void)fd;
    (void)what;
    reply_error(r->s, r->req, 503, redq_err_name(REDQ_ETIMEDOUT),
                "Redis did not answer within %d s%s%s", ANSWER_TIMEOUT_S,
                r->s->last_err[0] ? ": " : "", r->s->last_err);
    r->req = NULL; /* the admin callback frees r when it comes */
}

/* ------------------------------------------------------------------------ */
/* Admin callbacks: each writes the reply of one request                     */
/* ------------------------------------------------------------------------ */

static void on_metrics(redq_admin *a, int status, const char *errstr,
                       const char *text, size_t len, void *user)
{
    serve_req *r = user;
    struct evbuffer *b;

    (void)a;
    if (req_gone(r))
        return;
    if (status < 0 || !(b = evbuffer_new())) {
        reply_admin_error(r, status < 0 ? status : REDQ_ENOMEM, errstr);
    } else {
        evbuffer_add(b, text, len);
        reply(r->req, 200, "text/plain; version=0.0.4; charset=utf-8", b);
        evbuffer_free(b);
    }
    req_free(r);
}

static void on_queues(redq_admin *a, int status, const char *errstr,
                      const redq_queue_info *queues, size_t n, void *user)
{
    serve_req *r = user;
    struct evbuffer *b;
    size_t i;

    (void)a;
    if (req_gone(r))
        return;
    if (status < 0 || !(b = evbuffer_new())) {
        reply_admin_error(r, status < 0 ? status : REDQ_ENOMEM, errstr);
        req_free(r);
        return;
    }
    if (r->queue) {
        evbuffer_add_printf(b, "{\"queue\":");
        if (n > 0)
            put_queue(b, &queues[0]);
        else
            evbuffer_add_printf(b, "null");
        evbuffer_add_printf(b, "}\n");
    } else {
        evbuffer_add_printf(b, "{\"redis\":");
        put_cstr(b, r->s->redis_shown);
        evbuffer_add_printf(b, ",\"refresh_ms\":%d,\"version\":",
                            r->s->o->serve_interval_ms);
        put_cstr(b, redq_version());
        evbuffer_add_printf(b, ",\"queues\":[");
        for (i = 0; i < n; i++) {
            if (i)
                evbuffer_add(b, ",", 1);
            put_queue(b, &queues[i]);
        }
        evbuffer_add_printf(b, "]}\n");
    }
    reply_json(r, b);
    req_free(r);
}

/* GET /api/queues/Q/partitions */
static void on_parts(redq_admin *a, int status, const char *errstr,
                     const redq_partition_info *p, size_t n, void *user)
{
    serve_req *r = user;
    struct evbuffer *b;
    size_t i;

    (void)a;
    if (req_gone(r))
        return;
    if (status < 0 || !(b = evbuffer_new())) {
        reply_admin_error(r, status < 0 ? status : REDQ_ENOMEM, errstr);
        req_free(r);
        return;
    }
    evbuffer_add_printf(b, "{\"queue\":");
    put_cstr(b, r->queue);
    evbuffer_add_printf(b, ",\"partitions\":[");
    for (i = 0; i < n; i++) {
        evbuffer_add_printf(b, "%s{\"index\":%d,\"name\":", i ? "," : "",
                            p[i].index);
        put_cstr(b, p[i].name);
        evbuffer_add_printf(b, ",\"slot\":%d,\"node\":", p[i].slot);
        if (p[i].node)
            put_cstr(b, p[i].node);
        else
            evbuffer_add_printf(b, "null");
        evbuffer_add_printf(b,
                            ",\"ready\":%llu,\"processing\":%llu,"
                            "\"dead\":%llu,\"retired\":%s}",
                            (unsigned long long)p[i].ready,
                            (unsigned long long)p[i].processing,
                            (unsigned long long)p[i].dead,
                            p[i].retired ? "true" : "false");
    }
    evbuffer_add_printf(b, "]}\n");
    reply_json(r, b);
    req_free(r);
}

static void on_msgs(redq_admin *a, int status, const char *errstr,
                    const redq_admin_msg *msgs, size_t n, void *user)
{
    serve_req *r = user;
    struct evbuffer *b;
    size_t i;

    (void)a;
    if (req_gone(r))
        return;
    if (status < 0 || !(b = evbuffer_new())) {
        reply_admin_error(r, status < 0 ? status : REDQ_ENOMEM, errstr);
        req_free(r);
        return;
    }
    evbuffer_add_printf(b, "{\"queue\":");
    put_cstr(b, r->queue);
    evbuffer_add_printf(b, ",\"messages\":[");
    for (i = 0; i < n; i++) {
        if (i)
            evbuffer_add(b, ",", 1);
        put_msg(b, &msgs[i], r->max_shown);
    }
    evbuffer_add_printf(b, "]}\n");
    reply_json(r, b);
    req_free(r);
}

static void on_done(redq_admin *a, int status, const char *errstr,
                    uint64_t n, void *user)
{
    serve_req *r = user;
    struct evbuffer *b;

    (void)a;
    if (req_gone(r))
        return;
    if (status < 0 || !(b = evbuffer_new())) {
        reply_admin_error(r, status < 0 ? status : REDQ_ENOMEM, errstr);
        req_free(r);
        return;
    }
    evbuffer_add_printf(b, "{\"ok\":true,\"action\":\"%s\",\"queue\":",
                        r->action);
    put_cstr(b, r->queue);
    evbuffer_add_printf(b, ",\"n\":%llu}\n", (unsigned long long)n);
    reply_json(r, b);
    req_free(r);
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */
/* ------------------------------------------------------------------------ */

/* Equal in time that does not depend on where they differ. */
static int token_ok(const serve *s, const char *auth)
{
    const unsigned char *t;
    unsigned char d;
    size_t i, n;

    if (!auth || strncmp(auth, "Bearer ", 7) != 0)
        return 0;
    t = (const unsigned char *)auth + 7;
    n = strlen((const char *)t);
    d = n != s->token_len;
    for (i = 0; i < s->token_len; i++)
        d |= (unsigned char)s->token[i] ^ (i < n ? t[i] : 0);
    return d == 0;
}

static int host_ok(const serve *s, const char *host)
{
    size_t i;

    if (!s->loopback || !host)
        return 1; /* no Host: not a browser (they always send one) */
    for (i = 0; i < s->nhosts; i++)
        if (strcasecmp(host, s->hosts[i]) == 0)
            return 1;
    return 0;
}

/* A POST from this server's own page: same origin, as the browser says. */
static int origin_ok(const serve *s, const char *origin, const char *host)
{
    size_t i;

    if (!origin)
        return 1; /* not a browser's cross-origin request */
    if (strncasecmp(origin, "http://", 7) != 0)
        return 0;
    origin += 7;
    if (s->loopback) {
        for (i = 0; i < s->nhosts; i++)
            if (strcasecmp(origin, s->hosts[i]) == 0)
                return 1;
        return 0;
    }
    return host && strcasecmp(origin, host) == 0;
}

/* Path segments of /api/..., each percent-decoded into a new string. */
#define MAX_SEGS 8
typedef struct segs {
    char *v[MAX_SEGS];
    size_t n;
} segs;

static void segs_free(segs *g)
{
    while (g->n > 0)
        free(g->v[--g->n]);
}

/* 0, or -1 when the path has too many segments or a %00 (the names are C
 * strings) or an empty one. */
static int split_path(const char *path, segs *g)
{
    const char *p = path;

    g->n = 0;
    while (*p == '/')
        p++;
    while (*p) {
        const char *e = strchr(p, '/');
        size_t l = e ? (size_t)(e - p) : strlen(p), out;
        char *raw, *dec;

        if (g->n == MAX_SEGS || l == 0)
            return -1;
        raw = strndup(p, l);
        dec = raw ? evhttp_uridecode(raw, 0, &out) : NULL;
        free(raw);
        if (!dec)
            return -1;
        if (out != strlen(dec) || out == 0) {
            free(dec);
            return -1;
        }
        g->v[g->n++] = dec;
        p += l;
        if (*p == '/')
            p++;
    }
    return 0;
}

/* A decimal query parameter in [0, max], or `def` when absent; -1 when
 * malformed. */
static int query_size(struct evkeyvalq *q, const char *name, size_t def,
                      size_t max, size_t *out)
{
    const char *v = evhttp_find_header(q, name);
    unsigned long long x;
    char *end;

    if (!v) {
        *out = def;
        return 0;
    }
    if (*v < '0' || *v > '9')
        return -1;
    errno = 0;
    x = strtoull(v, &end, 10);
    if (errno || *end || x > max)
        return -1;
    *out = (size_t)x;
    return 0;
}

/* The body of a POST .../requeue: none, or {"count": N}. */
static int body_count(struct evhttp_request *req, size_t *count)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    json_t *j, *c;
    json_error_t err;
    int rc = -1;

    *count = SIZE_MAX;
    if (len == 0)
        return 0;
    j = json_loadb((const char *)evbuffer_pullup(in, -1), len, 0, &err);
    if (!j || !json_is_object(j))
        goto out;
    c = json_object_get(j, "count");
    if (c == NULL || json_is_null(c) ||
        (json_is_string(c) && strcmp(json_string_value(c), "all") == 0))
        rc = 0;
    else if (json_is_integer(c) && json_integer_value(c) > 0) {
        *count = (size_t)json_integer_value(c);
        rc = 0;
    }
out:
    json_decref(j);
    return rc;
}

static serve_req *req_new(serve *s, struct evhttp_request *req,
                          const char *queue)
{
    serve_req *r = calloc(1, sizeof *r);

    if (!r)
        return NULL;
    r->s = s;
    r->req = req;
    r->max_shown = MAX_PAYLOAD_SHOWN;
    r->deadline = evtimer_new(s->base, on_deadline, r);
    if (!r->deadline || (queue && !(r->queue = strdup(queue)))) {
        req_free(r);
        return NULL;
    }
    {
        struct timeval tv = {ANSWER_TIMEOUT_S, 0};

        evtimer_add(r->deadline, &tv);
    }
    return r;
}

/* A call returned < 0: its callback will not come; reply now. */
static void call_failed(serve_req *r, int rc)
{
    reply_admin_error(r, rc, NULL);
    req_free(r);
}

static void handle_api(serve *s, struct evhttp_request *req, const char *path,
                       const char *query, int post)
{
    struct evkeyvalq q;
    segs g;
    serve_req *r = NULL;
    const char *name = NULL, *what = NULL;
    size_t offset = 0, count = 0;
    int rc = 0;

    TAILQ_INIT(&q);
    if (split_path(path, &g) < 0) {
        segs_free(&g); /* the segments decoded before the bad one */
        reply_error(s, req, 400, "bad_path", "malformed path");
        return;
    }
    if (query && evhttp_parse_query_str(query, &q) < 0) {
        reply_error(s, req, 400, "bad_query", "malformed query string");
        goto out;
    }
    /* g.v[0] is "api", g.v[1] "queues". */
    if (g.n < 2 || strcmp(g.v[1], "queues") != 0) {
        reply_error(s, req, 404, "not_found", "no such endpoint");
        goto out;
    }
    name = g.n > 2 ? g.v[2] : NULL;
    what = g.n > 3 ? g.v[3] : NULL;

    /* Reading: GET only. */
    if (g.n == 2 || (g.n == 3) ||
        (g.n == 4 && (!strcmp(what, "dead") || !strcmp(what, "peek") ||
                      !strcmp(what, "partitions")))) {
        if (post) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                              "GET");
            reply_error(s, req, 405, "method", "use GET to read");
            goto out;
        }
        if (!(r = req_new(s, req, name))) {
            reply_error(s, req, 500, "REDQ_ENOMEM", "out of memory");
            goto out;
        }
        if (g.n == 2) {
            rc = redq_admin_queues(s->admin, on_queues, r);
        } else if (g.n == 3) {
            rc = redq_admin_queue(s->admin, name, on_queues, r);
        } else if (!strcmp(what, "partitions")) {
            rc = redq_admin_partitions(s->admin, name, on_parts, r);
        } else if (!strcmp(what, "dead")) {
            if (query_size(&q, "offset", 0, SIZE_MAX - MAX_LIST, &offset) < 0 ||
                query_size(&q, "count", 50, MAX_LIST, &count) < 0) {
                reply_error(s, req, 400, "bad_query",
                            "offset and count are decimal numbers (count at "
                            "most %d)", MAX_LIST);
                req_free(r);
                goto out;
            }
            rc = redq_admin_dead(s->admin, name, offset, count, on_msgs, r);
        } else {
            if (query_size(&q, "count", 20, MAX_LIST, &count) < 0) {
                reply_error(s, req, 400, "bad_query",
                            "count is a decimal number (at most %d)", MAX_LIST);
                req_free(r);
                goto out;
            }
            rc = redq_admin_peek(s->admin, name, count, on_msgs, r);
        }
        if (rc < 0)
            call_failed(r, rc);
        goto out;
    }

    /* Changing: POST only. */
    if ((g.n == 4 && (!strcmp(what, "pause") || !strcmp(what, "resume") ||
                      !strcmp(what, "requeue") || !strcmp(what, "purge") ||
                      !strcmp(what, "recover"))) ||
        (g.n == 6 && !strcmp(what, "dead") &&
         (!strcmp(g.v[5], "requeue") || !strcmp(g.v[5], "delete")))) {
        size_t n = SIZE_MAX;

        if (!post) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                              "POST");
            reply_error(s, req, 405, "method",
                        "use POST to change anything; GET only reads");
            goto out;
        }
        if (g.n == 4 && !strcmp(what, "requeue") &&
            body_count(req, &n) < 0) {
            reply_error(s, req, 400, "bad_body",
                        "the body is empty or {\"count\": N} (N > 0)");
            goto out;
        }
        if (!(r = req_new(s, req, name))) {
            reply_error(s, req, 500, "REDQ_ENOMEM", "out of memory");
            goto out;
        }
        if (g.n == 6) {
            r->action = !strcmp(g.v[5], "requeue") ? "requeue" : "delete";
            rc = r->action[0] == 'r'
                     ? redq_admin_requeue_id(s->admin, name, g.v[4], on_done, r)
                     : redq_admin_delete_dead(s->admin, name, g.v[4], on_done,
                                              r);
        } else if (!strcmp(what, "pause") || !strcmp(what, "resume")) {
            r->action = what[0] == 'p' ? "pause" : "resume";
            rc = redq_admin_pause(s->admin, name, what[0] == 'p', on_done, r);
        } else if (!strcmp(what, "requeue")) {
            r->action = "requeue";
            rc = redq_admin_requeue(s->admin, name, n, on_done, r);
        } else if (!strcmp(what, "purge")) {
            r->action = "purge";
            rc = redq_admin_purge(s->admin, name, on_done, r);
        } else {
            r->action = "recover";
            rc = redq_admin_recover(s->admin, name, on_done, r);
        }
        if (rc < 0)
            call_failed(r, rc);
        goto out;
    }
    reply_error(s, req, 404, "not_found", "no such endpoint");
out:
    evhttp_clear_headers(&q);
    segs_free(&g);
}

static void handle(struct evhttp_request *req, void *arg)
{
    serve *s = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *host = evhttp_find_header(in, "Host");
    const char *ctype, *fetch_site;
    int post = m == EVHTTP_REQ_POST;
    size_t i;

    if (s->signal) {
        reply_error(s, req, 503, "closing", "the server is shutting down");
        return;
    }
    if (!path || !*path)
        path = "/";
    if (!host_ok(s, host)) {
        reply_error(s, req, 403, "host",
                    "Host is not this server's address (use "
                    "http://%s/)", s->hosts[0]);
        return;
    }
    if (m != EVHTTP_REQ_GET && m != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                          "GET, POST");
        reply_error(s, req, 405, "method", "only GET and POST");
        return;
    }

    /* The page and its files: public, GET only. */
    if (strncmp(path, "/api/", 5) != 0 && strcmp(path, "/metrics") != 0) {
        for (i = 0; i < cli_nassets; i++)
            if (strcmp(path, cli_assets[i].path) == 0)
                break;
        if (i == cli_nassets) {
            reply_error(s, req, 404, "not_found", "no such page");
        } else if (post) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                              "GET");
            reply_error(s, req, 405, "method", "use GET");
        } else {
            struct evbuffer *b = evbuffer_new();

            if (!b) {
                evhttp_send_error(req, 500, NULL);
                return;
            }
            evbuffer_add_reference(b, cli_assets[i].data, cli_assets[i].len,
                                   NULL, NULL);
            reply(req, 200, cli_assets[i].content_type, b);
            evbuffer_free(b);
        }
        return;
    }

    if (post) {
        fetch_site = evhttp_find_header(in, "Sec-Fetch-Site");
        if (!origin_ok(s, evhttp_find_header(in, "Origin"), host) ||
            (fetch_site && strcmp(fetch_site, "same-origin") != 0 &&
             strcmp(fetch_site, "none") != 0)) {
            reply_error(s, req, 403, "origin",
                        "cross-origin requests may not change anything");
            return;
        }
    }
    if (s->token && !token_ok(s, evhttp_find_header(in, "Authorization"))) {
        reply_error(s, req, 401, "token",
                    "this server needs \"Authorization: Bearer TOKEN\" "
                    "(redq serve --token)");
        return;
    }
    if (post) {
        ctype = evhttp_find_header(in, "Content-Type");
        if (!(ctype && strncasecmp(ctype, "application/json", 16) == 0) &&
            !evhttp_find_header(in, "X-Redq-Request")) {
            reply_error(s, req, 415, "csrf",
                        "a POST needs \"Content-Type: application/json\" or "
                        "\"X-Redq-Request: 1\"");
            return;
        }
    }

    if (strcmp(path, "/metrics") == 0) {
        serve_req *r;
        int rc;

        if (post) {
            evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
                              "GET");
            reply_error(s, req, 405, "method", "use GET");
            return;
        }
        if (!(r = req_new(s, req, NULL))) {
            reply_error(s, req, 500, "REDQ_ENOMEM", "out of memory");
            return;
        }
        if ((rc = redq_admin_metrics(s->admin, on_metrics, r)) < 0)
            call_failed(r, rc);
        return;
    }
    handle_api(s, req, path, uri ? evhttp_uri_get_query(uri) : NULL, post);
}

/* ------------------------------------------------------------------------ */
/* Setup and shutdown                                                        */
/* ------------------------------------------------------------------------ */

static void on_closed(void *user)
{
    serve *s = user;

    s->closed = 1;
    event_base_loopbreak(s->base);
}

static void on_signal(evutil_socket_t sig, short what, void *user)
{
    serve *s = user;

    (void)what;
    if (s->signal) {
        event_base_loopbreak(s->base); /* a second one: now */
        return;
    }
    s->signal = (int)sig;
    if (!s->o->quiet)
        fprintf(stderr, "redq serve: stopping\n");
    /* Unanswered admin calls get REDQ_ECLOSED and reply 503 while evhttp
     * still exists; evhttp goes after the loop. */
    if (redq_admin_close(s->admin, on_closed, s) < 0)
        event_base_loopbreak(s->base);
}

static void on_log(int level, int code, const char *msg, void *user)
{
    serve *s = user;
    char text[512];

    if (code == 0 && level == REDQ_LOG_INFO)
        s->last_err[0] = '\0'; /* a state change: connected again */
    if (level > REDQ_LOG_WARN)
        return;
    snprintf(text, sizeof text, "%s", msg);
    scrub(s, text);
    if (level <= REDQ_LOG_WARN && code < 0)
        snprintf(s->last_err, sizeof s->last_err, "%s", text);
    if (!s->o->quiet)
        fprintf(stderr, "redq serve: %s\n", text);
}

/* Split "HOST:PORT" or "[V6]:PORT". 0, or -1. */
static int parse_listen(const char *l, char *host, size_t cap, int *port)
{
    const char *colon;
    char *end;
    long p;
    size_t hl;

    if (l[0] == '[') {
        const char *rb = strchr(l, ']');

        if (!rb || rb[1] != ':')
            return -1;
        hl = (size_t)(rb - l - 1);
        l++;
        colon = rb + 1;
    } else {
        colon = strrchr(l, ':');
        if (!colon)
            return -1;
        hl = (size_t)(colon - l);
    }
    if (hl == 0 || hl >= cap || strchr(colon + 1, ':'))
        return -1;
    memcpy(host, l, hl);
    host[hl] = '\0';
    errno = 0;
    p = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || p < 0 || p > 65535)
        return -1;
    *port = (int)p;
    return 0;
}

static int is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;

    if (strcasecmp(host, "localhost") == 0)
        return 1;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

/* What the page shows of the Redis URL (no user info), and the password to
 * scrub from error texts (as written in the URL, and decoded). */
static void redact_url(serve *s, const char *url)
{
    const char *scheme = strstr(url, "://");
    const char *at, *rest, *pw;
    size_t sl;

    snprintf(s->redis_shown, sizeof s->redis_shown, "%s", url);
    if (!scheme)
        return;
    rest = scheme + 3;
    at = strchr(rest, '@');
    if (!at || (strchr(rest, '/') && strchr(rest, '/') < at))
        return;
    sl = (size_t)(rest - url);
    snprintf(s->redis_shown, sizeof s->redis_shown, "%.*s%s", (int)sl, url,
             at + 1);
    pw = memchr(rest, ':', (size_t)(at - rest));
    if (pw && at - pw - 1 > 0) {
        char raw[256], *dec;
        size_t n = (size_t)(at - pw - 1);

        if (n >= sizeof raw)
            n = sizeof raw - 1;
        memcpy(raw, pw + 1, n);
        raw[n] = '\0';
        /* The decoded form is what an error text would repeat. */
        dec = evhttp_uridecode(raw, 0, NULL);
        snprintf(s->secret, sizeof s->secret, "%s", dec ? dec : raw);
        free(dec);
    }
}

/* cli.h */
int cli_cmd_serve(const cli_options *o)
{
    serve s;
    redq_admin_options ro;
    struct evhttp_bound_socket *sock;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[256];
    int port, rc, ret = CLI_RC_OK;
    const char *listen = o->serve_listen ? o->serve_listen : DEFAULT_LISTEN;
    const char *token = o->serve_token;

    memset(&s, 0, sizeof s);
    s.o = o;
    if (!token || !*token) {
        const char *env = getenv("REDQ_SERVE_TOKEN");

        token = env && *env ? env : NULL;
    }
    s.token = token;
    s.token_len = token ? strlen(token) : 0;
    if (parse_listen(listen, host, sizeof host, &port) < 0)
        return cli_usage_error(o->cmd, "--listen: '%s' is not HOST:PORT or "
                                       "[IPV6]:PORT", listen);
    s.loopback = is_loopback(host);
    if (!s.loopback && !s.token) {
        fprintf(stderr,
                "redq serve: refusing to listen on %s: not a loopback address, "
                "and anyone who can reach it could purge and requeue; set "
                "--token (or $REDQ_SERVE_TOKEN) to listen there\n",
                host);
        return CLI_RC_USAGE;
    }
    redact_url(&s, o->url);

    if (!(s.base = event_base_new())) {
        fprintf(stderr, "redq serve: out of memory\n");
        return CLI_RC_FAILED;
    }
    redq_admin_options_init(&ro);
    ro.url = o->url;
    ro.log = on_log;
    ro.log_level = REDQ_LOG_INFO;
    ro.log_user = &s;
    if (o->connect_timeout_s > 0)
        ro.connect_timeout_ms = o->connect_timeout_s * 1000 > INT_MAX
                                    ? INT_MAX
                                    : (int)(o->connect_timeout_s * 1000);
    if ((rc = redq_admin_new(&s.admin, s.base, &ro)) < 0) {
        fprintf(stderr, "redq serve: %s\n",
                rc == REDQ_EINVAL ? "invalid URL" : redq_strerror(rc));
        event_base_free(s.base);
        return rc == REDQ_EINVAL ? CLI_RC_BADURL : CLI_RC_FAILED;
    }
    s.http = evhttp_new(s.base);
    if (!s.http) {
        fprintf(stderr, "redq serve: out of memory\n");
        ret = CLI_RC_FAILED;
        goto done;
    }
    evhttp_set_max_body_size(s.http, MAX_BODY);
    evhttp_set_max_headers_size(s.http, MAX_HEADERS);
    evhttp_set_timeout(s.http, HTTP_TIMEOUT_S);
    evhttp_set_allowed_methods(s.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
                                           EVHTTP_REQ_HEAD |
                                           EVHTTP_REQ_PUT |
                                           EVHTTP_REQ_DELETE |
                                           EVHTTP_REQ_OPTIONS);
    evhttp_set_gencb(s.http, handle, &s);
    sock = evhttp_bind_socket_with_handle(s.http, host, (ev_uint16_t)port);
    if (!sock) {
        fprintf(stderr, "redq serve: cannot listen on %s: %s\n", listen,
                strerror(errno));
        ret = CLI_RC_FAILED;
        goto done;
    }
    if (getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&ss,
                    &sl) == 0)
        port = ntohs(ss.ss_family == AF_INET6
                         ? ((struct sockaddr_in6 *)&ss)->sin6_port
                         : ((struct sockaddr_in *)&ss)->sin_port);
    {
        int v6 = strchr(host, ':') != NULL;

        snprintf(s.hosts[s.nhosts++], sizeof s.hosts[0], "%s%s%s:%d",
                 v6 ? "[" : "", host, v6 ? "]" : "", port);
        if (s.loopback) {
            snprintf(s.hosts[s.nhosts++], sizeof s.hosts[0], "localhost:%d",
                     port);
            snprintf(s.hosts[s.nhosts++], sizeof s.hosts[0], "127.0.0.1:%d",
                     port);
            snprintf(s.hosts[s.nhosts++], sizeof s.hosts[0], "[::1]:%d",
                     port);
        }
    }
    s.sigint = evsignal_new(s.base, SIGINT, on_signal, &s);
    s.sigterm = evsignal_new(s.base, SIGTERM, on_signal, &s);
    if (!s.sigint || !s.sigterm || evsignal_add(s.sigint, NULL) < 0 ||
        evsignal_add(s.sigterm, NULL) < 0) {
        fprintf(stderr, "redq serve: cannot handle signals\n");
        ret = CLI_RC_FAILED;
        goto done;
    }
    /* The line tests and scripts wait for; the port is the bound one
     * (--listen 127.0.0.1:0 picks a free one). */
    fprintf(stderr, "redq serve: listening on http://%s/ (redis %s%s)\n",
            s.hosts[0], s.redis_shown, s.token ? ", token required" : "");
    fflush(stderr);
    event_base_dispatch(s.base);

done:
    if (!s.signal && !s.closed) {
        /* Not stopped by a signal: close the handle now and run the loop
         * until its last callback. */
        if (redq_admin_close(s.admin, on_closed, &s) == 0)
            event_base_dispatch(s.base);
    } else if (!s.closed) {
        /* A second signal broke the loop before the close finished. */
        event_base_loop(s.base, EVLOOP_NONBLOCK);
    }
    if (s.http)
        evhttp_free(s.http);
    if (s.sigint)
        event_free(s.sigint);
    if (s.sigterm)
        event_free(s.sigterm);
    event_base_free(s.base);
    if (s.signal && ret == CLI_RC_OK)
        ret = 128 + s.signal;
    return ret;
}
