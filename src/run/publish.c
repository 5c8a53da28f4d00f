/* Publishing an allocator's figures over StatsD, so a program run under `gpukit run` gets its
 * allocator's memory into the recording (and the fragmentation advice) with one call a step: a
 * gpukit pool's, or any other allocator's figures given by the caller. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "common/errtext.h"
#include "run/run_int.h"

int gk_statsd_send_alloc(gk_statsd *c, const gk_alloc_figures *f_in)
{
    if (!c || !f_in)
        return gk__error(-EINVAL, "gk_statsd_send_alloc: c or figures is NULL");
    gk_alloc_figures f;
    memset(&f, 0, sizeof f);
    f.in_use_bytes = f.reserved_bytes = f.active_bytes = NAN;
    f.ooms = f.retries = f.device_mallocs = NAN;
    if (gk__sized_in(&f, sizeof f, f_in, "gk_alloc_figures") != 0)
        return -EINVAL;
    const struct {
        const char *name;
        double value;
    } gauges[] = {
        {"gpukit_alloc_in_use_bytes", f.in_use_bytes},
        {"gpukit_alloc_reserved_bytes", f.reserved_bytes},
        {"gpukit_alloc_active_bytes", f.active_bytes},
        {"gpukit_alloc_ooms_total", f.ooms},
        {"gpukit_alloc_retries_total", f.retries},
        {"gpukit_alloc_device_mallocs_total", f.device_mallocs},
    };
    for (size_t i = 0; i < sizeof gauges / sizeof gauges[0]; i++)
        if (!isnan(gauges[i].value) && !(gauges[i].value >= 0 && isfinite(gauges[i].value)))
            return gk__error(-EINVAL,
                             "gk_statsd_send_alloc: %s is %g (figures are bytes or counts: "
                             "0 or more, or NAN when not known)",
                             gauges[i].name, gauges[i].value);
    int first = 0;
    for (size_t i = 0; i < sizeof gauges / sizeof gauges[0]; i++) {
        if (isnan(gauges[i].value))
            continue;
        int rc = gk_statsd_client_send(c, gauges[i].name, gauges[i].value, "g", NULL);
        if (rc && !first)
            first = rc;
    }
    return first;
}

int gk_statsd_send_pool(gk_statsd *c, gk_pool *pool)
{
    if (!c || !pool)
        return gk__error(-EINVAL, "gk_statsd_send_pool: c or pool is NULL");
    gk_pool_stats st;
    int rc = gk_pool_get_stats(pool, &st);
    if (rc)
        return rc;
    gk_alloc_figures f = {
        .size = sizeof f,
        .in_use_bytes = (double)st.allocated_bytes[GK_POOL_ALL].current,
        .reserved_bytes = (double)st.reserved_bytes[GK_POOL_ALL].current,
        .active_bytes = (double)st.active_bytes[GK_POOL_ALL].current,
        .ooms = (double)st.num_ooms,
        .retries = (double)st.num_alloc_retries,
        .device_mallocs = (double)st.num_device_alloc,
    };
    return gk_statsd_send_alloc(c, &f);
}
