/*
 * The dashboard's files (tools/cli/dashboard/), embedded in the binary by
 * tools/cli/dashboard/embed.py at build time so that `redq serve` needs no
 * file on disk and the page makes no request outside the server.
 */
#ifndef REDQ_CLI_SERVE_ASSETS_H
#define REDQ_CLI_SERVE_ASSETS_H

#include <stddef.h>

typedef struct cli_asset {
    const char *path;         /* "/", "/app.js", ... */
    const char *content_type; /* with its charset */
    const unsigned char *data;
    size_t len;
} cli_asset;

/* The files, in the order embed.py was given them; cli_nassets of them. */
extern const cli_asset cli_assets[];
extern const size_t cli_nassets;

#endif /* REDQ_CLI_SERVE_ASSETS_H */
