/* Fuzz target: StatsD datagrams as a program under `gpukit run` may send them. */
#include <string.h>

#include "fuzz.h"
#include "gpukit/error.h"
#include "run/run_int.h"

static void check(void *user, const gk__statsd_msg *m)
{
    (void)user;
    /* An accepted line keeps its promises: a valid name, a known type, a finite value, a rate
     * in (0, 1] and valid tags. */
    if (!gk__statsd_name_ok(m->name, m->name_len) || m->value != m->value ||
        m->value - m->value != 0 || !(m->rate > 0 && m->rate <= 1) ||
        (m->tags && !gk__statsd_tags_ok(m->tags, m->tags_len)))
        __builtin_trap();
    if (strcmp(m->kind, "g") && strcmp(m->kind, "c") && strcmp(m->kind, "ms") &&
        strcmp(m->kind, "h"))
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint64_t good = 0, bad = 0;
    gk__statsd_parse_datagram((const char *)data, size, check, NULL, &good, &bad);
    if (good + bad > size)
        __builtin_trap(); /* more lines than bytes */
    return 0;
}
