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
 * bytes. A policy created without a pool takes the same figures from the caller
 * (gk_pressure_sample_figures), so it can watch an allocator gpukit does not own. */
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
    uint64_t collect_target; /* COLLECT frees cached blocks until reserved is at most this */
    uint64_t trim_target;    /* TRIM gives cached memory back down to this (the allocated bytes) */
} gk_pressure_advice;

/* One snapshot of an allocator's memory, for a policy over an allocator that is not a gk_pool
 * (PyTorch's caching allocator read through torch.cuda.memory_stats() and mem_get_info(), ...):
 * the figures gk_pressure_sample reads from the device and the pool. Set `.size =
 * sizeof(gk_pressure_figures)`; fields beyond the size count as 0. */
typedef struct gk_pressure_figures {
    size_t size;
    uint64_t device_free, device_total; /* the device's memory now, bytes */
    uint64_t reserved;                  /* bytes the allocator holds from the device */
    uint64_t allocated;                 /* bytes handed out now */
    uint64_t peak_allocated;            /* highest allocated since the application last reset it */
    uint64_t limit; /* the allocator's cap on reserved bytes; 0 = none (the budget is then
                       device_free + reserved) */
} gk_pressure_figures;

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

/* Creates a policy over `pool` (which must outlive it), or with `pool` NULL a policy that is
 * given another allocator's figures by gk_pressure_sample_figures. Returns 0, -EINVAL for a
 * setting outside its range (fractions in [0,1], hysteresis >= 1) or -ENOMEM. */
GK_API int gk_pressure_create(gk_pool *pool, const gk_pressure_config *cfg, gk_pressure **out);
GK_API void gk_pressure_destroy(gk_pressure *pr);

/* Takes one sample (reads the device's memory information and the pool's statistics) and runs
 * the actions due; *actions (may be NULL) receives the GK_PRESSURE_* bits of what ran. Returns 0
 * or the first error of a device query or action; -EINVAL for a policy without a pool (this and
 * the next two functions need one). Thread-safe (samples are serialized). */
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

/* One sample from figures the caller read from its allocator, with the same conditions,
 * hysteresis and advice as gk_pressure_sample. *actions (may be NULL) receives the GK_PRESSURE_*
 * bits of what is due. With a pool, COLLECT and TRIM run on it as in gk_pressure_sample; without
 * one they are only reported, and the caller carries them out on its own allocator (free cached
 * memory down to out->collect_target or out->trim_target) or leaves them (an allocator that
 * cannot give back part of its cache). SHRINK calls cfg.on_shrink when set. `out` (may be NULL
 * through the function form, with size 0) receives this sample's advice whatever is due, so a
 * binding can act on SHRINK without a callback. Returns 0, -EINVAL (NULL arguments, a figures
 * size below sizeof(size_t), or figures that contradict each other: free above total, allocated
 * above reserved or above its peak), or the error of an action on the pool. Thread-safe. */
GK_API int gk_pressure_sample_figures(gk_pressure *pr, const gk_pressure_figures *fig,
                                      unsigned *actions, gk_pressure_advice *out, size_t size);
#define gk_pressure_sample_figures(pr, fig, actions, out)                                          \
    (gk_pressure_sample_figures)((pr), (fig), (actions), (out), sizeof *(out))

#ifdef __cplusplus
}
#endif
#endif
