/* Allocation traces: RMM's CSV log of a program's allocations and frees, read, written, replayed
 * through a pool, searched for the smallest capacity that runs them (F_cap), and synthesised for a
 * transformer's training. These are tools for studying an allocator, not part of allocation:
 * gpukit's pool writes the format (gk_pool_set_trace_log) and these functions read it.
 *
 * Threads: every function is thread-safe on distinct arguments; a gk_trace is immutable after it
 * is made and may be read from any thread. */
#ifndef GPUKIT_TRACE_H
#define GPUKIT_TRACE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "pool.h"
#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum gk_trace_action {
    GK_TRACE_ALLOCATE = 0,
    GK_TRACE_FREE = 1,
    GK_TRACE_ALLOCATE_FAILURE = 2
} gk_trace_action;

typedef struct gk_trace_event {
    uint64_t thread;
    double time; /* seconds (RMM's H:M:S.f times are converted) */
    gk_trace_action action;
    uint64_t ptr;
    uint64_t size;
    uint64_t stream; /* 0 = default stream */
} gk_trace_event;

typedef struct gk_trace {
    gk_trace_event *events;
    size_t count;
} gk_trace;

/* Reads an RMM CSV log (header "Thread,Time,Action,Pointer,Size,Stream"; actions allocate, free,
 * allocate failure; pointers and streams hex with 0x or decimal; blank lines skipped). On a
 * malformed line returns GK_ESYNTAX and writes "NAME:LINE: what is wrong" into err; -ENOENT or
 * -EIO when the file cannot be read; -ENOMEM. The caller frees *out with gk_trace_free. */
GK_API int gk_trace_read(const char *path, gk_trace **out, char *err, size_t errlen);
GK_API int gk_trace_parse(FILE *in, const char *name, gk_trace **out, char *err, size_t errlen);
GK_API void gk_trace_free(gk_trace *trace);

/* Writes the trace as RMM CSV (the format gk_trace_read reads). Returns 0 or -EIO. */
GK_API int gk_trace_write(const gk_trace *trace, FILE *out);

/* L_peak: the largest sum of live requested bytes over the trace (the lower bound on any
 * allocator's capacity). */
GK_API uint64_t gk_trace_live_peak(const gk_trace *trace);

typedef struct gk_replay_result {
    size_t size;          /* bytes filled (see gpukit/version.h) */
    size_t allocs, frees; /* events replayed */
    size_t failed_allocs; /* allocations the pool refused */
    size_t unknown_frees; /* frees of pointers the trace never allocated */
    size_t leaks;         /* allocations still live at the end of the trace */
    uint64_t leak_bytes;
    uint64_t live_peak; /* L_peak of the events replayed */
    uint64_t alloc_ns_p50, alloc_ns_p99, free_ns_p50, free_ns_p99; /* 0 unless timed */
} gk_replay_result;

/* Replays the trace through `pool` in order (the default stream for stream 0; one stream created
 * per other stream value, any number of them). Trace pointers may be any 64-bit value. With
 * `stop_on_oom` the replay ends at the first refused
 * allocation; else it goes on and frees of refused allocations are skipped. With `timed` the
 * latency percentiles are measured. Live allocations are freed at the end (and counted as leaks);
 * the pool's statistics (gk_pool_get_stats) then describe the whole replay. Returns 0 (also when
 * allocations failed: see failed_allocs) or -EINVAL / -ENOMEM / -ENOSPC. */
GK_API int gk_trace_replay(const gk_trace *trace, gk_pool *pool, int stop_on_oom, int timed,
                           gk_replay_result *out, size_t size);
#define gk_trace_replay(trace, pool, stop_on_oom, timed, out)                                      \
    (gk_trace_replay)((trace), (pool), (stop_on_oom), (timed), (out), sizeof *(out))

typedef struct gk_fcap_result {
    size_t size;             /* bytes filled (see gpukit/version.h) */
    uint64_t c_min;          /* smallest capacity (multiple of 2 MiB) that replays the trace */
    uint64_t l_peak;         /* gk_trace_live_peak */
    double f_cap;            /* c_min / l_peak */
    uint64_t peak_reserved;  /* at c_min */
    uint64_t peak_allocated; /* at c_min */
    int probes;              /* replays run */
} gk_fcap_result;

/* Finds C_min by bisection at 2 MiB resolution. `spec` names the device: a sim spec gets
 * capacity=C for each probe, replacing any capacity it has (so the sim's own address space is the
 * device); any other device gets the pool limit set to C instead. With gc_threshold or
 * limit_fraction set, whose effect scales with the capacity, it scans every 2 MiB step up to the
 * first that replays instead of bisecting. Returns 0, -EINVAL, -ENODATA when the trace has no
 * allocations, -ERANGE when even 64 x L_peak (or the largest capacity the device can have) does
 * not replay, or the device's open or the pool's create error (message in gk_last_error()). */
GK_API int gk_trace_fcap(const gk_trace *trace, const char *spec, const gk_pool_config *cfg,
                         gk_fcap_result *out, size_t size);
#define gk_trace_fcap(trace, spec, cfg, out)                                                       \
    (gk_trace_fcap)((trace), (spec), (cfg), (out), sizeof *(out))

/* A synthetic transformer training trace (GPT-like, fp32 weights and Adam state, fp16
 * activations without flash attention): parameters, embeddings and optimizer state stay live;
 * each step draws its sequence length uniformly in [vary*seq, seq] (multiple of 8), allocates the
 * activations kept for backward layer by layer with short-lived temporaries, the logits, then
 * frees activations in reverse order while gradients are allocated, runs the optimizer with one
 * temporary per parameter, and frees the gradients. */
typedef struct gk_synth_config {
    size_t size; /* sizeof(gk_synth_config) (set by gk_synth_config_default) */
    int layers, hidden, heads, seq, batch, steps, vocab;
    double vary;   /* in (0,1]: the shortest sequence as a fraction of seq */
    uint64_t seed; /* sequence-length draws */
} gk_synth_config;

/* layers 12, hidden 768, heads 12, seq 1024, batch 8, steps 4, vocab 32000, vary 0.5, seed 1. */
GK_API void gk_synth_config_default(gk_synth_config *cfg, size_t size);
#define gk_synth_config_default(cfg) (gk_synth_config_default)((cfg), sizeof *(cfg))

/* Builds the trace from `cfg` (read up to cfg->size), allocating its exact size once. Returns 0,
 * -EINVAL for a field out of its range (layers 1-1024, hidden 1-65536 and a multiple of heads,
 * seq 1-1048576, batch 1-65536, steps 1-1048576, vocab 1-16777216, vary in (0,1]), -EOVERFLOW
 * when a tensor would pass 1 PiB, -ERANGE when the trace would pass 67,108,864 events (about
 * 3 GiB), -ENOMEM. The caller frees *out with gk_trace_free. */
GK_API int gk_trace_synth_transformer(const gk_synth_config *cfg, gk_trace **out);

#ifdef __cplusplus
}
#endif
#endif
