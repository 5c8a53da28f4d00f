/* The batch-size finder: the largest batch whose training step fits in device memory, found with
 * as few trial steps as possible.
 *
 * The application gives a trial callback that runs a few steps at batch size b and says whether
 * they fit. Modes:
 *   model      (default) two short trials at b1 and b2, each measuring its peak allocated bytes,
 *              fit peak(b) = a + k*b, predict the largest b whose per-sample part k*b stays
 *              within (budget - a)*(1-margin),
 *              verify it with one trial, and bisect between the last size that fit and the
 *              prediction when it does not. Usually 3 trials.
 *   power      Lightning's "power": start at init, double while it fits, stop at the first
 *              failure after a success (answer: the last success), halve while nothing fitted.
 *   binsearch  Lightning's "binsearch": double until the first failure, then bisect.
 *   decay      accelerate's search: start at init (128) and multiply by `decay` (0.9) after each
 *              failure; it never grows.
 * Every out-of-memory failure is a return code of the callback, never an exception, so a failed
 * trial costs only its own time. All functions are thread-safe (no shared state); the callback is
 * called on the calling thread. */
#ifndef GPUKIT_BATCH_H
#define GPUKIT_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "pool.h"
#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gk_batch_mode {
    GK_BATCH_MODEL = 0,
    GK_BATCH_POWER = 1,
    GK_BATCH_BINSEARCH = 2,
    GK_BATCH_DECAY = 3
} gk_batch_mode;

/* Runs the step(s) at batch size `batch`. Returns 0 when they fit, GK_EDEVOOM (or -ENOMEM) when
 * they ran out of memory, any other negative code for another failure (which ends the search and
 * is returned by gk_batch_find). When it can measure the step's peak of allocated bytes it stores
 * it in *peak_bytes (model mode needs it unless cfg.pool is set, from which the finder reads it).
 */
typedef int (*gk_batch_trial_fn)(void *user, long batch, uint64_t *peak_bytes);

typedef struct gk_batch_config {
    size_t size; /* sizeof(gk_batch_config) (set by gk_batch_config_default) */
    gk_batch_mode mode;
    long init;       /* first size for power/binsearch (2) and decay (128); 0 = the mode's own */
    long b1, b2;     /* model: the two measuring trials (2 and 8) */
    double margin;   /* model: headroom kept, fraction of the budget (0.04) */
    long max_batch;  /* cap on the answer (65535; non-OOM errors appear above it on CUDA) */
    long multiple;   /* round the answer down to a multiple of this (1) */
    int max_trials;  /* give up after this many trials (25) */
    double decay;    /* decay mode factor in (0,1) (0.9) */
    uint64_t budget; /* model: bytes the step may use; 0 = from the pool (its limit, else the
                        device's free memory plus what the pool has reserved) */
    gk_pool *pool;   /* optional: peaks are reset before and read after each trial */
    /* Where the answer is published: NULL (default) for the process registry
     * (gk_metrics_default(), which `gpukit run` receives). */
    gk_metrics *metrics;
} gk_batch_config;

/* Fills `cfg` with the defaults above (mode model, no pool). */
GK_API void gk_batch_config_default(gk_batch_config *cfg, size_t size);
#define gk_batch_config_default(cfg) (gk_batch_config_default)((cfg), sizeof *(cfg))

/* Parses "model", "power", "binsearch" or "decay". Returns 0 or -EINVAL. */
GK_API int gk_batch_mode_parse(const char *text, gk_batch_mode *out);
GK_API const char *gk_batch_mode_name(gk_batch_mode mode);

#define GK_BATCH_MAX_LOG 64

typedef struct gk_batch_result {
    size_t size;    /* bytes filled (see gpukit/version.h) */
    long batch;     /* the answer: the largest size found that fits (verified by a trial) */
    int trials;     /* trials run */
    int ooms;       /* trials that ran out of memory */
    double fit_a;   /* model: fixed bytes a of the fit (0 in other modes) */
    double fit_k;   /* model: bytes per sample k */
    long predicted; /* model: the prediction before verification */
    long tried[GK_BATCH_MAX_LOG]; /* sizes tried, in order (the first GK_BATCH_MAX_LOG) */
    int tried_ok[GK_BATCH_MAX_LOG];
    /* The peak of allocated bytes each trial measured (read from cfg.pool after a trial that
     * fitted, else what the callback stored; 0 when neither measured it). */
    uint64_t tried_peak[GK_BATCH_MAX_LOG];
    double budget; /* model: the budget in bytes the prediction used (0 when no fit was made) */
} gk_batch_result;

/* Runs the search. A successful search sets its answer as the gauge gpukit_batch_size and, in
 * model mode once the fit is made, the model as gpukit_batch_fixed_bytes (a),
 * gpukit_batch_per_sample_bytes (k), gpukit_batch_budget_bytes and gpukit_batch_margin_ratio in
 * cfg->metrics (labelled device=<the pool's device> or "unknown"); under `gpukit run` they reach the
 * report's batch-headroom advice. Returns 0 with
 * out->batch >= 1; GK_EDEVOOM when not even batch 1 (model,
 * binsearch, power) or the smallest size tried (decay) fits, or when the largest batch that fits
 * is below `multiple`; -EINVAL for a bad config (b1 >= b2, multiple above max_batch,
 * margin outside [0,1), no budget and no pool in model mode, ...); -ERANGE when max_trials ran
 * out before an answer; or the callback's own error. The message of a failure is in
 * gk_last_error(). `out` is filled on failure too (the trials run so far). */
GK_API int gk_batch_find(const gk_batch_config *cfg, gk_batch_trial_fn trial, void *user,
                         gk_batch_result *out, size_t size);
#define gk_batch_find(cfg, trial, user, out)                                                       \
    (gk_batch_find)((cfg), (trial), (user), (out), sizeof *(out))

#ifdef __cplusplus
}
#endif
#endif
