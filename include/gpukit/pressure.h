/* The memory-pressure policy: what a training loop's "memory manager" should do, as a sampler the
 * application calls (once per step, or from a monitor thread).
 *
 * Inputs per sample: the device's free and total memory, the pool's reserved, allocated and peak
 * allocated bytes. Each condition must hold for `hysteresis` consecutive samples before its action
 * runs (then its count starts again), so one spike never causes work. Actions, cheapest first:
 *   COLLECT  reserved > gc_high * budget: free old cached blocks (gk_pool_collect) down to it;
 *   TRIM     device free < free_low * total AND reserved - allocated > trim_margin: give the
 *            cached memory back (gk_pool_trim to the allocated bytes);
 *   SHRINK   peak allocated > shrink_high * budget: call on_shrink with a suggested batch size
 *            (from the fitted model peak(b) = a + k*b when given, else proportional to the peak)
 *            and a flag to turn on activation checkpointing when not even batch 1 fits.
 * The policy never empties the cache merely because allocated memory is high: cached memory can
 * never lower allocated memory, and emptying it turns the next step's cache hits into device
 * calls. The budget is the pool's limit, else the device's free memory plus the pool's reserved
 * bytes. */
#ifndef GPUKIT_PRESSURE_H
#define GPUKIT_PRESSURE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "pool.h"
#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gk_pressure gk_pressure;

typedef struct gk_pressure_advice {
    size_t size;          /* bytes filled (see gpukit/version.h) */
    long suggested_batch; /* >= 1 */
    int checkpointing;    /* 1: even batch 1 exceeds the budget: turn on checkpointing */
    uint64_t device_free, device_total;
    uint64_t reserved, allocated, peak_allocated, budget;
} gk_pressure_advice;

/* Called on the sampling thread without any gpukit lock held. */
typedef void (*gk_pressure_shrink_fn)(void *user, const gk_pressure_advice *advice);

typedef struct gk_pressure_config {
    size_t size;          /* sizeof(gk_pressure_config) (set by gk_pressure_config_default) */
    double gc_high;       /* fraction of the budget (0.85); 0 = never collect */
    double free_low;      /* fraction of device total memory counted as low (0.05) */
    uint64_t trim_margin; /* bytes of reserved-but-unallocated needed before a trim (64 MiB) */
    double shrink_high;   /* fraction of the budget for SHRINK (0.95); 0 = never */
    int hysteresis;       /* consecutive samples before acting (3) */
    double fit_a, fit_k;  /* the batch model in bytes (gk_batch_result fit_a/fit_k); 0 = none */
    long batch;           /* the application's current batch size (for proportional advice) */
    double margin;        /* headroom left by the suggestion, fraction of the budget (0.05) */
    gk_pressure_shrink_fn on_shrink;
    void *user;
} gk_pressure_config;

enum { GK_PRESSURE_COLLECT = 1, GK_PRESSURE_TRIM = 2, GK_PRESSURE_SHRINK = 4 };

/* Fills `cfg` with the defaults above. */
GK_API void gk_pressure_config_default(gk_pressure_config *cfg, size_t size);
#define gk_pressure_config_default(cfg) (gk_pressure_config_default)((cfg), sizeof *(cfg))

/* Creates a policy over `pool` (which must outlive it). Returns 0, -EINVAL for a setting outside
 * its range (fractions in [0,1], hysteresis >= 1) or -ENOMEM. */
GK_API int gk_pressure_create(gk_pool *pool, const gk_pressure_config *cfg, gk_pressure **out);
GK_API void gk_pressure_destroy(gk_pressure *pr);

/* Takes one sample (reads the device's memory information and the pool's statistics) and runs
 * the actions due; *actions (may be NULL) receives the GK_PRESSURE_* bits of what ran. Returns 0
 * or the first error of a device query or action. Thread-safe (samples are serialized). */
GK_API int gk_pressure_sample(gk_pressure *pr, unsigned *actions);

/* The same with the device's free and total memory given by the caller (a monitor that already
 * read them, or a test). */
GK_API int gk_pressure_sample_with(gk_pressure *pr, uint64_t device_free, uint64_t device_total,
                                   unsigned *actions);

/* The advice the SHRINK action would give now (without calling back). */
GK_API int gk_pressure_advise(gk_pressure *pr, uint64_t device_free, gk_pressure_advice *out,
                              size_t size);
#define gk_pressure_advise(pr, device_free, out)                                                   \
    (gk_pressure_advise)((pr), (device_free), (out), sizeof *(out))

#ifdef __cplusplus
}
#endif
#endif
