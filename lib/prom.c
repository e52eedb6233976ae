/*
 * Prometheus text exposition (format 0.0.4) helpers for lib/admin.c, in a
 * file of their own so the tests can link them alone and check the
 * escaping byte for byte.
 */
#include <string.h>

#include "redq_private.h"

size_t redq__prom_escape(const char *s, size_t len, char *out)
{
    size_t i = 0, n = 0;
    while (i < len) {
        unsigned char ch = (unsigned char)s[i];
        size_t k;
        if (ch == '\\' || ch == '"') {
            out[n++] = '\\';
            out[n++] = (char)ch;
            i++;
            continue;
        }
        if (ch == '\n') {
            out[n++] = '\\';
            out[n++] = 'n';
            i++;
            continue;
        }
        /* The format is UTF-8: a byte that is not part of a well-formed
         * sequence becomes U+FFFD, so one odd queue name cannot make a
         * scraper reject the whole page. */
        k = redq__utf8_seq_len((const unsigned char *)s + i, len - i);
        if (k == 0) {
            memcpy(out + n, "\xEF\xBF\xBD", 3);
            n += 3;
            i++;
            continue;
        }
        memcpy(out + n, s + i, k);
        n += k;
        i += k;
    }
    out[n] = '\0';
    return n;
}
