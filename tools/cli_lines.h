/*
 * Line splitting for `redq push` reading stdin: one message per line.
 * Kept apart from tools/cli/push.c so that it can be fuzzed on its own
 * (fuzz/fuzz_lines.c): the bytes between the lines must come back exactly.
 */
#ifndef REDQ_CLI_LINES_H
#define REDQ_CLI_LINES_H

#include <stddef.h>

/*
 * Find the next line of buf[off, len).
 *
 * A line ends at '\n', which is not part of it, and neither is a '\r' right
 * before that '\n' ("a\r\n" is the line "a"). Every other byte, NUL and a
 * lone '\r' included, belongs to the line; an empty line is a line. When
 * `eof` is set, the bytes after the last '\n' (if any) are a last line,
 * kept exactly as they are: a '\r' at its end stays, since no '\n' follows.
 *
 * *scan carries what earlier calls learnt so that a long line arriving in
 * many reads is scanned once: buf[off, *scan) holds no '\n'. Start it at
 * off; the caller may append bytes (grow len) between calls, and must move
 * off and *scan together if it shifts the buffer. Requires
 * off <= *scan <= len; buf may be NULL when len == off.
 *
 * Returns 1 with the line at buf + off, *line_len bytes long, and *next the
 * offset where the following line starts (just after the '\n', or len for
 * the last line at eof); *scan is set to *next, so the caller only sets
 * off = *next. Returns 0 when there is no line yet (no '\n' in
 * buf[*scan, len), and not eof, or nothing left); *scan is then len.
 * Pure: no allocation, no side effect beyond *scan, *line_len and *next.
 */
int cli_line_next(const char *buf, size_t off, size_t *scan, size_t len,
                  int eof, size_t *line_len, size_t *next);

#endif /* REDQ_CLI_LINES_H */
