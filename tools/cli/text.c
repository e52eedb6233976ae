/*
 * Output escaping for dead list and stats: payloads and queue names are
 * arbitrary bytes, and what the tool prints must stay one line per entry
 * for a terminal, cut and awk (cli_escape_text), or valid JSON
 * (cli_put_json_*). UTF-8 is checked by the library's own check
 * (redq_utf8_valid, redq_utf8_seq_len).
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* UTF-8 is the library's check (redq_utf8_seq_len), so the tool and the
 * library agree on what is text. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    return redq_utf8_seq_len(p, n);
}

/*
 * [p, p+n) for a terminal and for cut/awk: backslash, tab, newline, CR and
 * every other control byte (C0, DEL, and C1 as U+0080..U+009F) escaped as
 * \\ \t \n \r \xHH. With `utf8`, well-formed UTF-8 characters are kept,
 * other bytes >= 0x80 escaped; without, every byte >= 0x80 is. At most
 * `max` characters (0: no limit), then "...". A new string, or NULL.
 */
char *cli_escape_text(const char *p, size_t n, size_t max, int utf8)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t cap = (max && max < n ? max : n) * 4 + 8, o = 0, i = 0, chars = 0;
    char *out = malloc(cap);

    if (!out)
        return NULL;
    while (i < n) {
        size_t l = utf8 ? utf8_len(s + i, n - i) : (s[i] < 0x80);

        if (max && chars == max) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (s[i] == '\\' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
            out[o++] = '\\';
            out[o++] = s[i] == '\\' ? '\\'
                       : s[i] == '\t' ? 't'
                       : s[i] == '\n' ? 'n'
                                      : 'r';
            i++;
        } else if (l == 0 || s[i] < 0x20 || s[i] == 0x7f ||
                   (l == 2 && s[i] == 0xc2 && s[i + 1] < 0xa0)) {
            o += (size_t)sprintf(out + o, "\\x%02x", s[i]);
            i++;
        } else {
            memcpy(out + o, s + i, l);
            o += l;
            i += l;
        }
        chars++;
    }
    out[o] = '\0';
    return out;
}

/* [p, p+n) as a JSON string (quoted); bytes that are not UTF-8 become
 * U+FFFD, NUL and other control bytes \u00XX. */
void cli_put_json_bytes(FILE *f, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    putc('"', f);
    while (i < n) {
        size_t l = utf8_len(p + i, n - i);

        if (p[i] == '"' || p[i] == '\\') {
            fprintf(f, "\\%c", p[i]);
        } else if (p[i] < 0x20) {
            fprintf(f, "\\u%04x", p[i]);
        } else if (l == 0) {
            fputs("\\ufffd", f);
            l = 1;
        } else {
            fwrite(p + i, 1, l, f);
        }
        i += l ? l : 1;
    }
    putc('"', f);
}

void cli_put_json_string(FILE *f, const char *s)
{
    cli_put_json_bytes(f, s, strlen(s));
}
