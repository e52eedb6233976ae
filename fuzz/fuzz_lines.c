/*
 * libFuzzer target: cli_line_next (tools/cli_lines.c), the line splitting
 * of `redq push` reading stdin.
 *
 * The first byte picks how the rest arrives: in one piece, or in reads of
 * 1..16 bytes driven by the following bytes, with the consumed prefix
 * shifted out of the buffer between reads as tools/cli/ does. Checked:
 * - every line is the bytes before its separator, which is "\n", "\r\n"
 *   or, for the last line at eof only, nothing; a line never holds a '\n',
 *   and ends in '\r' only as a last line at eof (that '\r' has no '\n');
 * - lines and separators put back together are the input, byte for byte;
 * - how the input arrived changes nothing: the same lines as one piece;
 * - the count is the number of '\n', plus one for a non-empty tail.
 */
#include <stdlib.h>
#include <string.h>

#include "cli_lines.h"
#include "fuzz_util.h"

typedef struct split {
    char *out;   /* the lines and their separators, put back together */
    size_t olen;
    size_t *lens; /* each line's length, in order */
    size_t nlines;
} split;

/* Record one line and check its separator. */
static void take(split *sp, const char *buf, size_t off, size_t line_len,
                 size_t next, size_t len, int eof)
{
    size_t sep = next - off - line_len;

    FUZZ_CHECK(next > off && next <= len, "next %zu off %zu len %zu", next,
               off, len);
    FUZZ_CHECK(memchr(buf + off, '\n', line_len) == NULL,
               "a '\\n' inside a line");
    if (sep == 0) {
        FUZZ_CHECK(eof && next == len, "a line without separator mid-input");
    } else if (sep == 1) {
        FUZZ_CHECK(buf[off + line_len] == '\n', "separator is not \\n");
        FUZZ_CHECK(line_len == 0 || buf[off + line_len - 1] != '\r',
                   "a '\\r' before the '\\n' kept in the line");
    } else {
        FUZZ_CHECK(sep == 2 && buf[off + line_len] == '\r' &&
                       buf[off + line_len + 1] == '\n',
                   "separator of %zu bytes", sep);
    }
    memcpy(sp->out + sp->olen, buf + off, next - off);
    sp->olen += next - off;
    sp->lens[sp->nlines++] = line_len;
}

/* Split data as it arrives in reads of the sizes that `plan` (plen bytes)
 * says (plen 0: all at once). */
static void run(split *sp, const char *data, size_t size,
                const uint8_t *plan, size_t plen)
{
    char *buf = NULL;
    size_t off = 0, scan = 0, len = 0, fed = 0, pi = 0;
    size_t line_len, next;

    for (;;) {
        int eof = fed == size;

        while (cli_line_next(buf, off, &scan, len, eof, &line_len, &next)) {
            take(sp, buf, off, line_len, next, len, eof);
            off = next;
            FUZZ_CHECK(scan == off, "scan %zu off %zu", scan, off);
        }
        FUZZ_CHECK(scan == len, "scan %zu len %zu at no line", scan, len);
        if (eof)
            break;
        /* The next read: drop what was consumed, as push_read does. */
        {
            size_t n = plen > 0 ? 1 + plan[pi++ % plen] % 16 : size;
            char *nb;

            if (n > size - fed)
                n = size - fed;
            if (buf != NULL)
                memmove(buf, buf + off, len - off);
            len -= off;
            scan -= off;
            off = 0;
            /* Exactly sized: ASan catches a read past len. */
            nb = malloc(len + n);
            FUZZ_CHECK(nb != NULL, "out of memory");
            if (len > 0)
                memcpy(nb, buf, len);
            memcpy(nb + len, data + fed, n);
            free(buf);
            buf = nb;
            len += n;
            fed += n;
        }
    }
    FUZZ_CHECK(off == len, "%zu bytes left after eof", len - off);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    split whole, piece;
    size_t i, nl = 0, plen;
    const char *in;

    if (size == 0)
        return 0;
    /* Byte 0: the read sizes come from the first (byte0 % 8) bytes after
     * it; 0 means one read. The input to split is the rest. */
    plen = data[0] % 8;
    if (plen > size - 1)
        plen = size - 1;
    in = (const char *)data + 1;
    size -= 1;

    whole.out = malloc(size + 1);
    piece.out = malloc(size + 1);
    whole.lens = malloc((size + 1) * sizeof(size_t));
    piece.lens = malloc((size + 1) * sizeof(size_t));
    FUZZ_CHECK(whole.out && piece.out && whole.lens && piece.lens,
               "out of memory");
    whole.olen = piece.olen = whole.nlines = piece.nlines = 0;

    run(&whole, in, size, NULL, 0);
    run(&piece, in, size, data + 1, plen);

    FUZZ_CHECK(whole.olen == size && memcmp(whole.out, in, size) == 0,
               "lines and separators are not the input");
    FUZZ_CHECK(piece.olen == size && memcmp(piece.out, in, size) == 0,
               "lines and separators are not the input (in reads)");
    FUZZ_CHECK(piece.nlines == whole.nlines &&
                   memcmp(piece.lens, whole.lens,
                          whole.nlines * sizeof(size_t)) == 0,
               "%zu lines in reads, %zu at once", piece.nlines,
               whole.nlines);
    for (i = 0; i < size; i++)
        nl += in[i] == '\n';
    FUZZ_CHECK(whole.nlines ==
                   nl + (size > 0 && in[size - 1] != '\n' ? 1 : 0),
               "%zu lines for %zu newlines", whole.nlines, nl);

    free(whole.out);
    free(piece.out);
    free(whole.lens);
    free(piece.lens);
    return 0;
}
