/*
 * Host name resolution off the loop's critical path.
 *
 * hiredis resolves host names with a blocking getaddrinfo() inside its
 * connect call, which would stall an embedding server's loop for as long as
 * DNS takes. So redq resolves first, with libevent's evdns, and hands hiredis
 * a numeric address (for which getaddrinfo never touches the network).
 *
 * Whatever the path (numeric host, /etc/hosts hit, DNS answer, failure), the
 * result is parked and delivered from a deferred event, so the callback
 * never runs inside redq__resolve().
 */
#include <stdio.h>
#include <stdlib.h>

#include <netinet/in.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "redq_private.h"

struct redq__resolver {
    struct event_base *base;
    struct evdns_base *dns; /* made on the first name lookup */
    struct evdns_getaddrinfo_request *req;
    struct event *deliver;  /* runs the caller's callback from the loop */
    redq__resolve_cb cb;
    void *arg;
    int status;
    char ip[64];
    char msg[256];
};

redq__resolver *redq__resolver_new(struct event_base *base)
{
    redq__resolver *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->base = base;
    return r;
}

static void deliver_cb(evutil_socket_t fd, short what, void *arg)
{
    redq__resolver *r = arg;
    redq__resolve_cb cb = r->cb;
    (void)fd;
    (void)what;
    r->cb = NULL;
    if (cb != NULL)
        cb(r->status, r->status == 0 ? r->ip : NULL, r->msg, r->arg);
}

static void finish(redq__resolver *r, int status)
{
    r->status = status;
    event_active(r->deliver, EV_TIMEOUT, 0);
}

static void dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    redq__resolver *r = arg;
    struct evutil_addrinfo *ai;
    const void *addr = NULL;
    int family = AF_INET;

    if (result == EVUTIL_EAI_CANCEL) {
        /* redq__resolve_cancel() or free: nobody wants the answer. */
        if (res != NULL)
            evutil_freeaddrinfo(res);
        return;
    }
    r->req = NULL;
    if (result != 0) {
        snprintf(r->msg, sizeof r->msg, "%s", evutil_gai_strerror(result));
        finish(r, REDQ_ERESOLVE);
        return;
    }
    /* Prefer IPv4 as redis-server binds 127.0.0.1 by default; take IPv6
     * when that is all there is. */
    for (ai = res; ai != NULL && addr == NULL; ai = ai->ai_next)
        if (ai->ai_family == AF_INET) {
            addr = &((struct sockaddr_in *)(void *)ai->ai_addr)->sin_addr;
            family = AF_INET;
        }
    for (ai = res; ai != NULL && addr == NULL; ai = ai->ai_next)
        if (ai->ai_family == AF_INET6) {
            addr = &((struct sockaddr_in6 *)(void *)ai->ai_addr)->sin6_addr;
            family = AF_INET6;
        }
    if (addr == NULL ||
        evutil_inet_ntop(family, addr, r->ip, sizeof r->ip) == NULL) {
        snprintf(r->msg, sizeof r->msg, "no usable address");
        evutil_freeaddrinfo(res);
        finish(r, REDQ_ERESOLVE);
        return;
    }
    evutil_freeaddrinfo(res);
    r->msg[0] = '\0';
    finish(r, 0);
}

static int is_numeric(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return evutil_inet_pton(AF_INET, host, buf) == 1 ||
           evutil_inet_pton(AF_INET6, host, buf) == 1;
}

int redq__resolve(redq__resolver *r, const char *host, redq__resolve_cb cb,
                  void *arg)
{
    struct evutil_addrinfo hints;

    if (r->deliver == NULL) {
        r->deliver = event_new(r->base, -1, 0, deliver_cb, r);
        if (r->deliver == NULL)
            return REDQ_ENOMEM;
    }
    redq__resolve_cancel(r);
    r->cb = cb;
    r->arg = arg;
    r->msg[0] = '\0';

    if (is_numeric(host)) {
        snprintf(r->ip, sizeof r->ip, "%s", host);
        finish(r, 0);
        return 0;
    }
    if (r->dns == NULL) {
        /* Reads /etc/resolv.conf and /etc/hosts once: a file read, not a
         * network wait. */
        r->dns = evdns_base_new(r->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
        if (r->dns == NULL) {
            r->cb = NULL;
            return REDQ_ENOMEM;
        }
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    /* May call dns_cb before returning (hosts file, cache): dns_cb only
     * parks the result, so that is fine. */
    r->req = evdns_getaddrinfo(r->dns, host, NULL, &hints, dns_cb, r);
    return 0;
}

void redq__resolve_cancel(redq__resolver *r)
{
    if (r->req != NULL) {
        struct evdns_getaddrinfo_request *req = r->req;
        r->req = NULL;
        evdns_getaddrinfo_cancel(req);
    }
    if (r->deliver != NULL)
        event_del(r->deliver);
    r->cb = NULL;
}

void redq__resolver_free(redq__resolver *r)
{
    if (r == NULL)
        return;
    redq__resolve_cancel(r);
    if (r->dns != NULL)
        evdns_base_free(r->dns, 0);
    if (r->deliver != NULL)
        event_free(r->deliver);
    free(r);
}
