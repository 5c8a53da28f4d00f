/* Publishing gpukit's own figures over StatsD, so a program run under `gpukit run` gets its
 * allocator's memory into the recording (and the fragmentation advice) with one call a step. */
#include <errno.h>

#include "common/errtext.h"
#include "run/run_int.h"

int gk_statsd_send_pool(gk_statsd *c, gk_pool *pool)
{
    if (!c || !pool)
        return gk__error(-EINVAL, "gk_statsd_send_pool: c or pool is NULL");
    gk_pool_stats st;
    int rc = gk_pool_get_stats(pool, &st);
    if (rc)
        return rc;
    const struct {
        const char *name;
        double value;
    } gauges[] = {
        {"gpukit_alloc_in_use_bytes", (double)st.allocated_bytes[GK_POOL_ALL].current},
        {"gpukit_alloc_reserved_bytes", (double)st.reserved_bytes[GK_POOL_ALL].current},
        {"gpukit_alloc_active_bytes", (double)st.active_bytes[GK_POOL_ALL].current},
        {"gpukit_alloc_ooms_total", (double)st.num_ooms},
        {"gpukit_alloc_retries_total", (double)st.num_alloc_retries},
        {"gpukit_alloc_device_mallocs_total", (double)st.num_device_alloc},
    };
    int first = 0;
    for (size_t i = 0; i < sizeof gauges / sizeof gauges[0]; i++) {
        rc = gk_statsd_client_send(c, gauges[i].name, gauges[i].value, "g", NULL);
        if (rc && !first)
            first = rc;
    }
    return first;
}
