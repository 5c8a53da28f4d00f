/* The sampler behind gk_run_execute: the monitor that `gpukit serve` and `gpukit top` use, ticked
 * by the run loop, watching the command's tree; one reading is the newest point of each of its
 * gauges, named as the exporter names them ("gpukit_cpu_busy_ratio",
 * "gpukit_gpu_utilization_ratio{gpu=\"0\"}", "gpukit_rank_cpu_cores{rank=\"1\"}", ...; the
 * uuid and the tree's pid labels, which never change in a run, are left to the metadata). The
 * run's alert rules are evaluated on the same monitor, so nothing is read twice. */
#ifndef GK_SAMPLER_INT_H
#define GK_SAMPLER_INT_H

#include <stddef.h>
#include <sys/types.h>

#include "gpukit/log.h"
#include "gpukit/monitor.h"
#include "gpukit/report.h"

#define GK__SAMPLER_MAX_VALUES  512
#define GK__SAMPLER_MAX_DEVICES 16

typedef struct gk__values {
    size_t n;
    const char *names[GK__SAMPLER_MAX_VALUES]; /* point into namebuf */
    double v[GK__SAMPLER_MAX_VALUES];
    char namebuf[GK__SAMPLER_MAX_VALUES][128];
} gk__values;

/* Appends name = v (dropped when full). */
void gk__values_add(gk__values *vals, const char *name, double v);

/* What the sampler found at creation (for the recording's metadata). */
typedef struct gk__sampler_info {
    int cores;
    double memory_total_bytes;
    int gpu_enabled;
    char gpu_reason[256];
    int ndevices;
    gk_recording_device devices[GK__SAMPLER_MAX_DEVICES];
    char names[GK__SAMPLER_MAX_DEVICES][96];
    char uuids[GK__SAMPLER_MAX_DEVICES][96];
} gk__sampler_info;

typedef struct gk__sampler gk__sampler;

/* Opens the monitor (GPUs only when want_gpu) and fills *info. Returns 0, -ENOMEM or the
 * monitor's error. */
int gk__sampler_create(int want_gpu, const gk_logger *lg, gk__sampler **out,
                       gk__sampler_info *info);

/* The monitor, to add alert rules to; `fn(user, ...)` receives their state changes. */
gk_monitor *gk__sampler_monitor(gk__sampler *s);
void gk__sampler_on_alert(gk__sampler *s, gk_alert_fn fn, void *user);

/* Watches the command's tree from now on (its first reading is the start of its rates). */
void gk__sampler_watch(gk__sampler *s, pid_t root);

/* Reads everything once: one monitor tick, then its gauges into out. */
void gk__sampler_read(gk__sampler *s, gk__values *out);

void gk__sampler_destroy(gk__sampler *s);

#endif
