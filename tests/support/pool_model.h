/* An executable model of the caching pool on a simulated device, for the property test
 * (tests/unit/test_pool_prop.c) and the fuzz target (fuzz/fuzz_pool.c).
 *
 * The model is written to be obviously right rather than fast: segments are arrays of blocks
 * sorted by address, every choice is a linear scan over them, and the classic rules follow the
 * structure of PyTorch's caching allocator (get_free_block, should_split, alloc_block,
 * release_available_cached_blocks, release_cached_blocks, garbage_collect_cached_blocks). The
 * device model is the sim's: a first-fit heap and a first-fit address space over a capacity.
 *
 * pm_check_case() runs one (settings, device, trace) case through a real pool and the model side
 * by side, the way gk_trace_replay replays a trace, and after every event compares them (result
 * and address of each allocation, every statistic, device bytes in use) and checks the pool's
 * own structure (blocks tile their segments, the free tree holds exactly the free blocks in
 * order, the live map holds exactly the live blocks, the figures kept up to date equal sums over
 * the blocks, nothing is left in a transient state) and the promises that need no model (live
 * blocks never overlap; cached memory is used before new memory is reserved; a failed allocation
 * left no releasable cache behind). */
#ifndef GK_POOL_MODEL_H
#define GK_POOL_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "gpukit/gpukit.h"

/* A simulated device (the sim keys the model knows). */
typedef struct pm_device {
    uint64_t capacity, alignment, granularity, va_size; /* va_size 0: none (no virtual memory) */
} pm_device;

/* One case: a preset, settings on top of it, a device and a trace. */
typedef struct pm_case {
    char preset[16];
    char set[1024]; /* "key=value,..." or "" */
    pm_device dev;
    const gk_trace *trace;
} pm_case;

/* The device as a spec string ("sim:capacity=...,..."). */
void pm_device_spec(const pm_device *d, char *buf, size_t len);
/* Reads a spec with the keys capacity, alignment, granularity, va_size. 0 or -EINVAL. */
int pm_device_parse(const char *spec, pm_device *d);

typedef struct pm_result {
    size_t events;    /* events checked */
    size_t failed;    /* allocations both refused */
    int fallback;     /* the pool used classic segments instead of expandable ones */
    int expandable;   /* the pool used expandable segments */
    uint64_t retries; /* ladder retries (rung 6) */
    uint64_t gc_runs; /* garbage-collection passes */
} pm_result;

/* Runs the case. Returns 0 when pool and model agree all along, 1 when the settings or the device
 * are refused (the case is skipped; the pool and the sim must agree on refusing), or -1 with the
 * first difference in `why`. */
int pm_check_case(const pm_case *c, pm_result *res, char *why, size_t len);

/* The model alone: replays the trace and returns the reserved bytes after every event into
 * `reserved` (count = trace events; may be NULL) and whether any allocation failed. For the
 * PyTorch reference figures. Returns 0, 1 when refused, -ENOMEM. */
int pm_model_replay(const pm_case *c, uint64_t *reserved, size_t *failed);

#endif
