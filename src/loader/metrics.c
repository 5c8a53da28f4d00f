/* The loader's published figures: counters and gauges in a metrics registry, refreshed from
 * gk_loader_get_stats by a collector only when the registry is read (a scrape, the process
 * publisher under `gpukit run`), so next() and the workers never touch them. */
#include <stdio.h>
#include <stdlib.h>

#include "common/alloc.h"
#include "loader/loader_int.h"

enum { ITEMS, BYTES, BATCHES, SKIPS, WAIT, BUSY, FILL, COPY, NCOUNTERS };
enum { READY, FIRST, DEPTH, NGAUGES };

static const struct {
    const char *name, *help;
} counters[NCOUNTERS] =
    {
        {"gpukit_loader_items_total", "Items delivered by next."},
        {"gpukit_loader_bytes_total", "Bytes delivered by next."},
        {"gpukit_loader_batches_total", "Batches delivered by next."},
        {"gpukit_loader_skips_total", "Batches skipped after a failed read."},
        {"gpukit_loader_wait_seconds_total", "Time the consumer waited inside next for a batch."},
        {"gpukit_loader_worker_busy_seconds_total", "Workers' time inside dataset reads."},
        {"gpukit_loader_fill_seconds_total", "Time filling batches (sum of their parts)."},
        {"gpukit_loader_copy_seconds_total", "Time issuing batches' host-to-device copies."},
},
  gauges[NGAUGES] = {
      {"gpukit_loader_ring_ready", "Ready batches in the ring at the last next."},
      {"gpukit_loader_first_batch_seconds", "Create (or seek) to the first delivered batch."},
      {"gpukit_loader_depth", "Slots in the ring."},
};

struct gk__loader_metrics {
    gk_metrics *reg;
    gk_metric *c[NCOUNTERS], *g[NGAUGES];
    double sent[NCOUNTERS]; /* counter values already added (the collector runs serialized) */
};

static void collect(void *user)
{
    gk_loader *ld = user;
    struct gk__loader_metrics *lm = ld->lm;
    gk_loader_stats st;
    if (gk_loader_get_stats(ld, &st) != 0)
        return;
    const double c[NCOUNTERS] = {(double)st.items,         (double)st.bytes,
                                 (double)st.batches,       (double)st.skips,
                                 (double)st.wait_ns / 1e9, (double)st.worker_busy_ns / 1e9,
                                 (double)st.fill_ns / 1e9, (double)st.copy_ns / 1e9};
    for (int i = 0; i < NCOUNTERS; i++) {
        if (c[i] > lm->sent[i])
            gk_counter_add(lm->c[i], c[i] - lm->sent[i]);
        lm->sent[i] = c[i];
    }
    gk_gauge_set(lm->g[READY], (double)st.ring_ready);
    gk_gauge_set(lm->g[FIRST], (double)st.first_batch_ns / 1e9);
    gk_gauge_set(lm->g[DEPTH], (double)st.depth);
}

void gk__loader_metrics_start(gk_loader *ld)
{
    gk_metrics *reg = ld->cfg.metrics ? ld->cfg.metrics : gk_metrics_default();
    struct gk__loader_metrics *lm = reg ? gk__calloc(1, sizeof *lm) : NULL;
    if (!lm)
        return;
    lm->reg = reg;
    char device[128] = "host"; /* no device: the batches are in host memory */
    gk_device_props props;
    if (ld->cfg.device && gk_device_get_props(ld->cfg.device, &props) == 0)
        snprintf(device, sizeof device, "%s",
                 props.backend == GK_BACKEND_CUDA ? props.spec : props.backend_name);
    const char *labels[] = {"device", device, "loader", ld->name, NULL};
    int rc = 0;
    for (int i = 0; i < NCOUNTERS && !rc; i++)
        rc = gk_metrics_counter(reg, counters[i].name, counters[i].help, labels, &lm->c[i]);
    for (int i = 0; i < NGAUGES && !rc; i++)
        rc = gk_metrics_gauge(reg, gauges[i].name, gauges[i].help, labels, &lm->g[i]);
    ld->lm = lm;
    if (rc || (rc = gk_metrics_add_collector(reg, collect, ld)) != 0) {
        gk_log(&ld->cfg.logger, GK_LOG_DEBUG, "loader", "no published figures: %s",
               gk_last_error());
        ld->lm = NULL;
        free(lm);
    }
}

void gk__loader_metrics_stop(gk_loader *ld)
{
    if (!ld->lm)
        return;
    (void)gk_metrics_remove_collector(ld->lm->reg, collect, ld); /* a last reading, then gone */
    free(ld->lm);
    ld->lm = NULL;
}
