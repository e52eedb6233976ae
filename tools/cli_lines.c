/*
 * Line splitting for `redq push` (see cli_lines.h for the contract).
 */
#include "cli_lines.h"

#include <string.h>

int cli_line_next(const char *buf, size_t off, size_t *scan, size_t len,
                  int eof, size_t *line_len, size_t *next)
{
    const char *nl = NULL;
    size_t n;

    /* memchr on a NULL buffer is undefined even for 0 bytes, and before
     * the first read the buffer is NULL. */
    if (*scan < len)
        nl = memchr(buf + *scan, '\n', len - *scan);
    if (nl == NULL) {
        *scan = len;
        if (!eof || off == len)
            return 0;
        /* No '\n' will come: the rest is a line as it is. */
        *line_len = len - off;
        *next = len;
        return 1;
    }
    n = (size_t)(nl - (buf + off));
    if (n > 0 && buf[off + n - 1] == '\r')
        n--;
    *line_len = n;
    *next = (size_t)(nl - buf) + 1;
    *scan = *next;
    return 1;
}
