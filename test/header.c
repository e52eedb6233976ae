/* redq.h must compile alone: no other include before it. It also uses the
 * size-aware macros, so that they expand cleanly in a program of its own. */
#include "redq.h"

int main(void)
{
    redq_options o;
    redq_producer_stats ps;
    redq_consumer_stats cs;
    redq_report r = {0};
    redq_options_init(&o);
    /* NULL handles: both return at once; this checks the macros compile. */
    redq_producer_get_stats((const redq_producer *)0, &ps);
    redq_consumer_get_stats((const redq_consumer *)0, &cs);
    r.persisted = REDQ_PERSIST_POSSIBLY;
    return o.version == REDQ_OPTIONS_VERSION && o.errbuf == 0 &&
                   r.persisted != REDQ_PERSIST_NOT &&
                   redq_strerror(REDQ_EFULL) != 0
               ? 0
               : 1;
}
