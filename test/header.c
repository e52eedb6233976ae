/* redq.h must compile alone: no other include before it. */
#include "redq.h"

int main(void)
{
    redq_options o;
    redq_options_init(&o);
    return o.version == REDQ_OPTIONS_VERSION && redq_strerror(REDQ_EFULL) != 0 ? 0 : 1;
}
