/* The sampler behind gk_run_execute: one reading of the host, the command's process tree and the
 * GPUs, as named values ("host.cpu_ratio", "tree.rss_bytes", "gpu.0.power_watts", ...). The run
 * loop knows only this interface; the names are documented in docs/run.md. */
#ifndef GK_SAMPLER_INT_H
#define GK_SAMPLER_INT_H

#include <stddef.h>
#include <sys/types.h>

#include "gpukit/log.h"
#include "gpukit/report.h"

#define GK__SAMPLER_MAX_VALUES  512
#define GK__SAMPLER_MAX_DEVICES 16

typedef struct gk__values {
    size_t n;
    const char *names[GK__SAMPLER_MAX_VALUES]; /* point into namebuf */
    double v[GK__SAMPLER_MAX_VALUES];
    char namebuf[GK__SAMPLER_MAX_VALUES][64];
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

/* Opens the readers (GPUs only when want_gpu). Fills *info. Returns 0, -ENOMEM. */
int gk__sampler_create(int want_gpu, const gk_logger *lg, gk__sampler **out,
                       gk__sampler_info *info);

/* Marks time zero (monotonic seconds): rates in the first sample are taken from here, and the
 * tree is taken to have used no CPU before it. */
void gk__sampler_start(gk__sampler *s, double t_mono);

/* Reads everything once for the tree rooted at `root` (t_mono: now, monotonic seconds). */
void gk__sampler_read(gk__sampler *s, pid_t root, double t_mono, gk__values *out);

void gk__sampler_destroy(gk__sampler *s);

#endif
