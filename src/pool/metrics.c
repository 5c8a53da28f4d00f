/* The pool's published figures: a few gauges and counters in a metrics registry, refreshed from
 * gk_pool_get_stats by a collector only when the registry is read (a scrape, the process
 * publisher under `gpukit run`), so allocation and free never touch them. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/errtext.h"
#include "pool/pool_int.h"

enum { G_IN_USE, G_RESERVED, G_ACTIVE, G_LIMIT, G_LARGEST_FREE, NGAUGES };
enum { C_OOMS, C_RETRIES, C_MALLOCS, C_FREES, NCOUNTERS };

static const struct {
    const char *name, *help;
} gauges[NGAUGES] =
    {
        {"gpukit_alloc_in_use_bytes", "Bytes the pool has handed out (rounded)."},
        {"gpukit_alloc_reserved_bytes", "Bytes the pool holds from the device."},
        {"gpukit_alloc_active_bytes", "Bytes allocated or waiting on stream events."},
        {"gpukit_alloc_limit_bytes", "The pool's cap on reserved bytes (0: none)."},
        {"gpukit_alloc_largest_free_block_bytes", "Largest free cached block."},
},
  counters[NCOUNTERS] = {
      {"gpukit_alloc_ooms_total", "Allocations the pool refused."},
      {"gpukit_alloc_retries_total", "Allocations that freed the cache and retried."},
      {"gpukit_alloc_device_mallocs_total", "Device allocations and page mappings."},
      {"gpukit_alloc_device_frees_total", "Device frees and page unmappings."},
};

struct gk__pool_metrics {
    gk_metrics *reg;
    gk_metric *g[NGAUGES], *c[NCOUNTERS];
    uint64_t sent[NCOUNTERS]; /* counter values already added (the collector runs serialized) */
    char name[64];
};

/* Reads the pool's statistics into its series. */
static void collect(void *user)
{
    gk_pool *p = user;
    gk_pool_stats st;
    if (gk_pool_get_stats(p, &st) != 0)
        return;
    struct gk__pool_metrics *pm = p->pm;
    const double g[NGAUGES] = {(double)st.allocated_bytes[GK_POOL_ALL].current,
                               (double)st.reserved_bytes[GK_POOL_ALL].current,
                               (double)st.active_bytes[GK_POOL_ALL].current, (double)st.limit,
                               (double)st.largest_free_block};
    const uint64_t c[NCOUNTERS] = {st.num_ooms, st.num_alloc_retries, st.num_device_alloc,
                                   st.num_device_free};
    for (int i = 0; i < NGAUGES; i++)
        gk_gauge_set(pm->g[i], g[i]);
    for (int i = 0; i < NCOUNTERS; i++) {
        /* num_ooms and num_alloc_retries restart at gk_pool_reset_accumulated: count from there */
        if (c[i] < pm->sent[i])
            pm->sent[i] = 0;
        gk_counter_add(pm->c[i], (double)(c[i] - pm->sent[i]));
        pm->sent[i] = c[i];
    }
}

/* "cuda:0", "host" or "sim": the device label (a sim's settings stay out of it). */
static void device_label(const gk_device_props *props, char *buf, size_t len)
{
    if (props->backend == GK_BACKEND_CUDA)
        snprintf(buf, len, "%s", props->spec);
    else
        snprintf(buf, len, "%s", props->backend_name);
}

void gk__pool_metrics_start(gk_pool *p)
{
    gk_metrics *reg = p->cfg.metrics ? p->cfg.metrics : gk_metrics_default();
    struct gk__pool_metrics *pm = reg ? gk__calloc(1, sizeof *pm) : NULL;
    if (!pm)
        return;
    pm->reg = reg;
    snprintf(pm->name, sizeof pm->name, "%s",
             p->cfg.name && *p->cfg.name ? p->cfg.name : "default");
    char device[128];
    device_label(&p->props, device, sizeof device);
    const char *labels[] = {"device", device, "pool", pm->name, NULL};
    int rc = 0;
    for (int i = 0; i < NGAUGES && !rc; i++)
        rc = gk_metrics_gauge(reg, gauges[i].name, gauges[i].help, labels, &pm->g[i]);
    for (int i = 0; i < NCOUNTERS && !rc; i++)
        rc = gk_metrics_counter(reg, counters[i].name, counters[i].help, labels, &pm->c[i]);
    p->pm = pm;
    if (rc || (rc = gk_metrics_add_collector(reg, collect, p)) != 0) {
        gk_log(&p->cfg.logger, GK_LOG_DEBUG, "pool", "no published figures: %s", gk_last_error());
        p->pm = NULL;
        p->cfg.name = NULL;
        free(pm);
        return;
    }
    p->cfg.name = pm->name;
}

void gk__pool_metrics_stop(gk_pool *p)
{
    if (!p->pm)
        return;
    (void)gk_metrics_remove_collector(p->pm->reg, collect, p); /* a last reading, then gone */
    free(p->pm);
    p->pm = NULL;
}

int gk_alloc_figures_publish(gk_metrics *m, const char *device, const char *name,
                             const gk_alloc_figures *f_in)
{
    if (!device || !name || !f_in)
        return gk__error(-EINVAL, "gk_alloc_figures_publish: device, name or figures is NULL");
    gk_alloc_figures f;
    memset(&f, 0, sizeof f);
    f.in_use_bytes = f.reserved_bytes = f.active_bytes = NAN;
    f.ooms = f.retries = f.device_mallocs = NAN;
    if (gk__sized_in(&f, sizeof f, f_in, "gk_alloc_figures") != 0)
        return -EINVAL;
    const struct {
        int gauge, idx;
        double value;
    } v[] = {
        {1, G_IN_USE, f.in_use_bytes}, {1, G_RESERVED, f.reserved_bytes},
        {1, G_ACTIVE, f.active_bytes}, {0, C_OOMS, f.ooms},
        {0, C_RETRIES, f.retries},     {0, C_MALLOCS, f.device_mallocs},
    };
    const size_t n = sizeof v / sizeof v[0];
    for (size_t i = 0; i < n; i++)
        if (!isnan(v[i].value) && !(v[i].value >= 0 && isfinite(v[i].value)))
            return gk__error(-EINVAL,
                             "gk_alloc_figures_publish: %s is %g (figures are bytes or counts: 0 "
                             "or more, or NAN when not known)",
                             v[i].gauge ? gauges[v[i].idx].name : counters[v[i].idx].name,
                             v[i].value);
    gk_metrics *reg = m ? m : gk_metrics_default();
    if (!reg)
        return gk__error(-ENOMEM, "gk_alloc_figures_publish: no registry (out of host memory)");
    const char *labels[] = {"device", device, "pool", name, NULL};
    for (size_t i = 0; i < n; i++) {
        if (isnan(v[i].value))
            continue;
        gk_metric *s = NULL;
        int rc = v[i].gauge ? gk_metrics_gauge(reg, gauges[v[i].idx].name, gauges[v[i].idx].help,
                                               labels, &s)
                            : gk_metrics_counter(reg, counters[v[i].idx].name,
                                                 counters[v[i].idx].help, labels, &s);
        if (rc)
            return rc;
        if (v[i].gauge) {
            gk_gauge_set(s, v[i].value);
        } else {
            double now = gk_metric_value(s);
            /* the registry's counter holds the total published so far: add the rise */
            if (v[i].value > now)
                gk_counter_add(s, v[i].value - now);
        }
    }
    return 0;
}
