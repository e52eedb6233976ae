/* redq.h must compile alone: no other include before it. It also uses the
 * size-aware macros, so that they expand cleanly in a program of its own. */
#include "redq.h"

int main(void)
{
    redq_producer_options po;
    redq_consumer_options co;
    redq_admin_options ao;
    redq_producer_stats ps;
    redq_consumer_stats cs;
    redq_report r = {0};
    redq_producer_options_init(&po);
    redq_consumer_options_init(&co);
    redq_admin_options_init(&ao);
    /* NULL handles: both return at once; this checks the macros compile. */
    redq_producer_get_stats((const redq_producer *)0, &ps);
    redq_consumer_get_stats((const redq_consumer *)0, &cs);
    r.persisted = REDQ_PERSIST_POSSIBLY;
    return po.version == REDQ_PRODUCER_OPTIONS_VERSION && po.errbuf == 0 &&
                   co.version == REDQ_CONSUMER_OPTIONS_VERSION &&
                   ao.version == REDQ_ADMIN_OPTIONS_VERSION &&
                   r.persisted != REDQ_PERSIST_NOT &&
                   redq_strerror(REDQ_EFULL) != 0
               ? 0
               : 1;
}
